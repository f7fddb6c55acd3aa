// A loopback registry for the tests: Debian's docker-registry (the CNCF
// distribution registry) on 127.0.0.1 with its own config and storage,
// images made from the host's busybox as OCI layouts, pushed with skopeo.
import { ok, strictEqual } from "node:assert/strict";
import { buildBusyboxImage, exists, which } from "./_helpers.ts";

export const HAVE_REGISTRY = !!which("docker-registry") && !!which("skopeo") && !!which("tar");

export interface Registry extends AsyncDisposable {
  /** "127.0.0.1:PORT" */
  host: string;
  /** The registry's storage root (blobs under docker/registry/v2/blobs). */
  root: string;
  dir: string;
  /** With tls: the PEM file of the CA that signed the registry's certificate. */
  ca?: string;
}

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** Start docker-registry on loopback; `htpasswd` lines turn on Basic auth,
 * `tls` https with a self-signed certificate made by openssl. */
export async function startRegistry(
  opts: { htpasswd?: string; tls?: boolean } = {},
): Promise<Registry> {
  const dir = Deno.makeTempDirSync({ prefix: "den-registry-" });
  const root = `${dir}/storage`;
  Deno.mkdirSync(root);
  const port = freePort();
  let auth = "";
  if (opts.htpasswd) {
    Deno.writeTextFileSync(`${dir}/htpasswd`, opts.htpasswd);
    auth = `auth:\n  htpasswd:\n    realm: den-test\n    path: ${dir}/htpasswd\n`;
  }
  let tls = "";
  if (opts.tls) {
    // A CA and a certificate it signs (rustls refuses a CA certificate as a
    // server's own: CaUsedAsEndEntity).
    await sh([
      "openssl",
      "req",
      "-x509",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-days",
      "1",
      "-subj",
      "/CN=den test CA",
      "-keyout",
      `${dir}/ca-key.pem`,
      "-out",
      `${dir}/ca.pem`,
    ]);
    await sh([
      "openssl",
      "req",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-subj",
      "/CN=127.0.0.1",
      "-keyout",
      `${dir}/key.pem`,
      "-out",
      `${dir}/cert.csr`,
    ]);
    Deno.writeTextFileSync(
      `${dir}/ext.cnf`,
      "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    );
    await sh([
      "openssl",
      "x509",
      "-req",
      "-in",
      `${dir}/cert.csr`,
      "-CA",
      `${dir}/ca.pem`,
      "-CAkey",
      `${dir}/ca-key.pem`,
      "-CAcreateserial",
      "-days",
      "1",
      "-extfile",
      `${dir}/ext.cnf`,
      "-out",
      `${dir}/cert.pem`,
    ]);
    tls = `  tls:\n    certificate: ${dir}/cert.pem\n    key: ${dir}/key.pem\n`;
  }
  Deno.writeTextFileSync(
    `${dir}/config.yml`,
    `version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n` +
      `storage:\n  filesystem:\n    rootdirectory: ${root}\n  delete:\n    enabled: true\n` +
      `http:\n  addr: 127.0.0.1:${port}\n  secret: den-test\n${tls}${auth}`,
  );
  const child = new Deno.Command("docker-registry", {
    args: ["serve", `${dir}/config.yml`],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const host = `127.0.0.1:${port}`;
  const stop = async () => {
    try {
      child.kill("SIGTERM");
    } catch {
      // exited
    }
    await child.stderr.cancel().catch(() => {});
    await child.status;
    Deno.removeSync(dir, { recursive: true });
  };
  for (let i = 0;; i++) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      break;
    } catch {
      if (i > 100) {
        await stop();
        throw new Error(`docker-registry did not start on ${host}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  return {
    host,
    root,
    dir,
    ca: opts.tls ? `${dir}/ca.pem` : undefined,
    [Symbol.asyncDispose]: stop,
  };
}

/** Run a command; throw with its stderr when it fails. */
export async function sh(cmd: string[]): Promise<string> {
  const o = await new Deno.Command(cmd[0]!, {
    args: cmd.slice(1),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!o.success) {
    throw new Error(`${cmd.join(" ")}: ${new TextDecoder().decode(o.stderr)}`);
  }
  return new TextDecoder().decode(o.stdout);
}

async function sha256(bytes: Uint8Array): Promise<string> {
  const h = await crypto.subtle.digest("SHA-256", bytes as Uint8Array<ArrayBuffer>);
  return "sha256:" + [...new Uint8Array(h)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

export interface Platform {
  architecture: string;
  variant?: string;
}

/**
 * An OCI layout at `dir` with the busybox image (one gzip layer; `marker`
 * goes into /etc/image-marker so each image's layer is its own blob), tagged
 * `tag`: one manifest, or an index of one manifest per platform when several
 * are given (all with the host's busybox: only their configs differ).
 */
export async function buildLayout(
  dir: string,
  opts: { tag: string; marker: string; platforms: Platform[]; extraLayers?: Uint8Array[] },
): Promise<{ manifests: string[]; index?: string }> {
  const rootfs = `${dir}.rootfs`;
  buildBusyboxImage(rootfs);
  Deno.writeTextFileSync(`${rootfs}/etc/image-marker`, `${opts.marker}\n`);
  const blobs = `${dir}/blobs/sha256`;
  Deno.mkdirSync(blobs, { recursive: true });
  const add = async (bytes: Uint8Array, mediaType: string) => {
    const digest = await sha256(bytes);
    Deno.writeFileSync(`${blobs}/${digest.slice(7)}`, bytes);
    return { mediaType, digest, size: bytes.length };
  };
  const tarball = `${dir}.layer.tar`;
  await sh(["tar", "-C", rootfs, "--numeric-owner", "-cf", tarball, "."]);
  const raw = Deno.readFileSync(tarball);
  Deno.removeSync(tarball);
  Deno.removeSync(rootfs, { recursive: true });
  const layerTars = [raw, ...(opts.extraLayers ?? [])];
  const layers = [];
  const diffIds = [];
  for (const t of layerTars) {
    const gz = new Uint8Array(
      await new Response(
        new Blob([t as Uint8Array<ArrayBuffer>]).stream().pipeThrough(
          new CompressionStream("gzip"),
        ),
      ).arrayBuffer(),
    );
    layers.push(await add(gz, "application/vnd.oci.image.layer.v1.tar+gzip"));
    diffIds.push(await sha256(t));
  }
  const manifests = [];
  for (const p of opts.platforms) {
    const config = await add(
      new TextEncoder().encode(JSON.stringify({
        architecture: p.architecture,
        ...(p.variant ? { variant: p.variant } : {}),
        os: "linux",
        config: { Env: ["PATH=/bin:/usr/bin", `DEN_MARKER=${opts.marker}`], Cmd: ["/bin/sh"] },
        rootfs: { type: "layers", diff_ids: diffIds },
      })),
      "application/vnd.oci.image.config.v1+json",
    );
    const m = await add(
      new TextEncoder().encode(JSON.stringify({
        schemaVersion: 2,
        mediaType: "application/vnd.oci.image.manifest.v1+json",
        config,
        layers,
      })),
      "application/vnd.oci.image.manifest.v1+json",
    );
    manifests.push({ ...m, platform: { os: "linux", ...p } });
  }
  let top = manifests[0]!;
  let index: string | undefined;
  if (manifests.length > 1) {
    top = {
      ...await add(
        new TextEncoder().encode(JSON.stringify({
          schemaVersion: 2,
          mediaType: "application/vnd.oci.image.index.v1+json",
          manifests,
        })),
        "application/vnd.oci.image.index.v1+json",
      ),
      platform: { os: "linux", architecture: "" },
    };
    index = top.digest;
  }
  const { platform: _, ...desc } = top;
  Deno.writeTextFileSync(`${dir}/oci-layout`, '{"imageLayoutVersion":"1.0.0"}');
  Deno.writeTextFileSync(
    `${dir}/index.json`,
    JSON.stringify({
      schemaVersion: 2,
      manifests: [{ ...desc, annotations: { "org.opencontainers.image.ref.name": opts.tag } }],
    }),
  );
  return { manifests: manifests.map((m) => m.digest), index };
}

/** skopeo copy from an OCI layout into the loopback registry (plain http). */
export async function push(
  layout: string,
  tag: string,
  dest: string,
  extra: string[] = [],
): Promise<void> {
  await sh([
    "skopeo",
    "copy",
    "--quiet",
    "--dest-tls-verify=false",
    ...extra,
    `oci:${layout}:${tag}`,
    `docker://${dest}`,
  ]);
}

/** What a proxy does to the next blob GET. */
export type Fault = "500" | "429" | "drop" | "stall";

export interface Proxy extends AsyncDisposable {
  host: string;
  /** Token requests, blob GETs and their Range headers ("" without). */
  tokens: number;
  blobRanges: string[];
  /** The digest of every blob GET, in order. */
  blobs: string[];
  /** Faults still queued for the next blob GETs. */
  faults: Fault[];
}

/**
 * A registry front in front of `upstream` that demands Bearer tokens from
 * its own token endpoint (Basic credentials checked there when `user` is
 * set), as Docker Hub and GHCR do, and injects faults into blob transfers:
 * HTTP 500, 429 with Retry-After, a connection dropped halfway, a transfer
 * that stalls halfway.
 */
export function startProxy(
  upstream: string,
  opts: { user?: string; password?: string; faults?: Fault[]; blobDelayMs?: number } = {},
): Proxy {
  const token = `tok-${crypto.randomUUID()}`;
  const stalled: ReadableStreamDefaultController<Uint8Array>[] = [];
  let host = "";
  const proxy: Proxy = {
    host: "",
    tokens: 0,
    blobRanges: [],
    blobs: [],
    faults: [...(opts.faults ?? [])],
    async [Symbol.asyncDispose]() {
      for (const c of stalled) {
        try {
          c.error(new Error("test over"));
        } catch {
          // closed
        }
      }
      await server.shutdown();
    },
  };
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (req) => {
    const url = new URL(req.url);
    if (url.pathname === "/token") {
      const want = opts.user ? `Basic ${btoa(`${opts.user}:${opts.password}`)}` : undefined;
      if (want && req.headers.get("authorization") !== want) {
        return new Response("{}", { status: 401 });
      }
      proxy.tokens++;
      return Response.json({ access_token: token, expires_in: 300 });
    }
    const m = /^\/v2\/(.+)\/(manifests|blobs)\//.exec(url.pathname);
    if (req.headers.get("authorization") !== `Bearer ${token}`) {
      const scope = m ? `,scope="repository:${m[1]}:pull"` : "";
      return new Response('{"errors":[{"code":"UNAUTHORIZED"}]}', {
        status: 401,
        headers: {
          "www-authenticate": `Bearer realm="http://${host}/token",service="den-proxy"${scope}`,
        },
      });
    }
    const headers = new Headers();
    for (const h of ["accept", "range"]) {
      const v = req.headers.get(h);
      if (v) headers.set(h, v);
    }
    const isBlob = m?.[2] === "blobs";
    if (isBlob) {
      proxy.blobRanges.push(req.headers.get("range") ?? "");
      proxy.blobs.push(url.pathname.slice(url.pathname.lastIndexOf("/") + 1));
      if (opts.blobDelayMs) await new Promise((r) => setTimeout(r, opts.blobDelayMs));
    }
    const fault = isBlob ? proxy.faults.shift() : undefined;
    if (fault === "500") return new Response("oops", { status: 500 });
    if (fault === "429") {
      return new Response("slow down", { status: 429, headers: { "retry-after": "1" } });
    }
    const up = await fetch(`http://${upstream}${url.pathname}${url.search}`, { headers });
    const out = new Headers();
    for (const h of ["content-type", "docker-content-digest", "content-length", "content-range"]) {
      const v = up.headers.get(h);
      if (v) out.set(h, v);
    }
    if (fault !== "drop" && fault !== "stall") {
      return new Response(up.body, { status: up.status, headers: out });
    }
    const bytes = new Uint8Array(await up.arrayBuffer());
    const half = bytes.subarray(0, bytes.length >> 1);
    const body = new ReadableStream<Uint8Array>({
      start(c) {
        c.enqueue(half);
        if (fault === "drop") setTimeout(() => c.close(), 50);
        else stalled.push(c);
      },
    });
    return new Response(body, { status: up.status, headers: out });
  });
  host = `127.0.0.1:${server.addr.port}`;
  proxy.host = host;
  return proxy;
}

/** Nothing but finished blobs in the cache, no layout or unpack leftovers. */
export function checkClean(storage: string, dir: string) {
  const leftovers = [...Deno.readDirSync(storage)].filter((e) => e.name.startsWith("."));
  strictEqual(leftovers.length, 0, `left in storage: ${leftovers.map((e) => e.name)}`);
  if (exists(`${storage}/blobs/sha256`)) {
    for (const e of Deno.readDirSync(`${storage}/blobs/sha256`)) {
      ok(/^[a-f0-9]{64}$/.test(e.name), `not a finished blob: ${e.name}`);
    }
  }
  const tmp = [...Deno.readDirSync(dir)].filter((e) => e.name.includes("den-tmp"));
  strictEqual(tmp.length, 0);
}

/** Build the busybox image with `marker` for `platforms` and push it to
 * each [DEST, SKOPEO_OPTION...]. */
export async function pushImage(marker: string, platforms: Platform[], ...to: string[][]) {
  const build = Deno.makeTempDirSync({ prefix: "den-pull-build-" });
  try {
    await buildLayout(`${build}/layout`, { tag: "t", marker, platforms });
    for (const [dest, ...extra] of to) await push(`${build}/layout`, "t", dest!, extra);
  } finally {
    Deno.removeSync(build, { recursive: true });
  }
}

export const ARCH = Deno.build.arch === "aarch64" ? "arm64" : "amd64";
