// den pull against a real registry on loopback: Debian's docker-registry
// started by the test with its own storage, images pushed with skopeo (OCI,
// Docker schema 2, an OCI index and a Docker manifest list), pulled and run
// by the unprivileged test user. Ignored, never passed, without the tools.
import { ok, strictEqual } from "node:assert/strict";
import {
  den,
  denArgv,
  type DenResult,
  exists,
  hasUserns,
  HAVE_BUSYBOX,
  tempDir,
  testUserEnv,
  which,
} from "./_helpers.ts";
import {
  ARCH,
  checkClean,
  HAVE_REGISTRY,
  pushImage,
  type Registry,
  sh,
  startProxy,
  startRegistry,
} from "./registry_helpers.ts";

const ready = HAVE_REGISTRY && HAVE_BUSYBOX; // docker-registry, skopeo, busybox-static

/** `den pull ARGS` as the test user. */
function pull(args: string[], env: Record<string, string> = {}): Promise<DenResult> {
  return den(["pull", ...args], { env });
}

/** The digest the registry serves a manifest under. */
async function manifestDigest(reg: Registry, repo: string, tag: string, accept: string) {
  const r = await fetch(`http://${reg.host}/v2/${repo}/manifests/${tag}`, {
    headers: { accept },
  });
  await r.body?.cancel();
  return r.headers.get("docker-content-digest")!;
}

function meta(dest: string): Record<string, unknown> {
  return JSON.parse(Deno.readTextFileSync(`${dest}/ch/metadata.json`));
}

const OTHER = ARCH === "amd64" ? "arm64" : "amd64";
const MULTI = [{ architecture: ARCH }, { architecture: OTHER }, {
  architecture: "arm",
  variant: "v7",
}];

