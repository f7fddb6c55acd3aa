// Credentials from docker's config.json through credential helpers
// (credHelpers for one registry, credsStore for all): a fake
// docker-credential-dentest on PATH answers `get` as the real ones do.
import { ok, strictEqual } from "node:assert/strict";
import { den, exists, HAVE_BUSYBOX, tempDir, which } from "./_helpers.ts";
import { ARCH, HAVE_REGISTRY, pushImage, sh, startRegistry } from "./registry_helpers.ts";

const ready = HAVE_REGISTRY && HAVE_BUSYBOX && !!which("htpasswd");

Deno.test({
  name: "den pull: credentials from docker-credential-NAME (credHelpers, credsStore)",
  ignore: !ready,
  async fn(t) {
    const entry = (await sh(["htpasswd", "-Bbn", "ada", "s3cr3t-pw"])).trim();
    await using reg = await startRegistry({ htpasswd: entry + "\n" });
    await using tmp = tempDir("den-credhelper-");
    await pushImage("helper", [{ architecture: ARCH }], [
      `${reg.host}/private/busybox:1`,
      "--dest-creds",
      "ada:s3cr3t-pw",
    ]);
    const bin = `${tmp.path}/bin`;
    Deno.mkdirSync(bin);
    const log = `${tmp.path}/helper.log`;
    const helper = (secret: string) => {
      Deno.writeTextFileSync(
        `${bin}/docker-credential-dentest`,
        `#!/bin/sh\n[ "$1" = get ] || exit 2\nread -r server\necho "$server" >> ${log}\n` +
          `case "$server" in\n  ${reg.host}) printf '{"ServerURL":"%s","Username":"ada",` +
          `"Secret":"${secret}"}\\n' "$server" ;;\n` +
          `  *) echo "credentials not found in native keychain"; exit 1 ;;\nesac\n`,
      );
      Deno.chmodSync(`${bin}/docker-credential-dentest`, 0o755);
    };
    const config = (v: unknown) => {
      Deno.mkdirSync(`${tmp.path}/.docker`, { recursive: true });
      Deno.writeTextFileSync(`${tmp.path}/.docker/config.json`, JSON.stringify(v));
      Deno.chmodSync(`${tmp.path}/.docker/config.json`, 0o644);
    };
    const env = { HOME: tmp.path, PATH: `${bin}:/usr/local/bin:/usr/bin:/bin` };
    const ref = `${reg.host}/private/busybox:1`;
    let n = 0;
    const pull = (...args: string[]) =>
      den(["pull", "-s", `${tmp.path}/s`, ...args, ref, `${tmp.path}/d${++n}`], { env });

    await t.step("credHelpers for the registry", async () => {
      helper("s3cr3t-pw");
      config({ credHelpers: { [reg.host]: "dentest", "other.example": "nope" } });
      const r = await pull("-v");
      strictEqual(r.code, 0, r.stderr);
      ok(!r.stderr.includes("s3cr3t"), r.stderr);
      strictEqual(Deno.readTextFileSync(`${tmp.path}/d${n}/etc/image-marker`), "helper\n");
      strictEqual(Deno.readTextFileSync(log), `${reg.host}\n`);
    });

    await t.step("credsStore for every registry, after auths", async () => {
      config({ auths: { "other.example": {} }, credsStore: "dentest" });
      const r = await pull();
      strictEqual(r.code, 0, r.stderr);
    });

    await t.step("a wrong secret names the helper, not the secret", async () => {
      helper("wrong-pw");
      const r = await pull();
      strictEqual(r.code, 31);
      ok(
        r.stderr.includes(
          `access denied by ${reg.host} with the credentials of "ada" from docker-credential-dentest (named in ${tmp.path}/.docker/config.json)`,
        ),
        r.stderr,
      );
      ok(!r.stderr.includes("wrong-pw"));
      ok(!exists(`${tmp.path}/d${n}`));
    });

    await t.step("a helper that is not installed: one line", async () => {
      config({ credHelpers: { [reg.host]: "missing" } });
      const r = await pull();
      strictEqual(r.code, 31);
      strictEqual(
        r.stderr,
        `den: error: pull ${ref}: read credentials ${tmp.path}/.docker/config.json: ` +
          "docker-credential-missing is not on PATH\n",
      );
    });
  },
});
