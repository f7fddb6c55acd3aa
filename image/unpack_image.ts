// Unpacking an image archive into a directory, atomically: everything goes
// into a temporary directory beside DEST (.DEST.den-tmp-HOST-PID-XXXX) that
// is renamed into place at the end and removed on any failure or
// SIGINT/SIGTERM; after a kill -9, the next unpack beside it removes it.
import { DenError, osMessage, usageError } from "../error.ts";
import { type ArchiveFormat, type ImageSource, openArchive } from "./archive.ts";
import type { GrowingFile } from "./_decode.ts";
import { exchangePaths } from "./_exchange.ts";
import { BlobDecoder, type BlobStream } from "./blob_stream.ts";
import { quote } from "./entry_path.ts";
import { type ImageMetadata, metadataFromConfig, writeImageMetadata } from "./metadata.ts";
import { RootfsResolver } from "./rootfs_resolver.ts";
import { makeScratchBeside, makeTreeRemovable } from "./store.ts";
import { TarParser } from "./tar_parser.ts";
import { LayerWriter, newStats, type UnpackStats } from "./unpack_layer.ts";

export type { UnpackStats } from "./unpack_layer.ts";

/** Progress of an unpack, reported about ten times a second. */
export interface UnpackProgress {
  /** 1-based index of the layer being written. */
  layer: number;
  layers: number;
  /** Bytes of file data written so far (all layers). */
  bytes: number;
  files: number;
  /** Seconds since the start. */
  elapsed: number;
}

export interface UnpackOptions {
  /** Replace an existing DEST. */
  force?: boolean;
  /** Architecture to choose from a multi-arch archive (default: the host's). */
  arch?: string;
  /** Image to choose from an archive of several: name, tag or digest. */
  image?: string;
  onProgress?: (p: UnpackProgress) => void;
  onWarning?: (msg: string) => void;
  /** Decoder threads (0: decode on the main thread). Default 2. */
  workers?: number;
  /** Awaited once the tree is complete, before it replaces DEST; a throw cancels. */
  beforeInstall?: () => Promise<void>;
}

export interface UnpackResult {
  dest: string;
  /** Image name for messages (tag, ref name or archive name). */
  name: string;
  format: ArchiveFormat;
  layers: number;
  stats: UnpackStats;
  seconds: number;
  metadata: ImageMetadata;
}

/** How long the main thread works before it lets signal handlers run. */
const YIELD_MS = 50;

/** Bytes of file data that may wait for asynchronous writes. */
const PENDING_MAX = 32 << 20;

const SIGNALS: Deno.Signal[] = ["SIGINT", "SIGTERM", "SIGHUP"];
const SIGNAL_EXIT: Record<string, number> = { SIGHUP: 129, SIGINT: 130, SIGTERM: 143 };

/** What writeImageMetadata() writes. */
const METADATA_FILES = ["ch/metadata.json", "ch/environment"];

/**
 * $SOURCE_DATE_EPOCH (default 0): the time of what den adds to an image
 * (mount points, ch/), so that one archive gives the same tree every time,
 * as a directory or as a SquashFS file.
 */
export function sourceDateEpoch(): number {
  const epoch = Deno.env.get("SOURCE_DATE_EPOCH") ?? "0";
  if (!/^\d{1,10}$/.test(epoch)) {
    throw usageError(`SOURCE_DATE_EPOCH is not a number of seconds: ${JSON.stringify(epoch)}`);
  }
  return Number(epoch);
}

/** Directories and files a runnable image needs (ch-run binds onto them). */
const RUNTIME_DIRS = ["dev", "proc", "sys", "tmp", "home", "mnt"];
const RUNTIME_FILES = ["hosts", "resolv.conf", "passwd", "group"];

/**
 * Unpack an image archive (docker-archive, OCI archive or layout directory,
 * or a plain rootfs tarball; uncompressed, gzip or zstd) into `dest`.
 *
 * @example
 * ```ts
 * const r = await unpackImage("busybox.tar", "/var/tmp/ada/den/img/busybox");
 * console.log(`${r.layers} layers, ${r.stats.files} files`);
 * ```
 */
export function unpackImage(
  archive: string,
  dest: string,
  options: UnpackOptions = {},
): Promise<UnpackResult> {
  return unpackSource(
    (scratch, signal) =>
      openArchive(archive, {
        image: options.image,
        arch: options.arch,
        scratch,
        warn: options.onWarning,
        signal,
      }),
    dest,
    options,
  );
}

/**
 * Unpack the image that `open` chooses (given a scratch directory beside DEST
 * and the signal that interrupts) into `dest`, atomically. Layers still being
 * downloaded (LayerSource.download) are decoded as their bytes arrive.
 */
