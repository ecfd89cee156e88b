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
