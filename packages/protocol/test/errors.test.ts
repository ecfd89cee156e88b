import { readFileSync } from 'node:fs'
import { describe, expect, it } from 'vitest'
import {
  errorCodes,
  errorRegistry,
  formatErrorMessage,
  isErrorCode,
  JobwireError,
  type ErrorBody,
  type ErrorCode,
} from '@jobwire/protocol'

/** The `{name}` placeholders of a code's template. */
function placeholders(code: ErrorCode): string[] {
  return [...errorRegistry[code].message.matchAll(/\{(\w+)\}/g)].map((match) => match[1] as string)
}

describe('error registry', () => {
  it('errorCodes lists exactly the registry keys', () => {
    expect([...errorCodes].sort()).toEqual(Object.keys(errorRegistry).sort())
  })

  it.each(errorCodes)('%s has a 4xx or 5xx status, a retryable flag and a message', (code) => {
    const entry = errorRegistry[code]
    expect(Number.isInteger(entry.status)).toBe(true)
    expect(entry.status).toBeGreaterThanOrEqual(400)
    expect(entry.status).toBeLessThan(600)
    expect(typeof entry.retryable).toBe('boolean')
    expect(entry.message.trim()).not.toBe('')
    expect(code).toMatch(/^[a-z]+(_[a-z]+)*$/)
  })

  it('every 5xx error is marked retryable', () => {
    for (const code of errorCodes) {
      if (errorRegistry[code].status >= 500) expect(errorRegistry[code].retryable, code).toBe(true)
    }
  })

  it('isErrorCode accepts every registered code and nothing else', () => {
    for (const code of errorCodes) expect(isErrorCode(code)).toBe(true)
    for (const value of ['', 'JOB_NOT_FOUND', 'nope', 404, null, undefined, {}]) expect(isErrorCode(value)).toBe(false)
  })

  it('isErrorCode refuses names inherited from Object.prototype', () => {
    for (const name of ['constructor', 'toString', 'hasOwnProperty', '__proto__', 'valueOf']) {
      expect(isErrorCode(name), name).toBe(false)
    }
  })
})

describe('docs/errors.md table', () => {
  const section = readFileSync(new URL('../../../docs/errors.md', import.meta.url), 'utf8')
  const rows = new Map(
    [...section.matchAll(/^\| `(\w+)` \| (\d{3}) \| (yes|no) \|/gm)].map((m) => [m[1], { status: Number(m[2]), retryable: m[3] === 'yes' }]),
  )

  it.each(errorCodes)('lists %s with its registered status and retryable flag', (code) => {
    expect(rows.get(code)).toEqual({ status: errorRegistry[code].status, retryable: errorRegistry[code].retryable })
  })

  it('lists no code the registry does not have', () => {
    expect([...rows.keys()].filter((code) => !isErrorCode(code))).toEqual([])
  })
})

describe('formatErrorMessage', () => {
  it('fills each placeholder from details', () => {
    expect(formatErrorMessage('job_not_found', { jobId: 'job_x' })).toBe('Job job_x does not exist')
    expect(formatErrorMessage('position_ahead', { position: 12, seq: 9, jobId: 'job_y' })).toBe(
      'Position 12 is beyond the last event (9) of job job_y',
    )
    expect(formatErrorMessage('event_too_large', { index: 0, size: 70000, limit: 65536 })).toBe(
      'Event 0 is 70000 bytes; the limit is 65536',
    )
  })

  it.each(errorCodes)('%s: given every detail it names, leaves no placeholder behind', (code) => {
    const details = Object.fromEntries(placeholders(code).map((name) => [name, `<${name}>`]))
    const message = formatErrorMessage(code, details)
    expect(message).not.toMatch(/\{\w+\}/)
    for (const name of placeholders(code)) expect(message).toContain(`<${name}>`)
  })

  it('leaves a placeholder as it is when details lack it', () => {
    expect(formatErrorMessage('job_not_found')).toBe('Job {jobId} does not exist')
    expect(formatErrorMessage('job_finished', { jobId: 'job_z' })).toBe('Job job_z is {status}; it takes no more events')
  })

  it('ignores details the template does not name', () => {
    expect(formatErrorMessage('malformed_json', { extra: 1 })).toBe('The request body is not valid JSON')
  })

  it('renders falsy detail values rather than dropping them', () => {
    expect(formatErrorMessage('event_too_large', { index: 0, size: 0, limit: 0 })).toBe('Event 0 is 0 bytes; the limit is 0')
    expect(formatErrorMessage('invalid_request', { reason: '' })).toBe('The request is invalid: ')
  })
})

describe('JobwireError', () => {
  it('carries code, registered status, retryable, details and the formatted message', () => {
    const error = new JobwireError('job_finished', { jobId: 'job_a', status: 'completed' })
    expect(error).toBeInstanceOf(Error)
    expect(error.name).toBe('JobwireError')
    expect(error.code).toBe('job_finished')
    expect(error.status).toBe(409)
    expect(error.retryable).toBe(false)
    expect(error.details).toEqual({ jobId: 'job_a', status: 'completed' })
    expect(error.message).toBe('Job job_a is completed; it takes no more events')
  })

  it('keeps an explicit message instead of the template', () => {
    expect(new JobwireError('internal', { requestId: 'r1' }, 'custom').message).toBe('custom')
  })

  it.each(errorCodes)('%s: status and retryable come from the registry', (code) => {
    const error = new JobwireError(code)
    expect(error.status).toBe(errorRegistry[code].status)
    expect(error.retryable).toBe(errorRegistry[code].retryable)
  })

  it('toBody omits details when there are none', () => {
    const body = new JobwireError('malformed_json').toBody()
    expect(body).toEqual({ code: 'malformed_json', message: 'The request body is not valid JSON' })
    expect('details' in body).toBe(false)
  })

  it('toBody then fromBody, through JSON, gives back an equal error', () => {
    for (const code of errorCodes) {
      const details = Object.fromEntries(placeholders(code).map((name, i) => [name, i % 2 === 0 ? `v${i}` : i]))
      const original = new JobwireError(code, details)
      const wire = JSON.parse(JSON.stringify(original.toBody())) as ErrorBody
      const back = JobwireError.fromBody(wire)
      expect(back).toBeInstanceOf(JobwireError)
      expect({ code: back.code, status: back.status, retryable: back.retryable, message: back.message, details: back.details }).toEqual({
        code: original.code,
        status: original.status,
        retryable: original.retryable,
        message: original.message,
        details: original.details,
      })
      expect(back.toBody()).toEqual(original.toBody())
    }
  })

  it('fromBody keeps the server message rather than re-rendering the template', () => {
    const back = JobwireError.fromBody({ code: 'unavailable', message: 'draining for deploy', details: { reason: 'x' } })
    expect(back.message).toBe('draining for deploy')
    expect(back.details).toEqual({ reason: 'x' })
  })

  it('fromBody turns a code this client does not know into internal, keeping the message', () => {
    const back = JobwireError.fromBody({ code: 'added_in_v2' as ErrorCode, message: 'from the future' })
    expect(back.code).toBe('internal')
    expect(back.status).toBe(500)
    expect(back.message).toBe('from the future')
  })

  it('fromBody turns a code named after an Object.prototype member into internal instead of throwing', () => {
    // Regression: `code in errorRegistry` matched inherited names, so "constructor" crashed the constructor.
    for (const name of ['constructor', 'toString', '__proto__']) {
      const back = JobwireError.fromBody({ code: name as ErrorCode, message: 'odd' })
      expect(back.code, name).toBe('internal')
      expect(back.status, name).toBe(500)
    }
  })
})
