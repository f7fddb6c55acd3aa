// The content-addressed blob cache, STORAGE/blobs/sha256/HEX, and downloads
// into it. A blob is written to a temporary file beside its final name and
// renamed into place only after its size and sha256 matched, so the cache
// holds verified blobs only, and two pulls that fetch the same blob at once
// both end with the same complete file (rename is atomic). Pulls in other
// processes or on other nodes sharing the storage take HEX.lock first
// (file_lock.ts), so each blob is downloaded once: the others wait and then
// find it in the cache.
import { createHash } from "node:crypto";
import { DenError } from "../../error.ts";
import { networkReason, type RegistryClient } from "./client.ts";
import { lockFile } from "./file_lock.ts";
import type { Descriptor } from "./manifest.ts";

export interface FetchBlobOptions {
  signal?: AbortSignal;
  /** Called with the number of new bytes written (for progress). */
  onBytes?: (n: number) => void;
  /** A transfer with no data for this long is abandoned and resumed (default 30 s). */
  stallMs?: number;
  /** Transfers of one blob (first one and resumptions after drops or stalls). */
  attempts?: number;
  log?: (msg: string) => void;
  /** Hash a blob found in the cache when it is at most this large (default 4 MiB):
   * one that does not match is removed and downloaded again. */
  verifyHitsUpTo?: number;
  /** A lock of another node that does not change for this long is stale (default 5 min). */
  lockStaleMs?: number;
}

class Stalled extends Error {}

/** A temporary file beside `final`, of this process, renamed to it when complete. */
function partPath(final: string): string {
  return `${final}.${Deno.pid}-${crypto.randomUUID().slice(0, 8)}.part`;
}

/** Blobs of all pulled images, by sha256. */
export class BlobCache {
  constructor(readonly dir: string) {}

  path(digest: string): string {
    return `${this.dir}/${digest.slice("sha256:".length)}`;
  }

  /** A blob of the right size is there (only verified blobs ever are). Opens
   * it rather than stat(2)s it: on NFS, open revalidates (close-to-open
   * consistency), so a blob another node just renamed into place is seen. */
  has(d: Descriptor): boolean {
    try {
      using f = Deno.openSync(this.path(d.digest));
      const st = f.statSync();
      return st.isFile && st.size === d.size;
    } catch {
      return false;
    }
  }

  /** Whether the cached blob has the digest its name says; removes it when not. */
  async verify(d: Descriptor): Promise<boolean> {
    const path = this.path(d.digest);
    const hash = createHash("sha256");
    try {
      using f = await Deno.open(path);
      const buf = new Uint8Array(1 << 20);
      for (;;) {
        const n = await f.read(buf);
        if (n === null) break;
        hash.update(buf.subarray(0, n));
      }
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return false;
      throw e;
    }
    if (`sha256:${hash.digest("hex")}` === d.digest) return true;
    try {
      Deno.removeSync(path);
    } catch {
      // gone already
    }
    return false;
  }

  /** Store bytes already verified by the caller (a manifest). */
  put(digest: string, bytes: Uint8Array): string {
    Deno.mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    const final = this.path(digest);
    const tmp = partPath(final);
    Deno.writeFileSync(tmp, bytes, { mode: 0o644, createNew: true });
    Deno.renameSync(tmp, final);
    return final;
  }

  /**
   * Download a blob into the cache unless it is there. Returns true on a
   * cache hit. A dropped or stalled transfer resumes with an HTTP Range
   * request (from the start when the registry ignores it); a wrong digest
   * or size is refused at once, and its bytes never enter the cache.
   */
  async fetch(
    client: RegistryClient,
    d: Descriptor,
    opts: FetchBlobOptions = {},
  ): Promise<boolean> {
    const small = opts.verifyHitsUpTo ?? 4 << 20;
    const hit = async () => {
      if (!this.has(d)) return false;
      if (d.size > small || await this.verify(d)) return true;
      opts.log?.(`blob ${d.digest}: the cached copy is damaged; downloading it again`);
      return false;
    };
    if (await hit()) return true;
    Deno.mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    for (;;) {
      const lock = await lockFile(`${this.path(d.digest)}.lock`, {
        done: () => this.has(d),
        signal: opts.signal,
        log: opts.log,
        what: `blob ${d.digest}`,
        staleMs: opts.lockStaleMs,
      });
      // Another process fetched it meanwhile (damaged: take the lock and fetch).
      if (!lock) {
        if (await hit()) return true;
        continue;
      }
      try {
        if (await hit()) return true;
        await this.#download(client, d, opts);
        return false;
      } finally {
        lock.release();
      }
    }
  }

