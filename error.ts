/** Exit codes, as in current Charliecloud's ch-run so job scripts can tell failures apart. */
export const EXIT_USAGE = 64;
/** den itself failed (setup, mount, unpack). */
export const EXIT_FAILURE = 31;
/** The command could not be started (not found, not executable). */
export const EXIT_CMD = 49;

export interface DenErrorOptions extends ErrorOptions {
  /** The path the user typed or will recognise. */
  path?: string;
  /** errno name, "EPERM": the field name Deno.errors.* use. */
  code?: string;
  /** One line of advice, printed on its own line. */
  hint?: string;
  /** Process exit status when this error ends den (default 31). */
  exitCode?: number;
}

/**
 * The one error type of den: an operation, what it acted on and why it failed.
 *
 * @example
 * ```ts
 * import { DenError } from "./error.ts";
 * const e = new DenError("mount", "Operation not permitted", { path: "/scratch", code: "EPERM" });
 * console.assert(e.message === "mount /scratch: Operation not permitted (EPERM)");
 * ```
 */
export class DenError extends Error {
  override name = "DenError";
  constructor(
    readonly op: string,
    detail: string,
    readonly options: DenErrorOptions = {},
  ) {
    const at = options.path ? ` ${options.path}` : "";
    const code = options.code ? ` (${options.code})` : "";
    super(op ? `${op}${at}: ${detail}${code}` : `${detail}${code}`, options);
  }

  get exitCode(): number {
    return this.options.exitCode ?? EXIT_FAILURE;
  }

  get hint(): string | undefined {
    return this.options.hint;
  }
}

/** A usage error: bad option or argument (exit 64). */
export function usageError(detail: string, hint?: string): DenError {
  return new DenError("", detail, { exitCode: EXIT_USAGE, hint });
}

/** The message of an error and its DenError causes, joined by ": ". */
export function describeError(err: unknown): string {
  const parts: string[] = [];
  let e: unknown = err;
  while (e instanceof Error) {
    parts.push(e.message);
    e = e.cause;
  }
  if (parts.length === 0) parts.push(String(err));
  return parts.join(": ");
}

/** The message of `e` without Deno's " (os error N): op 'path'" tail: den
 * names the operation and path itself. */
export function osMessage(e: unknown): string {
  return ((e as Error | undefined)?.message ?? String(e)).replace(/ \(os error.*$/, "");
}
