// `den doctor`: does den work on this node, and if not, why and what an
// administrator can do. Each feature is tried for real where it can be.

import { countFlag, lastValue, parseArgv } from "./args.ts";
import { DenError, EXIT_CMD, osMessage } from "../error.ts";
import { out } from "./output.ts";
import { type Check, doctorStatus, formatReport, kernelAtLeast } from "../run/doctor.ts";
import { planContainer, type RunOptions } from "../run/plan.ts";
import { secureStorage } from "../image/store.ts";
import { findOnPath, isExecutableFile } from "../run/squash.ts";

export const DOCTOR_USAGE = `Usage: den doctor [OPTION...]

Check this node for what den needs, and say per feature whether it works,
why not, and what an administrator can do. User and mount namespaces and
overlayfs are tried for real by starting a container from a scratch image.

  -s, --storage=DIR  storage directory to check (default: as den run)
      --json         print the checks as JSON
  -h, --help         give this help list

Exit status: 0 when den run works here (user and mount namespaces); 1 when
it does not; 64 for usage errors. Other failures are reported, not fatal.
`;

const PROBE = "/den-doctor-probe";

function readSysctl(name: string): string | undefined {
  try {
    return Deno.readTextFileSync(`/proc/sys/${name.replaceAll(".", "/")}`).trim();
  } catch {
    return undefined;
  }
}

/**
 * Start a container from a scratch image whose command does not exist: an
 * execve(2) ENOENT proves that every namespace and mount step worked.
 * Returns undefined when it did, else the error line.
 */
async function tryContainer(writeFake?: string): Promise<DenError | Error | undefined> {
  const tmp = Deno.env.get("TMPDIR") || "/tmp";
  const dir = Deno.makeTempDirSync({ dir: tmp, prefix: "den-doctor-" });
  try {
    for (const d of ["dev", "proc", "sys", "tmp", "etc"]) Deno.mkdirSync(`${dir}/${d}`);
    for (const f of ["etc/passwd", "etc/group"]) Deno.writeTextFileSync(`${dir}/${f}`, "");
    const rootfs = Deno.realPathSync(dir);
    const opts: RunOptions = {
      image: rootfs,
      command: [PROBE],
      binds: [],
      write: false,
      writeFake,
      envOps: [],
      envNoExpand: false,
      imageEnv: false,
      home: false,
      noPasswd: false,
      privateTmp: true,
    };
    const { hostFacts } = await import("./run.ts");
    const plan = planContainer(opts, await hostFacts(), rootfs);
    const { runPlan } = await import("../run/run_plan.ts");
    await runPlan(plan, { warn: () => {} });
    return new Error(`${PROBE} ran, which it cannot`);
  } catch (e) {
    if (e instanceof DenError && e.exitCode === EXIT_CMD && e.options.code === "ENOENT") {
      return undefined;
    }
    return e as Error;
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}

/** Every check, in report order. */
async function runChecks(storage?: string): Promise<Check[]> {
  const checks: Check[] = [];
  const release = Deno.osRelease();
  const overlayKernel = kernelAtLeast(release, 5, 11);
  checks.push({
    name: "kernel",
    status: overlayKernel ? "ok" : "fail",
    detail: `Linux ${release}` +
      (overlayKernel ? "" : " (overlayfs in a user namespace needs 5.11)"),
    fix: overlayKernel ? undefined : "a kernel >= 5.11 for -W",
  });

  const { hostUsers } = await import("../ffi/users.ts");
  const users = hostUsers();
  const name = users.passwdEntry(users.uid)?.name ?? "not in the user database";
  checks.push({
    name: "ids",
    status: "info",
    detail:
      `uid ${users.uid} (${name}), gid ${users.gid} (${users.groupName(users.gid) ?? "no name"})` +
      (users.uid === 0 ? "; root: den needs no privileges, run it as a user" : ""),
  });

  const sysctls = [
    "user.max_user_namespaces",
    "kernel.unprivileged_userns_clone",
    "kernel.apparmor_restrict_unprivileged_userns",
  ].map((n) => [n, readSysctl(n)] as const).filter(([, v]) => v !== undefined);
  const container = await tryContainer();
  const { usernsHint } = await import("../ffi/spawn.ts");
  checks.push({
    name: "user+mount namespaces",
    status: container ? "fail" : "ok",
    detail: (container ? `a container failed: ${container.message}` : "a container started") +
      (sysctls.length ? `; ${sysctls.map(([n, v]) => `${n}=${v}`).join(", ")}` : ""),
    fix: container
      ? `${usernsHint()}; an administrator can set it (sysctl -w), or allow den in AppArmor`
      : undefined,
    required: true,
  });

  const overlay = container ? container : await tryContainer("1m");
  checks.push({
    name: "overlayfs (-W)",
    status: overlay ? "fail" : "ok",
    detail: overlay ? `an overlay failed: ${overlay.message}` : "an overlay over an image worked",
    fix: overlay
      ? container
        ? "needs user namespaces first"
        : "Linux >= 5.11 with overlayfs (modprobe overlay); some distributions restrict it"
      : undefined,
  });

  let fuse: Check;
  try {
    const st = Deno.statSync("/dev/fuse");
    Deno.openSync("/dev/fuse", { read: true, write: true }).close();
    fuse = {
      name: "/dev/fuse",
      status: "ok",
      detail: `usable (mode ${(st.mode! & 0o777).toString(8)})` +
        (kernelAtLeast(release, 4, 18) ? "" : "; FUSE in a user namespace needs Linux 4.18"),
    };
  } catch (e) {
    const missing = e instanceof Deno.errors.NotFound;
    fuse = {
      name: "/dev/fuse",
      status: "fail",
      detail: missing ? "missing" : `not usable: ${osMessage(e)}`,
      fix: missing
        ? "modprobe fuse (and install fuse3)"
        : "chmod 0666 /dev/fuse, as most distributions ship it (a udev rule keeps it)",
    };
  }
  checks.push(fuse);

  for (const [tool, pkg] of [["mksquashfs", "squashfs-tools"], ["squashfuse", "squashfuse"]]) {
    // The same lookup as den run's, so "ok" here means den run finds it.
    const path = findOnPath(tool!, Deno.env.get("PATH"), isExecutableFile);
    checks.push({
      name: tool!,
      status: path ? "ok" : "fail",
      detail: path ?? "not on PATH",
      fix: path ? undefined : `apt-get install ${pkg} (or the distribution's package)`,
    });
  }

  try {
    const dir = secureStorage(storage, false);
    checks.push({ name: "storage", status: "ok", detail: `${dir} (safe, or not made yet)` });
  } catch (e) {
    checks.push({
      name: "storage",
      status: "fail",
      detail: (e as Error).message,
      fix: (e as DenError).options?.hint,
    });
  }
  return checks;
}

/** `den doctor`: returns the exit status. */
export async function doctorCommand(args: string[]): Promise<number> {
  const parsed = parseArgv(args, {
    json: { takes: "flag" },
    storage: { short: "s", takes: "value" },
    help: { short: "h", takes: "flag" },
  }, "den doctor --help");
  if (countFlag(parsed, "help")) {
    out(DOCTOR_USAGE);
    return 0;
  }
  const checks = await runChecks(lastValue(parsed, "storage"));
  const status = doctorStatus(checks);
  if (countFlag(parsed, "json")) out(JSON.stringify({ works: status === 0, checks }, null, 2));
  else out(formatReport(checks).trimEnd());
  return status;
}
