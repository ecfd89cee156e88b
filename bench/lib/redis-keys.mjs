import { Redis } from 'ioredis'

/** Deletes every key under `prefix` (a bench run's own), so runs leave nothing behind in a shared Redis. */
export async function unlinkPrefix(redisUrl, prefix) {
  const redis = new Redis(redisUrl)
  let cursor = '0'
  do {
    const [nextCursor, keys] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000)
    cursor = nextCursor
    if (keys.length > 0) await redis.unlink(...keys)
  } while (cursor !== '0')
  redis.disconnect()
}

/**
 * Redis's own CPU time so far, in µs (user + system, all its threads, from INFO cpu): over a phase,
 * what the Redis shared by a fleet spent on it, which no client process's CPU shows.
 */
export async function redisCpuUs(redis) {
  const info = await redis.info('cpu')
  const field = (name) => Number(new RegExp(`^${name}:([\\d.]+)`, 'm').exec(info)?.[1] ?? 0)
  return (field('used_cpu_user') + field('used_cpu_sys')) * 1e6
}

/** Redis's per-command call counts so far (INFO commandstats) and the bytes it read and wrote: `{ evalsha: 43091, …, 'input bytes': … }`. */
export async function redisCommandCalls(redis) {
  const info = await redis.info('commandstats')
  const calls = {}
  for (const [, name, count] of info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) calls[name] = Number(count)
  const stats = await redis.info('stats')
  for (const [, name, count] of stats.matchAll(/^total_net_(input|output)_bytes:(\d+)/gm)) calls[`${name} bytes`] = Number(count)
  return calls
}
