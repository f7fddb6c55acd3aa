// Garbage collection of the blob cache, STORAGE/blobs/sha256: blobs that no
// stored image refers to go, and so do the leftovers of pulls that died
// (HEX.PID-XXXX.part files, HEX.lock files file_lock.ts would take over).
//
// Pulls in progress say which blobs they need with registerPull(): a file
// STORAGE/blobs/.pulls/HOST-PID-RANDOM, alive while its process is (on this
// host) and while its mtime is refreshed (on any host). gc never waits for
// pulls, and a pull never waits for gc. Instead gc renames each unwanted
// blob aside first, then reads the registrations and images again, and puts
// back what is wanted now. A pull registers before it looks in the cache,
// and installs its image before it releases the registration, so either gc
// sees the pull (or its image) in that second look, or the pull's look came
// after the rename and finds the blob missing (it downloads it again, which
// is slower but right). Without the second look, a pull that started
// meanwhile could lose a blob between finding it and using it.
//
// Only regular files with the names above are ever removed; symlinks,
// directories and other names in the cache are reported and left alone, and
// no symlink is followed (cached manifests are read with readFileInImage()).
import { DenError, osMessage } from "../../error.ts";
import { readImageMetadata } from "../metadata.ts";
import { readFileInImage } from "../read_in_image.ts";
import { hostTag, listImages, pidAlive, secureStorage } from "../store.ts";
import { heldFile, lockFile } from "./file_lock.ts";
import { type Manifest, parseManifest } from "./manifest.ts";

/** A registration not refreshed for this long is dead, whatever its host. */
const PULL_STALE_MS = 60 * 60_000;
/** How often a live registration's mtime is refreshed. */
const PULL_REFRESH_MS = 5 * 60_000;
/** A .part file of a process not running here is an orphan once unchanged this long (it
 * may be another node's: its name has no host). */
const PART_ORPHAN_MS = 10 * 60_000;
/** file_lock.ts's default: a remote holder's lock unchanged this long is stale. */
const LOCK_STALE_MS = 5 * 60_000;

const BLOB_RE = /^[a-f0-9]{64}$/;
const PART_RE = /^([a-f0-9]{64})\.(\d+)-[0-9a-f]+\.part$/;
const LOCK_RE = /^([a-f0-9]{64})\.lock$/;
const DIGEST_RE = /^sha256:[a-f0-9]{64}$/;

export interface GcOptions {
  /** Decide and report, remove nothing (stale locks are not looked at). */
  dryRun?: boolean;
  /** Told about each file removed (or that would be): its name in the cache and size. */
  onRemove?: (name: string, bytes: number) => void;
  /** Told about entries left alone and removals that failed. */
  log?: (msg: string) => void;
  /** Called once unwanted blobs are renamed aside, before the second look (tests
   * start a pull here). */
  onAside?: () => void;
}

export interface GcResult {
  /** Blobs removed (or that would be), and the bytes of them and of removed .part files. */
  removed: number;
  bytes: number;
  /** Blobs kept: referred to by a stored image or by a pull in progress. */
  kept: number;
  /** Orphan .part files and stale .lock files removed. */
  parts: number;
  locks: number;
}

/** A pull in progress, registered by registerPull(). */
export interface PullRegistration extends Disposable {
  path: string;
  /** Remove the registration (idempotent). */
  release(): void;
}

interface Registration {
  host: string;
  pidns: string;
  pid: number;
  digests: string[];
}

let self: { host: string; pidns: string } | undefined;

/** This host and pid namespace: where a registration's pid means a process. */
function identity(): { host: string; pidns: string } {
  if (!self) {
    let pidns = "?";
    try {
      pidns = Deno.readLinkSync("/proc/self/ns/pid");
    } catch {
      // no /proc: every registration is judged by its mtime alone
    }
    self = { host: Deno.hostname(), pidns };
  }
  return self;
}

/**
 * Tell gc that a pull in `storage` (the resolved storage directory) needs
 * `digests` ("sha256:HEX": manifest, config, layers), so they stay in the
 * cache until release(). Call it before looking in the cache; release after
 * the image is installed. The file is refreshed every 5 minutes while this
 * process lives (a registration unchanged for an hour is dead).
 *
 * @example
 * ```ts
 * using _ = registerPull(storage, [manifestDigest, config.digest, ...layerDigests]);
 * ```
 */
export function registerPull(storage: string, digests: string[]): PullRegistration {
  const dir = `${storage}/blobs/.pulls`;
  const me = identity();
  const path = `${dir}/${hostTag()}-${Deno.pid}-${crypto.randomUUID().slice(0, 8)}`;
  const text = JSON.stringify({ host: me.host, pidns: me.pidns, pid: Deno.pid, digests }) + "\n";
  try {
    Deno.mkdirSync(dir, { recursive: true, mode: 0o700 });
    Deno.writeTextFileSync(path, text, { createNew: true, mode: 0o600 });
  } catch (e) {
    throw new DenError("register pull", osMessage(e), { path });
  }
  // (Removed by a gc that judged it dead, only its blobs are at risk.)
  return heldFile(path, PULL_REFRESH_MS, () => Deno.removeSync(path));
}

