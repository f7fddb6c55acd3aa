// Deno's error messages for system calls end in " (os error N): op 'path'";
// den names the operation and path itself (DenError op and path).

/** The message of `e` without Deno's " (os error N)" and what follows it. */
export function osMessage(e: unknown): string {
  return ((e as Error | undefined)?.message ?? String(e)).replace(/ \(os error.*$/, "");
}
