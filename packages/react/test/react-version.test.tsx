// @vitest-environment happy-dom
import { version } from 'react'
import { version as reactDomVersion } from 'react-dom'
import { cleanup, render, screen } from '@testing-library/react'
import { afterEach, expect, inject, it } from 'vitest'
import { createJobwireClient, useJob } from '@jobwire/react'

afterEach(cleanup)

it('runs our hooks on the React major its vitest project names, the one react-dom and @testing-library/react render with', () => {
  const major = inject('reactMajor')
  expect(version).toMatch(new RegExp(`^${major}\\.`))
  expect(reactDomVersion).toMatch(new RegExp(`^${major}\\.`))
  // A hook from our sources runs only if the react-dom that rendered it drives that very React.
  const client = createJobwireClient({ url: 'http://127.0.0.1:9', getToken: () => 'unused' })
  function Version() {
    return <p data-testid="version">{`${useJob(null, { client }).status} on ${version}`}</p>
  }
  render(<Version />)
  expect(screen.getByTestId('version').textContent).toMatch(new RegExp(`^idle on ${major}\\.`))
  client.close()
})
