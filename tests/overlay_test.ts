// Integration tests of -W/--write-fake on a busybox image, as the
// unprivileged test user: the container writes anywhere, the image does not
// change, nothing is left behind.

import { equal, match } from "node:assert/strict";
import { buildBusyboxImage, den, hasUserns, HAVE_BUSYBOX, tempDir } from "./_helpers.ts";

const ignore = !HAVE_BUSYBOX || !hasUserns();
const work = ignore ? undefined : tempDir("den-overlay-test-");
const IMG = work ? buildBusyboxImage(`${work.path}/img`) : "/nonexistent";

function t(name: string, fn: () => Promise<void>) {
  Deno.test({ name, ignore, sanitizeResources: false, sanitizeOps: false, fn });
}

/** Every path under dir with its kind, size and mode: the image's state. */
function snapshot(dir: string): string {
  const lines: string[] = [];
  const walk = (d: string) => {
    for (const e of [...Deno.readDirSync(d)].sort((a, b) => a.name < b.name ? -1 : 1)) {
      const p = `${d}/${e.name}`;
      const s = Deno.lstatSync(p);
      lines.push(`${p.slice(dir.length)} ${s.mode} ${s.size} ${s.mtime?.getTime()}`);
      if (s.isDirectory) walk(p);
    }
  };
  walk(dir);
  return lines.join("\n");
}

t("den run -W writes, deletes and renames anywhere; the image is unchanged", async () => {
  const before = snapshot(IMG);
  const r = await den([
    "run",
    "-W",
    IMG,
    "--",
    "sh",
    "-c",
    "echo hi > /usr/new && cat /usr/new && mkdir /opt && rm /bin/ls && mv /usr /usr2 && " +
    "test ! -e /bin/ls && test ! -e /usr && ls -d /usr2/bin /usr2/new",
  ]);
  equal(r.stderr, "");
  equal(r.stdout, "hi\n/usr2/bin\n/usr2/new\n");
  equal(r.code, 0);
  equal(snapshot(IMG), before);
});

t("den run -W: writes vanish at exit", async () => {
  equal((await den(["run", "-W", IMG, "--", "touch", "/usr/gone"])).code, 0);
  const r = await den(["run", "-W", IMG, "--", "ls", "/usr/gone"]);
  equal(r.code, 1);
});

t("den run without -W: the image is read-only (EROFS)", async () => {
  const r = await den(["run", IMG, "--", "sh", "-c", "echo hi > /usr/new"]);
  match(r.stderr, /Read-only file system/);
  equal(r.code, 1);
});

t("den run -W=SIZE caps the writes at the tmpfs size", async () => {
  const r = await den([
    "run",
    "--write-fake=1m",
    IMG,
    "--",
    "sh",
    "-c",
    "head -c 4000000 /dev/zero > /big",
  ]);
  equal(r.code, 1);
});

t("den run -W makes missing bind destinations in the overlay, not in the image", async () => {
  const r = await den([
    "run",
    "-W",
    "-b",
    `${IMG}/ch:/no/such/dir`,
    IMG,
    "--",
    "ls",
    "/no/such/dir",
  ]);
  equal(r.stderr, "");
  equal(r.code, 0);
  equal(Deno.statSync(IMG).isDirectory, true);
  let made = true;
  try {
    Deno.lstatSync(`${IMG}/no`);
  } catch {
    made = false;
  }
  equal(made, false);
});

t("den run -W with -w, or a bad SIZE, is one usage line (exit 64)", async () => {
  const both = await den(["run", "-W", "-w", IMG, "--", "true"]);
  equal(both.stderr.split("\n")[0], "den: error: --write and --write-fake are mutually exclusive");
  equal(both.code, 64);
  const bad = await den(["run", "-Wlots", IMG, "--", "true"]);
  equal(bad.stderr.split("\n")[0], `den: error: --write-fake: invalid size: "lots"`);
  equal(bad.code, 64);
});

t("den run --feature overlayfs succeeds", async () => {
  equal((await den(["run", "--feature", "overlayfs"])).code, 0);
});

Deno.test({
  name: "overlay tests clean up",
  ignore,
  fn: async () => await work?.[Symbol.asyncDispose](),
});
