// Charliecloud 0.31's own ch-run tests (the bats files of the Debian package
// charliecloud-tests) against the real ch-run and against den, through
// tests/ch_bats.sh: it builds the ch-test images (cached in
// /var/tmp/den-chtest), runs the bats files as the unprivileged test user for
// both, and exits 1 when a test that passes with ch-run fails with den. This
// test fails with that comparison. Needs root, bats, ch-run 0.31, the
// charliecloud-tests files, busybox, gcc and the python3 base image.

import { exists, mpiImage, ROOT, TEST_USER, which } from "./_helpers.ts";

const CHTEST = "/usr/libexec/installed-tests/charliecloud";
// The python3 base image: the MPI test image, built here when missing.
const BASE = Deno.env.get("CH_BATS_BASE") ?? mpiImage() ?? "/var/tmp/den-test-mpi-bookworm";

function hasUser(name: string): boolean {
  return new Deno.Command("id", { args: [name], stdout: "null", stderr: "null" })
    .outputSync().success;
}

/** Why the suite can't run here, or undefined if it can. */
function missing(): string | undefined {
  if (Deno.uid() !== 0) return "not root";
  for (const cmd of ["bats", "ch-run", "busybox", "gcc", "setpriv", "unshare"]) {
    if (!which(cmd)) return `${cmd} not found`;
  }
  if (!exists(`${CHTEST}/run/ch-run_misc.bats`)) return "charliecloud-tests not installed";
  if (!exists(`${BASE}/usr/bin/python3`)) return `no base image with python3 at ${BASE}`;
  if (!hasUser(TEST_USER)) return `no user ${TEST_USER}`;
  return undefined;
}

const reason = missing();

Deno.test({
  name: "charliecloud 0.31 ch-run bats suite: den passes every test ch-run passes" +
    (reason ? ` (ignored: ${reason})` : ""),
  ignore: reason !== undefined,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const r = await new Deno.Command("bash", {
      args: [`${ROOT}/tests/ch_bats.sh`],
      env: { CH_BATS_BASE: BASE },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const dec = new TextDecoder();
    const out = dec.decode(r.stdout);
    if (r.code === 1) {
      throw new Error(`den fails tests that ch-run 0.31 passes:\n\n${out}`);
    }
    if (r.code !== 0) {
      throw new Error(`tests/ch_bats.sh failed (exit ${r.code}):\n${dec.decode(r.stderr)}\n${out}`);
    }
  },
});
