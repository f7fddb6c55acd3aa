// A lock file made with O_CREAT|O_EXCL, for processes on one host or on many
// nodes that share a filesystem. Not flock(2): NFS maps it to POSIX locks
// through lockd (gone when lockd is not running, "nolock" mounts), Lustre
// refuses it or keeps it node-local unless mounted with -o flock, and locks
// of a node that died linger with the server. An exclusive create is atomic
// on local filesystems, on NFSv3 and later (the server decides) and on
// Lustre, and a lock file says who holds it, so a waiter can tell a dead
// holder from a slow one:
// - a holder on this host (same hostname, boot and pid namespace) is alive
//   while /proc/PID exists with the same start time (pid reuse); a dead
//   one's lock is taken over at once;
// - a holder elsewhere refreshes the file's mtime every few seconds; a lock
//   that does not change for `staleMs` is taken over. Waiters compare what
//   they see with what they saw, never with their own clock, so clock skew
//   between nodes does not matter; staleMs is well above NFS's attribute
//   cache time (acregmax, 60 s by default).
// Taking over renames the stale file away and checks it was the one judged
// stale. A lock only saves work: whoever holds it still writes to a file of
// its own and renames it into place, so even two holders at once (a race in
// a takeover) cost a second download, never a bad file.

export interface LockOptions {
  /** A remote holder's lock that has not changed for this long is stale (default 5 min). */
  staleMs?: number;
  /** Stop waiting (throws its reason). */
  signal?: AbortSignal;
  /** Checked while waiting: true means the work is done, so return undefined. */
  done?: () => boolean;
  /** Told once when waiting for another process, and about takeovers. */
  log?: (msg: string) => void;
  /** What the lock is for, in messages ("blob sha256:..."). */
  what?: string;
}

/** A held lock; release() removes the file if it is still ours. */
export interface Lock extends Disposable {
  path: string;
  release(): void;
}

interface Holder {
  pid: number;
  start: string;
  host: string;
  token: string;
}

let self: { host: string; start: string } | undefined;

function readOr(path: string, fallback: string): string {
  try {
    return Deno.readTextFileSync(path).trim();
  } catch {
    return fallback;
  }
}

function linkOr(path: string, fallback: string): string {
  try {
    return Deno.readLinkSync(path);
  } catch {
    return fallback;
  }
}

/** The start time of a process (field 22 of /proc/PID/stat), or undefined when it is gone. */
function startTime(pid: number | "self"): string | undefined {
  let stat: string;
  try {
    stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  } catch {
    return undefined;
  }
  // The command name (field 2) may hold spaces and ")": fields follow the last ")".
  return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19] ?? "";
}

function identity(): { host: string; start: string } {
  self ??= {
    host: `${Deno.hostname()}/${readOr("/proc/sys/kernel/random/boot_id", "?")}/${
      linkOr("/proc/self/ns/pid", "?")
    }`,
    start: startTime("self") ?? "",
  };
  return self;
}

function parseHolder(text: string): Holder | undefined {
  try {
    const v = JSON.parse(text);
    if (
      typeof v?.pid === "number" && typeof v.host === "string" && typeof v.token === "string"
    ) {
      return { pid: v.pid, start: String(v.start ?? ""), host: v.host, token: v.token };
    }
  } catch {
    // being written, or not a lock of ours
  }
  return undefined;
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve, reject) => {
    const t = setTimeout(done, ms);
    function done() {
      signal?.removeEventListener("abort", abort);
      resolve();
    }
    function abort() {
      clearTimeout(t);
      reject(signal!.reason);
    }
    signal?.addEventListener("abort", abort, { once: true });
  });

/** Create the lock file; false when it exists. */
function tryCreate(path: string, holder: Holder): boolean {
  let f: Deno.FsFile;
  try {
    f = Deno.openSync(path, { write: true, createNew: true, mode: 0o644 });
  } catch (e) {
    if (e instanceof Deno.errors.AlreadyExists) return false;
    throw e;
  }
  try {
    f.writeSync(new TextEncoder().encode(JSON.stringify(holder) + "\n"));
  } finally {
    f.close();
  }
  return true;
}

