// Recognizing an image archive by its content and choosing the image in it:
// docker-archive (manifest.json), OCI image layout (index.json + blobs/) as a
// tar or a directory, or a plain rootfs tarball. The result lists where each
// layer's bytes are, with the digests they must have.
import { createHash } from "node:crypto";
import { DenError, osMessage } from "../error.ts";
import {
  decodeBlob,
  type DecodeSink,
  emitSink,
  type GrowingFile,
  sniffCompression,
} from "./_decode.ts";
import { quote } from "./entry_path.ts";
import { sameImageRef } from "./ref.ts";
import { BLOCK } from "./tar_header.ts";
import { TarParser } from "./tar_parser.ts";

/** Where a layer's (possibly compressed) bytes are. */
export interface LayerSource {
  path: string;
  offset: number;
  size: number;
  /** Expected "algo:hex" of the raw bytes (OCI descriptors). */
  digest?: string;
  /** Expected "sha256:hex" of the uncompressed tar (config rootfs.diff_ids). */
  diffId?: string;
  /** Set while the blob is still being downloaded (den pull). */
  download?: LayerDownload;
}

/** A layer blob on its way into `path`. */
export interface LayerDownload {
  /** Settles once there is a file to read: the blob being written (with
   * `growing`), or the complete blob. Rejects when the download failed. */
  started: Promise<{ path: string; growing?: GrowingFile }>;
  /** Settles when the complete, verified blob is at LayerSource.path. */
  done: Promise<void>;
}

export type ArchiveFormat =
  | "docker-archive"
  | "oci-archive"
  | "oci-dir"
  | "docker-dir"
  | "rootfs-tar"
  | "registry";

/** The chosen image of an archive. */
export interface ImageSource {
  format: ArchiveFormat;
  /** Image name for messages: a tag, a ref name, or the archive's name. */
  name: string;
  /** Manifest digest (OCI) or config digest (docker-archive), if known. */
  digest?: string;
  /** The image config (OCI image-spec config.md), if the archive has one. */
  config?: Record<string, unknown>;
  layers: LayerSource[];
}

export interface OpenArchiveOptions {
  /** Image to choose: a name/tag or a (prefix of a) digest. */
  image?: string;
  /** Architecture to choose: "amd64", "arm64", "linux/arm64/v8"... */
  arch?: string;
  /** A scratch directory for decompressing a compressed image archive. */
  scratch: string;
  /** Called with warnings (e.g. foreign architecture). */
  warn?: (msg: string) => void;
  /** Stops reading the archive (SIGINT/SIGTERM). */
  signal?: AbortSignal;
}

interface Slice {
  path: string;
  offset: number;
  size: number;
}

/** Read-only view of the files of an archive (tar or directory). */
interface Files {
  get(name: string): Slice | undefined;
}

const JSON_MAX = 64 << 20;
/**
 * Whether a name can belong to an image archive: docker-archive and OCI
 * entries are at most two levels deep ("ID/layer.tar"), or three under
 * blobs/. Rootfs tarballs soon show deeper paths, so scans can stop early.
 */
function looksLikeImageEntry(name: string): boolean {
  const depth = name === "" ? 0 : name.split("/").length;
  return depth <= 2 || (depth === 3 && name.startsWith("blobs/"));
}

/** Host architecture in OCI terms. */
export function hostArch(): string {
  switch (Deno.build.arch) {
    case "x86_64":
      return "amd64";
    case "aarch64":
      return "arm64";
    default:
      return Deno.build.arch;
  }
}

