// Applying one layer's tar entries to a rootfs with OCI semantics: whiteouts,
// opaque directories, type changes, hard links; everything owned by and
// writable for the invoking user; nothing outside the rootfs touched.
import { lutimesSync } from "node:fs";
import { makeFifo } from "./_fifo.ts";
import { DenError } from "../error.ts";
import { decodeName, quote, splitEntryPath } from "./entry_path.ts";
import { RootfsResolver } from "./rootfs_resolver.ts";
import type { TarEntry, TarHandler } from "./tar_parser.ts";
import { OPAQUE_WHITEOUT, WHITEOUT_PREFIX } from "./whiteout.ts";

/** Counters of one unpack, summed over layers. */
export interface UnpackStats {
  files: number;
  dirs: number;
  symlinks: number;
  hardlinks: number;
  /** Device nodes, which an unprivileged user cannot create: skipped. */
  devices: number;
  fifos: number;
  whiteouts: number;
  /** Entries whose extended attributes were dropped. */
  xattrs: number;
  /** Bytes of file data written. */
  bytes: number;
}

export function newStats(): UnpackStats {
  return {
    files: 0,
    dirs: 0,
    symlinks: 0,
    hardlinks: 0,
    devices: 0,
    fifos: 0,
    whiteouts: 0,
    xattrs: 0,
    bytes: 0,
  };
}

const S_ISUID_ISGID = 0o6000;
/** Files at least this big are written asynchronously (see #chain). Off by
 * default: on the benchmark machine it did not pay (file creation dominates). */
const ASYNC_MIN = Number(Deno.env.get("DEN_ASYNC_MIN") ?? Infinity);

/** A file's mode as den writes it: setuid and setgid dropped (an
 * unprivileged user's files must not carry them), readable and writable
 * for its owner. */
function fileMode(mode: number): number {
  return (mode & 0o7777 & ~S_ISUID_ISGID) | 0o600;
}

let umaskCache: number | undefined;
function umask(): number {
  if (umaskCache === undefined) {
    const old = Deno.umask(0o022);
    Deno.umask(old);
    umaskCache = old;
  }
  return umaskCache;
}

/**
 * A TarHandler writing one layer into `rootfs`. The same resolver is shared by
 * all layers of an image (it caches verified directories); call
 * startLayer() before each layer.
 */
export class LayerWriter implements TarHandler {
  readonly resolver: RootfsResolver;
  readonly stats: UnpackStats;
  /** Real paths created by the current layer: an opaque whiteout or a
   * whiteout must not remove them (they only hide lower layers). */
  #created = new Set<string>();
  /** Real path -> header mtime of the current layer's directory entries. */
  #dirTimes = new Map<string, number>();
  #file?: Deno.FsFile;
  #fileMtime = 0;
  #filePos = 0;
  #fileSize = 0;
  #umask = umask();
  /** Writes of big files run on Deno's blocking thread pool while the main
   * thread goes on parsing and creating files (the kernel's page-cache work
   * is most of an unpack's cost). Each file's writes are chained in order. */
  #chain?: Promise<void>;
  #pending = new Set<Promise<void>>();
  #pendingBytes = 0;
  #writeError?: unknown;

  constructor(rootfs: string, stats: UnpackStats = newStats()) {
    this.resolver = new RootfsResolver(rootfs);
    this.resolver.onCreateDir = (p) => this.#created.add(p);
    this.stats = stats;
  }

  startLayer(): void {
    this.#created = new Set();
    this.#dirTimes = new Map();
  }

  /**
   * Give the layer's directories their header mtimes, once nothing more is
   * created in them (every create, remove and rename bumps a directory's
   * mtime; setting a directory's times does not touch its parent, so any
   * order does). A directory replaced later in the layer is skipped: each path
   * is resolved again, so that no symlink is followed out of the rootfs.
   */
  finishLayer(): void {
    const r = this.resolver;
    for (const [real, mtime] of this.#dirTimes) {
      if (real === "") {
        Deno.utimeSync(r.host(""), mtime, mtime);
        continue;
      }
      const comps = real.split("/");
      let now: string | undefined;
      try {
        now = r.dir(comps, comps.length, false);
      } catch (e) {
        if (e instanceof DenError) continue; // no longer a directory
        throw e;
      }
      if (now === real) Deno.utimeSync(r.host(real), mtime, mtime);
    }
    this.#dirTimes.clear();
  }

  /** Bytes handed to asynchronous writes and not yet written. */
  get pendingBytes(): number {
    return this.#pendingBytes;
  }

