// Jobwire under test in a fan-out bench (bench/ws, bench/redis): the dist build (or
// BENCH_SERVER_DIST, for A/B runs) on 127.0.0.1 with a random port, silent, with the per-client
// limits lifted so that 1,000 subscribers from one address are allowed. `config` adds to or
// overrides that; BENCH_SERVER_CONFIG (JSON) overrides both. BENCH_SERVER_LOGGER=1 logs at info to
// the child's stdout, as `jobwire serve` does (otherwise the server runs with no logger at all).
export async function startJobwire(apiKey, config = {}) {
  const { startServer } = await import(process.env.BENCH_SERVER_DIST ?? '../../packages/server/dist/server.js')
  return startServer({
    config: {
      port: 0,
      host: '127.0.0.1',
      apiKey,
      memory: true,
      // BENCH_SERVER_LOGGER=1: log as `jobwire serve` does (info lines to stdout, a child logger per request).
      logLevel: process.env.BENCH_SERVER_LOGGER === '1' ? 'info' : 'silent',
      maxConnections: 1_000_000,
      streamsPerIp: 1_000_000,
      createLimit: 1_000_000,
      maxEventsPerJob: 1000,
      ...config,
      ...(process.env.BENCH_SERVER_CONFIG ? JSON.parse(process.env.BENCH_SERVER_CONFIG) : {}),
    },
    ...(process.env.BENCH_SERVER_LOGGER === '1' ? {} : { logger: false }),
  })
}
