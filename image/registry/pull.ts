// den pull: a manifest from a registry, the platform's image, its blobs into
// the cache (in parallel, verified while they stream), each layer unpacked
// into DEST (as by `den unpack`) while it downloads.
import { createHash } from "node:crypto";
import { DenError } from "../../error.ts";
import { hostArch } from "../archive.ts";
import { readImageMetadata } from "../metadata.ts";
import { parseImageRef } from "../ref.ts";
import { secureStorage } from "../store.ts";
import type { ImageSource, LayerDownload } from "../archive.ts";
import { GrowingFile } from "../_decode.ts";
import { type UnpackProgress, type UnpackResult, unpackSource } from "../unpack_image.ts";
import { BlobCache } from "./blobs.ts";
import { registryCaCerts } from "./certs.ts";
import { Downloader } from "./download.ts";
import { type Lock, lockFile } from "./file_lock.ts";
import { type PullRegistration, registerPull } from "./gc.ts";
import { readBytesLimited, RegistryClient } from "./client.ts";
import {
  choosePlatform,
  type Descriptor,
  type Manifest,
  MANIFEST_ACCEPT,
  MANIFEST_MAX,
  normArch,
  parseArch,
  parseManifest,
} from "./manifest.ts";
import type { PullRef } from "./ref.ts";

/** Download progress, reported about ten times a second. */
export interface DownloadProgress {
  /** Blobs (config and layers) complete, of `blobs`. */
  done: number;
  blobs: number;
  /** Bytes in the cache of this image's blobs, of `total`. */
  bytes: number;
  total: number;
  /** Seconds since the start of the pull. */
  elapsed: number;
  /** Each layer blob, in the manifest's order (a blob listed twice, once). */
  layers: LayerProgress[];
}

export interface LayerProgress {
  digest: string;
  size: number;
  /** Bytes downloaded now (size when it came from the cache). */
  bytes: number;
  state: "waiting" | "downloading" | "cached" | "downloaded";
  /** When its download started, in seconds since the start of the pull. */
  started?: number;
}

export interface PullOptions {
  /** Storage directory (for the blob cache): -s, else $DEN_STORAGE, else the default. */
  storage?: string;
  /** Architecture, as `den unpack --arch` ("arm64", "arm/v7"); default the host's. */
  arch?: string;
  /** Parallel blob downloads (default 4). */
  jobs?: number;
  /** Verify TLS certificates (default true). */
  tlsVerify?: boolean;
  /** --cert-dir: the registry's CA certificates (*.crt) are here, not in certs.d. */
  certDir?: string;
  /** Replace DEST when it exists. */
  force?: boolean;
  /** DEST is a name in storage: replacing it is fine when it was pulled from the same repository. */
  stored?: boolean;
  env?: Record<string, string | undefined>;
  onDownload?: (p: DownloadProgress) => void;
  onUnpack?: (p: UnpackProgress) => void;
  onWarning?: (msg: string) => void;
  log?: (msg: string) => void;
  /** Seconds without data before a transfer is resumed (default 30). */
  stallSeconds?: number;
}

export interface PullResult {
  ref: string;
  /** Digest of the image manifest that was unpacked. */
  digest: string;
  dest: string;
  layers: number;
  /** Blobs downloaded now, and found in the cache. */
  downloaded: number;
  cached: number;
  /** Bytes downloaded now. */
  bytes: number;
  seconds: number;
  /** Undefined when DEST already held this image (nothing to do). */
  unpack?: UnpackResult;
}

const SIGNALS: Deno.Signal[] = ["SIGINT", "SIGTERM", "SIGHUP"];
const SIGNAL_EXIT: Record<string, number> = { SIGHUP: 129, SIGINT: 130, SIGTERM: 143 };

