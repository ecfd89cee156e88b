// Mints subscription tokens with @jobwire/backend (its build) for the Python minting's conformance
// test: `node mint.mjs options.json` → [{token, expiresAt}] for each options object (secret, jobIds…, now).
import { readFileSync } from 'node:fs'

const backend = await import(new URL('../../../../packages/backend/dist/index.js', import.meta.url).href)
const cases = JSON.parse(readFileSync(process.argv[2], 'utf8'))
process.stdout.write(JSON.stringify(cases.map((options) => backend.mintSubscriptionToken(options))))
