// Integration tests of `den run IMG.sqfs` as the unprivileged test user:
// the image mounted by squashfuse in the container's own namespaces, and
// nothing (process, mount, temporary file) left on the host afterwards.

import { equal, match, ok } from "node:assert/strict";
import {
  buildBusyboxImage,
  den,
  denArgv,
  hasUserns,
  HAVE_BUSYBOX,
  tempDir,
  testUser,
  testUserEnv,
  which,
} from "./_helpers.ts";

const ignore = !HAVE_BUSYBOX || !hasUserns() || !which("mksquashfs") || !which("squashfuse");
const work = ignore ? undefined : tempDir("den-squash-run-test-");
const SQFS = `${work?.path}/bb.sqfs`;
if (work) {
  const img = buildBusyboxImage(`${work.path}/img`);
  const tar = `${work.path}/bb.tar`;
  const r = new Deno.Command("tar", { args: ["-C", img, "-cf", tar, "."] }).outputSync();
  if (!r.success) throw new Error("tar failed");
  Deno.chmodSync(tar, 0o644);
  const u = await den(["unpack", "-q", tar, SQFS]);
  if (u.code !== 0) throw new Error(`den unpack: ${u.stderr}`);
}

function t(name: string, fn: () => Promise<void>) {
  Deno.test({ name, ignore, sanitizeResources: false, sanitizeOps: false, fn });
}

/** Pids of the test user's squashfuse processes. */
function squashfuses(): string[] {
  const { uid } = testUser();
  const r = new Deno.Command("pgrep", { args: ["-u", String(uid), "squashfuse"], stdout: "piped" })
    .outputSync();
  return new TextDecoder().decode(r.stdout).trim().split("\n").filter(Boolean);
}

function fuseMounts(): string[] {
  return Deno.readTextFileSync("/proc/self/mountinfo").split("\n")
    .filter((l) => / - fuse/.test(l));
}

function tmpEntries(): string[] {
  return [...Deno.readDirSync("/tmp")].map((e) => e.name).filter((n) => n.startsWith("den"))
    .sort();
}

async function until(cond: () => boolean, ms: number): Promise<boolean> {
  for (const end = Date.now() + ms; Date.now() < end;) {
    if (cond()) return true;
    await new Promise((ok) => setTimeout(ok, 50));
  }
  return cond();
}

function sha(path: string): string {
  const r = new Deno.Command("sha256sum", { args: [path], stdout: "piped" }).outputSync();
  return new TextDecoder().decode(r.stdout).split(" ")[0]!;
}

t("den run IMG.sqfs runs the command in the image and leaves nothing behind", async () => {
  const before = tmpEntries();
  const fuseBefore = fuseMounts().length;
  const r = await den(["run", SQFS, "--", "sh", "-c", "cat /etc/image-marker; id -u; exit 3"]);
  equal(r.stderr, "");
  equal(r.stdout, `busybox test image\n${testUser().uid}\n`);
  equal(r.code, 3);
  ok(await until(() => squashfuses().length === 0, 2000), "squashfuse left running");
  equal(fuseMounts().length, fuseBefore);
  equal(tmpEntries().join(" "), before.join(" "));
});

t("den run IMG.sqfs: the image is read-only, -W writes over it, -w is a usage error", async () => {
  const hash = sha(SQFS);
  const ro = await den(["run", SQFS, "--", "touch", "/etc/x"]);
  equal(ro.code, 1);
  match(ro.stderr, /Read-only file system/);
  const w = await den(["run", "-W", SQFS, "--", "sh", "-c", "echo y > /etc/x && cat /etc/x"]);
  equal(w.stderr, "");
  equal(w.stdout, "y\n");
  equal(w.code, 0);
  const bad = await den(["run", "-w", SQFS, "--", "true"]);
  equal(bad.code, 64);
  equal(bad.stderr.split("\n")[0], "den: error: --write: a SquashFS image is read-only");
  equal(sha(SQFS), hash);
});

