// Integration tests under a real Slurm (set up on a CI machine by .ci/slurm):
// `den run` launched by srun and sbatch as the unprivileged test user. Rank
// variables and output pass through, exit statuses reach srun, and scancel
// leaves no container process behind. Ignored, saying why, where Slurm is not
// installed or this host is not an up Slurm node.

import { deepStrictEqual, equal, match, notEqual, ok } from "node:assert/strict";
import {
  asTestUser,
  buildBusyboxImage,
  denPlainArgv,
  hasUserns,
  HAVE_BUSYBOX,
  MAIN,
  slurmMissing,
  tempDir,
  testUser,
  testUserEnv,
} from "./_helpers.ts";

/** This host's Slurm node name (.ci/slurm names the node `hostname -s`). */
const NODE = Deno.hostname().split(".")[0]!;

/** Why the Slurm tests cannot run here, or undefined when they can. */
function missingHere(): string | undefined {
  if (!HAVE_BUSYBOX) return "busybox not installed";
  if (!hasUserns()) return "no unprivileged user namespaces";
  return slurmMissing(["sinfo", "srun", "sbatch", "scancel", "squeue"]);
}

const missing = missingHere();
const ignore = missing !== undefined;
const work = ignore ? undefined : tempDir("den-slurm-test-");
const IMG = work ? buildBusyboxImage(`${work.path}/img`) : "/nonexistent";

function t(name: string, fn: () => Promise<void>) {
  Deno.test({
    name: missing ? `${name} (ignored: ${missing})` : name,
    ignore,
    sanitizeResources: false,
    sanitizeOps: false,
    fn,
  });
}

if (work) {
  globalThis.addEventListener("unload", () => {
    try {
      Deno.removeSync(work.path, { recursive: true });
    } catch { /* already gone */ }
  });
}

const dec = new TextDecoder();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** p's value, or undefined when it takes longer than ms. */
async function within<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<undefined>((r) => timer = setTimeout(() => r(undefined), ms));
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** A job name unique to this test run, so that cleanup cancels only ours. */
function jobName(what: string): string {
  return `den-test-${what}-${Deno.pid}-${Math.random().toString(36).slice(2, 8)}`;
}

/** Options every job gets: our name, this node, and a time limit. */
function jobOpts(name: string): string[] {
  return [`--job-name=${name}`, `--nodelist=${NODE}`, "--time=5"];
}

/** `den run ARGS...` as Slurm should launch it. */
function denRun(args: string[]): string[] {
  return denPlainArgv(["run", ...args]);
}

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

/** Start a Slurm client command as the test user, killed after timeoutMs. */
function spawnAsUser(argv: string[], opts: { cwd?: string; timeoutMs?: number } = {}) {
  const [cmd, ...args] = asTestUser(argv);
  return new Deno.Command(cmd!, {
    args,
    env: testUserEnv(),
    clearEnv: true,
    cwd: opts.cwd ?? work!.path,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    // srun forwards SIGTERM to its tasks and cancels its step.
    signal: AbortSignal.timeout(opts.timeoutMs ?? 60_000),
  }).spawn();
}

async function runAsUser(
  argv: string[],
  opts: { cwd?: string; timeoutMs?: number } = {},
): Promise<Result> {
  const r = await spawnAsUser(argv, opts).output();
  return { code: r.code, stdout: dec.decode(r.stdout), stderr: dec.decode(r.stderr) };
}

/** Cancel our jobs (by name) and wait until Slurm has forgotten them. */
async function cancel(name: string): Promise<void> {
  const { uid } = testUser();
  const q = () =>
    new Deno.Command("squeue", {
      args: ["-h", "-u", String(uid), "-n", name, "-o", "%i"],
      stdout: "piped",
      stderr: "null",
    }).output();
  await new Deno.Command("scancel", {
    args: ["-u", String(uid), "-n", name],
    stdout: "null",
    stderr: "null",
  }).output();
  for (let i = 0; i < 100; i++) {
    if (dec.decode((await q()).stdout).trim() === "") return;
    await sleep(100);
  }
}

interface Proc {
  pid: number;
  cmdline: string[];
}

/** Live processes whose environment carries SLURM_JOB_ID=jobId. */
function jobProcesses(jobId: string): Proc[] {
  const found: Proc[] = [];
  const want = `SLURM_JOB_ID=${jobId}`;
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    try {
      const stat = Deno.readTextFileSync(`/proc/${e.name}/stat`);
      if (/\) [ZX] /.test(stat)) continue;
      const env = Deno.readTextFileSync(`/proc/${e.name}/environ`).split("\0");
      if (!env.includes(want)) continue;
      const cmdline = Deno.readTextFileSync(`/proc/${e.name}/cmdline`).split("\0");
      if (cmdline.at(-1) === "") cmdline.pop();
      found.push({ pid: Number(e.name), cmdline });
    } catch { /* gone, or not ours to read */ }
  }
  return found;
}

const isSleep = (p: Proc) => p.cmdline.join(" ") === "sleep 300";
const isDen = (p: Proc) => p.cmdline.includes(MAIN);

