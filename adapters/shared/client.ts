/**
 * Driver clients are recognised by shape, as drizzle-orm does with its entity kinds:
 * `instanceof` fails across two copies of a driver, and adapters never import one.
 */

/**
 * Whether `value` is an object or function with each of `methods` as a function.
 *
 * @param value What the caller passed as a client or transaction.
 * @param methods The methods the adapter calls on it.
 */
export function hasMethods(value: unknown, ...methods: string[]): boolean {
  if ((typeof value !== "object" && typeof value !== "function") || value === null) return false;
  const record = value as Record<string, unknown>;
  return methods.every((m) => typeof record[m] === "function");
}