/** The kind of an entry of the cache directory, by name; undefined for other names. */
function kindOf(name: string): "blob" | "part" | "lock" | undefined {
  if (BLOB_RE.test(name)) return "blob";
  if (PART_RE.test(name)) return "part";
  if (LOCK_RE.test(name)) return "lock";
  return undefined;
}

function ageMs(st: Deno.FileInfo): number {
  return Date.now() - (st.mtime?.getTime() ?? 0);
}

function parseRegistration(text: string): Registration | undefined {
  try {
    const v = JSON.parse(text);
    if (
      typeof v?.host === "string" && typeof v.pidns === "string" &&
      Number.isSafeInteger(v.pid) && v.pid > 0 && Array.isArray(v.digests)
    ) {
      const digests = (v.digests as unknown[]).filter((d): d is string => typeof d === "string");
      return { host: v.host, pidns: v.pidns, pid: v.pid, digests };
    }
  } catch {
    // being written (a few microseconds) or not ours: it keeps nothing
  }
  return undefined;
}

/** What is wanted now (hex digests), and registrations of pulls that are gone. */
interface Live {
  keep: Set<string>;
  dead: string[];
}

/** Blobs wanted by live pulls (registrations first: see the top of this file) and images. */
function liveBlobs(storage: string, cache: string): Live {
  const live: Live = { keep: new Set(), dead: [] };
  const want = (digest: string) => {
    if (!DIGEST_RE.test(digest)) return false;
    live.keep.add(digest.slice(7));
    return true;
  };
  const pulls = `${storage}/blobs/.pulls`;
  const me = identity();
  for (const name of listDir(pulls)) {
    let st: Deno.FileInfo;
    let reg: Registration | undefined;
    try {
      st = Deno.lstatSync(`${pulls}/${name}`);
      if (!st.isFile) continue;
      reg = parseRegistration(readFileInImage(pulls, name) ?? "");
    } catch {
      continue;
    }
    const fresh = ageMs(st) < PULL_STALE_MS;
    const alive = fresh && (reg === undefined ||
      reg.host !== me.host || reg.pidns !== me.pidns || pidAlive(reg.pid));
    if (!alive) {
      live.dead.push(`${pulls}/${name}`);
      continue;
    }
    for (const d of reg?.digests ?? []) want(d);
  }
  for (const image of listImages(storage)) {
    let digest: string | undefined;
    try {
      digest = readImageMetadata(image.path)?.digest;
    } catch {
      continue; // unreadable metadata: the image refers to nothing
    }
    if (digest && want(digest)) wantManifest(cache, digest, want, 1);
  }
  return live;
}

/** Keep what a cached manifest refers to; an index's manifests too (to `depth` levels). */
function wantManifest(
  cache: string,
  digest: string,
  want: (digest: string) => boolean,
  depth: number,
): void {
  let m: Manifest;
  try {
    const text = readFileInImage(cache, digest.slice(7));
    if (text === undefined) return; // not cached (an unpacked archive's digest, say)
    m = parseManifest(new TextEncoder().encode(text), "", `manifest ${digest}`);
  } catch {
    return; // not a manifest den can read: keep only the blob itself
  }
  if (m.kind === "manifest") {
    for (const d of [m.config, ...m.layers]) want(d.digest);
  } else if (depth > 0) {
    for (const d of m.manifests) if (want(d.digest)) wantManifest(cache, d.digest, want, depth - 1);
  }
}

/** Names in a directory, sorted; none when it is missing or not a directory. */
function listDir(dir: string): string[] {
  try {
    if (!Deno.lstatSync(dir).isDirectory) return [];
    return [...Deno.readDirSync(dir)].map((e) => e.name).sort();
  } catch {
    return [];
  }
}

/**
 * Remove the blobs of `storage` (-s, else $DEN_STORAGE, else the default)
 * that no stored image and no pull in progress refers to, orphan .part
 * files and stale .lock files.
 *
 * @example
 * ```ts
 * const r = await gcBlobs(undefined, { dryRun: true });
 * console.log(`${r.removed} blobs, ${r.bytes} bytes could go`);
 * ```
 */