/** Open an archive (file or OCI layout directory) and choose its image. */
export async function openArchive(
  archive: string,
  options: OpenArchiveOptions,
): Promise<ImageSource> {
  let st: Deno.FileInfo;
  try {
    st = Deno.statSync(archive);
  } catch (e) {
    throw fsError("open archive", archive, e);
  }
  const base = archive.replace(/\/+$/, "").split("/").pop() || archive;
  if (st.isDirectory) {
    const files = dirFiles(archive);
    if (files.get("index.json")) {
      return openOci(files, "oci-dir", base, options);
    }
    if (files.get("manifest.json")) {
      return openDocker(files, "docker-dir", base, options);
    }
    throw new DenError("open archive", "directory is not an OCI image layout (no index.json)", {
      path: archive,
    });
  }
  let head: Uint8Array;
  try {
    head = readHead(archive, 512);
  } catch (e) {
    throw fsError("open archive", archive, e);
  }
  let compression;
  try {
    compression = sniffCompression(head);
  } catch (e) {
    throw new DenError("open archive", (e as Error).message, { path: archive });
  }
  let tarPath = archive;
  if (compression !== "none") {
    // One pass: decompress to a scratch file while reading the names. A
    // rootfs tarball shows a deep name within its first entries and is
    // streamed from the archive itself by the layer unpack; an image archive
    // needs its members at random: docker writes manifest.json last.
    tarPath = `${options.scratch}/archive.tar`;
    const isImage = await decompressTo(archive, st.size, tarPath, options.signal);
    if (!isImage) {
      Deno.removeSync(tarPath);
      return rootfsSource(archive, st.size, base);
    }
  }
  const index = await indexTar(tarPath, archive, options.signal);
  if (!index) return rootfsSource(archive, st.size, base);
  const files = tarFiles(tarPath, index);
  if (index.has("index.json")) return openOci(files, "oci-archive", base, options);
  if (index.has("manifest.json")) {
    return openDocker(files, "docker-archive", base, options);
  }
  return rootfsSource(archive, st.size, base);
}

function rootfsSource(path: string, size: number, base: string): ImageSource {
  const name = base.replace(/\.(tar|tgz|tar\.gz|tar\.zst|tzst|gz|zst)$/, "");
  return { format: "rootfs-tar", name, layers: [{ path, offset: 0, size }] };
}

function readHead(path: string, n: number): Uint8Array {
  const f = Deno.openSync(path);
  try {
    const buf = new Uint8Array(n);
    let got = 0;
    while (got < n) {
      const r = f.readSync(buf.subarray(got));
      if (!r) break;
      got += r;
    }
    return buf.subarray(0, got);
  } finally {
    f.close();
  }
}

function fsError(op: string, path: string, e: unknown): DenError {
  const code = (e as { code?: string }).code;
  return new DenError(op, osMessage(e), { path, code, cause: undefined });
}

// ---- tar and directory file views ----

interface TarIndexEntry {
  offset: number;
  size: number;
  type: string;
  link: string;
}

function normalize(name: string): string {
  return name.split("/").filter((c) => c !== "" && c !== ".").join("/");
}

/**
 * Index an uncompressed tar, reading its headers with the one tar decoder
 * (TarParser, same limits as layers) and seeking over the data. Returns
 * undefined as soon as a name that cannot be part of an image archive shows
 * up: then it is a rootfs tarball.
 */
async function indexTar(
  path: string,
  shown: string,
  signal?: AbortSignal,
): Promise<Map<string, TarIndexEntry> | undefined> {
  const f = Deno.openSync(path);
  const dec = new TextDecoder();
  const index = new Map<string, TarIndexEntry>();
  let pos = 0;
  let rootfs = false;
  const parser = new TarParser({
    entry(e) {
      const name = normalize(dec.decode(e.name));
      if (!looksLikeImageEntry(name)) {
        rootfs = true;
        return false;
      }
      // The data follows the block just fed (see below).
      const type = e.sparse ? "sparse" : TAR_TYPE[e.kind] ?? e.kind;
      index.set(name, { offset: pos + BLOCK, size: e.size, type, link: dec.decode(e.linkname) });
      return false;
    },
    data() {},
    end() {},
  });
  try {
    const size = f.statSync().size;
    const block = new Uint8Array(BLOCK);
    let lastYield = performance.now();
    while (!rootfs && !parser.ended) {
      const skip = parser.skippable();
      if (skip > 0) {
        if (pos + skip > size) break; // truncated: finish() says so
        parser.skip(skip);
        pos += skip;
        continue;
      }
      f.seekSync(pos, Deno.SeekMode.Start);
      let got = 0;
      while (got < BLOCK) {
        const n = f.readSync(block.subarray(got));
        if (!n) break;
        got += n;
      }
      if (got === 0) break;
      try {
        parser.feed(block.subarray(0, got));
      } catch (e) {
        if (pos === 0 && e instanceof DenError) {
          throw new DenError("open archive", "not a tar archive or OCI layout", { path: shown });
        }
        throw e;
      }
      pos += got;
      if (got < BLOCK) break;
      if (performance.now() - lastYield > YIELD_MS) {
        // Let SIGINT/SIGTERM handlers run on a huge index.
        await new Promise((r) => setTimeout(r, 0));
        signal?.throwIfAborted();
        lastYield = performance.now();
      }
    }
    if (rootfs) return undefined;
    if (!parser.ended) parser.finish();
    return index;
  } catch (e) {
    if (e instanceof DenError && e.op === "") {
      throw new DenError("open archive", e.message, { path: shown });
    }
    throw e;
  } finally {
    f.close();
  }
}

