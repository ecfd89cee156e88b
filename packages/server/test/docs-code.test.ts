/**
 * The TypeScript in the docs compiles: every ```ts and ```tsx block of README.md and docs/*.md is
 * type-checked (strict) against the packages' published types (`dist`, as a user installing them
 * gets; `tsc -b` must have run, as `npm test` does first). A block may assume names it does not
 * define — a component, the id it was given — by declaring them in an HTML comment right before it,
 * `<!-- docs-check: declare const jobId: string -->`, which readers do not see. A block that is a
 * fragment (not a program) is marked ```ts fragment and skipped; keep those few.
 */
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import ts from 'typescript'
import { describe, expect, it } from 'vitest'

const root = fileURLToPath(new URL('../../../', import.meta.url))
const pages = ['README.md', ...readdirSync(join(root, 'docs')).filter((name) => name.endsWith('.md')).map((name) => `docs/${name}`)]

interface Block {
  page: string
  /** 1-based line of the block's first code line in its page. */
  line: number
  extension: 'ts' | 'tsx'
  prelude: string
  code: string
  fragment: boolean
}

function blocksOf(page: string): Block[] {
  const lines = readFileSync(join(root, page), 'utf8').split('\n')
  const blocks: Block[] = []
  for (let i = 0; i < lines.length; i++) {
    const open = /^```(ts|tsx)(?:\s+(\S.*))?$/.exec(lines[i] as string)
    if (open === null) continue
    const end = lines.findIndex((text, index) => index > i && text === '```')
    if (end === -1) throw new Error(`${page}:${i + 1}: a code block that never closes`)
    const comment = /^<!-- docs-check: ([\s\S]*?) -->$/.exec((lines[i - 1] ?? '').trim())
    blocks.push({
      page,
      line: i + 2,
      extension: open[1] as 'ts' | 'tsx',
      prelude: comment?.[1] ?? '',
      code: lines.slice(i + 1, end).join('\n'),
      fragment: open[2] === 'fragment',
    })
    i = end
  }
  return blocks
}

const blocks = pages.flatMap(blocksOf)
const checked = blocks.filter((block) => !block.fragment)

/** Type-checks every block as its own module, in one program; returns the problems by block. */
function typeCheck(): string[] {
  const files = new Map<string, Block>()
  for (const block of checked) {
    files.set(join(root, 'docs', `.docs-check-${block.page.replace(/\W/g, '-')}-${block.line}.${block.extension}`), block)
  }
  const sourceOf = (block: Block): string => `${block.prelude}\n${block.code}\n`
  const options: ts.CompilerOptions = {
    strict: true,
    noUncheckedIndexedAccess: true,
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    moduleDetection: ts.ModuleDetectionKind.Force,
    jsx: ts.JsxEmit.ReactJSX,
    lib: ['lib.es2022.d.ts', 'lib.dom.d.ts', 'lib.dom.iterable.d.ts'],
    types: ['node'],
    esModuleInterop: true,
    skipLibCheck: true,
    noEmit: true,
  }
  const host = ts.createCompilerHost(options)
  const { getSourceFile, fileExists, readFile } = host
  host.fileExists = (name) => files.has(name) || fileExists.call(host, name)
  host.readFile = (name) => {
    const block = files.get(name)
    return block === undefined ? readFile.call(host, name) : sourceOf(block)
  }
  host.getSourceFile = (name, language, ...rest) => {
    const block = files.get(name)
    return block === undefined ? getSourceFile.call(host, name, language, ...rest) : ts.createSourceFile(name, sourceOf(block), language, true)
  }
  const program = ts.createProgram([...files.keys()], options, host)
  const problems: string[] = []
  for (const diagnostic of ts.getPreEmitDiagnostics(program)) {
    const block = diagnostic.file === undefined ? undefined : files.get(diagnostic.file.fileName)
    const text = ts.flattenDiagnosticMessageText(diagnostic.messageText, '\n')
    if (block === undefined || diagnostic.file === undefined || diagnostic.start === undefined) {
      problems.push(text)
      continue
    }
    const { line } = diagnostic.file.getLineAndCharacterOfPosition(diagnostic.start)
    const preludeLines = block.prelude.split('\n').length
    const where = line < preludeLines ? `${block.page}:${block.line - 1} (its docs-check comment)` : `${block.page}:${block.line + line - preludeLines}`
    problems.push(`${where}: ${text}`)
  }
  return problems
}

describe('code in the docs', () => {
  it('finds the TypeScript blocks of the README and the docs pages, and skips only a few fragments', () => {
    expect(checked.length).toBeGreaterThanOrEqual(8)
    expect(blocks.filter((block) => block.fragment).map((block) => `${block.page}:${block.line}`).length).toBeLessThanOrEqual(2)
  })

  it('type-checks every block (strict) against the published types of the packages', () => {
    expect(typeCheck()).toEqual([])
  })
})
