// `den doctor`: does den work on this node, and if not, why and what an
// administrator can do. Each feature is tried for real where it can be.

import { countFlag, lastValue, parseArgv } from "./args.ts";
import { DenError, EXIT_CMD, osMessage } from "../error.ts";
import { out } from "./output.ts";
import { type Check, doctorStatus, formatReport, kernelAtLeast } from "../run/doctor.ts";
import { planContainer, type RunOptions } from "../run/plan.ts";
import { secureStorage } from "../image/store.ts";
import { findOnPath, isExecutableFile, squashfuseProgram } from "../run/squash.ts";

export const DOCTOR_USAGE = `Usage: den doctor [OPTION...]

Check this node for what den needs, and say per feature whether it works,
why not, and what an administrator can do. User and mount namespaces and
overlayfs are tried for real by starting a container from a scratch image,
SquashFS images by mounting a small one as den run would.

  -s, --storage=DIR  storage directory to check (default: as den run)
      --json         print the checks as JSON
  -h, --help         give this help list

Exit status: 0 when den run works here (user and mount namespaces); 1 when
it does not; 64 for usage errors. Other failures are reported, not fatal.
`;

const PROBE = "/den-doctor-probe";

/** A new private directory in $TMPDIR for a check; the check removes it. */
function scratchDir(): string {
  return Deno.makeTempDirSync({ dir: Deno.env.get("TMPDIR") || "/tmp", prefix: "den-doctor-" });
}

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
  const dir = scratchDir();
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
    const plan = planContainer(opts, hostFacts(), rootfs);
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

/**
 * Mount a small SquashFS file the way `den run IMG.sqfs` does: squashfuse
 * serving a FUSE mount made in a new user namespace. This is what needs a
 * squashfuse built with libfuse >= 3.3 and a kernel that allows FUSE there.
 */
async function squashCheck(o: {
  container?: Error;
  fuse: boolean;
  mksquashfs?: string;
  squashfuse?: string;
}): Promise<Check> {
  const name = "SquashFS images";
  const skip = (why: string): Check => ({ name, status: "fail", detail: `not tried: ${why}` });
  if (o.container) return skip("user namespaces do not work");
  if (!o.fuse) return skip("/dev/fuse is not usable");
  if (!o.mksquashfs || !o.squashfuse) {
    return skip(`${o.mksquashfs ? "squashfuse" : "mksquashfs"} is missing`);
  }
  const dir = scratchDir();
  try {
    Deno.mkdirSync(`${dir}/tree`);
    Deno.writeTextFileSync(`${dir}/tree/probe`, "den\n");
    const made = await new Deno.Command(o.mksquashfs, {
      args: [`${dir}/tree`, `${dir}/probe.sqfs`, "-quiet", "-no-progress", "-noappend"],
      stdout: "null",
      stderr: "piped",
    }).output();
    if (!made.success) {
      return {
        name,
        status: "fail",
        detail: `mksquashfs failed: ${new TextDecoder().decode(made.stderr).trim()}`,
      };
    }
    const uid = Deno.uid() ?? 0, gid = Deno.gid() ?? 0;
    const { mountSquash } = await import("../ffi/squash.ts");
    const mount = await mountSquash({
      image: `${dir}/probe.sqfs`,
      mountPoint: Deno.realPathSync(dir),
      squashfuse: o.squashfuse,
      uidMap: { inside: uid, outside: uid },
      gidMap: { inside: gid, outside: gid },
      timeoutMs: 10_000,
    });
    try {
      const text = Deno.readTextFileSync(`${mount.root}${mount.mountPoint}/probe`);
      if (text !== "den\n") throw new Error("the mounted image reads wrong");
    } finally {
      mount.close({ used: false });
    }
    return { name, status: "ok", detail: `${o.squashfuse} mounted one in a user namespace` };
  } catch (e) {
    return {
      name,
      status: "fail",
      detail: `a mount failed: ${(e as Error).message}`,
      fix: "squashfuse built with libfuse >= 3.3 (it serves /dev/fd/N), and Linux >= 4.18 " +
        "for FUSE in user namespaces",
    };
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

  // The same lookups as den's, so "ok" here means den finds them.
  const mksquashfs = findOnPath("mksquashfs", Deno.env.get("PATH"), isExecutableFile);
  checks.push({
    name: "mksquashfs",
    status: mksquashfs ? "ok" : "fail",
    detail: mksquashfs ?? "not on PATH",
    fix: mksquashfs ? undefined : "apt-get install squashfs-tools (or the distribution's package)",
  });
  let squashfuse: string | undefined;
  try {
    squashfuse = squashfuseProgram(Deno.env.get("PATH"), isExecutableFile);
    checks.push({ name: "squashfuse", status: "ok", detail: squashfuse });
  } catch {
    checks.push({
      name: "squashfuse",
      status: "fail",
      detail: "neither squashfuse_ll nor squashfuse is on PATH",
      fix: "apt-get install squashfuse (or the distribution's package)",
    });
  }
  checks.push(await squashCheck({ container, fuse: fuse.status === "ok", mksquashfs, squashfuse }));

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
