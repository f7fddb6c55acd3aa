// MPI inside an image: a Debian bookworm image with OpenMPI and mpi4py, built
// at test time by tests/mpi_image.sh (cached under /var/tmp), and a two-rank
// ping-pong (8 B, 1 MiB, 16 MiB, every message checked) under the host's
// mpirun and under srun --mpi=pmix, as the unprivileged test user.

import { equal, match, ok } from "node:assert/strict";
import {
  denPlainArgv,
  hasUserns,
  mpiImage,
  runAsTestUser,
  slurmMissing,
  testUser,
} from "./_helpers.ts";

const IMG = hasUserns() ? mpiImage() : undefined;
const ignore = IMG === undefined;

/** srun can launch ranks here (this host an up Slurm node). */
const slurm = slurmMissing() === undefined;

/** Run argv as the test user with a time limit; a hang fails the test. */
async function run(argv: string[], seconds = 180) {
  const r = await runAsTestUser(["timeout", "-s", "KILL", String(seconds), ...argv]);
  return { code: r.code, out: r.stdout, err: r.stderr };
}

/** The three result lines of pingpong: bytes -> MB/s. */
function pingpong(out: string): Map<number, number> {
  const m = new Map<number, number>();
  for (const [, n, , , bw] of out.matchAll(/^pingpong (\d+) (\d+) ([\d.]+) ([\d.]+)$/gm)) {
    m.set(Number(n), Number(bw));
  }
  return m;
}

const denRun = (...args: string[]) => denPlainArgv(["run", ...args]);

function t(name: string, fn: () => Promise<void>, skip = false) {
  Deno.test({ name, ignore: ignore || skip, sanitizeResources: false, sanitizeOps: false, fn });
}

t("mpirun -np 2 den run: ping-pong up to 16 MiB completes, ranks joined (CMA)", async () => {
  const r = await run(["mpirun", "-np", "2", ...denRun(IMG!, "--", "/usr/local/bin/pingpong")]);
  equal(r.code, 0, `exit ${r.code} (137: hung and killed)\n${r.err}`);
  const bw = pingpong(r.out);
  ok(bw.has(8) && bw.has(1 << 20) && bw.has(16 << 20), r.out);
  ok(!r.err.includes("cma-different-user-namespace"), r.err);
});

t("mpirun -np 2 den run --no-join: separate containers still complete", async () => {
  const r = await run([
    "mpirun",
    "-np",
    "2",
    ...denRun("--no-join", "-v", IMG!, "--", "/usr/local/bin/pingpong"),
  ]);
  equal(r.code, 0, `exit ${r.code} (137: hung and killed)\n${r.err}`);
  equal(pingpong(r.out).size, 3, r.out);
  match(r.err, /OMPI_MCA_btl_vader_single_copy_mechanism=none/);
});

t("mpi4py allreduce inside the image under mpirun", async () => {
  const r = await run([
    "mpirun",
    "-np",
    "2",
    ...denRun(
      IMG!,
      "--",
      "python3",
      "-c",
      "from mpi4py import MPI; c = MPI.COMM_WORLD; print('sum', c.allreduce(c.rank + 1))",
    ),
  ]);
  equal(r.code, 0, r.err);
  equal(r.out, "sum 3\nsum 3\n");
});

t("srun --mpi=pmix -n 2 den run: ping-pong completes", async () => {
  const r = await run([
    "srun",
    "--mpi=pmix",
    "-n",
    "2",
    "--time=5",
    ...denRun(IMG!, "--", "/usr/local/bin/pingpong"),
  ]);
  equal(r.code, 0, `exit ${r.code} (137: hung and killed)\n${r.err}`);
  equal(pingpong(r.out).size, 3, r.out);
  ok(!r.err.includes("cma-different-user-namespace"), r.err);
}, !slurm);

t("srun -n 2 den run: ranks share one container; --no-join does not", async () => {
  const ns = async (...opts: string[]) => {
    const r = await run([
      "srun",
      "-n",
      "2",
      "--time=5",
      ...denRun(...opts, IMG!, "--", "readlink", "/proc/self/ns/user"),
    ]);
    equal(r.code, 0, r.err);
    return new Set(r.out.trim().split("\n"));
  };
  equal((await ns()).size, 1);
  equal((await ns("--no-join")).size, 2);
}, !slurm);

/**
 * The MPI image as one SquashFS file, packed by den convert once (about 40
 * s) and cached beside the image under /var/tmp; packed again when the
 * image's stamp changes.
 */
function mpiSquash(dir: string): string {
  const sqfs = `${dir}.sqfs`;
  const stamp = Deno.readTextFileSync(`${dir}/.den-image-stamp`);
  try {
    if (Deno.readTextFileSync(`${sqfs}.stamp`) === stamp && Deno.statSync(sqfs).isFile) return sqfs;
  } catch {
    // not made yet
  }
  const [cmd, ...args] = denPlainArgv(["convert", "-q", "-f", dir, sqfs]);
  const r = new Deno.Command(cmd!, { args, stderr: "inherit" }).outputSync();
  if (!r.success) throw new Error(`den convert ${dir} ${sqfs} failed`);
  Deno.chmodSync(sqfs, 0o644);
  Deno.writeTextFileSync(`${sqfs}.stamp`, stamp);
  return sqfs;
}

/** The test user's squashfuse processes that are not zombies. */
function squashfuses(): string {
  const r = new Deno.Command("pgrep", {
    args: ["-u", String(testUser().uid), "-r", "R,S,D,T", "squashfuse"],
    stdout: "piped",
  }).outputSync();
  return new TextDecoder().decode(r.stdout).trim();
}

t(
  "mpirun -np 2 den run IMG.sqfs: ranks share one container and one mount, ping-pong completes",
  async () => {
    const sqfs = mpiSquash(IMG!);
    // The id of the mount at / and the mount namespace, per rank.
    const where = await run([
      "mpirun",
      "-np",
      "2",
      ...denRun(
        sqfs,
        "--",
        "sh",
        "-c",
        "awk '$5 == \"/\" { print $1 }' /proc/self/mountinfo; readlink /proc/self/ns/mnt",
      ),
    ]);
    equal(where.code, 0, where.err);
    const lines = where.out.trim().split("\n");
    equal(lines.length, 4, where.out);
    equal(new Set(lines).size, 2, `ranks in different mounts:\n${where.out}`);
    const r = await run([
      "mpirun",
      "-np",
      "2",
      ...denRun("-v", sqfs, "--", "/usr/local/bin/pingpong"),
    ]);
    equal(r.code, 0, `exit ${r.code} (137: hung and killed)\n${r.err}`);
    equal(pingpong(r.out).size, 3, r.out);
    ok(!r.err.includes("cma-different-user-namespace"), r.err);
    ok(!r.err.includes("OMPI_MCA_btl_vader_single_copy_mechanism"), r.err);
    match(r.err, /join: I won/);
    match(r.err, /join: I lost/);
    for (const end = Date.now() + 5000; squashfuses() !== "" && Date.now() < end;) {
      await new Promise((ok) => setTimeout(ok, 50));
    }
    equal(squashfuses(), "", "squashfuse outlived the job");
  },
);
