// The download thread of den pull (Downloader in download.ts): runs
// downloadBlob() for each job it is sent, all at once, and reports back.
/// <reference lib="deno.worker" />
import { DenError } from "../../error.ts";
import { GrowingFile } from "../_decode.ts";
import { RegistryClient } from "./client.ts";
import { downloadBlob, type DownloadEvent, type DownloadRequest } from "./download.ts";

/** Bytes written are told at most this often. */
const BYTES_MS = 50;

const jobs = new Map<number, AbortController>();
const post = (ev: DownloadEvent) => self.postMessage(ev);

self.onmessage = (ev: MessageEvent<DownloadRequest>) => {
  const m = ev.data;
  if (m.type === "cancel") {
    jobs.get(m.id)?.abort(new DenError("", "cancelled"));
    return;
  }
  const abort = new AbortController();
  jobs.set(m.id, abort);
  const log = (msg: string) => post({ type: "log", id: m.id, msg });
  const client = new RegistryClient(m.ref, { ...m.client, signal: abort.signal, log });
  let bytes = 0;
  let told = 0;
  const tell = () => {
    if (bytes) post({ type: "bytes", id: m.id, n: bytes });
    bytes = 0;
    told = performance.now();
  };
  downloadBlob(client, m.descriptor, m.final, {
    signal: abort.signal,
    stallMs: m.stallMs,
    attempts: m.attempts,
    log,
    growing: m.growing && new GrowingFile(m.growing),
    onStart: (path) => post({ type: "start", id: m.id, path }),
    onBytes: (n) => {
      bytes += n;
      if (performance.now() - told > BYTES_MS) tell();
    },
  }).then(
    () => {
      tell();
      post({ type: "done", id: m.id });
    },
    (e) => {
      tell();
      post({
        type: "error",
        id: m.id,
        message: e instanceof Error ? e.message : String(e),
        hint: e instanceof DenError ? e.hint : undefined,
        exitCode: e instanceof DenError ? e.options.exitCode : undefined,
      });
    },
  ).finally(() => jobs.delete(m.id));
};
