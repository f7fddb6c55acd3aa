// Other users and bad moments on a shared node: a signal that arrives while
// den sets the container up leaves nothing in $TMPDIR, and another user who
// holds a peer group's rendezvous name gets no namespaces and is named.

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

const ignore = !HAVE_BUSYBOX || !hasUserns();
const work = ignore ? undefined : tempDir("den-neighbours-test-");
const IMG = work ? buildBusyboxImage(`${work.path}/img`) : "/nonexistent";

function t(name: string, fn: () => Promise<void>, skip = false) {
  Deno.test({ name, ignore: ignore || skip, sanitizeResources: false, sanitizeOps: false, fn });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

t(
  "SIGTERM, SIGINT or SIGKILL at any moment of setup leaves no temporary file in $TMPDIR",
  async () => {
    // den's own private $TMPDIR, where it writes the passwd and group files.
    const tmp = `${work!.path}/tmp`;
    Deno.mkdirSync(tmp, { mode: 0o700 });
    const { uid, gid } = testUser();
    Deno.chownSync(tmp, uid, gid);
    // Delays that land before, during and after the container's setup.
    // den's generated files live in a tmpfs of the container's own, so even
    // kill -9 in the middle of its setup leaves nothing on the host.
    for (const sig of ["SIGTERM", "SIGINT", "SIGKILL"] as const) {
      for (const ms of [0, 5, 10, 15, 20, 25, 30, 35, 40, 50, 60, 80, 120]) {
        const [cmd, ...args] = denArgv(["run", IMG, "--", "sleep", "1"]);
        const child = new Deno.Command(cmd!, {
          args,
          env: { ...testUserEnv(), TMPDIR: tmp },
          clearEnv: true,
          stdout: "null",
          stderr: "null",
        }).spawn();
        await sleep(ms);
        try {
          child.kill(sig);
        } catch { /* already gone */ }
        const status = await child.status;
        ok(status.code !== 0 || status.signal !== null, `${sig} after ${ms} ms: exit 0`);
        equal([...Deno.readDirSync(tmp)].map((e) => e.name).join(" "), "", `${sig} after ${ms} ms`);
      }
    }
  },
);

t("den writes nothing in a shared $TMPDIR: it runs with one it cannot write to", async () => {
  // The passwd and group files are made in a tmpfs of the container's own,
  // so no neighbour ever sees them, and nothing can be left behind.
  const tmp = `${work!.path}/readonly-tmp`;
  Deno.mkdirSync(tmp, { mode: 0o555 });
  Deno.chmodSync(tmp, 0o555);
  const [cmd, ...args] = denArgv(["run", IMG, "--", "sh", "-c", "ls /tmp | wc -l"]);
  const r = await new Deno.Command(cmd!, {
    args,
    env: { ...testUserEnv(), TMPDIR: tmp },
    clearEnv: true,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  equal(r.code, 0, dec.decode(r.stderr));
  equal(dec.decode(r.stdout).trim(), "0");
});

/** den's rendezvous names, from /proc/net/unix (abstract: "@den-join/..."). */
const joinNames = () =>
  Deno.readTextFileSync("/proc/net/unix").split("\n")
    .map((l) => l.split(/\s+/).at(-1) ?? "")
    .filter((n) => n.startsWith("@den-join/"));

t("another user holding a group's name gets nothing, and the peer says who", async () => {
  // Learn the group's name from a first peer, then let root (another user)
  // take it once that peer is gone.
  const before = new Set(joinNames());
  const [cmd, ...args] = denArgv([
    "run",
    "--join-ct=2",
    "--join-tag=squat",
    IMG,
    "--",
    "sleep",
    "3",
  ]);
  const first = new Deno.Command(cmd!, {
    args,
    env: testUserEnv(),
    clearEnv: true,
    stdout: "null",
    stderr: "null",
  }).spawn();
  let name: string | undefined;
  for (let i = 0; i < 100 && !name; i++) {
    await sleep(50);
    name = joinNames().find((n) => !before.has(n));
  }
  first.kill("SIGKILL");
  await first.status;
  ok(name, "the first peer never bound its name");
  const squatter = new Deno.Command("python3", {
    args: [
      "-c",
      "import socket,sys,time\n" +
      "s=socket.socket(socket.AF_UNIX)\n" +
      "s.bind(b'\\0'+sys.argv[1].encode())\n" +
      "s.listen(8)\nprint('bound',flush=True)\ntime.sleep(20)",
      name!.slice(1),
    ],
    stdout: "piped",
  }).spawn();
  try {
    const reader = squatter.stdout.getReader();
    const { value } = await reader.read();
    reader.releaseLock();
    equal(new TextDecoder().decode(value).trim(), "bound");
    const r = await den(["run", "--join-ct=2", "--join-tag=squat", IMG, "--", "true"], {
      env: { DEN_JOIN_TIMEOUT: "5" },
    });
    equal(r.code, 31, r.stderr);
    match(r.stderr, /join: peer group "squat" is held by another user \(uid 0, pid \d+\)/);
  } finally {
    squatter.kill("SIGKILL");
    await squatter.output().catch(() => {});
  }
}, Deno.uid() !== 0 || !which("python3"));

Deno.test({
  name: "neighbours tests clean up",
  ignore,
  fn: async () => await work?.[Symbol.asyncDispose](),
});
