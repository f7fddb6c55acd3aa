// Downloading one blob into a temporary file beside its place in the cache
// (blobs.ts), verified while it streams, resumed with a Range request after a
// drop or a stall; then renamed into place. den pull runs the transfers on a
// thread of their own (Downloader, _download_worker.ts): the main thread is
// busy unpacking, and a transfer it had to interleave with that work would
// crawl.
import { createHash } from "node:crypto";
import { DenError, osMessage } from "../../error.ts";
import type { GrowingFile } from "../_decode.ts";
import { type ClientOptions, networkReason, type RegistryClient } from "./client.ts";
import type { Descriptor } from "./manifest.ts";
import type { PullRef } from "./ref.ts";

/** How one blob is transferred (a part of FetchBlobOptions). */
export interface TransferOptions {
  signal?: AbortSignal;
  /** Called with the number of new bytes written. */
  onBytes?: (n: number) => void;
  /** A transfer with no data for this long is abandoned and resumed (default 30 s). */
  stallMs?: number;
  /** Transfers of one blob (first one and resumptions after drops or stalls). */
  attempts?: number;
  log?: (msg: string) => void;
  /** Called with the temporary file once the download writes it: a reader may
   * follow it through `growing`, which is told every byte written. */
  onStart?: (path: string) => void;
  growing?: GrowingFile;
}

class Stalled extends Error {}

/** Bytes written to a blob's file at once (and told to a reader following it). */
const BATCH = 1 << 20;
/** ... or at most this many milliseconds after its first byte arrived. */
const BATCH_MS = 20;

/** A temporary file beside `final`, of this process, renamed to it when complete. */
export function partPath(final: string): string {
  return `${final}.${Deno.pid}-${crypto.randomUUID().slice(0, 8)}.part`;
}

/**
 * Download blob `d` to `final`: written to a temporary file beside it, which
 * is renamed into place only once its size and sha256 matched. A dropped or
 * stalled transfer resumes with an HTTP Range request (from the start when
 * the registry ignores it); a wrong digest or size is refused at once.
 */
export async function downloadBlob(
  client: RegistryClient,
  d: Descriptor,
  final: string,
  opts: TransferOptions,
): Promise<void> {
  // What a pull killed earlier had downloaded is resumed from, not thrown
  // away: the caller holds the blob's lock, so any temporary file of the
  // blob is an orphan. Nobody follows it (it is not verified yet).
  const earlier = adoptPart(final, d.size);
  if (earlier) {
    opts.log?.(`blob ${d.digest}: resuming at byte ${earlier.size} (left by an earlier pull)`);
    try {
      return await transfer(
        client,
        d,
        final,
        { ...opts, onStart: undefined, growing: undefined },
        earlier,
      );
    } catch (e) {
      if (!(e instanceof DigestMismatch)) throw e;
      opts.onBytes?.(-d.size);
      opts.log?.(
        `blob ${d.digest}: what an earlier pull left does not verify; downloading it again`,
      );
    }
  }
  return await transfer(client, d, final, opts);
}

class DigestMismatch extends DenError {}

/**
 * Take over the largest temporary file of `final` (an orphan: its pull died)
 * by renaming it to a name of this process.
 */
function adoptPart(final: string, size: number): { path: string; size: number } | undefined {
  const slash = final.lastIndexOf("/");
  const dir = final.slice(0, slash);
  const name = new RegExp(`^${final.slice(slash + 1)}\\.\\d+-[0-9a-f]{8}\\.part$`);
  const uid = Deno.uid();
  let best: { path: string; size: number } | undefined;
  try {
    for (const e of Deno.readDirSync(dir)) {
      if (!e.isFile || !name.test(e.name)) continue;
      const st = Deno.lstatSync(`${dir}/${e.name}`);
      if (!st.isFile || st.uid !== uid || st.size === 0 || st.size > size) continue;
      if (!best || st.size > best.size) best = { path: `${dir}/${e.name}`, size: st.size };
    }
    if (!best) return undefined;
    const mine = partPath(final);
    Deno.renameSync(best.path, mine);
    return { path: mine, size: best.size };
  } catch {
    return undefined; // taken by another process meanwhile, or unreadable: start afresh
  }
}

