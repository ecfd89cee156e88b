import { fileURLToPath } from 'node:url'
import { defineConfig } from 'vite'

// The server serves these files at `/` (see packages/server/src/http/dashboard.ts).
const outDir = fileURLToPath(new URL('../../packages/server/public/dashboard', import.meta.url))

export default defineConfig({
  root: fileURLToPath(new URL('.', import.meta.url)),
  base: '/',
  build: { outDir, emptyOutDir: true, sourcemap: true, chunkSizeWarningLimit: 600 },
})
