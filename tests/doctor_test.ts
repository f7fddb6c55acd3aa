// Integration tests of `den doctor` as the unprivileged test user: its
// checks are real (a container is started from a scratch image).

import { deepStrictEqual, equal, match, ok } from "node:assert/strict";
import { den, exists, hasUserns, which } from "./_helpers.ts";

const ignore = !hasUserns();

Deno.test({ name: "den doctor says den run works here and exits 0", ignore }, async () => {
  const r = await den(["doctor"]);
  equal(r.stderr, "");
  match(r.stdout, /^ok {4}user\+mount namespaces {2}a container started/m);
  match(r.stdout, /^ok {4}overlayfs \(-W\) {9}an overlay over an image worked/m);
  match(r.stdout, /^ {6}ids .*uid \d+ /m);
  ok(r.stdout.endsWith("den run works here\n"));
  equal(r.code, 0);
});

Deno.test({ name: "den doctor --json lists every check with a status", ignore }, async () => {
  const r = await den(["doctor", "--json"]);
  equal(r.code, 0);
  const report = JSON.parse(r.stdout);
  equal(report.works, true);
  deepStrictEqual(report.checks.map((c: { name: string }) => c.name), [
    "kernel",
    "ids",
    "user+mount namespaces",
    "overlayfs (-W)",
    "/dev/fuse",
    "mksquashfs",
    "squashfuse",
    "SquashFS images",
    "storage",
  ]);
  for (const c of report.checks) ok(["ok", "fail", "info"].includes(c.status), c.name);
  const fuse = report.checks.find((c: { name: string }) => c.name === "/dev/fuse");
  if (!exists("/dev/fuse")) equal(fuse.status, "fail");
});

Deno.test(
  { name: "den doctor reports an unsafe storage directory with its fix", ignore },
  async () => {
    const r = await den(["doctor", "-s", "/etc"]);
    match(r.stdout, /^FAIL {2}storage {16}/m);
    match(r.stdout, /fix: /);
    equal(r.code, 0); // storage is not needed by den run IMAGE-DIR
  },
);

const squashReady = !ignore && exists("/dev/fuse") && which("mksquashfs") !== undefined &&
  (which("squashfuse_ll") ?? which("squashfuse")) !== undefined;

Deno.test(
  { name: "den doctor mounts a SquashFS file in a user namespace, as den run would", ignore },
  async () => {
    const r = await den(["doctor"]);
    const line = r.stdout.split("\n").find((l) => l.includes("SquashFS images"));
    if (squashReady && fuseUsable()) {
      match(
        line!,
        /^ok {4}SquashFS images {8}\/\S+\/squashfuse(_ll)? mounted one in a user namespace$/,
      );
    } else {
      match(line!, /^FAIL {2}SquashFS images {8}/);
    }
    equal(leftovers(), "");
  },
);

Deno.test(
  { name: "den doctor names a squashfuse that cannot mount, with the fix", ignore: !squashReady },
  async () => {
    const bin = Deno.makeTempDirSync({ prefix: "den-doctor-test-" });
    Deno.chmodSync(bin, 0o755);
    Deno.writeTextFileSync(
      `${bin}/squashfuse_ll`,
      "#!/bin/sh\necho 'fuse: unknown option fd' >&2\nexit 1\n",
      { mode: 0o755 },
    );
    Deno.chmodSync(`${bin}/squashfuse_ll`, 0o755);
    try {
      const r = await den(["doctor"], { env: { PATH: `${bin}:/usr/bin:/bin` } });
      match(
        r.stdout,
        /^FAIL {2}SquashFS images {8}a mount failed: can't mount \S+probe\.sqfs: squashfuse exited with status 1: fuse: unknown option fd$/m,
      );
      match(r.stdout, /fix: squashfuse built with libfuse >= 3\.3/);
      equal(r.code, 0); // den run of a directory still works
      equal(leftovers(), "");
    } finally {
      Deno.removeSync(bin, { recursive: true });
    }
  },
);

/** Can the test user open /dev/fuse (mode 0666 in CI)? */
function fuseUsable(): boolean {
  try {
    return ((Deno.statSync("/dev/fuse").mode ?? 0) & 0o006) === 0o006;
  } catch {
    return false;
  }
}

/** Processes or scratch directories den doctor left behind. */
function leftovers(): string {
  const dirs = [...Deno.readDirSync(Deno.env.get("TMPDIR") || "/tmp")]
    .filter((e) => e.name.startsWith("den-doctor-") && !e.name.startsWith("den-doctor-test-"))
    .map((e) => e.name);
  const fuse = new Deno.Command("pgrep", { args: ["-f", "probe\\.sqfs"], stdout: "piped" })
    .outputSync();
  return [...dirs, new TextDecoder().decode(fuse.stdout).trim()].filter((x) => x).join(" ");
}

Deno.test("den doctor with an unknown option is a usage error", async () => {
  const r = await den(["doctor", "--nope"]);
  equal(r.code, 64);
  equal(r.stderr.split("\n").length, 3);
});