/** Tar type flags of the kinds the index follows. */
const TAR_TYPE: Record<string, string> = { file: "0", symlink: "2", hardlink: "1" };

/** How long a CPU-bound loop runs before it lets signal handlers in. */
const YIELD_MS = 50;

/**
 * Decompress `path` into `to`, reading its names on the way; stops early
 * (returning false) when a name shows it is a rootfs tarball, not an image
 * archive.
 */
async function decompressTo(
  path: string,
  size: number,
  to: string,
  signal?: AbortSignal,
): Promise<boolean> {
  let image = false;
  let rootfs = false;
  const parser = new TarParser({
    entry(e) {
      const name = normalize(new TextDecoder().decode(e.name));
      if (!looksLikeImageEntry(name)) rootfs = true;
      else if (name === "manifest.json" || name === "index.json") image = true;
      return false;
    },
    data() {},
    end() {},
  });
  const out = Deno.openSync(to, { write: true, createNew: true, mode: 0o600 });
  try {
    await decodeBlob(
      { path, offset: 0, size },
      yieldingSink((chunk) => {
        if (parser.ended) throw new StopScan();
        parser.feed(chunk);
        if (rootfs) throw new StopScan();
        let off = 0;
        while (off < chunk.length) off += out.writeSync(chunk.subarray(off));
      }, signal),
      () => signal?.aborted ?? false,
    );
    parser.finish();
  } catch (e) {
    signal?.throwIfAborted();
    if (!(e instanceof StopScan)) {
      throw new DenError("open archive", (e as Error).message, { path });
    }
  } finally {
    out.close();
  }
  return image && !rootfs;
}

class StopScan extends Error {}

/**
 * emitSink() that lets timers and signal handlers run every YIELD_MS: an
 * in-process decode of a big archive would otherwise hold the event loop.
 */
function yieldingSink(emit: (chunk: Uint8Array) => void, signal?: AbortSignal): DecodeSink {
  const sink = emitSink(emit);
  let last = performance.now();
  return {
    space() {
      if (performance.now() - last < YIELD_MS) return sink.space();
      return new Promise((resolve, reject) =>
        setTimeout(() => {
          last = performance.now();
          if (signal?.aborted) reject(signal.reason);
          else resolve(sink.space());
        }, 0)
      );
    },
    commit: (n) => sink.commit(n),
  };
}

function tarFiles(path: string, index: Map<string, TarIndexEntry>): Files {
  return {
    get(name: string): Slice | undefined {
      let n = normalize(name);
      for (let hops = 0; hops < 16; hops++) {
        const e = index.get(n);
        if (!e) return undefined;
        if (e.type === "2") {
          // Old docker save deduplicates layers with relative symlinks.
          const dir = n.includes("/") ? n.slice(0, n.lastIndexOf("/")) : "";
          n = normalize(e.link.startsWith("/") ? e.link : `${dir}/${e.link}`);
          const parts: string[] = [];
          for (const c of n.split("/")) {
            if (c === "..") parts.pop();
            else parts.push(c);
          }
          n = parts.join("/");
          continue;
        }
        if (e.type === "1") {
          n = normalize(e.link);
          continue;
        }
        if (e.type !== "0" && e.type !== "7") return undefined;
        return { path, offset: e.offset, size: e.size };
      }
      return undefined;
    },
  };
}

function dirFiles(dir: string): Files {
  return {
    get(name: string): Slice | undefined {
      const n = normalize(name);
      if (n.split("/").includes("..") || n === "") return undefined;
      let st: Deno.FileInfo;
      try {
        st = Deno.statSync(`${dir}/${n}`);
      } catch (e) {
        if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotADirectory) {
          return undefined;
        }
        throw fsError("open archive", `${dir}/${n}`, e);
      }
      if (!st.isFile) return undefined;
      return { path: `${dir}/${n}`, offset: 0, size: st.size };
    },
  };
}

/** The bytes of a small member; errors name the file (an OCI layout's
 * index.json, say), not the archive or DEST. */
