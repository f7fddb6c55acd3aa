// errno values turned into DenError: the operation, the path, the errno.

import { DenError, type DenErrorOptions } from "../error.ts";
import { ERRNO_NAMES } from "./constants.ts";
import { libc, readCString } from "./libc.ts";

/** "No such file or directory" for 2. */
export function strerror(code: number): string {
  return readCString(libc().strerror(code)) ?? `errno ${code}`;
}

/** A DenError for a failed call: `op: strerror (ENAME)`. */
export function errnoError(
  op: string,
  code: number,
  options: DenErrorOptions = {},
): DenError {
  return new DenError(op, strerror(code), {
    code: ERRNO_NAMES[code] ?? `errno ${code}`,
    ...options,
  });
}
