// Path resolution inside a rootfs being unpacked, done by hand so that the OS
// never follows a symlink in a parent component: each component is lstat'ed
// and relative symlinks that stay inside the rootfs (lib -> usr/lib) are
// followed. A parent symlink that points to an absolute path or climbs above
// the rootfs is refused: a real layer never writes through one (builders
// record real paths), so an entry that does is hostile. The result is a
// "real" path relative to the rootfs whose every component is a real
// directory, so handing `root + "/" + real` to the OS is safe.
import { DenError } from "../error.ts";
import { quote } from "./entry_path.ts";

const MAX_SYMLINKS = 40; // Linux's MAXSYMLINKS

/** Resolves logical rootfs paths (component arrays) to real ones. */
export class RootfsResolver {
  readonly root: string;
  /** Logical directory path -> real path; "" is the root. */
  #dirs = new Map<string, string>();
  /** Called with the real path of every directory created implicitly. */
  onCreateDir?: (real: string) => void;

  constructor(root: string) {
    this.root = root;
  }

  /** Host path of a real rootfs-relative path. */
  host(real: string): string {
    return real === "" ? this.root : `${this.root}/${real}`;
  }

  /** Forget cached directories: after removing a directory or a symlink. */
  invalidate(): void {
    this.#dirs.clear();
  }

  /** Remember that a logical directory is the real directory `real`. */
  rememberDir(logical: string, real: string): void {
    this.#dirs.set(logical, real);
  }

  /**
   * Real path of the directory named by comps[0..n). With `create`, missing
   * directories are made (mode 0755, like tar's implicit parents); without
   * it, undefined is returned when something is missing.
   */
  dir(comps: readonly string[], n: number, create: boolean): string | undefined {
    if (n === 0) return "";
    const key = n === comps.length ? comps.join("/") : comps.slice(0, n).join("/");
    const hit = this.#dirs.get(key);
    if (hit !== undefined) return hit;
    const budget = { links: MAX_SYMLINKS };
    let real = "";
    let logical = "";
    for (let i = 0; i < n; i++) {
      logical = i === 0 ? comps[0]! : `${logical}/${comps[i]}`;
      const cached = this.#dirs.get(logical);
      if (cached !== undefined) {
        real = cached;
        continue;
      }
      const next = this.#step(real, comps[i]!, create, budget, key);
      if (next === undefined) return undefined;
      real = next;
      this.#dirs.set(logical, real);
    }
    return real;
  }

  /** Walk one component from real dir `real`; follows symlinks in-rootfs. */
  #step(
    real: string,
    name: string,
    create: boolean,
    budget: { links: number },
    what: string,
    via?: string,
  ): string | undefined {
    if (name === "..") {
      if (real === "" && via !== undefined) {
        throw new DenError(
          "",
          `refusing entry through symlink outside rootfs: ${quote(what)} (${via})`,
        );
      }
      return real.slice(0, Math.max(0, real.lastIndexOf("/")));
    }
    if (name === "." || name === "") return real;
    const p = real === "" ? name : `${real}/${name}`;
    let st: Deno.FileInfo;
    try {
      st = Deno.lstatSync(this.host(p));
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
      if (!create) return undefined;
      Deno.mkdirSync(this.host(p), { mode: 0o755 });
      this.onCreateDir?.(p);
      return p;
    }
    if (st.isDirectory) return p;
    if (st.isSymlink) {
      if (--budget.links < 0) {
        throw new DenError("", `too many levels of symbolic links: ${quote(what)}`);
      }
      const target = Deno.readLinkSync(this.host(p));
      const link = `${quote(p)} -> ${quote(target)}`;
      if (target.startsWith("/")) {
        throw new DenError(
          "",
          `refusing entry through symlink outside rootfs: ${quote(what)} (${link})`,
        );
      }
      let cur = real;
      for (const c of target.split("/")) {
        const next = this.#step(cur, c, create, budget, what, link);
        if (next === undefined) return undefined;
        cur = next;
      }
      return cur;
    }
    throw new DenError("", `not a directory: ${quote(what)} (at ${quote(p)})`);
  }
}
