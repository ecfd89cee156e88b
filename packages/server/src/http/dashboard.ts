import { existsSync, readFileSync } from 'node:fs'
import { extname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { FastifyInstance } from 'fastify'
import { JobwireError } from '@jobwire/protocol'

/** Where `apps/dashboard` builds to (from src/http and dist/http alike). */
const dashboardDir = fileURLToPath(new URL('../../public/dashboard/', import.meta.url))

const contentTypes: Record<string, string> = {
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.svg': 'image/svg+xml',
}

const notBuilt = `<!doctype html><meta charset="utf-8"><title>Jobwire</title>
<p>The dashboard is not built. Run <code>npm run build</code> in the Jobwire checkout, then reload.</p>`

/**
 * The dashboard SPA at `/`: index.html and its hashed assets, read from disk as built. It signs
 * in with its own credential (in session storage), so these routes need none.
 */
export function registerDashboard(app: FastifyInstance): void {
  app.get('/', async (_request, reply) => {
    const index = join(dashboardDir, 'index.html')
    const page = existsSync(index) ? readFileSync(index) : notBuilt
    return reply.type('text/html; charset=utf-8').header('cache-control', 'no-cache').send(page)
  })
  app.get<{ Params: { file: string } }>('/assets/:file', async (request, reply) => {
    const { file } = request.params
    const type = contentTypes[extname(file)]
    // Hashed names only: no path separators, no dot-files.
    if (type === undefined || !/^[\w.-]+$/.test(file) || file.startsWith('.')) throw new JobwireError('route_not_found', { method: 'GET', url: request.url })
    let body: Buffer
    try {
      body = readFileSync(join(dashboardDir, 'assets', file))
    } catch {
      throw new JobwireError('route_not_found', { method: 'GET', url: request.url })
    }
    return reply.type(type).header('cache-control', 'public, max-age=31536000, immutable').send(body)
  })
}