function sha256(bytes: Uint8Array): string {
  return `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
}

/**
 * Pull `ref` into the directory `dest` (made atomically by unpackImage).
 *
 * @example
 * ```ts
 * const r = await pullImage(parsePullRef("busybox"), "/scratch/bb", { jobs: 4 });
 * console.log(r.digest, r.layers);
 * ```
 */
export async function pullImage(
  ref: PullRef,
  dest: string,
  options: PullOptions = {},
): Promise<PullResult> {
  const start = performance.now();
  const abort = new AbortController();
  let signalled: Deno.Signal | undefined;
  const handlers = SIGNALS.map((s) =>
    [s, () => {
      signalled ??= s;
      abort.abort(
        new DenError("", `interrupted by ${s}`, { exitCode: SIGNAL_EXIT[s] ?? 130 }),
      );
    }] as const
  );
  const addHandlers = () => {
    for (const [s, h] of handlers) {
      try {
        Deno.addSignalListener(s, h);
      } catch {
        // not supported here
      }
    }
  };
  addHandlers();
  const removeHandlers = () => {
    for (const [s, h] of handlers) {
      try {
        Deno.removeSignalListener(s, h);
      } catch {
        // ignore
      }
    }
  };
  let nameLock: Lock | undefined;
  let registration: PullRegistration | undefined;
  // Layers are transferred on a thread of their own (started now, it is
  // ready by the time the manifest is read).
  let downloader: Downloader | undefined;
  try {
    downloader = new Downloader();
  } catch {
    downloader = undefined; // no workers here: transfers run on this thread
  }
  try {
    const storage = secureStorage(options.storage, true);
    const cache = new BlobCache(`${storage}/blobs/sha256`);
    const client = new RegistryClient(ref, {
      tlsVerify: options.tlsVerify,
      caCerts: options.tlsVerify === false
        ? undefined
        : registryCaCerts(ref.registry, { certDir: options.certDir, env: options.env }),
      env: options.env,
      signal: abort.signal,
      log: options.log,
    });
    // The manifest: by digest when given (verified), else by tag.
    const top = await getManifest(client, ref.digest ?? ref.tag ?? "latest", ref.digest);
    let manifestBytes = top.bytes;
    let manifestDigest = top.digest;
    let manifest = top.manifest;
    let wantArch: string | undefined;
    if (manifest.kind === "index") {
      wantArch = options.arch ?? hostArch();
      const d = choosePlatform(manifest.manifests, wantArch, "");
      const sub = await getManifest(client, d.digest, d.digest);
      if (sub.manifest.kind !== "manifest") {
        throw new DenError("", `manifest ${d.digest}: an index inside an index`);
      }
      manifestBytes = sub.bytes;
      manifestDigest = sub.digest;
      manifest = sub.manifest;
    }
    const image = manifest as Extract<Manifest, { kind: "manifest" }>;
    if (options.stored) {
      // Every rank of a job may pull the same name: one downloads and
      // unpacks, the others wait here and then find it up to date.
      const slash = dest.lastIndexOf("/");
      nameLock = await lockFile(`${dest.slice(0, slash)}/.${dest.slice(slash + 1)}.lock`, {
        signal: abort.signal,
        log: options.log,
        what: `image ${dest.slice(slash + 1)}`,
      });
    }
    if (isUpToDate(dest, ref, manifestDigest, options)) {
      return {
        ref: ref.text,
        digest: manifestDigest,
        dest,
        layers: image.layers.length,
        downloaded: 0,
        cached: 0,
        bytes: 0,
        seconds: (performance.now() - start) / 1000,
      };
    }

    // The config first (small): its architecture decides before any layer is fetched.
    const blobs = [image.config, ...image.layers];
    const unique = [...new Map(blobs.map((b) => [b.digest, b])).values()];
    const total = unique.reduce((n, b) => n + b.size, 0);
    const progress = { done: 0, bytes: 0, fetched: 0 };
    /** Blobs downloaded now; the others came from the cache. */
    const downloaded = new Set<string>();
    const hits: Descriptor[] = [];
    const layers = new Map<string, LayerProgress>(
      image.layers.map((d) => [d.digest, {
        digest: d.digest,
        size: d.size,
        bytes: 0,
        state: "waiting",
      }]),
    );
    const seconds = () => (performance.now() - start) / 1000;
    let lastReport = 0;
    const report = (force = false) => {
      const now = performance.now();
      if (!options.onDownload || (!force && now - lastReport < 100)) return;
      lastReport = now;
      options.onDownload({
        done: progress.done,
        blobs: unique.length,
        bytes: progress.bytes,
        total,
        elapsed: seconds(),
        layers: [...layers.values()].map((l) => ({ ...l })),
      });
    };
    const fetchOne = async (d: Descriptor, download?: Download) => {
      let hit: boolean;
      const layer = layers.get(d.digest);
      try {
        hit = await cache.fetch(client, d, {
          signal: abort.signal,
          stallMs: (options.stallSeconds ?? 30) * 1000,
          log: options.log,
          onBytes: (n) => {
            progress.bytes += n;
            progress.fetched += n;
            if (layer) layer.bytes += n;
            report();
          },
          onStart: (path) => {
            if (layer) Object.assign(layer, { state: "downloading", started: seconds(), bytes: 0 });
            download?.begin(path);
          },
          downloader: download && downloader,
          growing: download?.growing,
        });
      } catch (e) {
        download?.fail(e);
        throw e;
      }
      download?.complete(cache.path(d.digest));
      if (layer) {
        layer.state = hit ? "cached" : "downloaded";
        layer.bytes = d.size;
      }
      if (hit) {
        hits.push(d);
        progress.bytes += d.size;
      } else downloaded.add(d.digest);
      progress.done++;
      report();
    };
    // gc (in another process) keeps these blobs while this pull lasts.
    registration = registerPull(storage, [manifestDigest, ...unique.map((b) => b.digest)]);
    await fetchOne(image.config);
    const config = readConfig(cache.path(image.config.digest), image.config.digest);
    const unpackArch = checkArch(config, options.arch, wantArch, options.onWarning);
    checkDiffIds(config, image.layers.length, image.config.digest);
    cache.put(manifestDigest, manifestBytes);

    // Layers download in parallel, and each is unpacked (in order) while it
    // streams in: unpackSource decodes a blob as its bytes reach the cache's
    // temporary file, and checks its digest again at the end. DEST is
    // installed only after every blob is verified in the cache.
    const layerBlobs = unique.filter((b) => b.digest !== image.config.digest);
    /** Cached blobs that fail verification (they may explain a failed unpack); removed. */
    const damagedHits = async () => {
      const bad: Descriptor[] = [];
      for (const d of hits.splice(0)) {
        if (await cache.verify(d)) hits.push(d);
        else bad.push(d);
      }
      return bad;
    };
    const unpackOnce = async (): Promise<UnpackResult | Descriptor[]> => {
      const downloads = new Map(layerBlobs.map((d) => [d.digest, new Download()]));
      let failure: unknown;
      const all = parallel(
        layerBlobs,
        Math.max(1, options.jobs ?? 4),
        (d) => fetchOne(d, downloads.get(d.digest)),
        (e) => {
          failure = e;
          abort.abort(e);
        },
      ).then(() => report(true), (e) => {
        failure ??= e;
        for (const d of downloads.values()) d.fail(e);
      });
      const source: ImageSource = {
        format: "registry",
        name: ref.text,
        digest: manifestDigest,
        config,
        // Each layer is verified by its digest, which the manifest (itself
        // verified) names: the uncompressed diff_ids add nothing to that,
        // and hashing every uncompressed byte again costs a core for a while.
        layers: image.layers.map((d) => ({
          path: cache.path(d.digest),
          offset: 0,
          size: d.size,
          digest: d.digest,
          download: downloads.get(d.digest),
        })),
      };
      try {
        return await unpackSource(() => Promise.resolve(source), dest, {
          force: options.force || options.stored,
          arch: unpackArch,
          onProgress: options.onUnpack,
          onWarning: options.onWarning,
          beforeInstall: async () => {
            await all;
            if (failure !== undefined) throw failure;
          },
        });
      } catch (e) {
        // A failed download explains a failed unpack, and so may a damaged
        // cached blob (downloaded again); anything else stops the downloads.
        const downloadFailure = failure;
        if (downloadFailure === undefined && e instanceof DenError && !e.options.exitCode) {
          const bad = await damagedHits();
          if (bad.length) {
            await all;
            if (failure !== undefined) throw failure;
            return bad;
          }
        }
        if (downloadFailure === undefined) abort.abort(e);
        await all;
        throw downloadFailure ?? e;
      }
    };
    let unpack = await unpackOnce();
    if (Array.isArray(unpack)) {
      // Layers from the cache are verified as they are unpacked: a damaged
      // one (disk, a hand edit) is removed and downloaded again, once.
      for (const d of unpack) {
        options.log?.(`blob ${d.digest}: the cached copy is damaged; downloading it again`);
      }
      progress.done = 1;
      progress.bytes = image.config.size;
      unpack = await unpackOnce();
      if (Array.isArray(unpack)) throw new DenError("", "cached blobs keep being damaged");
    }
    return {
      ref: ref.text,
      digest: manifestDigest,
      dest,
      layers: image.layers.length,
      downloaded: downloaded.size,
      cached: unique.length - downloaded.size,
      bytes: progress.fetched,
      seconds: (performance.now() - start) / 1000,
      unpack,
    };
  } catch (e) {
    const inner = abort.signal.aborted && abort.signal.reason instanceof DenError
      ? abort.signal.reason
      : e;
    if (inner instanceof DenError) {
      throw new DenError("", `pull ${ref.text}`, {
        cause: inner,
        exitCode: inner.exitCode,
      });
    }
    throw new DenError("", `pull ${ref.text}`, {
      cause: new DenError("", (inner as Error)?.message ?? String(inner)),
    });
  } finally {
    removeHandlers();
    nameLock?.release();
    registration?.release();
    downloader?.close();
  }
}

/** A layer blob's download, as unpackSource follows it (LayerDownload). */
class Download implements LayerDownload {
  readonly growing = new GrowingFile();
  readonly started: Promise<{ path: string; growing?: GrowingFile }>;
  readonly done: Promise<void>;
  #start!: (v: { path: string; growing?: GrowingFile }) => void;
  #done!: () => void;
  #fail: ((e: unknown) => void)[] = [];

  constructor() {
    this.started = new Promise((resolve, reject) => {
      this.#start = resolve;
      this.#fail.push(reject);
    });
    this.done = new Promise((resolve, reject) => {
      this.#done = resolve;
      this.#fail.push(reject);
    });
    // Rejections are seen by whoever awaits them; none may end the process.
    this.started.catch(() => {});
    this.done.catch(() => {});
  }

  /** The blob is being written at `path`. */
  begin(path: string): void {
    this.#start({ path, growing: this.growing });
  }

  /** The verified blob is at `path`. */
  complete(path: string): void {
    this.growing.end(GrowingFile.COMPLETE);
    this.#start({ path });
    this.#done();
  }

  fail(e: unknown): void {
    this.growing.end(GrowingFile.FAILED);
    for (const f of this.#fail) f(e);
  }
}

/** A config that lists diff_ids lists one per layer (as den unpack checks). */
function checkDiffIds(config: Record<string, unknown>, layers: number, digest: string): void {
  const ids = (config.rootfs as { diff_ids?: unknown } | undefined)?.diff_ids;
  if (Array.isArray(ids) && ids.length !== layers) {
    throw new DenError("", `config ${digest}: ${layers} layers but ${ids.length} diff_ids`);
  }
}

/** GET a manifest, check its digest (against `expected` when pulling by digest) and parse it. */
async function getManifest(
  client: RegistryClient,
  reference: string,
  expected: string | undefined,
): Promise<{ bytes: Uint8Array; digest: string; manifest: Manifest }> {
  // The ref is already named by the caller's "pull REF".
  const what = expected ? `manifest ${expected}` : "manifest";
  const res = await client.get(
    `/v2/${client.ref.repository}/manifests/${reference}`,
    what,
    { accept: MANIFEST_ACCEPT },
  );
  if (res.status === 404) {
    await res.body?.cancel();
    throw new DenError("", `${what}: not found in ${client.ref.registry}`);
  }
  if (!res.ok) {
    await res.body?.cancel();
    throw new DenError("", `${what}: HTTP ${res.status} from ${client.ref.registry}`);
  }
  const bytes = await readBytesLimited(res, MANIFEST_MAX, what);
  const digest = sha256(bytes);
  if (expected && digest !== expected) {
    throw new DenError("", `${what}: digest mismatch (got ${digest})`);
  }
  const header = res.headers.get("docker-content-digest");
  if (!expected && header && header.startsWith("sha256:") && header !== digest) {
    throw new DenError("", `${what}: digest mismatch (got ${digest}, registry says ${header})`);
  }
  const manifest = parseManifest(bytes, res.headers.get("content-type") ?? "", what);
  return { bytes, digest, manifest };
}

function readConfig(path: string, digest: string): Record<string, unknown> {
  try {
    const v = JSON.parse(Deno.readTextFileSync(path));
    if (v && typeof v === "object" && !Array.isArray(v)) return v;
  } catch {
    // below
  }
  throw new DenError("", `config ${digest}: not a JSON object`);
}

/**
 * The architecture to tell unpackImage (the config's own, so it picks the
 * one image silently); refuses a single-platform image of another
 * architecture than --arch, and warns when it is not the host's.
 */
function checkArch(
  config: Record<string, unknown>,
  arch: string | undefined,
  fromIndex: string | undefined,
  warn: ((msg: string) => void) | undefined,
): string | undefined {
  const has = typeof config.architecture === "string" ? normArch(config.architecture) : undefined;
  const variant = typeof config.variant === "string" && config.variant ? config.variant : undefined;
  if (!has) return undefined;
  const own = variant ? `${has}/${variant}` : has;
  if (fromIndex) return own;
  const want = parseArch(arch ?? hostArch());
  const same = want.architecture === has && (!want.variant || !variant || want.variant === variant);
  if (!same && arch !== undefined) {
    throw new DenError("", `image is for linux/${own}, not linux/${arch}`, {
      hint: "choose another image or --arch",
    });
  }
  if (!same) warn?.(`image is for ${own}, not this host (${want.architecture})`);
  return own;
}

/**
 * Whether DEST already holds this image (same ref, same manifest digest),
 * and the checks before anything is downloaded: an existing DEST needs
 * --force, or for a stored name, to come from the same repository.
 */
function isUpToDate(dest: string, ref: PullRef, digest: string, options: PullOptions): boolean {
  let exists = false;
  try {
    Deno.lstatSync(dest);
    exists = true;
  } catch {
    exists = false;
  }
  if (!exists) return false;
  let meta;
  try {
    meta = readImageMetadata(dest);
  } catch {
    meta = undefined;
  }
  if (options.force) return false;
  let sameRepo = false;
  try {
    const was = meta?.image ? parseImageRef(meta.image) : undefined;
    sameRepo = !!was && was.registry === ref.registry && was.repository === ref.repository;
  } catch {
    sameRepo = false;
  }
  if (options.stored && sameRepo) return meta?.digest === digest && meta?.image === ref.text;
  throw new DenError("", `destination exists: ${dest}`, {
    hint: options.stored && meta?.image
      ? `it holds ${meta.image}; use --force to replace it`
      : "use --force to replace it",
  });
}

/** Run `fn` on every item, at most `jobs` at a time; the first error is
 * passed to `onError` (which aborts the others) and thrown at the end. */
async function parallel<T>(
  items: T[],
  jobs: number,
  fn: (item: T) => Promise<void>,
  onError: (e: unknown) => void,
): Promise<void> {
  let next = 0;
  let failed: unknown;
  const worker = async () => {
    while (failed === undefined && next < items.length) {
      const item = items[next++]!;
      try {
        await fn(item);
      } catch (e) {
        if (failed === undefined) {
          failed = e;
          onError(e);
        }
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(jobs, items.length) }, worker));
  if (failed !== undefined) throw failed;
}
