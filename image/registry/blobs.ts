// The content-addressed blob cache, STORAGE/blobs/sha256/HEX, and downloads
// into it. A blob is written to a temporary file beside its final name and
// renamed into place only after its size and sha256 matched, so the cache
// holds verified blobs only, and two pulls that fetch the same blob at once
// both end with the same complete file (rename is atomic). Pulls in other
// processes or on other nodes sharing the storage take HEX.lock first
// (file_lock.ts), so each blob is downloaded once: the others wait and then
// find it in the cache.
import { createHash } from "node:crypto";
import type { RegistryClient } from "./client.ts";
import { downloadBlob, type Downloader, partPath, type TransferOptions } from "./download.ts";
import { lockFile } from "./file_lock.ts";
import type { Descriptor } from "./manifest.ts";

export interface FetchBlobOptions extends TransferOptions {
  /** Hash a blob found in the cache when it is at most this large (default 4 MiB):
   * one that does not match is removed and downloaded again. */
  verifyHitsUpTo?: number;
  /** A lock of another node that does not change for this long is stale (default 5 min). */
  lockStaleMs?: number;
  /** Transfer on this thread (default: here, on the calling thread). */
  downloader?: Downloader;
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
        const final = this.path(d.digest);
        if (opts.downloader) await opts.downloader.download(client, d, final, opts);
        else await downloadBlob(client, d, final, opts);
        return false;
      } finally {
        lock.release();
      }
    }
  }
}
