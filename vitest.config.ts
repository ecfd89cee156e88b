import { fileURLToPath } from 'node:url'
import { defineConfig } from 'vitest/config'

const src = (pkg: string) => fileURLToPath(new URL(`./packages/${pkg}/src/index.ts`, import.meta.url))
const react18 = (path: string) => fileURLToPath(new URL(`./fixtures/react-18/node_modules/${path}`, import.meta.url))
const rootModule = (path: string) => fileURLToPath(new URL(`./node_modules/${path}`, import.meta.url))

declare module 'vitest' {
  export interface ProvidedContext {
    /** The React major a project's tests must render with (packages/react/test/react-version.test.tsx). */
    reactMajor: number
  }
}

export default defineConfig({
  resolve: {
    alias: {
      '@jobwire/protocol': src('protocol'),
      '@jobwire/server': src('server'),
      '@jobwire/backend': src('backend'),
      '@jobwire/worker': src('worker'),
      '@jobwire/client': src('client'),
      '@jobwire/react': src('react'),
    },
  },
  test: {
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
    projects: [
      {
        extends: true,
        test: {
          name: 'jobwire',
          include: ['packages/*/test/**/*.test.ts', 'packages/*/test/**/*.test.tsx', 'apps/*/test/**/*.test.ts', 'test/**/*.test.ts', 'examples/test/**/*.test.ts', 'examples/test/**/*.test.tsx'],
          provide: { reactMajor: 19 },
        },
      },
      // @jobwire/react's suites again, on React 18 (its peer range is ^18 || ^19). React 18 and its react-dom
      // are the private workspace fixtures/react-18 (in the root lockfile, installed by `npm ci` into its own
      // node_modules beside the root's React 19), so react-dom 18's own require('react') finds React 18. The
      // aliases send our sources and the tests there; @testing-library/react (hoisted, shared) is loaded from
      // its ESM build and inlined, so its imports of react and react-dom go through the same aliases.
      {
        extends: true,
        resolve: {
          alias: {
            react: react18('react'),
            'react-dom': react18('react-dom'),
            '@testing-library/react': rootModule('@testing-library/react/dist/@testing-library/react.esm.js'),
          },
        },
        test: {
          name: 'react-18',
          include: ['packages/react/test/**/*.test.ts', 'packages/react/test/**/*.test.tsx'],
          server: { deps: { inline: [/@testing-library\/react/] } },
          provide: { reactMajor: 18 },
        },
      },
    ],
  },
})
