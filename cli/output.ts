// The only writer to stdout and stderr: every message den prints goes through here.
import { DenError, describeError } from "../error.ts";

const encoder = new TextEncoder();

/** Verbosity set by -v (each adds one) and -q (sets -1). */
export const output = { verbosity: 0, prog: "den" };

function writeAll(fd: typeof Deno.stdout | typeof Deno.stderr, text: string) {
  const bytes = encoder.encode(text);
  let off = 0;
  while (off < bytes.length) off += fd.writeSync(bytes.subarray(off));
}

/** Print to stdout (results: listings, inspect output, help). */
export function out(text: string): void {
  writeAll(Deno.stdout, text.endsWith("\n") ? text : text + "\n");
}

/** Print raw bytes/text to stderr without a newline (progress bars). */
export function errRaw(text: string): void {
  writeAll(Deno.stderr, text);
}

/** "den: error: ..." plus "den: hint: ..." when the error has one. */
export function error(err: unknown): void {
  let text = `${output.prog}: error: ${describeError(err)}\n`;
  const hint = findHint(err);
  if (hint) text += `${output.prog}: hint: ${hint}\n`;
  writeAll(Deno.stderr, text);
}

/** "den: warning: ..." */
export function warn(msg: string): void {
  writeAll(Deno.stderr, `${output.prog}: warning: ${msg}\n`);
}

/** One-line summary or note on stderr, unless -q. */
export function info(msg: string): void {
  if (output.verbosity >= 0) writeAll(Deno.stderr, `${output.prog}: ${msg}\n`);
}

/** Printed only with -v (level 1) or -vv (level 2), as "den[PID]: ..."
 * (ch-run's form; tells the ranks of a job apart). */
export function verbose(msg: string, level = 1): void {
  if (output.verbosity >= level) {
    writeAll(Deno.stderr, `${output.prog}[${Deno.pid}]: ${msg}\n`);
  }
}

function findHint(err: unknown): string | undefined {
  let e: unknown = err;
  while (e instanceof Error) {
    if (e instanceof DenError && e.hint) return e.hint;
    e = e.cause;
  }
  return undefined;
}