export async function unpackSource(
  open: (scratch: string, signal: AbortSignal) => Promise<ImageSource>,
  dest: string,
  options: UnpackOptions = {},
): Promise<UnpackResult> {
  const start = performance.now();
  const epoch = sourceDateEpoch();
  dest = dest.replace(/(.)\/+$/, "$1");
  const slash = dest.lastIndexOf("/");
  const parent = slash < 0 ? "." : slash === 0 ? "/" : dest.slice(0, slash);
  const base = dest.slice(slash + 1);
  if (!base || base === "." || base === "..") {
    throw new DenError("unpack", "invalid destination", { path: dest });
  }
  if (exists(dest) && !options.force) {
    throw new DenError("unpack", "destination exists", {
      path: dest,
      hint: "use --force to replace it",
    });
  }
  try {
    Deno.mkdirSync(parent, { recursive: true });
  } catch (e) {
    throw fsError("unpack", parent, e);
  }
  let signalled: Deno.Signal | undefined;
  let current: BlobStream | undefined;
  const abort = new AbortController();
  const onSignal = (sig: Deno.Signal) => () => {
    signalled ??= sig;
    abort.abort(new DenError("unpack", `interrupted by ${sig}`));
    current?.cancel();
    // A decoder blocked in nothing else wakes through cancel(); if the main
    // thread is between layers it checks `signalled` itself.
  };
  const handlers = SIGNALS.map((s) => [s, onSignal(s)] as const);
  const removeHandlers = () => {
    for (const [s, h] of handlers) {
      try {
        Deno.removeSignalListener(s, h);
      } catch {
        // ignore
      }
    }
  };
  // Listening before the temporary directory exists: a signal between its
  // mkdir and the listeners would end den with the directory left behind.
  for (const [s, h] of handlers) {
    try {
      Deno.addSignalListener(s, h);
    } catch {
      // not supported here
    }
  }
  let tmp: string;
  try {
    tmp = makeScratchBeside(parent, base);
  } catch (e) {
    removeHandlers();
    throw fsError("unpack", parent, e);
  }
  const rootfs = `${tmp}/rootfs`;
  let replaced = false;
  const decoder = new BlobDecoder(options.workers ?? 1);
  const checkSignal = () => {
    if (signalled) {
      throw new DenError("unpack", `interrupted by ${signalled}`, {
        exitCode: SIGNAL_EXIT[signalled] ?? 130,
      });
    }
  };
  try {
    Deno.mkdirSync(rootfs, { mode: 0o755 });
    const source = await open(tmp, abort.signal);
    checkSignal();
    const stats = newStats();
    const writer = new LayerWriter(rootfs, stats);
    const n = source.layers.length;
    const openLayer = async (i: number, after: Promise<unknown>) => {
      const l = source.layers[i]!;
      let path = l.path;
      let growing: GrowingFile | undefined;
      if (l.download && decoder.threaded) ({ path, growing } = await l.download.started);
      else if (l.download) await l.download.done;
      await after.catch(() => {});
      return decoder.open({
        path,
        finalPath: l.path,
        growing: growing?.shared,
        offset: l.offset,
        size: l.size,
        // A blob read as it downloads is hashed by its download (below).
        algo: growing ? undefined : l.digest?.split(":")[0],
        hashUncompressed: !!l.diffId && l.diffId !== l.digest,
      });
    };
    // Blobs go to the decoder in layer order: a decoder thread works through
    // its jobs in turn, and one the consumer is not reading yet would stall
    // it once its ring is full. (Downloads may start in any order.)
    let previous: Promise<unknown> = Promise.resolve();
    const opening = (i: number) => {
      const after = previous;
      const p = openLayer(i, after);
      previous = p;
      // An unhandled rejection would end the process: errors surface at await.
      p.catch(() => {});
      return p;
    };
    const cancelOpening = (p: Promise<BlobStream> | undefined) => {
      p?.then((s) => s.cancel(), () => {});
    };
    let next: Promise<BlobStream> | undefined = n > 0 ? opening(0) : undefined;
    let lastReport = 0;
    let lastYield = performance.now();
    for (let i = 0; i < n; i++) {
      const layer = source.layers[i]!;
      let stream: BlobStream | undefined;
      const parser = new TarParser(writer);
      try {
        const opened = next!;
        // Decode the next layer while this one is written (bounded window).
        next = i + 1 < n ? opening(i + 1) : undefined;
        stream = await opened;
        current = stream;
        writer.startLayer();
        checkSignal();
        for await (const chunk of stream.chunks()) {
          checkSignal();
          try {
            parser.feed(chunk);
            if (writer.pendingBytes > PENDING_MAX) await writer.drain(PENDING_MAX / 2);
          } catch (e) {
            throw entryError(e, parser.currentName);
          }
          if (performance.now() - lastYield > YIELD_MS) {
            // Chunks that are ready come through microtasks only: let the
            // signal handlers (macrotasks) run now and then.
            await new Promise((r) => setTimeout(r, 0));
            lastYield = performance.now();
            checkSignal();
          }
          if (options.onProgress) {
            const now = performance.now();
            if (now - lastReport > 100) {
              lastReport = now;
              options.onProgress({
                layer: i + 1,
                layers: n,
                bytes: stats.bytes,
                files: stats.files,
                elapsed: (now - start) / 1000,
              });
            }
          }
        }
        parser.finish();
        await writer.flush();
        writer.finishLayer();
        const r = await stream.result();
        if (r.read !== layer.size) {
          throw new DenError("", `layer blob truncated: read ${r.read} of ${layer.size} bytes`);
        }
        if (layer.download && !r.digest) {
          // Read while downloading: the bytes read are the file's, which the
          // download verifies (and compares, should it start over).
          await layer.download.done;
        } else if (layer.digest && r.digest !== layer.digest) {
          throw new DenError("", `digest mismatch: expected ${layer.digest}, got ${r.digest}`);
        }
        const diffId = r.diffId ?? (r.compression === "none" ? r.digest : undefined);
        if (layer.diffId && diffId !== layer.diffId) {
          throw new DenError("", `diff_id mismatch: expected ${layer.diffId}, got ${diffId}`);
        }
      } catch (e) {
        stream?.cancel();
        await writer.abort();
        cancelOpening(next);
        checkSignal();
        const inner = e instanceof DenError
          ? e
          : new DenError("", (e as Error).message ?? String(e));
        throw new DenError("", `unpack layer ${i + 1}/${n}`, { cause: inner });
      }
    }
    current = undefined;
    checkSignal();
    // What den adds (ch/, mount points) has $SOURCE_DATE_EPOCH's time, and
    // the root and /etc it goes in keep the times the layers gave them (as
    // containers/storage's do): one archive gives the same tree every time,
    // as a directory and as a .sqfs file.
    const made = makeRunnable(rootfs);
    const metadata = metadataFromConfig(source.config);
    metadata.image = source.name;
    if (source.digest) metadata.digest = source.digest;
    metadata.format = source.format;
    metadata.layers = n;
    metadata.size = stats.bytes;
    writeImageMetadata(rootfs, metadata);
    for (const p of [...made, ...METADATA_FILES]) Deno.utimeSync(`${rootfs}/${p}`, epoch, epoch);
    await options.beforeInstall?.();
    checkSignal();
    replaced = install(rootfs, dest, !!options.force);
    return {
      dest,
      name: source.name,
      format: source.format,
      layers: n,
      stats,
      seconds: (performance.now() - start) / 1000,
      metadata,
    };
  } catch (e) {
    checkSignal();
    if (e instanceof DenError) throw e;
    throw fsError("unpack", dest, e);
  } finally {
    decoder.close();
    removeHandlers();
    try {
      // After an exchange the old image is tmp/rootfs, and may be read-only.
      if (replaced) makeTreeRemovable(rootfs);
      Deno.removeSync(tmp, { recursive: true });
    } catch {
      // best effort; nothing more we can do
    }
  }
}

