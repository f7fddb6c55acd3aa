// `deno task bench`: den run's benchmark, then den under MPI launchers
// (tests/bench_mpi.ts), then SquashFS images against directories
// (tests/bench_squash.ts), image unpacking against GNU tar
// (tests/bench_unpack.ts), and den pull against skopeo (tests/bench_pull.ts).

import { benchMpi } from "./bench_mpi.ts";
import { benchPull } from "./bench_pull.ts";
import { benchRun } from "./bench_run.ts";
import { benchSquash } from "./bench_squash.ts";
import { benchUnpack } from "./bench_unpack.ts";

await benchRun();
await benchMpi();
await benchSquash();
await benchUnpack();
await benchPull();