Deno.test({
  name: "den pull: OCI, Docker schema 2, index and list from a loopback registry; run as a user",
  ignore: !ready,
  async fn(t) {
    await using reg = await startRegistry();
    await using tmp = tempDir("den-pull-");
    const one = [{ architecture: ARCH }];
    await pushImage("one", one, [`${reg.host}/test/busybox:oci`], [
      `${reg.host}/test/busybox:v2s2`,
      "--format",
      "v2s2",
    ]);
    await pushImage("multi", MULTI, [`${reg.host}/test/multi:index`, "--all"], [
      `${reg.host}/test/multi:list`,
      "--all",
      "--format",
      "v2s2",
    ]);
    await pushImage("corrupt", one, [`${reg.host}/test/bad:latest`]);
    const storage = `${tmp.path}/storage`;
    const s = ["-s", storage];

    await t.step("by tag (OCI) into DEST, then den run", async () => {
      const dest = `${tmp.path}/oci`;
      const r = await pull([...s, `${reg.host}/test/busybox:oci`, dest]);
      strictEqual(r.code, 0, r.stderr);
      strictEqual(r.stdout, "");
      ok(
        r.stderr.startsWith(`den: pulled ${reg.host}/test/busybox:oci (sha256:`),
        r.stderr,
      );
      strictEqual(r.stderr.split("\n").length, 2, r.stderr);
      const m = meta(dest);
      strictEqual(m.image, `${reg.host}/test/busybox:oci`);
      strictEqual(
        m.digest,
        await manifestDigest(
          reg,
          "test/busybox",
          "oci",
          "application/vnd.oci.image.manifest.v1+json",
        ),
      );
      strictEqual(Deno.readTextFileSync(`${dest}/etc/image-marker`), "one\n");
      if (hasUserns()) {
        const run = await den(["run", dest, "--", "/bin/busybox", "echo", "hi"]);
        strictEqual(run.stdout, "hi\n", run.stderr);
        strictEqual(run.code, 0);
        const env = await den(["run", dest, "--", "/bin/busybox", "sh", "-c", "echo $DEN_MARKER"]);
        strictEqual(env.stdout, "one\n");
      }
      checkClean(storage, tmp.path);
    });

    await t.step("Docker schema 2 by digest, its blobs from the cache", async () => {
      const digest = await manifestDigest(
        reg,
        "test/busybox",
        "v2s2",
        "application/vnd.docker.distribution.manifest.v2+json",
      );
      const dest = `${tmp.path}/v2s2`;
      const r = await pull([...s, `${reg.host}/test/busybox@${digest}`, dest]);
      strictEqual(r.code, 0, r.stderr);
      // skopeo's conversion to v2s2 keeps the layer and config blobs.
      ok(r.stderr.includes(" 0 B downloaded, 2 blobs cached,"), r.stderr);
      strictEqual(meta(dest).digest, digest);
      if (hasUserns()) {
        const run = await den(["run", dest, "--", "/bin/busybox", "echo", "hi"]);
        strictEqual(run.stdout, "hi\n", run.stderr);
      }
    });

    await t.step("a second pull downloads nothing", async () => {
      const r = await pull([...s, `${reg.host}/test/busybox:oci`, `${tmp.path}/again`]);
      strictEqual(r.code, 0, r.stderr);
      ok(r.stderr.includes(" 0 B downloaded, 2 blobs cached,"), r.stderr);
    });

    await t.step("platforms: host's by default, --arch with variants, index and list", async () => {
      for (const tag of ["index", "list"]) {
        const host = `${tmp.path}/${tag}-host`;
        let r = await pull([...s, `${reg.host}/test/multi:${tag}`, host]);
        strictEqual(r.code, 0, r.stderr);
        strictEqual(meta(host).arch, ARCH);
        const v7 = `${tmp.path}/${tag}-v7`;
        r = await pull([...s, "--arch", "arm/v7", `${reg.host}/test/multi:${tag}`, v7]);
        strictEqual(r.code, 0, r.stderr);
        strictEqual(meta(v7).arch, "arm");
        strictEqual(meta(v7).variant, "v7");
        const other = `${tmp.path}/${tag}-other`;
        r = await pull([
          ...s,
          "-q",
          `--arch=linux/${OTHER}`,
          `${reg.host}/test/multi:${tag}`,
          other,
        ]);
        strictEqual(r.code, 0, r.stderr);
        strictEqual(r.stderr, "");
        strictEqual(meta(other).arch, OTHER);
        const none = `${tmp.path}/${tag}-none`;
        r = await pull([...s, "--arch", "s390x", `${reg.host}/test/multi:${tag}`, none]);
        strictEqual(r.code, 31);
        strictEqual(
          r.stderr,
          `den: error: pull ${reg.host}/test/multi:${tag}: no image for linux/s390x; ` +
            `available: linux/${ARCH}, linux/${OTHER}, linux/arm/v7\n` +
            "den: hint: choose one with --arch\n",
        );
        ok(!exists(none));
      }
    });

    await t.step(
      "a corrupted blob is refused, naming it; nothing installed or cached",
      async () => {
        const m = await (await fetch(`http://${reg.host}/v2/test/bad/manifests/latest`, {
          headers: { accept: "application/vnd.oci.image.manifest.v1+json" },
        })).json();
        const layer: string = m.layers[0].digest;
        const hex = layer.slice(7);
        const data = `${reg.root}/docker/registry/v2/blobs/sha256/${hex.slice(0, 2)}/${hex}/data`;
        const bytes = Deno.readFileSync(data);
        bytes[bytes.length >> 1] = bytes[bytes.length >> 1]! ^ 0x55;
        Deno.writeFileSync(data, bytes);
        const dest = `${tmp.path}/bad`;
        const r = await pull([...s, `${reg.host}/test/bad`, dest]);
        strictEqual(r.code, 31);
        ok(
          new RegExp(
            `^den: error: pull ${reg.host}/test/bad:latest: blob ${layer}: digest mismatch \\(got sha256:[a-f0-9]{64}\\)\\n$`,
          ).test(r.stderr),
          r.stderr,
        );
        ok(!exists(dest));
        ok(!exists(`${storage}/blobs/sha256/${hex}`));
        checkClean(storage, tmp.path);
      },
    );

    await t.step(
      "no DEST: a name in storage from the ref; up to date the second time",
      async () => {
        const env = { DEN_STORAGE: storage };
        let r = await pull([`${reg.host}/test/busybox:oci`], env);
        strictEqual(r.code, 0, r.stderr);
        ok(r.stderr.includes("into busybox+oci:"), r.stderr);
        ok(exists(`${storage}/img/busybox+oci/bin/busybox`));
        r = await pull([`${reg.host}/test/busybox:oci`], env);
        strictEqual(r.code, 0, r.stderr);
        strictEqual(
          r.stderr,
          `den: busybox+oci is up to date (${reg.host}/test/busybox:oci, ${
            String(meta(`${storage}/img/busybox+oci`).digest).slice(0, 19)
          })\n`,
        );
        if (hasUserns()) {
          const run = await den(["run", "busybox+oci", "--", "/bin/cat", "/etc/image-marker"], {
            env,
          });
          strictEqual(run.stdout, "one\n", run.stderr);
        }
      },
    );

    await t.step("den run docker://REF pulls into storage when missing, then runs", async () => {
      if (!hasUserns()) return;
      const env = { DEN_STORAGE: `${tmp.path}/run-storage` };
      const ref = `docker://${reg.host}/test/busybox:oci`;
      const first = await den(["run", ref, "--", "/bin/cat", "/etc/image-marker"], { env });
      strictEqual(first.stdout, "one\n", first.stderr);
      strictEqual(first.code, 0);
      ok(exists(`${tmp.path}/run-storage/img/busybox+oci/bin/busybox`));
      // Stored now: running it again needs no registry (this one is down).
      const again = await den(["run", "docker://127.0.0.1:1/test/busybox:oci", "--", "true"], {
        env,
      });
      strictEqual(again.code, 0, again.stderr);
    });

    await t.step("errors: unknown tag, refused connection, usage", async () => {
      let r = await pull([...s, `${reg.host}/test/busybox:nope`, `${tmp.path}/x`]);
      strictEqual(r.code, 31);
      strictEqual(
        r.stderr,
        `den: error: pull ${reg.host}/test/busybox:nope: manifest: not found in ${reg.host}\n`,
      );
      const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const port = (l.addr as Deno.NetAddr).port;
      l.close();
      r = await pull([...s, `127.0.0.1:${port}/x`, `${tmp.path}/x`]);
      strictEqual(r.code, 31);
      ok(r.stderr.includes(`can't connect to https://127.0.0.1:${port}: `), r.stderr);
      strictEqual(r.stderr.split("\n").length, 2);
      r = await pull([]);
      strictEqual(r.code, 64);
      r = await pull(["--jobs", "0", "x"]);
      strictEqual(r.code, 64);
      r = await pull([...s, `${reg.host}/test/busybox:oci`, `${tmp.path}/oci`]);
      strictEqual(r.code, 31);
      ok(r.stderr.includes("destination exists"), r.stderr);
      ok(!exists(`${tmp.path}/x`));
    });
  },
});