/**
 * Take the lock at `path`, waiting (with backoff) while a live holder has
 * it. Returns undefined, without the lock, when `options.done()` turns true
 * meanwhile.
 */
export async function lockFile(path: string, options: LockOptions = {}): Promise<Lock | undefined> {
  const staleMs = options.staleMs ?? 5 * 60_000;
  const me = identity();
  const holder: Holder = {
    pid: Deno.pid,
    start: me.start,
    host: me.host,
    token: crypto.randomUUID(),
  };
  let delay = 20;
  let told = false;
  let seen = "";
  let seenAt = performance.now();
  for (;;) {
    options.signal?.throwIfAborted();
    if (options.done?.()) return undefined;
    if (tryCreate(path, holder)) break;
    let text: string;
    let mtime = 0;
    try {
      text = Deno.readTextFileSync(path);
      mtime = Deno.statSync(path).mtime?.getTime() ?? 0;
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) continue; // released meanwhile
      throw e;
    }
    const other = parseHolder(text);
    const now = performance.now();
    const view = `${mtime} ${text}`;
    if (view !== seen) {
      seen = view;
      seenAt = now;
    }
    let stale = false;
    if (other && other.host === me.host) {
      const start = startTime(other.pid);
      stale = start === undefined || (other.start !== "" && start !== other.start);
    } else {
      stale = now - seenAt > staleMs;
    }
    if (stale) {
      options.log?.(
        `${options.what ?? path}: taking over the lock of ${
          other ? `pid ${other.pid} on ${other.host.split("/")[0]}` : "an unknown process"
        }, which is gone`,
      );
      breakLock(path, text);
      continue;
    }
    if (!told) {
      told = true;
      options.log?.(
        `${options.what ?? path}: waiting for ${
          other ? `pid ${other.pid} on ${other.host.split("/")[0]}` : "another process"
        }`,
      );
    }
    await sleep(delay * (0.75 + Math.random() / 2), options.signal);
    delay = Math.min(1000, delay * 1.5);
  }
  return heldFile(path, Math.max(50, Math.min(10_000, staleMs / 6)), () => {
    if (parseHolder(Deno.readTextFileSync(path))?.token === holder.token) Deno.removeSync(path);
  });
}

/** Remove a stale lock whose content was `text`, unless it changed meanwhile. */
function breakLock(path: string, text: string): void {
  const aside = `${path}.stale-${crypto.randomUUID().slice(0, 8)}`;
  try {
    Deno.renameSync(path, aside);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return;
    throw e;
  }
  let now = "";
  try {
    now = Deno.readTextFileSync(aside);
  } catch {
    // unreadable: treat as changed
  }
  if (now !== text) {
    // A new holder's lock: put it back unless another took its place.
    try {
      Deno.linkSync(aside, path);
    } catch {
      // a third holder: the one we moved works on (a duplicate download at worst)
    }
  }
  try {
    Deno.removeSync(aside);
  } catch {
    // gone
  }
}

/**
 * A file this process holds: touched every `ms` while the process lives (an
 * unref'd timer) so that others see its holder is alive, and handed to
 * `remove` once, at release. A failed touch or removal is ignored: the file
 * was taken over or removed already.
 */
export function heldFile(
  path: string,
  ms: number,
  remove: () => void,
): { path: string; release(): void } & Disposable {
  const timer = setInterval(() => {
    try {
      const now = new Date();
      Deno.utimeSync(path, now, now);
    } catch {
      // see above
    }
  }, ms);
  Deno.unrefTimer(timer);
  let released = false;
  const release = () => {
    if (released) return;
    released = true;
    clearInterval(timer);
    try {
      remove();
    } catch {
      // gone already
    }
  };
  return { path, release, [Symbol.dispose]: release };
}
