import { deepStrictEqual, match, ok, strictEqual } from "node:assert/strict";
import { progressLines } from "./pull.ts";
import type { DownloadProgress } from "../image/registry/pull.ts";

const HEX = (c: string) => `sha256:${c.repeat(64)}`;

function progress(layers: DownloadProgress["layers"]): DownloadProgress {
  const total = layers.reduce((n, l) => n + l.size, 1000);
  const bytes = layers.reduce((n, l) => n + l.bytes, 1000);
  const done = 1 + layers.filter((l) => l.state === "cached" || l.state === "downloaded").length;
  return { done, blobs: layers.length + 1, bytes, total, elapsed: 2, layers };
}

Deno.test("progressLines: totals, one bar per layer with rate and time left, the unpacked layer", () => {
  const lines = progressLines(
    "127.0.0.1:5000/img:1",
    progress([
      { digest: HEX("a"), size: 10e6, bytes: 10e6, state: "downloaded", started: 0 },
      { digest: HEX("b"), size: 40e6, bytes: 10e6, state: "downloading", started: 1 },
      { digest: HEX("c"), size: 5e6, bytes: 5e6, state: "cached" },
      { digest: HEX("d"), size: 7e6, bytes: 0, state: "waiting" },
    ]),
    { layer: 1, layers: 4, bytes: 30e6, files: 1200, elapsed: 2 },
    200,
  );
  strictEqual(lines.length, 6);
  match(lines[0]!, /^den: pulling 127\.0\.0\.1:5000\/img:1 .*3\/5 blobs/);
  match(lines[0]!, /ETA \d+:\d\d/);
  match(lines[1]!, /^ {2}aaaaaaaaaaaa \[#{20}\] .* downloaded$/);
  // 10 of 40 MB in the second since it started: 10 MB/s, 3 s left.
  match(lines[2]!, /^ {2}bbbbbbbbbbbb \[#{5}-{15}\] .*\/s {2}ETA 0:03$/);
  match(lines[3]!, /cached$/);
  match(lines[4]!, /\[-{20}\] .*waiting$/);
  match(lines[5]!, /unpacking layer 1\/4: 1200 files/);
});

Deno.test("progressLines: many layers: the ones done are summed up; lines fit the terminal", () => {
  const layers = Array.from({ length: 30 }, (_, i) => ({
    digest: HEX(i.toString(16).slice(-1)),
    size: 1000,
    bytes: i < 25 ? 1000 : 10,
    state: i < 25 ? "downloaded" as const : "downloading" as const,
    started: 0,
  }));
  const lines = progressLines("r", progress(layers), undefined, 40);
  strictEqual(lines.length, 1 + 5 + 1);
  match(lines.at(-1)!, /and 25 more layers done/);
  ok(lines.every((l) => l.length <= 39));
  deepStrictEqual(progressLines("r", undefined, undefined, 80), ["den: pulling r"]);
});
