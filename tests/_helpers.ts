// Helpers for integration tests: a busybox image built at test time, and
// the real `den` run as an unprivileged user (created when tests run as root).

export const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
export const MAIN = `${ROOT}/cli/main.ts`;
/** Unprivileged account that runs containers when the tests run as root. */
export const TEST_USER = "dentest";

const BUSYBOX = ["/bin/busybox", "/usr/bin/busybox"].find((p) => exists(p));
export const HAVE_BUSYBOX = BUSYBOX !== undefined;

export function exists(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

/** Is a command on PATH? */
export function which(cmd: string): string | undefined {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    if (dir && exists(`${dir}/${cmd}`)) return `${dir}/${cmd}`;
  }
  return undefined;
}

function run(cmd: string, args: string[]): { code: number; out: string } {
  const r = new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" })
    .outputSync();
  return {
    code: r.code,
    out: new TextDecoder().decode(r.stdout) +
      new TextDecoder().decode(r.stderr),
  };
}

let userIds: { uid: number; gid: number } | undefined;

/** uid/gid of the user that runs containers: ourselves, or when root, the
 * account .ci/setup creates (tests never create accounts themselves). */
export function testUser(): { uid: number; gid: number } {
  if (userIds) return userIds;
  if (Deno.uid() !== 0) return userIds = { uid: Deno.uid()!, gid: Deno.gid()! };
  const r = run("id", ["-u", TEST_USER]);
  if (r.code !== 0) {
    throw new Error(
      `no user ${TEST_USER}: tests run as root drop to it; .ci/setup creates it (useradd -m ${TEST_USER})`,
    );
  }
  const g = run("id", ["-g", TEST_USER]);
  return userIds = { uid: Number(r.out.trim()), gid: Number(g.out.trim()) };
}

/**
 * The MPI test image (Debian bookworm with OpenMPI, mpi4py, python3 and
 * /usr/local/bin/pingpong), built once by tests/mpi_image.sh and cached
 * under /var/tmp. Undefined where it cannot be built (not root, no
 * debootstrap or mpirun); throws when the build fails.
 */
export function mpiImage(): string | undefined {
  if (Deno.uid() !== 0 || !which("debootstrap") || !which("mpirun")) return undefined;
  const r = new Deno.Command(`${ROOT}/tests/mpi_image.sh`, { stderr: "inherit" }).outputSync();
  if (!r.success) throw new Error("tests/mpi_image.sh failed");
  return new TextDecoder().decode(r.stdout).trim();
}

/** Can this host make unprivileged user namespaces at all? */
export function hasUserns(): boolean {
  try {
    return Deno.readTextFileSync("/proc/sys/user/max_user_namespaces")
      .trim() !== "0";
  } catch {
    return false;
  }
}

/** A temporary directory owned by the test user; removed on dispose. */
export function tempDir(prefix = "den-test-"): { path: string } & AsyncDisposable {
  const path = Deno.makeTempDirSync({ prefix });
  Deno.chmodSync(path, 0o755);
  if (Deno.uid() === 0) {
    const { uid, gid } = testUser();
    Deno.chownSync(path, uid, gid);
  }
  return {
    path,
    async [Symbol.asyncDispose]() {
      await Deno.remove(path, { recursive: true }).catch(() => {});
    },
  };
}

const APPLETS = [
  "sh",
  "true",
  "false",
  "cat",
  "echo",
  "ls",
  "env",
  "id",
  "pwd",
  "sleep",
  "touch",
  "mkdir",
  "kill",
  "grep",
  "wc",
  "test",
  "rm",
  "stat",
  "readlink",
  "mount",
  "head",
  "printf",
  "trap",
  "tty",
];

/**
 * A small image built from the host's static busybox: the directories and
 * files den needs as mount points, and /bin with busybox's applets.
 */
export function buildBusyboxImage(dir: string): string {
  if (!BUSYBOX) {
    throw new Error("busybox not installed (apt-get install busybox-static)");
  }
  for (
    const d of [
      "bin",
      "dev",
      "proc",
      "sys",
      "tmp",
      "etc",
      "home",
      "mnt",
      "usr/bin",
      "ch",
    ]
  ) {
    Deno.mkdirSync(`${dir}/${d}`, { recursive: true });
  }
  Deno.copyFileSync(BUSYBOX, `${dir}/bin/busybox`);
  Deno.chmodSync(`${dir}/bin/busybox`, 0o755);
  for (const a of APPLETS) Deno.symlinkSync("busybox", `${dir}/bin/${a}`);
  for (const f of ["passwd", "group", "hosts", "resolv.conf"]) {
    Deno.writeTextFileSync(`${dir}/etc/${f}`, "");
  }
  Deno.writeTextFileSync(`${dir}/etc/image-marker`, "busybox test image\n");
  if (Deno.uid() === 0) {
    const { uid, gid } = testUser();
    run("chown", ["-R", `${uid}:${gid}`, dir]);
  }
  return dir;
}

export interface DenResult {
  code: number;
  stdout: string;
  stderr: string;
}

let denoDir: string | undefined;

