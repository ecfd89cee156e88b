import { readFile } from 'node:fs/promises'
import { describe, expect, it } from 'vitest'
import { errorCodes, errorMeanings } from '@jobwire/protocol'
import { describeConfig } from '@jobwire/server'
import { generatedPages } from '../../../scripts/gen-docs.mjs'

const root = new URL('../../../', import.meta.url)

describe('generated docs', () => {
  it.each(Object.keys(generatedPages))('%s is what `npm run docs` writes from the code (run it after changing the source)', async (path) => {
    const render = generatedPages[path] as () => string
    expect(await readFile(new URL(path, root), 'utf8')).toBe(render())
  })

  it('every config option has a description in the schema', () => {
    expect(describeConfig().filter((option) => option.description.trim() === '').map((option) => option.key)).toEqual([])
  })

  it('every error code has a meaning beside the registry', () => {
    expect(errorCodes.filter((code) => (errorMeanings[code] ?? '').trim() === '')).toEqual([])
  })
})