function readSlice(s: Slice): Uint8Array {
  if (s.size > JSON_MAX) {
    throw new DenError("open archive", `file too large (${s.size} bytes)`, { path: s.path });
  }
  let f: Deno.FsFile;
  try {
    f = Deno.openSync(s.path);
  } catch (e) {
    throw fsError("open archive", s.path, e);
  }
  try {
    f.seekSync(s.offset, Deno.SeekMode.Start);
    const buf = new Uint8Array(s.size);
    let got = 0;
    while (got < s.size) {
      const n = f.readSync(buf.subarray(got));
      if (!n) throw new DenError("open archive", "unexpected end of file", { path: s.path });
      got += n;
    }
    return buf;
  } catch (e) {
    if (e instanceof DenError) throw e;
    throw fsError("open archive", s.path, e);
  } finally {
    f.close();
  }
}

function parseJson(bytes: Uint8Array, what: string): Record<string, unknown> {
  try {
    const v = JSON.parse(new TextDecoder().decode(bytes));
    if (v && typeof v === "object") return v;
  } catch {
    // below
  }
  throw new DenError("open archive", `${what} is not valid JSON`);
}

const DIGEST_RE = /^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$/;

function blobName(digest: string): string {
  if (!DIGEST_RE.test(digest)) {
    throw new DenError("open archive", `unsupported or malformed digest ${quote(digest)}`);
  }
  return `blobs/${digest.replace(":", "/")}`;
}

function hashOf(bytes: Uint8Array, algo: string): string {
  return `${algo}:${createHash(algo).update(bytes).digest("hex")}`;
}

/** Read a small JSON blob, checking its digest (and size, when known). */
function readJsonBlob(
  files: Files,
  name: string,
  what: string,
  digest?: string,
  size?: number,
): Record<string, unknown> {
  const s = files.get(name);
  if (!s) throw new DenError("open archive", `${what} missing (${name})`);
  if (size !== undefined && s.size !== size) {
    throw new DenError("open archive", `${what} ${name}: size ${s.size} != ${size} in descriptor`);
  }
  const bytes = readSlice(s);
  if (digest) {
    const got = hashOf(bytes, digest.split(":")[0]!);
    if (got !== digest) {
      throw new DenError("open archive", `digest mismatch for ${what} ${name}: got ${got}`);
    }
  }
  return parseJson(bytes, `${what} ${name}`);
}

// ---- choosing an image ----

interface Candidate {
  names: string[];
  /** Manifest or config digest. */
  digests: string[];
  os?: string;
  arch?: string;
  variant?: string;
  load(): ImageSource;
}

function label(c: Candidate): string {
  const plat = [c.os ?? "?", c.arch ?? "?", c.variant].filter(Boolean).join("/");
  const name = c.names[0] ?? c.digests[0]?.slice(0, 19) ?? "?";
  return `${name} (${plat})`;
}

function parseArch(text: string): { arch: string; variant?: string } {
  const parts = text.split("/");
  if (parts[0] === "linux" && parts.length > 1) parts.shift();
  return { arch: parts[0]!, variant: parts[1] };
}

function normArch(a: string | undefined): string | undefined {
  if (a === "x86_64") return "amd64";
  if (a === "aarch64") return "arm64";
  return a;
}

function choose(cands: Candidate[], opts: OpenArchiveOptions, archive: string): Candidate {
  if (cands.length === 0) {
    throw new DenError("open archive", "no image in archive", { path: archive });
  }
  let pool = cands;
  if (opts.image) {
    const want = opts.image;
    const hex = want.replace(/^sha256:/, "");
    pool = cands.filter((c) =>
      c.names.some((n) => n === want || sameImageRef(n, want)) ||
      (hex.length >= 6 && /^[a-f0-9]+$/.test(hex) &&
        c.digests.some((d) => d.replace(/^sha256:/, "").startsWith(hex)))
    );
    if (pool.length === 0) {
      throw new DenError(
        "open archive",
        `no image ${quote(want)} in archive; choices: ${cands.map(label).join(", ")}`,
        { path: archive },
      );
    }
  }
  const host = opts.arch === undefined;
  const want = parseArch(opts.arch ?? hostArch());
  const byArch = pool.filter((c) =>
    c.arch === undefined ||
    (normArch(c.arch) === normArch(want.arch) &&
      (!want.variant || !c.variant || c.variant === want.variant))
  );
  if (byArch.length === 1) return byArch[0]!;
  if (byArch.length === 0) {
    if (host && pool.length === 1) {
      opts.warn?.(`image is for ${pool[0]!.arch}, not this host (${want.arch})`);
      return pool[0]!;
    }
    throw new DenError(
      "open archive",
      `no image for ${want.arch} in archive; choices: ${pool.map(label).join(", ")}`,
      { path: archive, hint: "choose with --arch or --image" },
    );
  }
  throw new DenError(
    "open archive",
    `several images in archive; choices: ${byArch.map(label).join(", ")}`,
    { path: archive, hint: "choose one with --image NAME_OR_DIGEST" },
  );
}

