// Feeds event logs to @jobwire/protocol's reducer and prints the states it reaches, so the Python
// reducer can be compared with it: `node reduce.mjs logs.json` → [[state after each event | {refused}]].
// Read from the build (packages/protocol/dist), so a change to the TypeScript reducer is seen here.
import { readFileSync } from 'node:fs'

const protocol = await import(new URL('../../../../packages/protocol/dist/index.js', import.meta.url).href)
const logs = JSON.parse(readFileSync(process.argv[2], 'utf8'))
const out = logs.map((log) => {
  const states = []
  let state = null
  for (const event of log) {
    try {
      state = protocol.applyEvent(state, event)
      states.push(state)
    } catch (error) {
      states.push({ refused: error.message })
      break
    }
  }
  return states
})
process.stdout.write(JSON.stringify(out))
