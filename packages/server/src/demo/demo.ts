import type { FastifyInstance } from 'fastify'
import { activeStatuses, isTerminal, JobwireError } from '@jobwire/protocol'
import { createWorker, type Worker } from '@jobwire/worker'
import type { Logger } from 'pino'
import { signSubscriptionToken } from '../auth/tokens.js'
import type { Dispatcher } from '../core/dispatch.js'
import type { JobService } from '../core/jobs.js'
import type { Principal } from '../core/scopes.js'
import { summarize, type RouteContext } from '../http/context.js'
import { serveJobStream } from '../http/stream-route.js'
import { demoTypes, registerDemoHandlers, transcriptionPlan } from './handlers.js'

const demoOwner = { tenant: 'demo', user: 'demo' }
const demoWorkerName = 'demo-worker (in the server)'
/** The /demo streams read as a backend of tenant "demo" would: demo jobs only. */
const demoPrincipal: Principal = { kind: 'key', keyId: 'demo-page', role: 'backend', tenant: demoOwner.tenant, types: null }
/** The trickle keeps about this many demo jobs queued or running, so there is always something moving. */
const trickleTarget = 4
const trickleEveryMs = 3_000
const maxActive = 40

/**
 * `jobwire serve --demo`: the dashboard's one-click sign-in, an in-process worker running the
 * four demo handlers, and a trickle of new demo jobs. Demo routes need no key but only ever touch jobs of tenant "demo";
 * everything under /v1 still needs the admin key. A separate `jobwire demo-worker` process
 * competes for the same jobs, so killing it shows a job resume on the in-process worker.
 */
export function createDemo(service: JobService, dispatcher: Dispatcher, logger?: Logger, options: { failureRate?: number } = {}) {
  let worker: Worker | null = null
  let trickle: NodeJS.Timeout | null = null
  let next = 0

  /**
   * Jobs still leased to the demo worker after it stopped: ones whose claim was being answered as
   * it stopped (it abandoned the request, so it never heard of them). This node knows they are its
   * own worker's, so they go back to the queue now instead of when their leases lapse.
   */
  async function handBack(): Promise<void> {
    const running = await service.listJobs({ tenant: demoOwner.tenant, status: 'running', limit: maxActive })
    for (const job of running.jobs) {
      const lease = (await service.store.getRecord(job.id))?.lease
      if (lease?.worker === demoWorkerName && lease.ended !== true) {
        await dispatcher.release(job.id, lease.token, 'worker stopping', false).catch(() => undefined)
      }
    }
  }

  async function active(): Promise<number> {
    let count = 0
    for (const status of activeStatuses) {
      count += (await service.listJobs({ tenant: demoOwner.tenant, status, limit: maxActive })).jobs.length
    }
    return count
  }

  async function create(type: string) {
    if ((await active()) >= maxActive) throw new JobwireError('unavailable', { reason: `${maxActive} demo jobs are already active` })
    const stages = type === 'transcription' ? transcriptionPlan : undefined
    return (await service.createJob({ type, owner: demoOwner, input: { demo: true }, ...(stages === undefined ? {} : { stages }) })).job
  }

  async function demoJob(id: string) {
    const job = await service.store.getJob(id)
    if (job === null || job.owner?.tenant !== demoOwner.tenant) throw new JobwireError('job_not_found', { jobId: id })
    return job
  }

  function register(app: FastifyInstance, context: RouteContext): void {
    // One-click sign-in for the dashboard: a short-lived token for the demo user's own jobs (read
    // and cancel only), never an API key. Resume and create go through the /demo routes below.
    app.post('/demo/session', async () => {
      const ttl = Math.min(context.settings.tokenTtlSeconds, context.settings.maxTokenTtlSeconds)
      const minted = await signSubscriptionToken(context.auth.tokenSecret, { tenant: demoOwner.tenant, user: demoOwner.user, rights: ['read', 'cancel'] }, ttl)
      return { ...minted, types: demoTypes }
    })

    app.post('/demo/jobs', async (request, reply) => {
      const type = (request.body as { type?: unknown } | undefined)?.type
      if (typeof type !== 'string' || !(demoTypes as readonly string[]).includes(type)) {
        throw new JobwireError('invalid_request', { field: 'type', reason: `type: one of ${demoTypes.join(', ')}` })
      }
      return reply.code(201).send(await service.withQueuePosition(await create(type)))
    })

    app.get('/demo/jobs', async () => {
      const page = await service.listJobs({ tenant: demoOwner.tenant, limit: 30 })
      const jobs = await Promise.all(page.jobs.map((job) => service.withQueuePosition(job)))
      return { jobs: jobs.map(summarize), types: demoTypes }
    })

    app.get<{ Params: { id: string } }>('/demo/jobs/:id', async (request) => service.withQueuePosition(await demoJob(request.params.id)))

    app.post<{ Params: { id: string } }>('/demo/jobs/:id/cancel', async (request) => {
      await demoJob(request.params.id)
      return (await service.cancelJob(request.params.id, 'cancelled from the dashboard')).job
    })

    app.post<{ Params: { id: string } }>('/demo/jobs/:id/resume', async (request) => {
      await demoJob(request.params.id)
      return service.withQueuePosition((await service.resumeJob(request.params.id)).job)
    })

    app.get<{ Params: { id: string }; Querystring: { after?: string } }>('/demo/jobs/:id/stream', async (request, reply) => {
      await demoJob(request.params.id)
      await serveJobStream(request, reply, demoPrincipal, context)
    })
  }

  return {
    register,
    /** Starts the in-process demo worker against this node and the trickle of new jobs. */
    async start(url: string, apiKey: string): Promise<void> {
      worker = createWorker({
        url,
        apiKey,
        name: demoWorkerName,
        concurrency: 3,
        onError: (error) => logger?.debug({ err: error }, 'demo worker request failed'),
      })
      registerDemoHandlers(worker, { failureRate: options.failureRate })
      await worker.start()
      const recent = await service.listJobs({ tenant: demoOwner.tenant, limit: 1 })
      if (recent.jobs.length === 0 || isTerminal(recent.jobs[0]?.status ?? 'completed')) {
        for (const type of demoTypes) await create(type)
      }
      trickle = setInterval(() => {
        active()
          .then(async (count) => {
            if (count < trickleTarget) await create(demoTypes[next++ % demoTypes.length] as string)
          })
          .catch((error: unknown) => logger?.debug({ err: error }, 'demo trickle skipped'))
      }, trickleEveryMs)
      trickle.unref()
    },
    async stop(): Promise<void> {
      if (trickle !== null) clearInterval(trickle)
      await worker?.stop({ timeoutMs: 0, graceMs: 500 })
      await handBack()
    },
  }
}