// ---- OCI image layout ----

const INDEX_TYPES = new Set([
  "application/vnd.oci.image.index.v1+json",
  "application/vnd.docker.distribution.manifest.list.v2+json",
]);
const MANIFEST_TYPES = new Set([
  "application/vnd.oci.image.manifest.v1+json",
  "application/vnd.docker.distribution.manifest.v2+json",
]);

interface Descriptor {
  mediaType?: string;
  digest: string;
  size?: number;
  annotations?: Record<string, string>;
  platform?: { os?: string; architecture?: string; variant?: string };
}

function descriptors(v: unknown, what: string): Descriptor[] {
  if (!Array.isArray(v)) throw new DenError("open archive", `${what}: no "manifests" list`);
  for (const d of v) {
    if (!d || typeof d !== "object" || typeof d.digest !== "string") {
      throw new DenError("open archive", `${what}: malformed descriptor`);
    }
  }
  return v as Descriptor[];
}

function openOci(
  files: Files,
  format: ArchiveFormat,
  base: string,
  opts: OpenArchiveOptions,
): ImageSource {
  const index = readJsonBlob(files, "index.json", "index");
  // Newer docker save writes both index.json and manifest.json; the latter has
  // the RepoTags, keyed here by config digest.
  const tags = new Map<string, string[]>();
  const dm = files.get("manifest.json");
  if (dm) {
    try {
      const list = JSON.parse(new TextDecoder().decode(readSlice(dm)));
      for (const m of Array.isArray(list) ? list : []) {
        const hex = /([a-f0-9]{64})/.exec(String(m.Config))?.[1];
        if (hex && Array.isArray(m.RepoTags)) tags.set(`sha256:${hex}`, m.RepoTags);
      }
    } catch {
      // optional
    }
  }
  const cands: Candidate[] = [];
  const walk = (list: Descriptor[], inherited: string | undefined, depth: number) => {
    if (depth > 4) throw new DenError("open archive", "image indexes nested too deeply");
    for (const d of list) {
      const a = d.annotations ?? {};
      if (a["vnd.docker.reference.type"]) continue; // attestations
      const names = [
        a["io.containerd.image.name"],
        a["org.opencontainers.image.ref.name"],
        inherited,
      ]
        .filter((n): n is string => !!n);
      const name = names[0];
      let type = d.mediaType;
      const name0 = blobName(d.digest);
      if (!files.get(name0)) continue; // platforms not saved: skip
      if (!type) {
        const v = readJsonBlob(files, name0, "manifest", d.digest, d.size);
        type = typeof v.mediaType === "string"
          ? v.mediaType
          : Array.isArray(v.manifests)
          ? [...INDEX_TYPES][0]
          : [...MANIFEST_TYPES][0];
      }
      if (INDEX_TYPES.has(type!)) {
        const sub = readJsonBlob(files, name0, "index", d.digest, d.size);
        walk(descriptors(sub.manifests, `index ${d.digest}`), name, depth + 1);
      } else if (MANIFEST_TYPES.has(type!)) {
        if (d.platform?.architecture === "unknown") continue; // buildkit attestation
        const manifest = readJsonBlob(files, name0, "manifest", d.digest, d.size);
        const cdesc = manifest.config as Descriptor | undefined;
        if (!cdesc || typeof cdesc.digest !== "string") {
          throw new DenError("open archive", `manifest ${d.digest}: no config`);
        }
        const config = readJsonBlob(
          files,
          blobName(cdesc.digest),
          "config",
          cdesc.digest,
          cdesc.size,
        );
        const allNames = [...names, ...(tags.get(cdesc.digest) ?? [])];
        cands.push({
          names: [...new Set(allNames)],
          digests: [d.digest, cdesc.digest],
          os: str(config.os) ?? d.platform?.os,
          arch: str(config.architecture) ?? d.platform?.architecture,
          variant: str(config.variant) ?? d.platform?.variant,
          load: () => ociSource(files, format, manifest, config, name ?? base, d.digest),
        });
      }
    }
  };
  walk(descriptors(index.manifests, "index.json"), undefined, 0);
  return choose(cands, opts, base).load();
}

