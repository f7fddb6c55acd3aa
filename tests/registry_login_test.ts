// den login and den logout against a registry with htpasswd Basic auth and
// a Bearer token front: credentials are checked before they are saved, the
// file is the containers auth.json (mode 0600, other entries kept) that
// skopeo reads too, and no secret is ever printed.
import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import { den, type DenResult, exists, HAVE_BUSYBOX, tempDir, which } from "./_helpers.ts";
import {
  ARCH,
  HAVE_REGISTRY,
  pushImage,
  sh,
  startProxy,
  startRegistry,
} from "./registry_helpers.ts";

const ready = HAVE_REGISTRY && HAVE_BUSYBOX && !!which("htpasswd");

/** `den login|logout ARGS` as the test user, with stdin. */
function den2(args: string[], env: Record<string, string>, stdin = ""): Promise<DenResult> {
  return den(args, { env, stdin });
}

Deno.test({
  name: "den login/logout: the containers auth.json, checked with the registry first",
  ignore: !ready,
  async fn(t) {
    const entry = (await sh(["htpasswd", "-Bbn", "ada", "s3cr3t-pw"])).trim();
    await using reg = await startRegistry({ htpasswd: entry + "\n" });
    await using tmp = tempDir("den-login-");
    await pushImage("login", [{ architecture: ARCH }], [
      `${reg.host}/private/busybox:1`,
      "--dest-creds",
      "ada:s3cr3t-pw",
    ]);
    const env = { HOME: tmp.path };
    const file = `${tmp.path}/.config/containers/auth.json`;
    const ref = `${reg.host}/private/busybox:1`;

    await t.step("a wrong password is refused; nothing written, nothing echoed", async () => {
      const r = await den2(
        ["login", "-u", "ada", "--password-stdin", reg.host],
        env,
        "wrong-pw\n",
      );
      strictEqual(r.code, 31);
      strictEqual(
        r.stderr,
        `den: error: login ${reg.host}: /v2/: ${reg.host} refused the user name or password of "ada"\n`,
      );
      ok(!exists(file));
    });

    await t.step("login with the right one; other entries kept; mode 0600", async () => {
      Deno.mkdirSync(`${tmp.path}/.config/containers`, { recursive: true });
      Deno.writeTextFileSync(
        file,
        JSON.stringify({ auths: { "other.example:5000": { auth: btoa("x:y") } }, keep: 1 }),
      );
      await sh(["chown", "-R", "dentest:", `${tmp.path}/.config`]);
      const r = await den2(
        ["login", "--username", "ada", "--password-stdin", `docker://${reg.host}/`],
        env,
        "s3cr3t-pw\n",
      );
      strictEqual(r.code, 0, r.stderr);
      strictEqual(r.stdout, "");
      strictEqual(r.stderr, `den: logged in to ${reg.host} as "ada"; saved in ${file}\n`);
      strictEqual(Deno.statSync(file).mode! & 0o777, 0o600);
      const v = JSON.parse(Deno.readTextFileSync(file));
      deepStrictEqual(v, {
        auths: {
          "other.example:5000": { auth: btoa("x:y") },
          [reg.host]: { auth: btoa("ada:s3cr3t-pw") },
        },
        keep: 1,
      });
      const leftovers = [...Deno.readDirSync(`${tmp.path}/.config/containers`)];
      strictEqual(leftovers.length, 1);
    });

    await t.step("den pull uses it; so does skopeo", async () => {
      const r = await den(["pull", "-s", `${tmp.path}/s`, ref, `${tmp.path}/img`], { env });
      strictEqual(r.code, 0, r.stderr);
      strictEqual(Deno.readTextFileSync(`${tmp.path}/img/etc/image-marker`), "login\n");
      const inspect = JSON.parse(
        await sh([
          "skopeo",
          "inspect",
          "--tls-verify=false",
          "--authfile",
          file,
          `docker://${ref}`,
        ]),
      );
      strictEqual(inspect.Architecture, ARCH);
    });

    await t.step("logout removes the entry, keeps the rest; again: an error", async () => {
      let r = await den2(["logout", reg.host], env);
      strictEqual(r.code, 0, r.stderr);
      strictEqual(r.stderr, `den: removed the credentials for ${reg.host} from ${file}\n`);
      const v = JSON.parse(Deno.readTextFileSync(file));
      deepStrictEqual(v, { auths: { "other.example:5000": { auth: btoa("x:y") } }, keep: 1 });
      strictEqual(Deno.statSync(file).mode! & 0o777, 0o600);
      r = await den2(["logout", reg.host], env);
      strictEqual(r.code, 31);
      strictEqual(r.stderr, `den: error: logout ${file}: no credentials for ${reg.host}\n`);
      r = await den(["pull", "-s", `${tmp.path}/s`, ref, `${tmp.path}/img2`], { env });
      strictEqual(r.code, 31);
    });

    await t.step("$XDG_RUNTIME_DIR, then $REGISTRY_AUTH_FILE, win", async () => {
      const xdg = `${tmp.path}/run`;
      Deno.mkdirSync(xdg);
      await sh(["chown", "dentest:", xdg]);
      let r = await den2(
        ["login", "-u", "ada", "--password-stdin", reg.host],
        { ...env, XDG_RUNTIME_DIR: xdg },
        "s3cr3t-pw",
      );
      strictEqual(r.code, 0, r.stderr);
      ok(exists(`${xdg}/containers/auth.json`));
      const own = `${tmp.path}/mine.json`;
      r = await den2(
        ["login", "-u", "ada", "--password-stdin", reg.host],
        { ...env, XDG_RUNTIME_DIR: xdg, REGISTRY_AUTH_FILE: own },
        "s3cr3t-pw",
      );
      strictEqual(r.code, 0, r.stderr);
      strictEqual(Deno.statSync(own).mode! & 0o777, 0o600);
    });

    await t.step("usage: no terminal and no --password-stdin; no user name", async () => {
      let r = await den2(["login", reg.host], env);
      strictEqual(r.code, 64);
      ok(r.stderr.startsWith("den: error: no terminal to ask for the password on\n"), r.stderr);
      r = await den2(["login", "--password-stdin", reg.host], env, "pw");
      strictEqual(r.code, 64);
      r = await den2(["login", "-u", "a", "--password-stdin", "bad host!"], env, "pw");
      strictEqual(r.code, 64);
    });
  },
});

Deno.test({
  name: "den login: a Bearer token registry checks the password at its token endpoint",
  ignore: !ready,
  async fn() {
    await using reg = await startRegistry();
    await using tmp = tempDir("den-login-token-");
    await using proxy = startProxy(reg.host, { user: "bob", password: "tok3n-pw" });
    const env = { HOME: tmp.path, REGISTRY_AUTH_FILE: `${tmp.path}/a.json` };
    let r = await den2(["login", "-u", "bob", "--password-stdin", proxy.host], env, "nope");
    strictEqual(r.code, 31);
    ok(r.stderr.includes(`refused the user name or password of "bob"`), r.stderr);
    ok(!r.stderr.includes("nope"));
    ok(!exists(env.REGISTRY_AUTH_FILE));
    r = await den2(["login", "-u", "bob", "--password-stdin", proxy.host], env, "tok3n-pw\n");
    strictEqual(r.code, 0, r.stderr);
    strictEqual(proxy.tokens, 1);
    const v = JSON.parse(Deno.readTextFileSync(env.REGISTRY_AUTH_FILE));
    strictEqual(v.auths[proxy.host].auth, btoa("bob:tok3n-pw"));
  },
});
