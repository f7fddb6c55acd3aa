// Test assertions on node:assert (JSR, and so @std/assert, is unreachable).
import { deepStrictEqual, ok } from "node:assert/strict";

export function assertEquals<T>(actual: T, expected: T, msg?: string): void {
  deepStrictEqual(actual, expected, msg);
}

/** fn() throws an instance of cls whose message includes `includes`. */
export function assertThrows(
  fn: () => unknown,
  cls: abstract new (...a: never[]) => Error = Error,
  includes = "",
): Error {
  try {
    fn();
  } catch (e) {
    ok(e instanceof cls, `expected ${cls.name}, got ${e}`);
    ok((e as Error).message.includes(includes), `"${(e as Error).message}" lacks "${includes}"`);
    return e as Error;
  }
  throw new Error("expected an exception");
}

/** The promise rejects with an Error whose message includes `includes`. */
export async function assertRejects(
  fn: () => Promise<unknown>,
  includes = "",
): Promise<Error> {
  try {
    await fn();
  } catch (e) {
    ok(e instanceof Error, `expected an Error, got ${e}`);
    ok(e.message.includes(includes), `"${e.message}" lacks "${includes}"`);
    return e;
  }
  throw new Error("expected a rejection");
}