  async #download(
    client: RegistryClient,
    d: Descriptor,
    opts: FetchBlobOptions,
  ): Promise<void> {
    const final = this.path(d.digest);
    const tmp = partPath(final);
    const file = await Deno.open(tmp, { createNew: true, write: true, mode: 0o644 });
    const what = `blob ${d.digest}`;
    const path = `/v2/${client.ref.repository}/blobs/${d.digest}`;
    const attempts = opts.attempts ?? 5;
    const stallMs = opts.stallMs ?? 30_000;
    let closed = false;
    try {
      let hash = createHash("sha256");
      let written = 0;
      for (let attempt = 1;; attempt++) {
        const headers: Record<string, string> = { "accept-encoding": "identity" };
        if (written > 0) headers.range = `bytes=${written}-`;
        const res = await client.get(path, what, headers);
        if (res.status === 404) {
          await res.body?.cancel();
          throw new DenError("", `${what}: not found in ${client.ref.registry}`);
        }
        const resumed = written > 0 && res.status === 206 &&
          new RegExp(`^bytes ${written}-`).test(res.headers.get("content-range") ?? "");
        if (written > 0 && !resumed && res.status === 200) {
          // The registry ignored the Range: start over.
          await file.truncate(0);
          await file.seek(0, Deno.SeekMode.Start);
          opts.onBytes?.(-written);
          hash = createHash("sha256");
          written = 0;
        } else if (!resumed && res.status !== 200) {
          await res.body?.cancel();
          throw new DenError("", `${what}: HTTP ${res.status} from ${client.ref.registry}`);
        }
        if (!res.body) throw new DenError("", `${what}: empty answer`);
        const reader = res.body.getReader();
        let failure: unknown;
        try {
          for (;;) {
            let timer: ReturnType<typeof setTimeout> | undefined;
            const stall = new Promise<never>((_, reject) => {
              timer = setTimeout(() => reject(new Stalled()), stallMs);
            });
            let r: ReadableStreamReadResult<Uint8Array>;
            try {
              r = await Promise.race([reader.read(), stall]);
            } finally {
              clearTimeout(timer);
            }
            if (r.done) break;
            const chunk = r.value;
            if (written + chunk.length > d.size) {
              throw new DenError("", `${what}: larger than the ${d.size} bytes the manifest says`);
            }
            for (let off = 0; off < chunk.length;) off += await file.write(chunk.subarray(off));
            hash.update(chunk);
            written += chunk.length;
            opts.onBytes?.(chunk.length);
          }
        } catch (e) {
          if (e instanceof DenError || opts.signal?.aborted) throw e;
          failure = e;
          reader.cancel().catch(() => {});
        }
        if (!failure && written === d.size) break;
        const why = failure instanceof Stalled
          ? `no data for ${stallMs / 1000} s`
          : failure
          ? networkReason(failure)
          : `connection closed after ${written} of ${d.size} bytes`;
        if (attempt >= attempts) {
          throw new DenError("", `${what}: ${why} (gave up after ${attempts} attempts)`);
        }
        opts.log?.(`${what}: ${why}; resuming at byte ${written}`);
      }
      const got = `sha256:${hash.digest("hex")}`;
      if (got !== d.digest) {
        throw new DenError("", `${what}: digest mismatch (got ${got})`);
      }
      file.close();
      closed = true;
      Deno.renameSync(tmp, final);
    } catch (e) {
      if (!closed) file.close();
      try {
        Deno.removeSync(tmp);
      } catch {
        // already gone
      }
      throw e;
    }
  }
}
