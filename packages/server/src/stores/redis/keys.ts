import type { JobStatus } from '@jobwire/protocol'

/**
 * Where the Redis store keeps things. Every name starts with the deployment's prefix, so several
 * deployments (or test runs) share one Redis. A job's own keys carry its id as a hash tag
 * (`{job_…}`), so they share a slot on Redis Cluster; the indexes are global keys.
 *
 *   P:job:{ID}            hash   state (JSON), seq, ver, status, type, ord, avail, lease, exp, inc, owned, tenant, user, idem, timers (JSON), tlen (the text's length), inp (1: the input is kept apart)
 *   P:job:{ID}:log        stream one entry per event, entry id = `<seq>-0`, field `e` = event JSON; trimmed to the cap
 *   P:job:{ID}:values     hash   large values (results, checkpoints) by ref, as JSON; deleted with the job
 *   P:job:{ID}:text       string the job's streamed text (appended to), apart from its state
 *   P:job:{ID}:items      hash   the job's items by their place in its list (0, 1, …), as JSON, apart from its state
 *   P:job:{ID}:input      string a large input, apart from its state (written once)
 *   P:ordinal             string creation counter (FIFO order and list cursors)
 *   P:gen                 string this deployment's generation: a random token; if it vanishes, Redis lost data
 *   P:jobs                zset   every job by ordinal (listJobs)
 *   P:idx:status:S        zset   jobs with status S by ordinal; likewise P:idx:type:T, P:idx:tenant:T, P:idx:user:U
 *   P:queue:T             zset   queued dispatched jobs of type T by ordinal (claims, queue positions)
 *   P:delayed:T           zset   the ones among them in a retry backoff, by availableAt
 *   P:leases              zset   running jobs by lease expiry (lapsed-lease recovery)
 *   P:expiry              zset   finished jobs by the time they may be swept
 *   P:deadlines           zset   unfinished jobs by their earliest deadline (timeout, queue timeout, runner heartbeat, unwatched)
 *   P:idem:K              string job id of idempotency key K
 *
 * Credentials and limits shared by the nodes (credentials.ts):
 *   P:apikey:ID           hash   an API key's record (never the key itself: a hash of its secret)
 *   P:apikeys             zset   every API key id by creation time (ms)
 *   P:revoked             zset   revoked key ids by revocation time (Redis clock, ms)
 *   P:rate:S              string fixed-window hit counter of subject S, expiring with its window
 *   P:streams:nodes       zset   nodes holding stream slots, by the time their lease lapses (Redis clock, ms)
 *   P:streams:node:N      hash   subject → streams open on node N; expires with N's lease
 *
 * Pub/sub channels: P:ch:job:ID (committed events, JSON array), P:ch:queue:T (queue changed),
 * P:ch:owner:["T","U"] (created events of that owner's new jobs), P:ch:probe:NODE (a node's
 * liveness probe of its own subscriber connection), P:ch:revoked (ids of revoked API keys).
 *
 * Some scripts build these names themselves from the prefix (lua/lib/commit.lua a job's keys, its
 * status index, queue, delayed set and channels; sweep.lua and position.lua; pick.lua and due.lua
 * a job key from `jobKeyStart`): a name changed here must change there too.
 */
export class RedisKeys {
  readonly ordinal: string
  readonly generation: string
  readonly jobs: string
  readonly leases: string
  readonly expiry: string
  readonly deadlines: string
  /** What a job's hash key starts with; the id and `}` follow (the scripts build job keys from it). */
  readonly jobKeyStart: string

  constructor(readonly prefix: string) {
    if (!/^[A-Za-z0-9_.:-]{1,100}$/.test(prefix)) {
      throw new Error(`Redis key prefix "${prefix}" must be 1-100 letters, digits or _ . : - (no braces: they are hash tags)`)
    }
    this.ordinal = `${prefix}:ordinal`
    this.generation = `${prefix}:gen`
    this.jobs = `${prefix}:jobs`
    this.leases = `${prefix}:leases`
    this.expiry = `${prefix}:expiry`
    this.deadlines = `${prefix}:deadlines`
    this.jobKeyStart = `${prefix}:job:{`
  }

  job(id: string): string {
    return `${this.jobKeyStart}${id}}`
  }

  log(id: string): string {
    return `${this.jobKeyStart}${id}}:log`
  }

  /** A job's streamed text (appended to by each commit with chunks), apart from its state. */
  text(id: string): string {
    return `${this.jobKeyStart}${id}}:text`
  }

  /** A job's items (per-item progress) by their place in its list, as JSON: a commit rewrites just the items it changed. */
  items(id: string): string {
    return `${this.jobKeyStart}${id}}:items`
  }

  /** A job's input when it is kept apart from its state (core.inputKeptApart): written once, at its creation. */
  input(id: string): string {
    return `${this.jobKeyStart}${id}}:input`
  }

  values(id: string): string {
    return `${this.jobKeyStart}${id}}:values`
  }

  status(status: JobStatus): string {
    return `${this.prefix}:idx:status:${status}`
  }

  type(type: string): string {
    return `${this.prefix}:idx:type:${type}`
  }

  tenant(tenant: string): string {
    return `${this.prefix}:idx:tenant:${tenant}`
  }

  user(user: string): string {
    return `${this.prefix}:idx:user:${user}`
  }

  queue(type: string): string {
    return `${this.prefix}:queue:${type}`
  }

  delayed(type: string): string {
    return `${this.prefix}:delayed:${type}`
  }

  idempotency(key: string): string {
    return `${this.prefix}:idem:${key}`
  }

  jobChannel(id: string): string {
    return `${this.prefix}:ch:job:${id}`
  }

  queueChannel(type: string): string {
    return `${this.prefix}:ch:queue:${type}`
  }

  /** New jobs of one owner (the WebSocket "all my jobs" feed). JSON keeps `a:b`/`c` apart from `a`/`b:c`. */
  ownerChannel(tenant: string, user: string): string {
    return `${this.prefix}:ch:owner:${JSON.stringify([tenant, user])}`
  }

  probeChannel(node: string): string {
    return `${this.prefix}:ch:probe:${node}`
  }

  apiKey(id: string): string {
    return `${this.prefix}:apikey:${id}`
  }

  get apiKeys(): string {
    return `${this.prefix}:apikeys`
  }

  get revoked(): string {
    return `${this.prefix}:revoked`
  }

  get revokedChannel(): string {
    return `${this.prefix}:ch:revoked`
  }

  rate(subject: string): string {
    return `${this.prefix}:rate:${subject}`
  }

  get streamNodes(): string {
    return `${this.prefix}:streams:nodes`
  }

  /** The stream-slot hash of `node`; the scripts build other nodes' names from `streamNode('')`. */
  streamNode(node: string): string {
    return `${this.prefix}:streams:node:${node}`
  }

  /** A SCAN pattern matching every key of this prefix (tests, and the cleanup command in docs/scaling-redis.md). */
  get pattern(): string {
    return `${this.prefix.replace(/[*?[\]\\]/g, '\\$&')}:*`
  }
}