const HTPASSWD = which("htpasswd");

Deno.test({
  name: "den pull: Basic auth (htpasswd) with credentials from $REGISTRY_AUTH_FILE",
  ignore: !ready || !HTPASSWD, // htpasswd is in apache2-utils
  async fn(t) {
    const entry = (await sh(["htpasswd", "-Bbn", "ada", "s3cr3t-pw"])).trim();
    await using reg = await startRegistry({ htpasswd: entry + "\n" });
    await using tmp = tempDir("den-pull-auth-");
    await pushImage("auth", [{ architecture: ARCH }], [
      `${reg.host}/private/busybox:1`,
      "--dest-creds",
      "ada:s3cr3t-pw",
    ]);
    const s = ["-s", `${tmp.path}/storage`];
    const ref = `${reg.host}/private/busybox:1`;
    let files = 0;
    const authFile = (pw: string) => {
      const path = `${tmp.path}/auth-${++files}.json`;
      Deno.writeTextFileSync(
        path,
        JSON.stringify({ auths: { [reg.host]: { auth: btoa(`ada:${pw}`) } } }),
      );
      Deno.chmodSync(path, 0o644);
      return path;
    };
    // No credential file of the test user's may leak in.
    const env = { HOME: tmp.path };

    await t.step("without credentials: one line saying so", async () => {
      const r = await pull([...s, ref, `${tmp.path}/a`], env);
      strictEqual(r.code, 31);
      strictEqual(
        r.stderr.split("\n")[0],
        `den: error: pull ${ref}: manifest: ${reg.host} requires authentication`,
      );
      ok(!exists(`${tmp.path}/a`));
    });

    await t.step("wrong password: names the file, never the secret", async () => {
      const file = authFile("wrong-pw");
      const r = await pull([...s, "-v", ref, `${tmp.path}/a`], {
        ...env,
        REGISTRY_AUTH_FILE: file,
      });
      strictEqual(r.code, 31);
      ok(
        r.stderr.includes(
          `den: error: pull ${ref}: manifest: access denied by ${reg.host} with the credentials of "ada" from ${file}\n`,
        ),
        r.stderr,
      );
      ok(!r.stderr.includes("wrong-pw"), r.stderr);
      ok(!r.stderr.includes(btoa("ada:wrong-pw")));
    });

    await t.step("right password from $REGISTRY_AUTH_FILE", async () => {
      const file = authFile("s3cr3t-pw");
      const dest = `${tmp.path}/ok`;
      const r = await pull([...s, "-v", ref, dest], { ...env, REGISTRY_AUTH_FILE: file });
      strictEqual(r.code, 0, r.stderr);
      ok(!r.stderr.includes("s3cr3t"), r.stderr);
      ok(!r.stderr.includes(btoa("ada:s3cr3t-pw")));
      strictEqual(Deno.readTextFileSync(`${dest}/etc/image-marker`), "auth\n");
    });
  },
});

