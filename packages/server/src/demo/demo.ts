import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import type { FastifyInstance } from 'fastify'
import { JobwireError } from '@jobwire/protocol'
import type { Logger } from 'pino'
import type { JobService } from '../core/jobs.js'
import type { SseTransport } from '../transports/sse.js'
import { summarize } from '../http/app.js'
import { serveJobStream } from '../http/stream-route.js'
import { demoTypes, scenario, type DemoType } from './scenarios.js'

const demoOwner = { tenant: 'demo', user: 'demo' }
const maxRunning = 40

/**
 * `jobwire serve --demo`: a page at `/` and a runner that plays scripted jobs of each demo type
 * through the same core API a producer uses. Demo routes need no key but only ever touch jobs
 * owned by tenant "demo"; everything under /v1 still needs the admin key.
 */
export function createDemo(service: JobService, logger?: Logger) {
  const running = new Set<string>()
  let stopped = false

  async function play(jobId: string, type: DemoType): Promise<void> {
    running.add(jobId)
    try {
      for (const step of scenario(type)) {
        if (stopped) return
        await service.appendEvents(jobId, step.events)
        if (step.pauseMs > 0) await new Promise((resolve) => setTimeout(resolve, step.pauseMs))
      }
    } catch (error) {
      // Cancelled from the page (or the node is closing): the job already says so.
      if (!(error instanceof JobwireError) || (error.code !== 'job_finished' && error.code !== 'unavailable')) {
        logger?.warn({ err: error, jobId }, 'demo job stopped')
      }
    } finally {
      running.delete(jobId)
    }
  }

  async function demoJob(id: string) {
    const job = await service.store.getJob(id)
    if (job === null || job.owner?.tenant !== demoOwner.tenant) throw new JobwireError('job_not_found', { jobId: id })
    return job
  }

  const page = readFileSync(new URL('../../public/demo.html', import.meta.url), 'utf8')
  const protocolDir = dirname(createRequire(import.meta.url).resolve('@jobwire/protocol'))

  function register(app: FastifyInstance, context: { sse: SseTransport }): void {
    app.get('/', async (_request, reply) => reply.type('text/html; charset=utf-8').send(page))

    // The page folds events with the real reducer: the protocol package's ES modules, as built.
    app.get<{ Params: { file: string } }>('/demo/protocol/:file', async (request, reply) => {
      const { file } = request.params
      if (!/^[a-z-]+\.js$/.test(file)) throw new JobwireError('route_not_found', { method: 'GET', url: request.url })
      try {
        return reply.type('text/javascript; charset=utf-8').send(readFileSync(join(protocolDir, file)))
      } catch {
        throw new JobwireError('route_not_found', { method: 'GET', url: request.url })
      }
    })

    app.post('/demo/jobs', async (request, reply) => {
      const type = (request.body as { type?: unknown } | undefined)?.type
      if (typeof type !== 'string' || !(demoTypes as readonly string[]).includes(type)) {
        throw new JobwireError('invalid_request', { field: 'type', reason: `type: one of ${demoTypes.join(', ')}` })
      }
      if (running.size >= maxRunning) throw new JobwireError('unavailable', { reason: `${maxRunning} demo jobs are already running` })
      const { job } = await service.createJob({ type, owner: demoOwner, input: { demo: true } })
      void play(job.id, type as DemoType)
      return reply.code(201).send(job)
    })

    app.get('/demo/jobs', async () => {
      const page = await service.listJobs({ tenant: demoOwner.tenant, limit: 30 })
      return { jobs: page.jobs.map(summarize), types: demoTypes }
    })

    app.get<{ Params: { id: string } }>('/demo/jobs/:id', async (request) => demoJob(request.params.id))

    app.post<{ Params: { id: string } }>('/demo/jobs/:id/cancel', async (request) => {
      await demoJob(request.params.id)
      return (await service.cancelJob(request.params.id, 'cancelled from the demo page')).job
    })

    app.get<{ Params: { id: string }; Querystring: { after?: string } }>('/demo/jobs/:id/stream', async (request, reply) => {
      await demoJob(request.params.id)
      await serveJobStream(request, reply, context.sse, service)
    })
  }

  /**
   * Demo jobs left queued or running by a previous process have no one to finish them (leases and
   * orphan recovery come with workers): fail them honestly instead of leaving them hanging.
   */
  async function failOrphans(): Promise<void> {
    for (const status of ['queued', 'running'] as const) {
      const { jobs } = await service.listJobs({ tenant: demoOwner.tenant, status, limit: 200 })
      for (const job of jobs) {
        if (running.has(job.id)) continue
        await service
          .appendEvents(job.id, [{ type: 'failed', data: { code: 'demo_restarted', message: 'The server restarted while this demo job ran', retryable: true } }])
          .catch(() => undefined)
      }
    }
  }

  return {
    register,
    failOrphans,
    stop(): void {
      stopped = true
    },
  }
}
