import { existsSync } from 'node:fs'
import { extname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import fastifyStatic from '@fastify/static'
import type { FastifyInstance } from 'fastify'
import { JobwireError } from '@jobwire/protocol'

/** Where `apps/dashboard` builds to (from src/http and dist/http alike). */
const dashboardDir = fileURLToPath(new URL('../../public/dashboard/', import.meta.url))
const assetsDir = join(dashboardDir, 'assets')

const contentTypes: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.svg': 'image/svg+xml',
}

const notBuilt = `<!doctype html><meta charset="utf-8"><title>Jobwire</title>
<p>The dashboard is not built. Run <code>npm run build</code> in the Jobwire checkout, then reload.</p>`

/**
 * The dashboard SPA at `/`: index.html and its hashed assets as built, streamed from disk by
 * @fastify/static with `ETag` and `Last-Modified` (a revalidation gets 304). index.html is
 * `no-cache` (always revalidated, so a new build shows at once); the hashed assets are immutable
 * for a year. It signs in with its own credential (in session storage), so these routes need none.
 */
export async function registerDashboard(app: FastifyInstance): Promise<void> {
  // Only reply.sendFile: the routes below choose what may be served. Types are ours, set once a file is found.
  await app.register(fastifyStatic, {
    serve: false,
    contentType: false,
    setHeaders: (response, path) => {
      const type = contentTypes[extname(path)]
      if (type !== undefined) response.setHeader('content-type', type)
    },
  })
  app.get('/', async (_request, reply) => {
    // Looked up per request: a build made while the server runs shows on the next load.
    if (!existsSync(join(dashboardDir, 'index.html'))) return reply.type('text/html; charset=utf-8').header('cache-control', 'no-cache').send(notBuilt)
    return reply.header('cache-control', 'no-cache').sendFile('index.html', dashboardDir, { cacheControl: false })
  })
  app.get<{ Params: { file: string } }>('/assets/:file', async (request, reply) => {
    const { file } = request.params
    const type = contentTypes[extname(file)]
    // Hashed names only: no path separators, no dot-files. A name that is not there is route_not_found too.
    if (type === undefined || !/^[\w.-]+$/.test(file) || file.startsWith('.')) throw new JobwireError('route_not_found', { method: 'GET', url: request.url })
    return reply.sendFile(file, assetsDir, { maxAge: '365d', immutable: true })
  })
}