Deno.test({
  name: "den pull: Bearer tokens, and 500, 429, a dropped and a stalled transfer end in success",
  ignore: !ready,
  async fn(t) {
    await using reg = await startRegistry();
    await using tmp = tempDir("den-pull-token-");
    await pushImage("token", [{ architecture: ARCH }], [`${reg.host}/test/busybox:1`]);
    const env = { HOME: tmp.path, DEN_PULL_STALL_TIMEOUT: "1" };
    let n = 0;
    const storage = () => ["-s", `${tmp.path}/storage${++n}`];

    await t.step("anonymous token, asked for once", async () => {
      await using proxy = startProxy(reg.host);
      const r = await pull([...storage(), `${proxy.host}/test/busybox:1`, `${tmp.path}/anon`], env);
      strictEqual(r.code, 0, r.stderr);
      strictEqual(proxy.tokens, 1);
      strictEqual(Deno.readTextFileSync(`${tmp.path}/anon/etc/image-marker`), "token\n");
    });

    await t.step("token for credentials from the auth file; refused without", async () => {
      await using proxy = startProxy(reg.host, { user: "bob", password: "tok3n-pw" });
      const ref = `${proxy.host}/test/busybox:1`;
      let r = await pull([...storage(), ref, `${tmp.path}/cred`], env);
      strictEqual(r.code, 31);
      ok(
        r.stderr.startsWith(
          `den: error: pull ${ref}: manifest: ${proxy.host} requires authentication\n`,
        ),
        r.stderr,
      );
      const file = `${tmp.path}/auth.json`;
      Deno.writeTextFileSync(
        file,
        JSON.stringify({ auths: { [`http://${proxy.host}`]: { auth: btoa("bob:tok3n-pw") } } }),
      );
      Deno.chmodSync(file, 0o644);
      r = await pull([...storage(), ref, `${tmp.path}/cred`], { ...env, REGISTRY_AUTH_FILE: file });
      strictEqual(r.code, 0, r.stderr);
      ok(!r.stderr.includes("tok3n"));
    });

    await t.step("faults: 500, 429, a drop (resumed with Range), a stall", async () => {
      await using proxy = startProxy(reg.host, { faults: ["500", "429", "drop", "stall"] });
      const dest = `${tmp.path}/faults`;
      const r = await pull([...storage(), "-j", "1", `${proxy.host}/test/busybox:1`, dest], env);
      strictEqual(r.code, 0, r.stderr);
      strictEqual(proxy.faults.length, 0);
      ok(proxy.blobRanges.some((h) => /^bytes=[1-9][0-9]*-$/.test(h)), String(proxy.blobRanges));
      strictEqual(Deno.readTextFileSync(`${dest}/etc/image-marker`), "token\n");
    });

    await t.step("SIGINT or SIGTERM mid-transfer: 130 or 143, one line, nothing left", async () => {
      for (const [signal, code] of [["SIGINT", 130], ["SIGTERM", 143]] as const) {
        // The transfer stalls halfway: the blob's temporary file exists, and
        // its layer is being decoded from it.
        await using proxy = startProxy(reg.host, { faults: ["stall"] });
        const dest = `${tmp.path}/interrupted`;
        const s = storage();
        const [cmd, ...args] = denArgv(["pull", ...s, `${proxy.host}/test/busybox:1`, dest]);
        const child = new Deno.Command(cmd!, {
          args,
          env: { ...testUserEnv(), HOME: tmp.path },
          clearEnv: true,
          stdin: "null",
          stdout: "null",
          stderr: "piped",
        }).spawn();
        const blobs = `${s[1]}/blobs/sha256`;
        let started = false;
        for (let i = 0; i < 200 && !started; i++) {
          const parts = exists(blobs)
            ? [...Deno.readDirSync(blobs)].filter((e) => e.name.endsWith(".part"))
            : [];
          started = parts.some((e) => Deno.statSync(`${blobs}/${e.name}`).size > 0);
          if (!started) await new Promise((r) => setTimeout(r, 50));
        }
        child.kill(signal);
        const r = await child.output();
        const stderr = new TextDecoder().decode(r.stderr);
        ok(started, "no transfer was under way");
        strictEqual(r.code, code, stderr);
        ok(new RegExp(`^den: error: pull .*: interrupted by ${signal}\n$`).test(stderr), stderr);
        ok(!exists(dest));
        checkClean(s[1]!, tmp.path);
        strictEqual([...Deno.readDirSync(`${s[1]}/blobs/.pulls`)].length, 0);
      }
    });

    await t.step("a connection that always drops: one line, nothing installed", async () => {
      await using proxy = startProxy(reg.host, { faults: Array(20).fill("drop") });
      const dest = `${tmp.path}/drops`;
      const s = storage();
      const r = await pull([...s, `${proxy.host}/test/busybox:1`, dest], env);
      strictEqual(r.code, 31);
      ok(
        /^den: error: pull .*: blob sha256:[a-f0-9]{64}: .* \(gave up after 5 attempts\)\n$/.test(
          r.stderr,
        ),
        r.stderr,
      );
      ok(!exists(dest));
      checkClean(s[1]!, tmp.path);
    });
  },
});

