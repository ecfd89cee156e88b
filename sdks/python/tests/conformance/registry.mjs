// Prints @jobwire/protocol's error registries as JSON, for the Python registries' conformance test:
// {errors: errorRegistry, jobErrors: jobErrorRegistry (absent before the server had one)}.
const protocol = await import(new URL('../../../../packages/protocol/dist/index.js', import.meta.url).href)
process.stdout.write(JSON.stringify({ errors: protocol.errorRegistry, jobErrors: protocol.jobErrorRegistry ?? {} }))
