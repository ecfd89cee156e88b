// The architecture `npm run check:arch` enforces (docs/architecture.md, "Enforced rules").
// Workspace packages resolve to their built `dist/` (npm run build), which is not cruised further.

/** A Jobwire package imported by its name: its dist (or the bare name, unbuilt). */
const pkg = (names) => `^(packages|apps)/(${names})/dist/|^@jobwire/(${names})$`
const server = 'packages/server/src'

/** A forbidden dependency: from modules matching `from` to modules matching `to`. */
const rule = (name, comment, from, to) => ({ name, severity: 'error', comment, from, to })

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    rule('no-circular', 'No import cycles, in code or tests.',
      {},
      { circular: true }),
    rule('no-unresolvable', 'Every import resolves (workspace packages resolve to their dist: build first).',
      // bullmq: a bench-only peer that bench/lib/bullmq.mjs installs when it runs.
      {},
      { couldNotResolve: true, pathNot: '^bullmq$' }),
    rule('packages-through-their-names', "A package's code reaches another package only through its name (@jobwire/…), never by a relative path.",
      { path: '^(packages|apps)/([^/]+)/src/' },
      { dependencyTypes: ['local'], pathNot: '^$1/$2/' }),
    rule('protocol-depends-on-no-package', '@jobwire/protocol is the bottom: it imports no other Jobwire package.',
      { path: '^packages/protocol/src/' },
      { path: pkg('backend|client|react|worker|server|dashboard') }),
    rule('sdks-depend-on-protocol-only', '@jobwire/backend, client and worker build on @jobwire/protocol alone.',
      { path: '^packages/(backend|client|worker)/src/' },
      { path: pkg('backend|client|react|worker|server|dashboard') }),
    rule('react-on-client', '@jobwire/react builds on @jobwire/client and @jobwire/protocol.',
      { path: '^packages/react/src/' },
      { path: pkg('backend|worker|server|dashboard') }),
    rule('dashboard-on-react', 'The dashboard is an app of @jobwire/react and @jobwire/client (its REST types from @jobwire/protocol): it imports no server or worker code.',
      { path: '^apps/dashboard/src/' },
      { path: pkg('backend|worker|server') }),
    rule('server-uses-sdks-only-in-cli-and-demo', 'The server imports the SDKs (@jobwire/worker, backend, client) only for its CLI and its demo.',
      { path: `^${server}/`, pathNot: `^${server}/(cli|demo)/` },
      { path: pkg('backend|client|react|worker|dashboard') }),
    rule('nothing-imports-apps-or-the-server', "No package's code imports the dashboard, or the server's code (tests may start a server).",
      { path: '^(packages|apps)/[^/]+/src/', pathNot: '^(packages/server|apps/dashboard)/src/' },
      { path: `${pkg('server|dashboard')}|^apps/|^packages/server/src/` }),
    rule('code-does-not-import-tests', 'Shipped code imports no test, bench, script or example.',
      { path: '^(packages|apps)/[^/]+/src/' },
      { path: '^((packages|apps)/[^/]+/test/|test/|bench/|scripts/|examples/|fixtures/)' }),
    rule('core-is-framework-free', 'The server core holds the rules: it imports nothing of the server outside core/ (no HTTP, transports, stores, auth, observers, configuration) and no framework or database client.',
      { path: `^${server}/core/` },
      {
        path: [
          `^${server}/(?!core/)`,
          '(^|/)node_modules/(fastify|@fastify/[^/]+|ws|ioredis|better-sqlite3|pino|prom-client)/',
        ],
      }),
    rule('stores-below-transports-and-http', "Stores implement core's Store: they import core and protocol, never HTTP, transports, auth or the composition.",
      { path: `^${server}/stores/` },
      { path: `^${server}/(http|transports|auth|cli|demo|server\\.ts|index\\.ts)` }),
    rule('transports-and-http-not-on-stores', 'Transports and routes work on core (a Store they are given), never on a concrete store; they never import the composition.',
      { path: `^${server}/(http|transports)/` },
      { path: `^${server}/(stores|cli|server\\.ts|index\\.ts)` }),
    rule('transports-not-on-routes', 'Transports (SSE, WebSocket) do not import the HTTP routes that mount them.',
      { path: `^${server}/transports/` },
      { path: `^${server}/(http|auth|demo)/` }),
    rule('observers-on-core', 'Metrics, webhooks and the job log are observers of core: they import core and protocol, no transport, route or store.',
      { path: `^${server}/(metrics|webhooks|job-log)\\.ts$` },
      { path: `^${server}/(http|transports|stores|auth|cli|demo|server\\.ts)` }),
    rule('only-the-cli-imports-the-cli', 'The CLI is the top: nothing else in the server imports it.',
      { path: `^${server}/`, pathNot: `^${server}/cli/` },
      { path: `^${server}/cli/` }),
  ],
  options: {
    doNotFollow: { path: ['node_modules', '^(packages|apps)/[^/]+/dist/'] },
    exclude: { path: ['^packages/server/public/', '^bench/results/'] },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.test.json' },
    enhancedResolveOptions: {
      exportsFields: ['exports'],
      conditionNames: ['import', 'require', 'node', 'default', 'types'],
      extensions: ['.ts', '.tsx', '.d.ts', '.js', '.mjs', '.cjs'],
    },
  },
}
