// Named images in the storage directory: STORAGE/img/NAME, like ch-image.
import { DenError, osMessage, usageError } from "../error.ts";
import { readImageMetadata } from "./metadata.ts";

/** The invoking user's name: $USER, else the passwd entry of the uid. A
 * $USER that is not a plain name (a "/", "." or "..") is ignored. */
export function userName(): string {
  const env = Deno.env.get("USER");
  if (env && !env.includes("/") && env !== "." && env !== ".." && !env.includes("\0")) return env;
  const uid = Deno.uid();
  try {
    for (const line of Deno.readTextFileSync("/etc/passwd").split("\n")) {
      const f = line.split(":");
      if (f[2] === String(uid) && f[0]) return f[0];
    }
  } catch {
    // no passwd: fall back to the number
  }
  return String(uid);
}

/**
 * The storage directory: --storage, else $DEN_STORAGE, else
 * /var/tmp/$USER/den.
 *
 * @example
 * ```ts
 * const dir = storageDir(); // "/var/tmp/ada/den"
 * ```
 */
export function storageDir(flag?: string): string {
  if (flag) return flag;
  const env = Deno.env.get("DEN_STORAGE");
  if (env) return env;
  return `/var/tmp/${userName()}/den`;
}

/** True when `arg` names a stored image rather than a path (no "/"). */
export function isImageName(arg: string): boolean {
  return !arg.includes("/");
}

/** Refuse names that cannot be a directory under STORAGE/img. */
export function checkImageName(name: string): void {
  if (!name || name === "." || name === ".." || name.startsWith(".") || name.includes("/")) {
    throw usageError(`invalid image name: "${name}"`);
  }
  if (name.includes("\0")) throw usageError(`invalid image name: ${JSON.stringify(name)}`);
}

const modeText = (m: number) => `mode ${(m & 0o7777).toString(8).padStart(4, "0")}`;

function unsafe(dir: string, part: string, why: string, hint: string): DenError {
  return new DenError("storage directory", `${part} ${why}`, {
    path: dir === part ? undefined : dir,
    hint,
  });
}

/**
 * Check the storage directory before trusting what is in it, and create
 * what is missing (mode 0700) when `create`. Another user must not be able
 * to change it: each existing component of the path is a directory (or a
 * symlink) owned by us or root, and one that others can write is allowed
 * only when root owns it and it is sticky (/tmp, /var/tmp). Components at
 * and below the storage directory are ours and writable by us alone.
 * Returns the storage directory.
 */
export function secureStorage(storage?: string, create = false): string {
  const dir = storageDir(storage);
  const abs = dir.startsWith("/") ? dir : `${Deno.cwd()}/${dir}`;
  const parts = abs.split("/").filter((p) => p && p !== ".");
  if (parts.includes("..")) throw usageError(`storage directory: ".." in ${dir}`);
  const me = Deno.uid() ?? 0;
  const hint =
    `remove it or fix its owner and mode, or choose another storage with -s or DEN_STORAGE`;
  // The default /var/tmp/$USER/den: /var/tmp/$USER is ours too.
  const isDefault = !storage && !Deno.env.get("DEN_STORAGE");
  const check = (path: string, mine: boolean): boolean => {
    let st: Deno.FileInfo;
    try {
      st = Deno.lstatSync(path);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw unsafe(dir, path, "cannot be checked", hint);
      if (!create) return false;
      try {
        Deno.mkdirSync(path, { mode: 0o700 });
      } catch (e2) {
        if (!(e2 instanceof Deno.errors.AlreadyExists)) {
          throw new DenError("can't mkdir", osMessage(e2), {
            path,
          });
        }
      }
      st = Deno.lstatSync(path);
    }
    const uid = st.uid ?? -1;
    if (st.isSymlink) {
      if (mine ? uid !== me : uid !== me && uid !== 0) {
        throw unsafe(dir, path, `is a symlink owned by uid ${uid}`, hint);
      }
      return check(Deno.realPathSync(path), mine);
    }
    if (!st.isDirectory) throw unsafe(dir, path, "is not a directory", hint);
    const mode = st.mode ?? 0;
    if (mine) {
      if (uid !== me) throw unsafe(dir, path, `is owned by uid ${uid}, not you (${me})`, hint);
      if (mode & 0o022) throw unsafe(dir, path, `is writable by others (${modeText(mode)})`, hint);
    } else {
      if (uid !== me && uid !== 0) {
        throw unsafe(dir, path, `is owned by uid ${uid}, not you or root`, hint);
      }
      if ((mode & 0o022) && !(uid === 0 && mode & 0o1000)) {
        throw unsafe(dir, path, `is writable by others (${modeText(mode)})`, hint);
      }
    }
    return true;
  };
  let path = "";
  for (let i = 0; i < parts.length; i++) {
    path += `/${parts[i]}`;
    const mine = i === parts.length - 1 || (isDefault && i === parts.length - 2);
    if (!check(path, mine)) return dir;
  }
  check(`${path}/img`, true);
  return dir;
}

