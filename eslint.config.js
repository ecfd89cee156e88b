import js from '@eslint/js'
import tseslint from 'typescript-eslint'
import globals from 'globals'

export default tseslint.config(
  { ignores: ['**/dist/**', '**/node_modules/**', 'test-output/**', 'bench/results/**', 'packages/server/public/dashboard/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/consistent-type-imports': 'error',
      'no-console': 'off',
    },
  },
  {
    // The server imports no SDK: only its demo and CLI are clients of it (docs/architecture.md).
    files: ['packages/server/src/**/*.ts'],
    ignores: ['packages/server/src/cli/**', 'packages/server/src/demo/**'],
    rules: {
      'no-restricted-imports': [
        'error',
        { patterns: [{ group: ['@jobwire/backend', '@jobwire/client', '@jobwire/react', '@jobwire/worker'], message: 'only the CLI (src/cli) and the demo (src/demo) use the SDKs' }] },
      ],
    },
  },
  {
    files: ['**/*.js', '**/*.mjs', '**/*.cjs'],
    languageOptions: { globals: globals.node },
  },
)
