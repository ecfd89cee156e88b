import { existsSync } from 'node:fs'
import { readdir, readFile } from 'node:fs/promises'
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

describe('the README and docs/', () => {
  const read = (path: string): Promise<string> => readFile(new URL(path, root), 'utf8')

  it('the README stays a door: under 15 KB, the two commands at the top', async () => {
    const readme = await read('README.md')
    expect(Buffer.byteLength(readme)).toBeLessThanOrEqual(15 * 1024)
    const top = readme.split('\n').slice(0, 20)
    expect(top).toContain('npm ci && npx jobwire serve --demo')
    expect(top).toContain('npm ci && npm test')
  })

  it('every relative link (README, docs/, examples, package READMEs) points at a file that exists, and every #anchor at a heading of it', async () => {
    const pages = [
      'README.md',
      'examples/README.md',
      ...(await readdir(new URL('packages/', root))).map((name) => `packages/${name}/README.md`).filter((path) => existsSync(new URL(path, root))),
      ...(await readdir(new URL('docs/', root))).filter((name) => name.endsWith('.md')).map((name) => `docs/${name}`),
    ]
    // GitHub's heading ids: lower case, punctuation dropped, spaces to hyphens.
    const anchorsOf = (text: string): Set<string> =>
      new Set(
        text
          .replace(/```[\s\S]*?```/g, '')
          .split('\n')
          .filter((line) => /^#{1,6} /.test(line))
          .map((line) => line.replace(/^#+ /, '').trim().toLowerCase().replace(/[^\p{L}\p{N} _-]/gu, '').replace(/ /g, '-')),
      )
    const broken: string[] = []
    for (const page of pages) {
      const text = (await read(page)).replace(/```[\s\S]*?```/g, '')
      for (const [, target] of text.matchAll(/\]\(([^)\s]+)\)/g)) {
        if (/^[a-z]+:/.test(target as string)) continue
        const [file, anchor] = (target as string).split('#') as [string, string | undefined]
        const path = file === '' ? page : new URL(file, new URL(page, root)).pathname.slice(new URL(root).pathname.length)
        if (!existsSync(new URL(path, root))) {
          broken.push(`${page}: ${target} (no such file)`)
          continue
        }
        if (anchor !== undefined && path.endsWith('.md') && !anchorsOf(await read(path)).has(anchor)) broken.push(`${page}: ${target} (no such heading)`)
      }
    }
    expect(broken).toEqual([])
  })
})
