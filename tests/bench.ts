// `deno task bench`: den run's benchmark, then den under MPI launchers
// (tests/bench_mpi.ts), then SquashFS images against directories
// (tests/bench_squash.ts), then image unpacking's when tests/bench_unpack.ts is
// there (it is written separately).

import { benchMpi } from "./bench_mpi.ts";
import { benchRun } from "./bench_run.ts";
import { benchSquash } from "./bench_squash.ts";

await benchRun();
await benchMpi();
await benchSquash();

const unpack = new URL("./bench_unpack.ts", import.meta.url);
let present = true;
try {
  Deno.statSync(unpack);
} catch {
  present = false;
}
if (present) {
  // A specifier in a variable: `deno check` must not require the file.
  const mod: { benchUnpack?: unknown } = await import(unpack.href);
  if (typeof mod.benchUnpack === "function") {
    await (mod.benchUnpack as () => Promise<void>)();
  }
}
