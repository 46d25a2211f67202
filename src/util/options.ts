/**
 * `defaults` with every key of `options` laid over it, except keys whose value is `undefined`.
 * A plain `{ ...defaults, ...options }` lets an absent CLI flag (passed on as `undefined`)
 * overwrite its default.
 */
export function withDefaults<T extends object>(
  defaults: T,
  options: { [K in keyof T]?: T[K] | undefined } = {},
): T {
  const merged = { ...defaults };
  for (const [key, value] of Object.entries(options)) {
    if (value !== undefined) (merged as Record<string, unknown>)[key] = value;
  }
  return merged;
}

/** `options` without its `undefined` values, for spreading over defaults. */
export function definedOnly<T extends object>(options: T): Partial<T> {
  return Object.fromEntries(Object.entries(options).filter(([, value]) => value !== undefined)) as Partial<T>;
}