async function transfer(
  client: RegistryClient,
  d: Descriptor,
  final: string,
  opts: TransferOptions,
  earlier?: { path: string; size: number },
): Promise<void> {
  const tmp = earlier?.path ?? partPath(final);
  const file = earlier
    ? await Deno.open(tmp, { write: true })
    : await Deno.open(tmp, { createNew: true, write: true, mode: 0o644 });
  const what = `blob ${d.digest}`;
  const path = `/v2/${client.ref.repository}/blobs/${d.digest}`;
  const attempts = opts.attempts ?? 5;
  const stallMs = opts.stallMs ?? 30_000;
  let closed = false;
  let reread: Deno.FsFile | undefined;
  opts.onStart?.(tmp);
  try {
    let hash = createHash("sha256");
    let written = 0;
    const batch = new Uint8Array(BATCH);
    if (earlier) {
      reread = await Deno.open(tmp);
      const buf = new Uint8Array(1 << 20);
      for (let n; (n = await reread.read(buf)) !== null && written < earlier.size;) {
        hash.update(buf.subarray(0, n));
        written += n;
      }
      if (written !== earlier.size) throw new DigestMismatch("", `${what}: changed while read`);
      await file.seek(written, Deno.SeekMode.Start);
      opts.onBytes?.(written);
    }
    // After a registry ignored a Range and sent the blob from the start, the
    // bytes already in the file are compared with the new ones, not
    // rewritten: a reader following the file never sees them change.
    let check = 0;
    let checked = 0;
    for (let attempt = 1;; attempt++) {
      const headers: Record<string, string> = { "accept-encoding": "identity" };
      // (A comparison cut short starts over: its hash covers only `checked`.)
      if (written > 0 && checked >= check) headers.range = `bytes=${written}-`;
      const res = await client.get(path, what, headers);
      if (res.status === 404) {
        await res.body?.cancel();
        throw new DenError("", `${what}: not found in ${client.ref.registry}`);
      }
      const resumed = written > 0 && res.status === 206 &&
        new RegExp(`^bytes ${written}-`).test(res.headers.get("content-range") ?? "");
      if (written > 0 && !resumed && res.status === 200) {
        // The whole blob again (a registry ignoring Range): hash from the start.
        hash = createHash("sha256");
        check = written;
        checked = 0;
      } else if (!resumed && res.status !== 200) {
        await res.body?.cancel();
        throw new DenError("", `${what}: HTTP ${res.status} from ${client.ref.registry}`);
      }
      if (!res.body) throw new DenError("", `${what}: empty answer`);
      const reader = res.body.getReader();
      let failure: unknown;
      // Network chunks are small: they go to the file a batch at a time.
      let batched = 0;
      let later: ReturnType<typeof setTimeout> | undefined;
      let writeError: unknown;
      const flush = () => {
        clearTimeout(later);
        later = undefined;
        if (writeError !== undefined) throw writeError;
        writeAll(file, batch.subarray(0, batched), tmp);
        written += batched;
        batched = 0;
        opts.growing?.written(written);
      };
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
          let chunk = r.value;
          if (checked < check) {
            const n = Math.min(chunk.length, check - checked);
            reread ??= await Deno.open(tmp);
            if (!await sameBytes(reread, checked, chunk.subarray(0, n))) {
              throw new DenError("", `${what}: the registry sent different bytes the second time`);
            }
            hash.update(chunk.subarray(0, n));
            checked += n;
            chunk = chunk.subarray(n);
            if (!chunk.length) continue;
          }
          if (written + batched + chunk.length > d.size) {
            throw new DenError("", `${what}: larger than the ${d.size} bytes the manifest says`);
          }
          hash.update(chunk);
          if (batched + chunk.length > batch.length) flush();
          if (chunk.length >= batch.length) {
            writeAll(file, chunk, tmp);
            written += chunk.length;
            opts.growing?.written(written);
          } else {
            batch.set(chunk, batched);
            batched += chunk.length;
            // A slow transfer still reaches the file (and its reader) soon.
            later ??= setTimeout(() => {
              later = undefined;
              try {
                flush();
              } catch (e) {
                writeError ??= e;
              }
            }, BATCH_MS);
          }
          opts.onBytes?.(chunk.length);
        }
        flush();
      } catch (e) {
        if (e instanceof DenError || opts.signal?.aborted) throw e;
        failure = e;
        reader.cancel().catch(() => {});
      }
      // What arrived before a drop is good: resume after it.
      flush();
      if (!failure && written === d.size && checked >= check) break;
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
      throw new DigestMismatch("", `${what}: digest mismatch (got ${got})`);
    }
    file.close();
    closed = true;
    reread?.close();
    reread = undefined;
    Deno.renameSync(tmp, final);
  } catch (e) {
    if (!closed) file.close();
    reread?.close();
    try {
      Deno.removeSync(tmp);
    } catch {
      // already gone
    }
    throw e;
  }
}

