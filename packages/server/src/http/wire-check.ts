import type { z } from 'zod'

/*
 * Compile-time checks that a zod schema describes exactly a wire type of @jobwire/protocol
 * (packages/protocol/src/rest.ts and the job and event types): the request schemas the routes
 * parse with (schemas.ts) and the response schemas of the OpenAPI document (openapi.ts). A field
 * added, dropped, renamed, made optional or given another type on one side and not the other
 * fails `npm run typecheck`. Nothing of this runs: `wire` returns the schema it is given.
 */

/** T with intersections merged and `readonly` dropped at every depth, so that equal shapes compare equal. */
type Flat<T> = T extends (...args: never[]) => unknown
  ? T
  : T extends readonly (infer E)[]
    ? Flat<E>[]
    : T extends object
      ? { -readonly [K in keyof T]: Flat<T[K]> }
      : T

/**
 * True when A and B are the same type: the same fields, each as optional and of the same type at
 * every depth. Stricter than assigning both ways, which lets an optional field be missing on
 * either side and `any` pass for anything.
 */
export type Same<A, B> = (<G>() => G extends Flat<A> ? 1 : 2) extends <G>() => G extends Flat<B> ? 1 : 2 ? true : false

declare const checkedAgainst: unique symbol
/** A schema whose type the compiler has compared with its wire type. */
export type Checked<S extends z.ZodType = z.ZodType> = S & { readonly [checkedAgainst]: 'wire type' }

/**
 * `wire<T>()(schema)`: `schema`, once the compiler has checked that what it accepts (its input
 * type; the same as its output for the response schemas) is exactly `T`. On a mismatch the call
 * fails to compile, asking for an argument named `schema_differs_from_the_wire_type`.
 */
export function wire<T>() {
  return <S extends z.ZodType>(schema: S, ..._mismatch: Same<z.input<S>, T> extends true ? [] : [schema_differs_from_the_wire_type: never]): Checked<S> =>
    schema as Checked<S>
}

/** Fails to compile unless `T` is `true`: `agrees<Same<A, B>>()` for checks `wire` cannot express. */
export function agrees<T extends true>(): T | undefined {
  return undefined
}
