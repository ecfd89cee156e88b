/** docs/configuration.md as `npm run docs` writes it. */
export function renderConfiguration(): string
/** docs/errors.md as `npm run docs` writes it. */
export function renderErrors(): string
/** Each generated page (path from the repository root) and what renders it. */
export const generatedPages: Record<string, () => string>