function exists(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * Move the finished rootfs to dest. With force, an existing dest is swapped
 * with it in one renameat2(RENAME_EXCHANGE), so readers see the old image or
 * the new one, never none; the old one ends up in tmp and goes with it. Where
 * the filesystem cannot exchange, dest is kept and the unpack refused.
 */
function install(rootfs: string, dest: string, force: boolean): boolean {
  for (let attempt = 0; attempt < 5; attempt++) {
    if (force && exists(dest)) {
      let r: ReturnType<typeof exchangePaths>;
      try {
        r = exchangePaths(rootfs, dest);
      } catch (e) {
        throw fsError("unpack: replace", dest, e);
      }
      if (r === "swapped") return true;
      if (r === "unsupported") {
        throw new DenError("unpack", "cannot replace the destination atomically here", {
          path: dest,
          hint: "this filesystem has no renameat2(RENAME_EXCHANGE); remove DEST first",
        });
      }
      // "missing": dest went away meanwhile; rename below.
    }
    try {
      Deno.renameSync(rootfs, dest);
      return false;
    } catch (e) {
      const code = (e as { code?: string }).code;
      if (code === "ENOTEMPTY" || code === "EEXIST" || code === "ENOTDIR" || code === "EISDIR") {
        // Another unpack won the race: with force, replace its result too.
        if (force) continue;
        throw new DenError("unpack", "destination exists", {
          path: dest,
          hint: "use --force to replace it",
        });
      }
      throw fsError("unpack", dest, e);
    }
  }
  throw new DenError("unpack", "destination keeps being replaced by another process", {
    path: dest,
  });
}

function fsError(op: string, path: string, e: unknown): DenError {
  const code = (e as { code?: string } | undefined)?.code;
  return new DenError(op, osMessage(e), { path, code });
}

/** A failure while writing an entry, naming the entry. */
function entryError(e: unknown, name: string): DenError {
  if (e instanceof DenError) return e;
  const code = (e as { code?: string } | undefined)?.code;
  return new DenError("", `cannot create ${quote(name)}: ${osMessage(e)}`, { code });
}

/**
 * Create what ch-run/den run bind-mounts onto, replacing what is unusable.
 * Returns what it made (paths in rootfs, no link on the way); the root and
 * /etc keep their times.
 */
function makeRunnable(rootfs: string): string[] {
  const made: string[] = [];
  const kept: [string, Date | null][] = [[rootfs, Deno.lstatSync(rootfs).mtime]];
  const r = new RootfsResolver(rootfs);
  const lstat = (p: string) => {
    try {
      return Deno.lstatSync(`${rootfs}/${p}`);
    } catch {
      return undefined;
    }
  };
  const replace = (p: string, st: Deno.FileInfo) => {
    if (st.isDirectory) {
      makeTreeRemovable(`${rootfs}/${p}`);
      Deno.removeSync(`${rootfs}/${p}`, { recursive: true });
    } else Deno.removeSync(`${rootfs}/${p}`);
    r.invalidate();
  };
  for (const d of RUNTIME_DIRS) {
    const st = lstat(d);
    if (st?.isDirectory) continue;
    if (st?.isSymlink) {
      // Keep e.g. tmp -> var/tmp when it leads to a directory in the image.
      let ok = false;
      try {
        ok = r.dir([d], 1, false) !== undefined;
      } catch {
        ok = false;
      }
      if (ok) continue;
    }
    if (st) replace(d, st);
    Deno.mkdirSync(`${rootfs}/${d}`, { mode: 0o755 });
    made.push(d);
  }
  if (lstat("tmp")?.isDirectory) Deno.chmodSync(`${rootfs}/tmp`, 0o1777);
  let etc: string;
  const est = lstat("etc");
  if (est && !est.isDirectory && !est.isSymlink) replace("etc", est);
  try {
    etc = r.dir(["etc"], 1, true)!;
    if (!est) made.push(etc); // made by r.dir()
    else if (etc !== "") kept.push([`${rootfs}/${etc}`, lstat(etc)?.mtime ?? null]);
  } catch {
    const st = lstat("etc");
    if (st) replace("etc", st);
    Deno.mkdirSync(`${rootfs}/etc`, { mode: 0o755 });
    etc = "etc";
    made.push(etc);
  }
  for (const f of RUNTIME_FILES) {
    const p = etc === "" ? f : `${etc}/${f}`;
    const st = lstat(p);
    if (st?.isFile || st?.isDirectory) continue;
    if (st?.isSymlink) {
      // A relative link to a regular file inside the image is fine; absolute
      // (resolv.conf -> /run/systemd/...) or dangling ones are not: den run
      // binds the host's file there.
      const target = Deno.readLinkSync(`${rootfs}/${p}`);
      if (!target.startsWith("/") && !target.split("/").includes("..")) {
        const dir = p.includes("/") ? p.slice(0, p.lastIndexOf("/")) : "";
        const t = lstat(dir ? `${dir}/${target}` : target);
        if (t?.isFile) continue;
      }
      replace(p, st);
    } else if (st) {
      replace(p, st); // a FIFO (opening it would block) or a socket
    }
    Deno.writeFileSync(`${rootfs}/${p}`, new Uint8Array(), { mode: 0o644, createNew: true });
    made.push(p);
  }
  // ch/ is den's (and Charliecloud's) metadata directory: start it afresh so
  // that nothing the image planted there (a symlink) redirects our writes.
  const ch = lstat("ch");
  if (ch) replace("ch", ch);
  Deno.mkdirSync(`${rootfs}/ch`, { mode: 0o755 });
  made.push("ch");
  // The root and /etc get their times back (etc is resolved: no link on the way).
  for (const [path, time] of kept) if (time) Deno.utimeSync(path, time, time);
  return made;
}
