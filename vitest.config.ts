import { fileURLToPath } from 'node:url'
import { defineConfig } from 'vitest/config'

const src = (pkg: string) => fileURLToPath(new URL(`./packages/${pkg}/src/index.ts`, import.meta.url))

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
    include: ['packages/*/test/**/*.test.ts', 'packages/*/test/**/*.test.tsx', 'apps/*/test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    pool: 'forks',
  },
})