export async function gcBlobs(
  storage: string | undefined,
  opts: GcOptions = {},
): Promise<GcResult> {
  const dir = secureStorage(storage);
  const cache = `${dir}/blobs/sha256`;
  const result: GcResult = { removed: 0, bytes: 0, kept: 0, parts: 0, locks: 0 };
  for (const d of [`${dir}/blobs`, cache]) {
    let st: Deno.FileInfo;
    try {
      st = Deno.lstatSync(d);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return result; // nothing pulled yet
      throw new DenError("gc", osMessage(e), { path: d });
    }
    if (!st.isDirectory) {
      throw new DenError("gc", `not a directory${st.isSymlink ? " (a symlink)" : ""}`, {
        path: d,
        hint: "den gc only cleans a blob cache made by den pull; move it away to start afresh",
      });
    }
  }
  const first = liveBlobs(dir, cache);
  const blobs: { name: string; size: number }[] = [];
  const parts: { name: string; hex: string; pid: number; st: Deno.FileInfo }[] = [];
  const locks: { name: string; st: Deno.FileInfo }[] = [];
  for (const name of listDir(cache)) {
    const kind = kindOf(name);
    if (!kind) continue; // not ours to judge (a lock being taken over, say)
    let st: Deno.FileInfo;
    try {
      st = Deno.lstatSync(`${cache}/${name}`);
    } catch {
      continue; // gone meanwhile
    }
    if (!st.isFile) {
      opts.log?.(`left ${name} alone: not a regular file`);
      continue;
    }
    if (kind === "blob") {
      if (first.keep.has(name)) result.kept++;
      else blobs.push({ name, size: st.size });
    } else if (kind === "part") {
      const m = PART_RE.exec(name)!;
      parts.push({ name, hex: m[1]!, pid: Number(m[2]), st });
    } else locks.push({ name, st });
  }
  const isOrphan = (p: (typeof parts)[number], keep: Set<string>) =>
    !keep.has(p.hex) && p.pid !== Deno.pid &&
    (ageMs(p.st) > PULL_STALE_MS || (ageMs(p.st) > PART_ORPHAN_MS && !pidAlive(p.pid)));
  if (opts.dryRun) {
    for (const b of blobs) {
      opts.onRemove?.(b.name, b.size);
      result.removed++;
      result.bytes += b.size;
    }
    for (const p of parts) {
      if (!isOrphan(p, first.keep)) continue;
      opts.onRemove?.(p.name, p.st.size);
      result.parts++;
      result.bytes += p.st.size;
    }
    return result;
  }

  // Aside first, then look again (see the top of this file).
  const aside: { name: string; size: number; tmp: string }[] = [];
  for (const b of blobs) {
    const tmp = `${cache}/${b.name}.${Deno.pid}-${crypto.randomUUID().slice(0, 8)}.part`;
    try {
      Deno.renameSync(`${cache}/${b.name}`, tmp);
      aside.push({ ...b, tmp });
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) {
        opts.log?.(`can't remove ${b.name}: ${osMessage(e)}`);
      }
    }
  }
  opts.onAside?.();
  const now = liveBlobs(dir, cache);
  for (const b of aside) {
    if (now.keep.has(b.name)) {
      try {
        Deno.renameSync(b.tmp, `${cache}/${b.name}`);
        result.kept++;
      } catch (e) {
        opts.log?.(`can't put back ${b.name}: ${osMessage(e)}`);
      }
      continue;
    }
    if (remove(b.tmp, opts.log)) {
      opts.onRemove?.(b.name, b.size);
      result.removed++;
      result.bytes += b.size;
    }
  }
  for (const p of parts) {
    if (!isOrphan(p, now.keep) || !remove(`${cache}/${p.name}`, opts.log)) continue;
    opts.onRemove?.(p.name, p.st.size);
    result.parts++;
    result.bytes += p.st.size;
  }
  for (const l of locks) {
    if (!await clearStaleLock(`${cache}/${l.name}`, ageMs(l.st) > LOCK_STALE_MS)) continue;
    opts.onRemove?.(l.name, 0);
    result.locks++;
  }
  for (const path of now.dead) remove(path, opts.log);
  return result;
}

/** Unlink a file; false (and a note) when that fails, except when it is gone already. */
function remove(path: string, log?: (msg: string) => void): boolean {
  try {
    Deno.removeSync(path);
    return true;
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) log?.(`can't remove ${path}: ${osMessage(e)}`);
    return false;
  }
}

/**
 * Remove the lock file at `path` when file_lock.ts would take it over: its
 * holder on this host is gone, or (`old`: unchanged for longer than its
 * stale time) a holder elsewhere stopped refreshing it. lockFile() decides,
 * by its own rules; `done` ends the attempt after a look or two (an old
 * lock's first look only starts the clock, here of 0 ms), so a live
 * holder's lock is neither waited for nor touched. Taking the lock over and
 * releasing it removes the file.
 */
async function clearStaleLock(path: string, old: boolean): Promise<boolean> {
  let looks = 0;
  const lock = await lockFile(path, {
    staleMs: old ? 0 : LOCK_STALE_MS,
    done: () => looks++ >= (old ? 3 : 2),
  });
  if (!lock) return false;
  lock.release();
  return true;
}
