// Pieces the benchmarks (tests/bench_run.ts, tests/bench_mpi.ts) share:
// output, statistics, the unprivileged user's environment and /proc reading.

import { TEST_USER, testUser } from "./_helpers.ts";

const encoder = new TextEncoder();

/** Write a line to stdout, all of it (a pipe may take it in parts). */
export function print(line = ""): void {
  const bytes = encoder.encode(line + "\n");
  let written = 0;
  while (written < bytes.length) {
    written += Deno.stdout.writeSync(bytes.subarray(written));
  }
}

export const fmt = (n: number, digits = 1) => Number.isFinite(n) ? n.toFixed(digits) : "-";
export const pad = (s: string, n: number) => s.padStart(n);
export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The median; NaN for no values. */
export function median(xs: number[]): number {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** CPUs and load average, to read the numbers beside. */
export function hostLoad(): string {
  const [one, five] = Deno.loadavg();
  return `${navigator.hardwareConcurrency} cpus, load average ${fmt(one!, 2)} ${fmt(five!, 2)}`;
}

/**
 * The environment benchmarked commands get, and the user they run as: the
 * test user when we are root, else ourselves. DENO_DIR is `${tmp}/deno-dir`,
 * made here and empty: the first den run proves a clean checkout works, and
 * fills the transpile cache for the timed runs.
 */
export function userEnv(tmp: string): { env: Record<string, string>; user: string } {
  const denoDir = `${tmp}/deno-dir`;
  Deno.mkdirSync(denoDir);
  const env: Record<string, string> = {
    PATH: "/usr/local/bin:/usr/bin:/bin",
    LANG: "C.UTF-8",
    DENO_DIR: denoDir,
  };
  if (Deno.uid() === 0) {
    const { uid, gid } = testUser();
    Deno.chownSync(denoDir, uid, gid);
    env.USER = TEST_USER; // ch-run refuses to start without $USER
    env.HOME = `/home/${TEST_USER}`;
    return { env, user: TEST_USER };
  }
  for (const k of ["USER", "HOME"]) {
    const v = Deno.env.get(k);
    if (v) env[k] = v;
  }
  return { env, user: env.USER ?? String(Deno.uid()) };
}

/** An empty script in tmp, readable by the user: `deno run` of it is the floor. */
export function emptyScript(tmp: string): string {
  const empty = `${tmp}/empty.ts`;
  Deno.writeTextFileSync(empty, "");
  Deno.chmodSync(empty, 0o644);
  return empty;
}

/** pid and its descendants (through every thread's children list). */
export function processTree(pid: number): number[] {
  const out = [pid];
  for (let i = 0; i < out.length; i++) {
    try {
      for (const task of Deno.readDirSync(`/proc/${out[i]}/task`)) {
        const kids = Deno.readTextFileSync(`/proc/${out[i]}/task/${task.name}/children`).trim();
        if (kids) out.push(...kids.split(/\s+/).map(Number));
      }
    } catch {
      // Exited meanwhile.
    }
  }
  return out;
}

/** Is pid the Deno runtime (den itself) rather than a command it started? */
export function isDeno(pid: number): boolean {
  try {
    return Deno.readLinkSync(`/proc/${pid}/exe`) === Deno.execPath();
  } catch {
    // exe is unreadable without ptrace access; comm is always readable.
    try {
      return Deno.readTextFileSync(`/proc/${pid}/comm`).trim() === "deno";
    } catch {
      return false;
    }
  }
}