/** Environment for den run as the test user (own DENO_DIR when root). */
function userEnv(): Record<string, string> {
  const env: Record<string, string> = {
    PATH: "/usr/local/bin:/usr/bin:/bin",
    LANG: "C.UTF-8",
  };
  if (Deno.uid() === 0) {
    if (!denoDir) {
      denoDir = "/tmp/den-test-deno-dir";
      Deno.mkdirSync(denoDir, { recursive: true });
      const { uid, gid } = testUser();
      Deno.chownSync(denoDir, uid, gid);
    }
    env.DENO_DIR = denoDir;
    env.USER = TEST_USER;
    env.HOME = `/home/${TEST_USER}`;
  } else {
    for (const k of ["USER", "HOME", "DENO_DIR"]) {
      const v = Deno.env.get(k);
      if (v) env[k] = v;
    }
  }
  return env;
}

/** The argv that runs `den ARGS...` (as whoever runs it). */
export function denPlainArgv(args: string[]): string[] {
  return [Deno.execPath(), "run", "-A", "--no-lock", MAIN, ...args];
}

/** argv prefixed so that it runs as the test user when we are root. */
export function asTestUser(argv: string[]): string[] {
  if (Deno.uid() !== 0) return argv;
  const { uid, gid } = testUser();
  return ["setpriv", `--reuid=${uid}`, `--regid=${gid}`, "--init-groups", "--", ...argv];
}

/** The argv that runs `den ARGS...` as the test user. */
export function denArgv(args: string[]): string[] {
  return asTestUser(denPlainArgv(args));
}

/** Environment for commands run as the test user. */
export function testUserEnv(): Record<string, string> {
  return userEnv();
}

/** Run argv as the test user (environment testUserEnv() plus opts.env);
 * stdin is empty unless opts.stdin, cwd is / unless opts.cwd. */
export async function runAsTestUser(
  argv: string[],
  opts: { env?: Record<string, string>; stdin?: string; cwd?: string } = {},
): Promise<DenResult> {
  const [cmd, ...rest] = asTestUser(argv);
  const child = new Deno.Command(cmd!, {
    args: rest,
    env: { ...userEnv(), ...opts.env },
    clearEnv: true,
    cwd: opts.cwd ?? "/",
    stdin: opts.stdin === undefined ? "null" : "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  if (opts.stdin !== undefined) {
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(opts.stdin));
    await w.close();
  }
  const r = await child.output();
  const dec = new TextDecoder();
  return {
    code: r.code,
    stdout: dec.decode(r.stdout),
    stderr: dec.decode(r.stderr),
  };
}

/** Run den with args as the test user; options add env and stdin. */
export function den(
  args: string[],
  opts: { env?: Record<string, string>; stdin?: string; cwd?: string } = {},
): Promise<DenResult> {
  return runAsTestUser(denPlainArgv(args), opts);
}

/**
 * Why srun cannot be used here, or undefined when it can: one of cmds (and
 * timeout(1)) missing, sinfo not answering within 10 s, or this host not an
 * up Slurm node (.ci/slurm names the node `hostname -s`).
 */
export function slurmMissing(cmds: string[] = ["sinfo", "srun"]): string | undefined {
  for (const cmd of cmds) {
    if (!which(cmd)) return `Slurm not installed (${cmd} not found; see .ci/slurm)`;
  }
  if (!which("timeout")) return "timeout(1) not found";
  const node = Deno.hostname().split(".")[0]!;
  const r = new Deno.Command("timeout", {
    args: ["10", "sinfo", "-h", "-N", "-n", node, "-o", "%T"],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).outputSync();
  const dec = new TextDecoder();
  if (!r.success) {
    const why = dec.decode(r.stderr).trim().split("\n")[0] || `exit ${r.code}`;
    return `Slurm does not answer (sinfo: ${why}; see .ci/slurm)`;
  }
  const state = dec.decode(r.stdout).trim().split("\n")[0]?.replace(/[*~#!%$@^-]+$/, "");
  if (!state) return `this host (${node}) is not a Slurm node (see .ci/slurm)`;
  if (!["idle", "mixed", "allocated"].includes(state)) {
    return `Slurm node ${node} is ${state}, not up (see .ci/slurm)`;
  }
  return undefined;
}

/** Mount points (from /proc/self/mountinfo) whose path contains s. */
export function mountsContaining(s: string): string[] {
  return Deno.readTextFileSync("/proc/self/mountinfo").split("\n").filter((l) => l.includes(s));
}

/** Can this process mount a tmpfs (root, outside a sandbox that forbids it)? */
export function canMountTmpfs(): boolean {
  if (Deno.uid() !== 0 || !which("mount")) return false;
  const dir = Deno.makeTempDirSync({ prefix: "den-mount-probe-" });
  try {
    const ok = (cmd: string, args: string[]) =>
      new Deno.Command(cmd, { args }).outputSync().success;
    return ok("mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", dir]) && ok("umount", [dir]);
  } finally {
    Deno.removeSync(dir);
  }
}

/** Start den in the background as the test user; output collected. */
export function spawnDen(args: string[], env: Record<string, string> = {}) {
  const [cmd, ...rest] = denArgv(args);
  const child = new Deno.Command(cmd!, {
    args: rest,
    env: { ...testUserEnv(), ...env },
    clearEnv: true,
    cwd: "/",
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const output = child.output().then((r) => ({
    code: r.code,
    stdout: new TextDecoder().decode(r.stdout),
    stderr: new TextDecoder().decode(r.stderr),
  }));
  return {
    pid: child.pid,
    output,
    kill: () => {
      try {
        child.kill("SIGKILL");
      } catch {
        // gone
      }
    },
  };
}