function str(v: unknown): string | undefined {
  return typeof v === "string" && v !== "" ? v : undefined;
}

function diffIds(config: Record<string, unknown>): string[] | undefined {
  const rootfs = config.rootfs as { diff_ids?: unknown } | undefined;
  const ids = rootfs?.diff_ids;
  return Array.isArray(ids) && ids.every((x) => typeof x === "string") ? ids : undefined;
}

function ociSource(
  files: Files,
  format: ArchiveFormat,
  manifest: Record<string, unknown>,
  config: Record<string, unknown>,
  name: string,
  digest: string,
): ImageSource {
  const layers = manifest.layers;
  if (!Array.isArray(layers)) throw new DenError("open archive", `manifest ${digest}: no layers`);
  const ids = diffIds(config);
  if (ids && ids.length !== layers.length) {
    throw new DenError(
      "open archive",
      `manifest ${digest}: ${layers.length} layers but ${ids.length} diff_ids in config`,
    );
  }
  return {
    format,
    name,
    digest,
    config,
    layers: (layers as Descriptor[]).map((d, i) => {
      if (typeof d?.digest !== "string") {
        throw new DenError("open archive", `manifest ${digest}: malformed layer descriptor`);
      }
      if (d.mediaType?.includes("encrypted")) {
        throw new DenError("open archive", `layer ${i + 1} is encrypted (${d.mediaType})`);
      }
      const s = files.get(blobName(d.digest));
      if (!s) throw new DenError("open archive", `layer ${i + 1} blob missing (${d.digest})`);
      if (typeof d.size === "number" && d.size !== s.size) {
        throw new DenError(
          "open archive",
          `layer ${i + 1} ${d.digest}: size ${s.size} != ${d.size} in manifest`,
        );
      }
      return { ...s, digest: d.digest, diffId: ids?.[i] };
    }),
  };
}

// ---- docker-archive ----

function openDocker(
  files: Files,
  format: ArchiveFormat,
  base: string,
  opts: OpenArchiveOptions,
): ImageSource {
  const s = files.get("manifest.json")!;
  let list: unknown;
  try {
    list = JSON.parse(new TextDecoder().decode(readSlice(s)));
  } catch {
    throw new DenError("open archive", "manifest.json is not valid JSON");
  }
  if (!Array.isArray(list)) throw new DenError("open archive", "manifest.json is not a list");
  const cands: Candidate[] = list.map((m, i) => {
    if (!m || typeof m.Config !== "string" || !Array.isArray(m.Layers)) {
      throw new DenError("open archive", `manifest.json entry ${i + 1} is malformed`);
    }
    // The config's digest is the image ID, which docker and podman declare
    // in its name ("<hex>.json", "blobs/sha256/<hex>"); the diff_ids in it
    // check the layers, so a config nothing vouches for is refused.
    const hex = /(?:^|\/)(?:sha256[:/])?([a-f0-9]{64})(?:\.json)?$/.exec(m.Config)?.[1];
    if (!hex) {
      throw new DenError(
        "open archive",
        `config ${quote(m.Config)}: no digest declared for it (its name is not an image ID)`,
      );
    }
    const cdigest = `sha256:${hex}`;
    const config = readJsonBlob(files, m.Config, "config", cdigest);
    const names: string[] = Array.isArray(m.RepoTags)
      ? m.RepoTags.filter((t: unknown) => typeof t === "string")
      : [];
    return {
      names,
      digests: [cdigest],
      os: str(config.os),
      arch: str(config.architecture),
      variant: str(config.variant),
      load: (): ImageSource => {
        const ids = diffIds(config);
        if (!ids || ids.length !== m.Layers.length) {
          throw new DenError(
            "open archive",
            `config ${m.Config}: ${m.Layers.length} layers but ${ids?.length ?? 0} diff_ids`,
          );
        }
        return {
          format,
          name: names[0] ?? base,
          digest: cdigest,
          config,
          layers: m.Layers.map((l: unknown, k: number) => {
            const ls = typeof l === "string" ? files.get(l) : undefined;
            if (!ls) {
              throw new DenError("open archive", `layer ${k + 1} missing (${quote(String(l))})`);
            }
            const bh = /^blobs\/sha256\/([a-f0-9]{64})$/.exec(normalize(String(l)))?.[1];
            return { ...ls, diffId: ids[k], digest: bh ? `sha256:${bh}` : undefined };
          }),
        };
      },
    };
  });
  return choose(cands, opts, base).load();
}
