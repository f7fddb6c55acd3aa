// Modules loaded on demand through a computed specifier. Deno loads and
// analyses every module that a literal import() names, at every start:
// ~1.3 ms for the verbs and image formats a `den run` of a directory never
// uses, paid by every MPI rank. `deno compile` embeds these modules through
// --include (deno.json's compile task).

/** Import a module of den by its path relative to cli/. */
export function lazy<T>(path: string): Promise<T> {
  return import(new URL(path, import.meta.url).href);
}
