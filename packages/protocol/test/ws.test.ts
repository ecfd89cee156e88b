import { describe, expect, it } from 'vitest'
import { closeCodeOf, decodeWsFrame, encodeWsFrame, errorCodeOfClose, errorCodes, wsCloseCodes, type WsServerMessage } from '../src/index.js'

describe('WebSocket framing', () => {
  it('round-trips several messages in one frame, text with newlines included', () => {
    const messages: WsServerMessage[] = [
      { type: 'heartbeat' },
      { type: 'event', event: { jobId: 'j', seq: 2, type: 'chunk', at: '2026-01-01T00:00:00.000Z', data: { text: 'two\nlines\r\n' } } },
      { type: 'error', error: { code: 'job_not_found', message: 'Job j does not exist' }, jobId: 'j' },
    ]
    const frame = encodeWsFrame(messages)
    expect(frame.split('\n')).toHaveLength(3)
    expect(decodeWsFrame(frame)).toEqual(messages)
  })

  it('maps every registry code to a close code and back', () => {
    for (const code of errorCodes) {
      const close = closeCodeOf(code)
      expect(errorCodeOfClose(close, code)).toBe(code)
      expect(close === wsCloseCodes.messageTooBig || (close >= 4000 && close < 5000)).toBe(true)
    }
    expect(closeCodeOf('token_expired')).toBe(4401)
    expect(closeCodeOf('slow_consumer')).toBe(4503)
    expect(errorCodeOfClose(1006, '')).toBeNull()
    expect(errorCodeOfClose(4401, 'not-a-code')).toBeNull()
  })
})