t("srun -n 3 den run: each task sees its rank and the task count", async () => {
  const name = jobName("ranks");
  try {
    const r = await runAsUser([
      "srun",
      ...jobOpts(name),
      "--ntasks=3",
      ...denRun([IMG, "--", "sh", "-c", "echo $SLURM_PROCID $SLURM_NTASKS"]),
    ]);
    equal(r.code, 0, r.stderr);
    deepStrictEqual(r.stdout.trim().split("\n").sort(), ["0 3", "1 3", "2 3"], r.stderr);
  } finally {
    await cancel(name);
  }
});

t("srun exits with the status of the command den ran", async () => {
  const name = jobName("status");
  try {
    const r = await runAsUser([
      "srun",
      ...jobOpts(name),
      "--ntasks=1",
      ...denRun([IMG, "--", "sh", "-c", "exit 7"]),
    ]);
    equal(r.code, 7, r.stderr);
    match(r.stderr, /task 0: Exited with exit code 7/);
    const ok0 = await runAsUser([
      "srun",
      ...jobOpts(name),
      "--ntasks=2",
      ...denRun([IMG, "--", "true"]),
    ]);
    equal(ok0.code, 0, ok0.stderr);
  } finally {
    await cancel(name);
  }
});

/** Quote for sh. */
const q = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`;

t("sbatch --wait: a job script's den run lines write the job's output", async () => {
  const name = jobName("batch");
  const out = `${work!.path}/batch-%j.out`;
  const script = `${work!.path}/job.sh`;
  const den = (args: string[]) => denRun(args).map(q).join(" ");
  Deno.writeTextFileSync(
    script,
    [
      "#!/bin/sh",
      "#SBATCH --ntasks=2",
      `#SBATCH --output=${out}`,
      "set -e",
      `${den([IMG, "--", "cat", "/etc/image-marker"])}`,
      `srun ${den([IMG, "--", "sh", "-c", "echo task $SLURM_PROCID of $SLURM_NTASKS"])}`,
      `${den([IMG, "--", "sh", "-c", "echo job $SLURM_JOB_NAME done"])}`,
      "",
    ].join("\n"),
  );
  const { uid, gid } = testUser();
  if (Deno.uid() === 0) Deno.chownSync(script, uid, gid);
  try {
    const r = await runAsUser(["sbatch", ...jobOpts(name), "--wait", "--parsable", script]);
    equal(r.code, 0, r.stderr);
    const id = r.stdout.trim().split(";")[0]!;
    match(id, /^\d+$/);
    const file = out.replace("%j", id);
    const text = Deno.readTextFileSync(file);
    const lines = text.trim().split("\n");
    equal(lines[0], "busybox test image", text);
    deepStrictEqual(lines.slice(1, 3).sort(), ["task 0 of 2", "task 1 of 2"], text);
    equal(lines[3], `job ${name} done`, text);
    equal(lines.length, 4, text);
    equal(Deno.statSync(file).uid, uid);
  } finally {
    await cancel(name);
  }
});

t("scancel stops den and the container's processes", async () => {
  const name = jobName("cancel");
  const child = spawnAsUser([
    "srun",
    ...jobOpts(name),
    "--ntasks=2",
    ...denRun([IMG, "--", "sleep", "300"]),
  ], { timeoutMs: 120_000 });
  const exited = child.output();
  let jobId = "";
  try {
    // Wait (bounded) for both tasks' sleep to run under den.
    let procs: Proc[] = [];
    for (let i = 0; i < 600; i++) {
      if (!jobId) {
        const r = await new Deno.Command("squeue", {
          args: ["-h", "-n", name, "-o", "%i"],
          stdout: "piped",
          stderr: "null",
        }).output();
        jobId = dec.decode(r.stdout).trim();
      }
      if (jobId) {
        procs = jobProcesses(jobId);
        if (procs.filter(isSleep).length === 2) break;
      }
      await sleep(100);
    }
    ok(jobId, "the job is in the queue");
    equal(procs.filter(isSleep).length, 2, `sleeps of job ${jobId}: ${JSON.stringify(procs)}`);
    equal(procs.filter(isDen).length, 2, `den processes of job ${jobId}: ${JSON.stringify(procs)}`);

    const c = await new Deno.Command("scancel", { args: [jobId], stderr: "piped" }).output();
    equal(c.code, 0, dec.decode(c.stderr));

    // srun ends, and nothing of the job is left (KillWait is 2 s under .ci/slurm).
    const r = await within(exited, 30_000);
    ok(r, "srun ended after scancel");
    notEqual(r.code, 0);
    let left = jobProcesses(jobId).filter((p) => isSleep(p) || isDen(p));
    for (let i = 0; i < 300 && left.length > 0; i++) {
      await sleep(100);
      left = jobProcesses(jobId).filter((p) => isSleep(p) || isDen(p));
    }
    deepStrictEqual(left, [], `processes of job ${jobId} left after scancel`);
  } finally {
    await cancel(name);
    try {
      child.kill("SIGKILL");
    } catch { /* already exited */ }
    await exited.catch(() => {});
    // Leave nothing behind, even when the test failed.
    for (const p of jobId ? jobProcesses(jobId) : []) {
      try {
        Deno.kill(p.pid, "SIGKILL");
      } catch { /* gone */ }
    }
  }
});
