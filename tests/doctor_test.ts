// Integration tests of `den doctor` as the unprivileged test user: its
// checks are real (a container is started from a scratch image).

import { deepStrictEqual, equal, match, ok } from "node:assert/strict";
import { den, exists, hasUserns } from "./_helpers.ts";

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

Deno.test("den doctor with an unknown option is a usage error", async () => {
  const r = await den(["doctor", "--nope"]);
  equal(r.code, 64);
  equal(r.stderr.split("\n").length, 3);
});
