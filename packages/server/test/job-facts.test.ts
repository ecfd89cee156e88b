import { describe, expect, it } from 'vitest'
import { defaultCoreLimits, defaultRetention, JobService, MemoryStore } from '@jobwire/server'
import { authorizedFacts } from '../src/core/access.js'

/** A real memory store that counts its job reads. */
class CountingStore extends MemoryStore {
  reads = 0
  override getJob(id: string): ReturnType<MemoryStore['getJob']> {
    this.reads++
    return super.getJob(id)
  }
}

describe('JobService.facts: what authorization reads of a job, kept per node', () => {
  it('a job created on this node is authorized for writes without reading it; one created elsewhere is read once', async () => {
    const store = new CountingStore()
    const here = new JobService(store, defaultCoreLimits)
    const elsewhere = new JobService(store, defaultCoreLimits)
    const backend = { kind: 'key', keyId: 'k', role: 'backend', tenant: 't1', types: null } as const
    const own = (await here.createJob({ type: 'report', owner: { tenant: 't1', user: 'u1' } })).job
    const other = (await elsewhere.createJob({ type: 'report', owner: { tenant: 't1', user: 'u2' } })).job
    store.reads = 0
    for (let i = 0; i < 3; i++) await expect(authorizedFacts(here, backend, 'write', own.id)).resolves.toEqual({ id: own.id, type: 'report', owner: own.owner })
    expect(store.reads).toBe(0)
    for (let i = 0; i < 3; i++) await authorizedFacts(here, backend, 'write', other.id)
    expect(store.reads).toBe(1)
  })

  it('refusals are the same as from the job itself: another tenant gets job_not_found, a worker of another type too, a missing id too', async () => {
    const service = new JobService(new MemoryStore(), defaultCoreLimits)
    const job = (await service.createJob({ type: 'report', owner: { tenant: 't1', user: 'u1' } })).job
    const otherTenant = { kind: 'key', keyId: 'k2', role: 'backend', tenant: 't2', types: null } as const
    const otherWorker = { kind: 'key', keyId: 'k3', role: 'worker', tenant: null, types: ['other'] } as const
    const worker = { kind: 'key', keyId: 'k4', role: 'worker', tenant: null, types: ['report'] } as const
    await expect(authorizedFacts(service, otherTenant, 'write', job.id)).rejects.toMatchObject({ code: 'job_not_found' })
    await expect(authorizedFacts(service, otherWorker, 'write-leased', job.id)).rejects.toMatchObject({ code: 'job_not_found' })
    // A worker may write the jobs of its types it holds (the lease is checked by the write), not as a backend.
    await expect(authorizedFacts(service, worker, 'write-leased', job.id)).resolves.toMatchObject({ id: job.id })
    await expect(authorizedFacts(service, worker, 'write', job.id)).rejects.toMatchObject({ code: 'forbidden' })
    await expect(authorizedFacts(service, worker, 'write', 'job_missing')).rejects.toMatchObject({ code: 'job_not_found' })
  })

  it('a job deleted after its facts were kept is refused by the write itself with job_not_found', async () => {
    const store = new MemoryStore({ retention: { ...defaultRetention, ttlMs: { completed: 0, failed: 0, cancelled: 0 } } })
    const service = new JobService(store, defaultCoreLimits)
    const job = (await service.createJob({ type: 'report' })).job
    await service.appendEvents(job.id, [{ type: 'completed', data: { result: null } }])
    await store.sweep(Date.now() + 1000)
    const backend = { kind: 'key', keyId: 'k', role: 'backend', tenant: null, types: null } as const
    await authorizedFacts(service, backend, 'write', job.id)
    await expect(service.appendEvents(job.id, [{ type: 'progress', data: { percent: 1 } }])).rejects.toMatchObject({ code: 'job_not_found' })
  })
})
