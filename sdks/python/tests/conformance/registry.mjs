// Prints @jobwire/protocol's error registry as JSON, for the Python registry's conformance test.
const protocol = await import(new URL('../../../../packages/protocol/dist/index.js', import.meta.url))
process.stdout.write(JSON.stringify(protocol.errorRegistry))
