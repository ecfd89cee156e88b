/**
 * A value of a table keyed by names a request brings (job types, tenants, tiers): the table's own
 * entry or nothing. A plain object also "has" `constructor`, `toString`, `__proto__`, … from
 * Object.prototype, and those are valid job types and tenant names: looked up with `table[name]`,
 * a job of type `constructor` got a function for its stage plan, attempts and create limit.
 */
export function byName<T>(table: Readonly<Record<string, T>> | undefined, name: string): T | undefined {
  return table !== undefined && Object.hasOwn(table, name) ? table[name] : undefined
}