Deno.test({
  name: "den pull: a TLS registry on loopback is verified; --tls-verify=false skips it",
  ignore: !ready || !which("openssl"),
  async fn() {
    await using reg = await startRegistry({ tls: true });
    await using tmp = tempDir("den-pull-tls-");
    await pushImage("tls", [{ architecture: ARCH }], [`${reg.host}/test/busybox:1`]);
    const s = ["-s", `${tmp.path}/storage`];
    const ref = `${reg.host}/test/busybox:1`;
    let r = await pull([...s, ref, `${tmp.path}/a`]);
    strictEqual(r.code, 31);
    ok(
      r.stderr.startsWith(`den: error: pull ${ref}: can't connect to https://${reg.host}: `),
      r.stderr,
    );
    ok(r.stderr.includes("certificate"), r.stderr);
    ok(
      r.stderr.endsWith(
        "den: hint: the registry's certificate is not trusted: put its CA in --cert-dir DIR or " +
          `/etc/containers/certs.d/${reg.host}/ (*.crt); --tls-verify=false skips the check\n`,
      ),
      r.stderr,
    );
    ok(!exists(`${tmp.path}/a`));
    r = await pull([...s, "--tls-verify=false", ref, `${tmp.path}/a`]);
    strictEqual(r.code, 0, r.stderr);
    strictEqual(Deno.readTextFileSync(`${tmp.path}/a/etc/image-marker`), "tls\n");
    // The CA in --cert-dir, then in ~/.config/containers/certs.d/HOST:PORT/.
    const certs = `${tmp.path}/certs`;
    Deno.mkdirSync(certs);
    Deno.copyFileSync(reg.ca!, `${certs}/ca.crt`);
    Deno.chmodSync(`${certs}/ca.crt`, 0o644);
    r = await pull([...s, "--cert-dir", certs, ref, `${tmp.path}/b`]);
    strictEqual(r.code, 0, r.stderr);
    strictEqual(Deno.readTextFileSync(`${tmp.path}/b/etc/image-marker`), "tls\n");
    const home = `${tmp.path}/home`;
    Deno.mkdirSync(`${home}/.config/containers/certs.d/${reg.host}`, { recursive: true });
    Deno.copyFileSync(reg.ca!, `${home}/.config/containers/certs.d/${reg.host}/ca.crt`);
    await sh(["chmod", "-R", "a+rX", home]);
    r = await pull([...s, ref, `${tmp.path}/c`], { HOME: home });
    strictEqual(r.code, 0, r.stderr);
    r = await pull([...s, "--cert-dir", `${tmp.path}/nope`, ref, `${tmp.path}/d`]);
    strictEqual(r.code, 31);
    ok(
      r.stderr.startsWith(`den: error: pull ${ref}: read certificates ${tmp.path}/nope: `),
      r.stderr,
    );
    ok(!exists(`${tmp.path}/d`));
  },
});