/** Directory of a stored image (whether or not it exists). */
export function imagePath(name: string, storage?: string): string {
  return `${storageDir(storage)}/img/${name}`;
}

/**
 * The rootfs directory an IMAGE argument means: a path when it contains "/",
 * else the stored image of that name if there is one, else a relative path.
 *
 * @example
 * ```ts
 * resolveImage("alpine");        // "/var/tmp/ada/den/img/alpine" if stored
 * resolveImage("./rootfs");      // "./rootfs"
 * ```
 */
export function resolveImage(arg: string, storage?: string): string {
  if (!isImageName(arg) || arg === "." || arg === "..") return arg;
  const stored = imagePath(arg, storage);
  try {
    if (!Deno.statSync(stored).isDirectory) return arg;
  } catch {
    return arg; // not stored: a relative path
  }
  secureStorage(storage);
  return stored;
}

/** One stored image, for `den images`. */
export interface StoredImage {
  name: string;
  path: string;
  size: number | null;
  arch: string | null;
  created: string | null;
  unpacked: string | null;
}

/** Stored images, sorted by name. */
export function listImages(storage?: string): StoredImage[] {
  const dir = `${secureStorage(storage)}/img`;
  const out: StoredImage[] = [];
  let entries: Deno.DirEntry[];
  try {
    entries = [...Deno.readDirSync(dir)];
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return [];
    throw new DenError("list images", osMessage(e), {
      path: dir,
    });
  }
  for (const d of entries) {
    if (!d.isDirectory || d.name.startsWith(".")) continue;
    const path = `${dir}/${d.name}`;
    let meta;
    try {
      meta = readImageMetadata(path);
    } catch {
      meta = undefined;
    }
    // When den wrote the metadata: its change time (its modification time
    // is $SOURCE_DATE_EPOCH's, as everything den adds to an image).
    let unpacked = meta?.unpacked ?? null;
    if (!unpacked) {
      try {
        unpacked = Deno.statSync(`${path}/ch/metadata.json`).ctime?.toISOString() ?? null;
      } catch {
        unpacked = null;
      }
    }
    out.push({
      name: d.name,
      path,
      size: meta?.size ?? null,
      arch: meta?.arch ?? null,
      created: meta?.created ?? null,
      unpacked,
    });
  }
  return out.sort((a, b) => a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
}

/** chmod u+rwx every directory of a tree (not following symlinks), so that
 * a recursive remove works even on trees made read-only. */
export function makeTreeRemovable(host: string): void {
  let st: Deno.FileInfo;
  try {
    st = Deno.lstatSync(host);
  } catch {
    return;
  }
  if (!st.isDirectory) return;
  const mode = (st.mode ?? 0) & 0o7777;
  if ((mode & 0o700) !== 0o700) Deno.chmodSync(host, mode | 0o700);
  for (const d of Deno.readDirSync(host)) {
    if (d.isDirectory) makeTreeRemovable(`${host}/${d.name}`);
  }
}

/** Delete a tree, making it writable first when needed. */
export function removeTree(path: string): void {
  try {
    Deno.removeSync(path, { recursive: true });
    return;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return;
    if (!(e instanceof Deno.errors.PermissionDenied)) throw e;
  }
  makeTreeRemovable(path);
  Deno.removeSync(path, { recursive: true });
}

/** This host's name as it may appear in a file name (no "-", which separates fields). */
export function hostTag(): string {
  return Deno.hostname().replace(/[^A-Za-z0-9_.]/g, "_");
}

/**
 * A new temporary directory beside `dest` (in `parent`), named
 * `.BASE.den-tmp-HOST-PID-XXXX`, to be renamed to DEST when complete. The
 * ones of processes on this host that are gone (`kill -9`, a crash) are
 * removed first: nobody else ever would.
 */
export function makeScratchBeside(parent: string, base: string): string {
  const host = hostTag();
  const prefix = `.${base}.den-tmp-${host}-`;
  try {
    for (const e of Deno.readDirSync(parent)) {
      if (!e.isDirectory || !e.name.startsWith(prefix)) continue;
      const pid = /^(\d+)-/.exec(e.name.slice(prefix.length))?.[1];
      if (!pid || Number(pid) === Deno.pid || pidAlive(Number(pid))) continue;
      const path = `${parent}/${e.name}`;
      if (Deno.lstatSync(path).uid !== Deno.uid()) continue;
      try {
        removeTree(path);
      } catch {
        // another process cleaning it too, or not ours to remove
      }
    }
  } catch {
    // an unreadable parent: makeTempDir below says why
  }
  return Deno.makeTempDirSync({ dir: parent, prefix: `${prefix}${Deno.pid}-` });
}

/** Whether a process `pid` exists in this pid namespace. */
export function pidAlive(pid: number): boolean {
  try {
    Deno.lstatSync(`/proc/${pid}`);
    return true;
  } catch {
    return false;
  }
}