  /** Wait until at most `max` bytes of writes are pending. */
  async drain(max: number): Promise<void> {
    while (this.#pendingBytes > max && this.#pending.size) {
      await Promise.race(this.#pending);
    }
    this.#throwWriteError();
  }

  /** Wait for all pending writes; throws the first write error. */
  async flush(): Promise<void> {
    while (this.#pending.size) await Promise.all(this.#pending);
    this.#throwWriteError();
  }

  #throwWriteError(): void {
    if (this.#writeError !== undefined) {
      const e = this.#writeError;
      this.#writeError = undefined;
      throw e;
    }
  }

  /** Close a file left open by an aborted layer; wait for pending writes. */
  async abort(): Promise<void> {
    try {
      this.#file?.close();
    } catch {
      // already closed
    }
    this.#file = undefined;
    this.#chain = undefined;
    while (this.#pending.size) await Promise.allSettled(this.#pending);
    this.#writeError = undefined;
  }

  entry(e: TarEntry): boolean {
    const name = decodeName(e.name);
    if (e.hasXattrs) this.stats.xattrs++;
    const comps = splitEntryPath(name);
    const base = comps[comps.length - 1];
    if (base === undefined) {
      // The root itself ("./" or "/"): only a directory makes sense. It
      // gets the entry's time, as tar and containers/storage give it (not its
      // mode: the image stays yours to use).
      if (e.kind !== "dir") {
        throw new DenError("", `refusing to replace rootfs with ${e.kind}: ${quote(name)}`);
      }
      this.#dirTimes.set("", e.mtime);
      return false;
    }
    if (base.startsWith(WHITEOUT_PREFIX)) {
      this.#whiteout(comps, base, name);
      return false;
    }
    const r = this.resolver;
    const parent = r.dir(comps, comps.length - 1, true)!;
    const real = parent === "" ? base : `${parent}/${base}`;
    this.#created.add(real);
    const host = r.host(real);
    switch (e.kind) {
      case "dir":
        this.#mkdir(host, e.mode);
        r.rememberDir(comps.join("/"), real);
        this.#dirTimes.set(real, e.mtime);
        this.stats.dirs++;
        return false;
      case "file":
        this.#openFile(host, e);
        this.stats.files++;
        return true;
      case "symlink": {
        const target = decodeName(e.linkname, "link target");
        this.#removeExisting(host);
        Deno.symlinkSync(target, host);
        // The link's own time, as docker and containers/storage set it.
        lutimesSync(host, e.mtime, e.mtime);
        this.stats.symlinks++;
        return false;
      }
      case "hardlink":
        this.#hardlink(host, real, e, name);
        this.stats.hardlinks++;
        return false;
      case "fifo": {
        this.#removeExisting(host);
        const mode = fileMode(e.mode);
        makeFifo(host, mode);
        if (!this.#createdWith(mode)) Deno.chmodSync(host, mode);
        Deno.utimeSync(host, e.mtime, e.mtime);
        this.stats.fifos++;
        return false;
      }
      case "char":
      case "block":
        this.stats.devices++;
        return false;
    }
  }

  data(chunk: Uint8Array, offset: number): void {
    const f = this.#file!;
    this.stats.bytes += chunk.length;
    if (this.#chain === undefined) {
      if (offset !== this.#filePos) f.seekSync(offset, Deno.SeekMode.Start);
      let off = 0;
      while (off < chunk.length) off += f.writeSync(chunk.subarray(off));
      this.#filePos = offset + chunk.length;
      return;
    }
    const seek = offset !== this.#filePos;
    this.#filePos = offset + chunk.length;
    const len = chunk.length;
    // The chunk is a view of the decoder's ring, reused once we return.
    chunk = chunk.slice();
    this.#pendingBytes += len;
    this.#chain = this.#chain.then(async () => {
      if (seek) await f.seek(offset, Deno.SeekMode.Start);
      let off = 0;
      while (off < len) off += await f.write(chunk.subarray(off));
    }).finally(() => {
      this.#pendingBytes -= len;
    });
  }

  end(): void {
    const f = this.#file;
    if (!f) return;
    this.#file = undefined;
    const size = this.#fileSize;
    const pos = this.#filePos;
    const t = new Date(this.#fileMtime * 1000);
    const finish = () => {
      try {
        // Sparse files: holes at the end, or files that are only holes.
        if (pos !== size) f.truncateSync(size);
        f.utimeSync(t, t);
      } finally {
        f.close();
      }
    };
    const chain = this.#chain;
    this.#chain = undefined;
    if (chain === undefined) return finish();
    const p: Promise<void> = chain.then(finish).catch((e) => {
      try {
        f.close();
      } catch {
        // closed by finish()
      }
      this.#writeError ??= e;
    }).finally(() => this.#pending.delete(p));
    this.#pending.add(p);
  }

  #openFile(host: string, e: TarEntry): void {
    const mode = fileMode(e.mode);
    let f: Deno.FsFile;
    try {
      f = Deno.openSync(host, { write: true, createNew: true, mode });
    } catch (err) {
      if (!(err instanceof Deno.errors.AlreadyExists)) throw err;
      this.#removeExisting(host);
      f = Deno.openSync(host, { write: true, createNew: true, mode });
    }
    // chmod now, by path: the path is ours until the next entry.
    if (!this.#createdWith(mode)) Deno.chmodSync(host, mode);
    this.#file = f;
    this.#chain = e.size >= ASYNC_MIN ? Promise.resolve() : undefined;
    this.#fileMtime = e.mtime;
    this.#filePos = 0;
    this.#fileSize = e.size;
  }

  #mkdir(host: string, rawMode: number): void {
    const mode = (rawMode & 0o1777) | 0o700;
    let st: Deno.FileInfo | undefined;
    try {
      st = Deno.lstatSync(host);
    } catch (err) {
      if (!(err instanceof Deno.errors.NotFound)) throw err;
    }
    if (st?.isDirectory) {
      if (((st.mode ?? 0) & 0o7777) !== mode) Deno.chmodSync(host, mode);
      return;
    }
    if (st) this.#remove(host, st);
    Deno.mkdirSync(host, { mode });
    if (!this.#createdWith(mode)) Deno.chmodSync(host, mode);
  }

  /** Does creating with `mode` give `mode`? The umask takes bits away, and
   * Deno passes only the permission bits (a sticky 01755 came out 0755). */
  #createdWith(mode: number): boolean {
    return mode <= 0o777 && (mode & ~this.#umask) === mode;
  }

  /** Remove whatever is at host (not following a final symlink). */
  #removeExisting(host: string): void {
    let st: Deno.FileInfo;
    try {
      st = Deno.lstatSync(host);
    } catch (err) {
      if (err instanceof Deno.errors.NotFound) return;
      throw err;
    }
    this.#remove(host, st);
  }

  #remove(host: string, st: Deno.FileInfo): void {
    if (st.isDirectory) {
      Deno.removeSync(host, { recursive: true });
      this.resolver.invalidate();
    } else {
      Deno.removeSync(host);
      if (st.isSymlink) this.resolver.invalidate();
    }
  }

  #hardlink(host: string, real: string, e: TarEntry, name: string): void {
    const linkName = decodeName(e.linkname, "link target");
    const t = splitEntryPath(linkName, "hard link");
    const tbase = t[t.length - 1];
    if (tbase === undefined) {
      throw new DenError("", `refusing hard link to rootfs: ${quote(name)} -> ${quote(linkName)}`);
    }
    const tparent = this.resolver.dir(t, t.length - 1, false);
    const treal = tparent === undefined
      ? undefined
      : tparent === ""
      ? tbase
      : `${tparent}/${tbase}`;
    let st: Deno.FileInfo | undefined;
    if (treal !== undefined) {
      try {
        st = Deno.lstatSync(this.resolver.host(treal));
      } catch (err) {
        if (!(err instanceof Deno.errors.NotFound)) throw err;
      }
    }
    if (!st || treal === undefined) {
      throw new DenError("", `hard link target not found: ${quote(name)} -> ${quote(linkName)}`);
    }
    if (st.isDirectory) {
      throw new DenError("", `hard link to a directory: ${quote(name)} -> ${quote(linkName)}`);
    }
    if (treal === real) return; // a link to itself: nothing to do
    this.#removeExisting(host);
    Deno.linkSync(this.resolver.host(treal), host);
    if (st.isSymlink) return;
    // The entry's mode and time are the inode's now, as docker and
    // containers/storage apply them (a link to a lower layer's file may
    // carry newer ones); by the new path, whose parents are real.
    const mode = fileMode(e.mode);
    if (((st.mode ?? 0) & 0o7777) !== mode) Deno.chmodSync(host, mode);
    Deno.utimeSync(host, e.mtime, e.mtime);
  }

  #whiteout(comps: string[], base: string, name: string): void {
    this.stats.whiteouts++;
    const r = this.resolver;
    const parent = r.dir(comps, comps.length - 1, false);
    if (base === OPAQUE_WHITEOUT) {
      if (parent === undefined) return;
      const host = r.host(parent);
      let removed = false;
      for (const d of Deno.readDirSync(host)) {
        const child = parent === "" ? d.name : `${parent}/${d.name}`;
        if (this.#created.has(child)) continue;
        this.#removeExisting(`${host}/${d.name}`);
        removed = true;
      }
      if (removed) r.invalidate();
      return;
    }
    const target = base.slice(WHITEOUT_PREFIX.length);
    if (target.startsWith(WHITEOUT_PREFIX)) return; // other aufs metadata
    if (target === "" || target === "." || target === "..") {
      throw new DenError("", `refusing whiteout outside rootfs: ${quote(name)}`);
    }
    if (parent === undefined) return;
    const real = parent === "" ? target : `${parent}/${target}`;
    if (this.#created.has(real)) return; // hides lower layers only
    this.#removeExisting(r.host(real));
  }
}