t("den run IMG.sqfs without squashfuse fails in one line, exit 31", async () => {
  // A PATH with setpriv (which runs den as the test user) but no squashfuse.
  const bin = `${work!.path}/bin`;
  Deno.mkdirSync(bin, { recursive: true });
  Deno.symlinkSync(which("setpriv")!, `${bin}/setpriv`);
  const r = await den(["run", SQFS, "--", "true"], { env: { PATH: bin } });
  equal(r.code, 31);
  const lines = r.stderr.trim().split("\n");
  equal(lines[0], "den: error: can't run a SquashFS image: squashfuse not found on $PATH");
  match(lines[1]!, /^den: hint: .*apt install squashfuse/);
  equal(lines.length, 2);
});

t(
  "a squashfuse that never mounts: one line after DEN_SQUASH_TIMEOUT, exit 31, nothing left",
  async () => {
    // Found before the real ones on PATH; den SIGKILLs it at the timeout.
    const bin = `${work!.path}/hang-bin`;
    Deno.mkdirSync(bin);
    Deno.writeTextFileSync(`${bin}/squashfuse_ll`, "#!/bin/sh\necho starting >&2\nexec sleep 37\n");
    Deno.chmodSync(`${bin}/squashfuse_ll`, 0o755);
    Deno.chmodSync(bin, 0o755);
    const started = Date.now();
    const r = await den(["run", SQFS, "--", "true"], {
      env: { PATH: `${bin}:/usr/bin:/bin`, DEN_SQUASH_TIMEOUT: "1" },
    });
    equal(r.code, 31, r.stderr);
    equal(
      r.stderr.split("\n")[0],
      `den: error: can't mount ${SQFS}: squashfuse did not mount it within 1 s`,
    );
    ok(Date.now() - started < 5000);
    const { uid } = testUser();
    const left = new Deno.Command("pgrep", {
      args: ["-u", String(uid), "-f", "sleep 37"],
      stdout: "piped",
    }).outputSync();
    equal(new TextDecoder().decode(left.stdout), "");
  },
);

t("den run of a file that is not SquashFS inside fails in one line, exit 31", async () => {
  const bad = `${work!.path}/bad.sqfs`;
  Deno.writeFileSync(bad, new TextEncoder().encode("hsqs but not really"));
  Deno.chmodSync(bad, 0o644);
  const r = await den(["run", bad, "--", "true"]);
  equal(r.code, 31);
  match(r.stderr.split("\n")[0]!, /^den: error: can't mount .*bad\.sqfs: squashfuse exited/);
  ok(await until(() => squashfuses().length === 0, 2000));
});

t("kill -9 of den running IMG.sqfs leaves no squashfuse and no mount", async () => {
  const fuseBefore = fuseMounts().length;
  const [cmd, ...args] = denArgv(["run", SQFS, "--", "sleep", "60"]);
  const child = new Deno.Command(cmd!, {
    args,
    env: testUserEnv(),
    clearEnv: true,
    cwd: "/",
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    ok(await until(() => squashfuses().length > 0, 10_000), "squashfuse never started");
    // setpriv execs den: the child is den itself.
    child.kill("SIGKILL");
    await child.status;
    ok(await until(() => squashfuses().length === 0, 5000), "squashfuse outlived den");
    equal(fuseMounts().length, fuseBefore);
  } finally {
    try {
      child.kill("SIGKILL");
    } catch {
      // gone
    }
  }
});

t(
  "under a launcher, ranks of a SquashFS image keep OpenMPI off CMA (they are not joined)",
  async () => {
    const r = await den(["run", SQFS, "--", "env"], { env: { OMPI_COMM_WORLD_LOCAL_SIZE: "2" } });
    equal(r.code, 0, r.stderr);
    ok(r.stdout.split("\n").includes("OMPI_MCA_btl_vader_single_copy_mechanism=none"), r.stdout);
  },
);

t("den run --feature=squash says it is there", async () => {
  equal((await den(["run", "--feature=squash"])).code, 0);
});

Deno.test({
  name: "squash run tests clean up",
  ignore,
  fn: async () => await work?.[Symbol.asyncDispose](),
});
