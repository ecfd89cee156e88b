import type { EventDraft } from '@jobwire/protocol'

/** One step of a simulated job: what to append, then how long to wait. */
export interface DemoStep {
  events: EventDraft[]
  pauseMs: number
}

export const demoTypes = ['analysis', 'transcription', 'suggestion', 'agent'] as const
export type DemoType = (typeof demoTypes)[number]

const progress = (stage: string, percent: number, message: string): EventDraft => ({ type: 'progress', data: { stage, percent, message } })

/** Audio pipeline: stages with percentage ranges and per-file progress, results in the completion. */
function* transcription(): Generator<DemoStep> {
  const files = ['interview.mp3', 'intro.wav', 'outro.m4a']
  yield { events: [progress('validating', 0, `Checking ${files.length} files`)], pauseMs: 400 }
  yield { events: [progress('validating', 10, 'All files readable')], pauseMs: 300 }
  yield { events: files.map((label, i) => ({ type: 'item', data: { id: `file-${i + 1}`, label, status: 'pending', percent: 0 } })), pauseMs: 300 }
  const stages: [string, number, number][] = [['decoding', 10, 20], ['transcribing', 20, 70], ['synthesizing', 70, 99]]
  for (const [stage, from, to] of stages) {
    for (let step = 0; step <= 6; step++) {
      const percent = Math.round(from + ((to - from) * step) / 6)
      const fileIndex = Math.min(files.length - 1, Math.floor((step / 7) * files.length))
      const events: EventDraft[] = [progress(stage, percent, `${stage[0]?.toUpperCase()}${stage.slice(1)} ${files[fileIndex]}…`)]
      if (stage === 'transcribing') {
        events.push({
          type: 'item',
          data: { id: `file-${fileIndex + 1}`, status: 'running', percent: Math.min(100, Math.round(((step % 3) + 1) * 33.4)) },
        })
        if (step % 3 === 2) events.push({ type: 'item', data: { id: `file-${fileIndex + 1}`, status: 'completed', percent: 100 } })
      }
      yield { events, pauseMs: 350 }
    }
  }
  yield { events: files.map((_, i) => ({ type: 'item', data: { id: `file-${i + 1}`, status: 'completed', percent: 100 } })), pauseMs: 200 }
  yield {
    events: [{ type: 'completed', data: { result: { files: files.map((name) => ({ name, words: 400 + name.length * 37, url: `/files/${name}.txt` })) } } }],
    pauseMs: 0,
  }
}

/** AI suggestions: token deltas at about 50 tokens/s, then a structured result. */
function* suggestion(): Generator<DemoStep> {
  const text =
    'Here are three ideas for your release notes:\n1. Lead with the new offline mode: it is what users asked for most.\n' +
    '2. Show the faster start-up with one number, not a chart.\n3. Close with the migration steps, linked, in two lines.'
  yield { events: [progress('thinking', 5, 'Reading your draft')], pauseMs: 700 }
  const tokens = text.match(/\S+\s*/g) ?? []
  for (const token of tokens) yield { events: [{ type: 'chunk', data: { text: token } }], pauseMs: 20 }
  yield { events: [{ type: 'completed', data: { result: { suggestions: 3, model: 'demo-1' } } }], pauseMs: 0 }
}

/** A document analysis: weighted stages, each with its own share of the bar. */
function* analysis(): Generator<DemoStep> {
  const stages: [string, number, number, string][] = [
    ['parsing', 0, 15, 'Parsing 42 pages'],
    ['extracting', 15, 55, 'Extracting entities'],
    ['scoring', 55, 90, 'Scoring clauses'],
    ['summarizing', 90, 100, 'Writing the summary'],
  ]
  for (const [stage, from, to, message] of stages) {
    for (let step = 0; step < 5; step++) {
      yield { events: [progress(stage, Math.round(from + ((to - from) * step) / 5), message)], pauseMs: 250 }
    }
  }
  yield { events: [{ type: 'completed', data: { result: { risk: 'low', clauses: 37, flagged: 2 } } }], pauseMs: 0 }
}

/** An agent: steps that stream text and checkpoint after each one. */
function* agent(): Generator<DemoStep> {
  const steps = ['Plan the research', 'Search the docs', 'Read 4 pages', 'Draft the answer', 'Check the sources']
  for (const [index, step] of steps.entries()) {
    yield { events: [progress(step, Math.round((index / steps.length) * 100), `Step ${index + 1} of ${steps.length}`)], pauseMs: 400 }
    for (const word of `${step}: done, nothing surprising found.\n`.match(/\S+\s*/g) ?? []) {
      yield { events: [{ type: 'chunk', data: { text: word } }], pauseMs: 120 }
    }
    yield { events: [{ type: 'checkpoint', data: { data: { step: index + 1 } } }], pauseMs: 300 }
  }
  yield { events: [{ type: 'completed', data: { result: { answer: 'The docs agree.', sources: 4 } } }], pauseMs: 0 }
}

export function scenario(type: DemoType): Generator<DemoStep> {
  switch (type) {
    case 'transcription':
      return transcription()
    case 'analysis':
      return analysis()
    case 'suggestion':
      return suggestion()
    case 'agent':
      return agent()
  }
}
