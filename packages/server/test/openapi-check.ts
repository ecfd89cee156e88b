/**
 * Checks HTTP answers against the server's OpenAPI document (GET /v1/openapi.json), so the
 * document cannot drift from what the server does: the tests' HTTP helpers (fixtures.ts's JSON
 * client and SSE opener, http.test.ts's inject) pass every answer they get through it.
 */
import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js'
import { openApiDocument } from '../src/http/openapi.js'

const document = openApiDocument() as {
  paths: Record<string, Record<string, { responses: Record<string, { content?: Record<string, unknown> }> }>>
}
const ajv = new Ajv2020({ strict: true, allErrors: true })
// The document's own fields are not JSON Schema keywords; the schemas inside it are checked strictly.
ajv.addVocabulary(Object.keys(document))
ajv.addSchema(document, 'openapi')

const routes = Object.keys(document.paths).map((template) => ({
  template,
  pattern: new RegExp(`^${template.replace(/\{[^}]+\}/g, '[^/]+')}$`),
}))

const pointer = (...parts: string[]): string => `openapi#/${parts.map((part) => part.replace(/~/g, '~0').replace(/\//g, '~1')).join('/')}`
const validators = new Map<string, ValidateFunction>()
function validatorAt(ref: string): ValidateFunction {
  let validate = validators.get(ref)
  if (validate === undefined) {
    validate = ajv.getSchema(ref)
    if (validate === undefined) throw new Error(`no schema at ${ref}`)
    validators.set(ref, validate)
  }
  return validate
}

export interface CheckedAnswer {
  method: string
  /** The request path, with or without its query string. */
  url: string
  status: number
  contentType: string | undefined
  /** The parsed JSON body (null for an empty one); ignored for other content types. */
  body: unknown
}

/**
 * Throws unless the answer is one the document describes: a documented route, method and status
 * (or its `default`), the documented content type, and a JSON body that matches its schema. Paths
 * outside the API (the dashboard, /demo) are not checked; a request to an undocumented path under
 * /v1, or with an undocumented method, must be refused with a registry error.
 */
export function expectDocumentedAnswer(answer: CheckedAnswer): void {
  const method = answer.method.toLowerCase()
  const path = answer.url.split('?')[0] as string
  if (method === 'options' || method === 'head') return
  const where = `${answer.method} ${path} → ${answer.status}`
  const route = routes.find((candidate) => candidate.pattern.test(path))
  const operation = route === undefined ? undefined : document.paths[route.template]?.[method]
  if (route === undefined || operation === undefined) {
    if (!path.startsWith('/v1/') && route === undefined) return
    if (answer.status < 400) throw new Error(`${where}: not in the OpenAPI document`)
    validateJson(where, pointer('components', 'schemas', 'ErrorResponse'), answer.body)
    return
  }
  const status = String(answer.status)
  const key = status in operation.responses ? status : 'default' in operation.responses && answer.status >= 400 ? 'default' : undefined
  if (key === undefined) throw new Error(`${where}: the OpenAPI document has no ${status} answer for this operation`)
  const content = operation.responses[key]?.content
  if (content === undefined) {
    if (answer.body !== null && answer.body !== '' && answer.body !== undefined) throw new Error(`${where}: documented without a body, but one came`)
    return
  }
  const type = (answer.contentType ?? '').split(';')[0]?.trim() ?? ''
  if (!(type in content)) throw new Error(`${where}: content type "${type}" is not documented (${Object.keys(content).join(', ')})`)
  if (type === 'application/json') validateJson(where, pointer('paths', route.template, method, 'responses', key, 'content', type, 'schema'), answer.body)
}

function validateJson(where: string, ref: string, body: unknown): void {
  const validate = validatorAt(ref)
  if (!validate(body)) {
    throw new Error(`${where}: the answer does not match the OpenAPI document: ${ajv.errorsText(validate.errors)}\n${JSON.stringify(body).slice(0, 2000)}`)
  }
}
