import {
  JobwireError,
  type ApiKey,
  type ApiKeyList,
  type AppendResponse,
  type BulkWriteResponse,
  type CreateApiKeyRequest,
  type CreatedApiKey,
  type CreateJobRequest,
  type ErrorResponse,
  type HeartbeatResponse,
  type JobPage,
  type JobResult,
  type JobState,
  type JobSummary,
  type JobWrite,
  type ListJobsQuery,
  type MintTokenRequest,
  type ProducerEvent,
  type RevokedApiKey,
  type SubscriptionToken,
} from '@jobwire/protocol'

export interface BackendOptions {
  /** The Jobwire node, e.g. `http://127.0.0.1:7070`. */
  url: string
  /** A `backend` (or `admin`) API key. */
  apiKey: string
  fetch?: typeof fetch
  /**
   * Longest a call waits for its whole answer (ms) before it rejects with `unavailable`: a server
   * that accepted the connection and never answers would otherwise hold it as long as `fetch` waits
   * (five minutes in Node). Default 30,000.
   */
  timeoutMs?: number
}

// The wire types live in @jobwire/protocol; these are their names in this package's API.
/** What `createJob` sends: type, input, owner, idempotency key, dispatch, deadlines, stage plan. */
export type CreateJob = CreateJobRequest
/** What a job's write was given: the seqs of its events (an implicit `started` included). */
export type ReportResult = AppendResponse
export type { JobSummary, ProducerEvent }

/**
 * A typed client of the REST API for backends. Every failed call rejects with a JobwireError of the
 * registry: the server's own, or `unavailable` when no usable answer came (the server unreachable,
 * no answer within `timeoutMs`, an answer that is not JSON), its reason naming the server.
 */
export class JobwireBackend {
  readonly #url: string
  readonly #key: string
  readonly #fetch: typeof fetch
  readonly #timeoutMs: number

  constructor(options: BackendOptions) {
    this.#url = options.url.replace(/\/+$/, '')
    this.#key = options.apiKey
    this.#fetch = options.fetch ?? fetch
    const timeoutMs = options.timeoutMs ?? 30_000
    if (!Number.isInteger(timeoutMs) || timeoutMs < 1) throw new TypeError(`timeoutMs must be a whole number of milliseconds ≥ 1, not ${String(timeoutMs)}`)
    this.#timeoutMs = timeoutMs
  }

  createJob(job: CreateJob): Promise<JobState> {
    return this.#request('POST', '/v1/jobs', job)
  }

  getJob(id: string): Promise<JobState> {
    return this.#request('GET', `/v1/jobs/${encodeURIComponent(id)}`)
  }

  /**
   * A job's result in full, or null while it has none. A result too large for an event is kept
   * apart by the server (the state has `result: null` and `resultRef`); this returns it either way.
   */
  async getResult(id: string): Promise<unknown> {
    return (await this.#request<JobResult>('GET', `/v1/jobs/${encodeURIComponent(id)}/result`)).result
  }

  /** One page of jobs, newest first; pass `nextCursor` back as `cursor` for the next. `owner` is `tenant` or `tenant:user`. */
  listJobs(filter: ListJobsQuery = {}): Promise<JobPage> {
    const query = new URLSearchParams()
    for (const [key, value] of Object.entries(filter)) if (value !== undefined) query.set(key, String(value))
    return this.#request('GET', `/v1/jobs?${query}`)
  }

  cancelJob(id: string, reason?: string): Promise<JobState> {
    return this.#request('POST', `/v1/jobs/${encodeURIComponent(id)}/cancel`, reason === undefined ? {} : { reason })
  }

  resumeJob(id: string): Promise<JobState> {
    return this.#request('POST', `/v1/jobs/${encodeURIComponent(id)}/resume`, {})
  }

  /** Appends events to a job you run yourself (`dispatch: false`); a batch is atomic. */
  report(id: string, events: ProducerEvent[]): Promise<ReportResult> {
    return this.#request('POST', `/v1/jobs/${encodeURIComponent(id)}/events`, { events })
  }

  /**
   * Says the runner of a job you run yourself (`dispatch: false`) is alive, between reports: its
   * `heartbeatTimeout` starts over (`expiresAt`: when it now falls). A report does the same.
   */
  heartbeat(id: string): Promise<HeartbeatResponse> {
    return this.#request('POST', `/v1/jobs/${encodeURIComponent(id)}/heartbeat`, {})
  }

  /**
   * Appends events to many jobs in one request. Each job's write is atomic and answered on its own,
   * in order: a refused one comes back as a JobwireError in its place while the others stand.
   */
  async reportMany(writes: Pick<JobWrite, 'jobId' | 'events'>[]): Promise<(ReportResult | JobwireError)[]> {
    const { results } = await this.#request<BulkWriteResponse>('POST', '/v1/events', { writes })
    return results.map((result) => ('error' in result ? JobwireError.fromBody(result.error) : result))
  }

  /**
   * Mints a subscription token through the server (which checks the jobs are yours): for `jobIds`,
   * for one `user` of a `tenant`, or `tenantWide` for every job of a `tenant`; `create` lets that
   * user start and resume jobs of those types, `ttl` is in seconds.
   */
  mintToken(scope: MintTokenRequest): Promise<SubscriptionToken> {
    return this.#request('POST', '/v1/tokens', scope)
  }

  /** Creates an API key (needs an admin key). The key itself is in this answer only: store it now. */
  createKey(key: NewApiKey): Promise<CreatedApiKey> {
    return this.#request('POST', '/v1/keys', key)
  }

  /** Every API key, revoked ones included, never their secrets (needs an admin key). */
  listKeys(): Promise<ApiKeyList> {
    return this.#request('GET', '/v1/keys')
  }

  /** Revokes an API key at once: its open streams close on every node (needs an admin key). */
  revokeKey(id: string): Promise<RevokedApiKey> {
    return this.#request('DELETE', `/v1/keys/${encodeURIComponent(id)}`)
  }

  async #request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const signal = AbortSignal.timeout(this.#timeoutMs)
    let response: Response
    let text: string
    try {
      response = await this.#fetch(`${this.#url}${path}`, {
        method,
        headers: { authorization: `Bearer ${this.#key}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal,
      })
      text = await response.text()
    } catch (error) {
      const cause = (error as { cause?: { message?: unknown } }).cause?.message
      const reason = signal.aborted ? `no answer from ${this.#url} within ${this.#timeoutMs} ms` : `cannot reach ${this.#url}: ${typeof cause === 'string' ? cause : (error as Error).message}`
      throw unavailable(reason, error)
    }
    let parsed: unknown = null
    try {
      if (text !== '') parsed = JSON.parse(text)
    } catch (error) {
      throw unavailable(`the answer from ${this.#url} (HTTP ${response.status}) is not JSON: is it a Jobwire server?`, error)
    }
    if (!response.ok) {
      const error = (parsed as Partial<ErrorResponse> | null)?.error
      throw error === undefined ? new JobwireError('internal', { requestId: response.headers.get('x-request-id') ?? '?' }) : JobwireError.fromBody(error)
    }
    return parsed as T
  }
}

/** No usable answer came: `unavailable` (503, retryable) saying why, with what failed as its `cause`. */
function unavailable(reason: string, cause: unknown): JobwireError {
  return Object.assign(new JobwireError('unavailable', { reason }), { cause })
}

/** A new API key: `admin`, `backend` (optionally bound to a tenant) or `worker` (optionally limited to job types). */
export type NewApiKey = CreateApiKeyRequest
/** An API key as the server shows it (never its secret). */
export type ApiKeyInfo = ApiKey