/** Write all of `bytes`; a failure (a full disk) is a DenError, not retried. */
function writeAll(file: Deno.FsFile, bytes: Uint8Array, path: string): void {
  try {
    for (let off = 0; off < bytes.length;) off += file.writeSync(bytes.subarray(off));
  } catch (e) {
    throw new DenError("", `can't write ${path}: ${osMessage(e)}`);
  }
}

/** Whether `file` holds `bytes` at `offset`. */
async function sameBytes(file: Deno.FsFile, offset: number, bytes: Uint8Array): Promise<boolean> {
  await file.seek(offset, Deno.SeekMode.Start);
  const have = new Uint8Array(bytes.length);
  for (let got = 0; got < have.length;) {
    const n = await file.read(have.subarray(got));
    if (n === null) return false;
    got += n;
  }
  return have.every((b, i) => b === bytes[i]);
}

/** What the download thread is asked to do. */
export type DownloadRequest =
  | {
    type: "job";
    id: number;
    ref: PullRef;
    client: Omit<ClientOptions, "signal" | "log">;
    descriptor: Descriptor;
    final: string;
    stallMs?: number;
    attempts?: number;
    growing?: SharedArrayBuffer;
  }
  | { type: "cancel"; id: number };

/** What it says back about job `id`. */
export type DownloadEvent =
  | { type: "start"; id: number; path: string }
  | { type: "bytes"; id: number; n: number }
  | { type: "log"; id: number; msg: string }
  | { type: "done"; id: number }
  | { type: "error"; id: number; message: string; hint?: string; exitCode?: number };

interface Job {
  opts: TransferOptions;
  resolve: () => void;
  reject: (e: unknown) => void;
}

/**
 * Blob transfers on a thread of their own, any number at once: the main
 * thread only hears when one starts, how far it got, and how it ended.
 */
export class Downloader {
  #worker: Worker;
  #jobs = new Map<number, Job>();
  #ids = 0;

  constructor() {
    this.#worker = new Worker(new URL("./_download_worker.ts", import.meta.url), {
      type: "module",
    });
    this.#worker.onmessage = (ev: MessageEvent<DownloadEvent>) => this.#event(ev.data);
    this.#worker.onerror = (ev) => {
      ev.preventDefault();
      for (const j of this.#jobs.values()) {
        j.reject(new DenError("", `download thread failed: ${ev.message}`));
      }
      this.#jobs.clear();
    };
  }

  /** downloadBlob() on the download thread, with `client`'s settings and session. */
  download(
    client: RegistryClient,
    d: Descriptor,
    final: string,
    opts: TransferOptions,
  ): Promise<void> {
    const id = ++this.#ids;
    const { signal: _s, log: _l, ...settings } = client.options;
    const request: DownloadRequest = {
      type: "job",
      id,
      ref: client.ref,
      client: { ...settings, session: client.session },
      descriptor: d,
      final,
      stallMs: opts.stallMs,
      attempts: opts.attempts,
      growing: opts.growing?.shared,
    };
    return new Promise<void>((resolve, reject) => {
      const signal = opts.signal ?? client.options.signal;
      if (signal?.aborted) return reject(signal.reason);
      const cancel = () => this.#worker.postMessage({ type: "cancel", id });
      signal?.addEventListener("abort", cancel, { once: true });
      const done = () => {
        signal?.removeEventListener("abort", cancel);
        this.#jobs.delete(id);
      };
      this.#jobs.set(id, {
        opts,
        resolve: () => {
          done();
          resolve();
        },
        reject: (e) => {
          done();
          // Cancelled: the reason it was cancelled for, as downloadBlob would.
          reject(signal?.aborted ? signal.reason : e);
        },
      });
      this.#worker.postMessage(request);
    });
  }

  #event(ev: DownloadEvent): void {
    const job = this.#jobs.get(ev.id);
    if (!job) return;
    switch (ev.type) {
      case "start":
        job.opts.onStart?.(ev.path);
        break;
      case "bytes":
        job.opts.onBytes?.(ev.n);
        break;
      case "log":
        job.opts.log?.(ev.msg);
        break;
      case "done":
        job.resolve();
        break;
      case "error":
        job.reject(new DenError("", ev.message, { hint: ev.hint, exitCode: ev.exitCode }));
        break;
    }
  }

  close(): void {
    this.#worker.terminate();
  }
}
