// Progress on a terminal for den's long commands (unpack, convert, the
// SquashFS builds): one status line on stderr, redrawn in place and erased
// when the step is done. Nothing is drawn unless stderr is a terminal.

import type { UnpackProgress } from "../image/unpack_image.ts";
import { errRaw } from "./output.ts";

/** Bytes for people: "512 B", "1.5 MB" (powers of 1000). */
export function formatBytes(n: number): string {
  if (n < 1000) return `${n} B`;
  const units = ["kB", "MB", "GB", "TB"];
  let v = n;
  let u = -1;
  do {
    v /= 1000;
    u++;
  } while (v >= 1000 && u < units.length - 1);
  return `${v.toFixed(1)} ${units[u]}`;
}

/** The status line of an unpack: layers done as a bar, files, bytes, rate. */
export function unpackLine(p: UnpackProgress): string {
  const width = 20;
  const done = Math.min(width, Math.floor(((p.layer - 1) / p.layers) * width));
  const bar = "#".repeat(done) + "-".repeat(width - done);
  const rate = p.elapsed > 0 ? p.bytes / p.elapsed : 0;
  return `den: [${bar}] layer ${p.layer}/${p.layers}  ${p.files} files  ` +
    `${formatBytes(p.bytes)}  ${formatBytes(rate)}/s`;
}

/** One line redrawn in place; clear() erases it (if it was ever drawn). */
export class StatusLine {
  #drawn = false;
  show(text: string): void {
    this.#drawn = true;
    errRaw(`\r\x1b[K${text}`);
  }
  clear(): void {
    if (this.#drawn) errRaw("\r\x1b[K");
    this.#drawn = false;
  }
}

/**
 * While `work` runs, show `label` and the seconds it has taken, every
 * second (a tool that says nothing, like mksquashfs on a large tree, does
 * not look hung); erased at the end.
 */
export async function withTicker<T>(label: string, work: Promise<T>): Promise<T> {
  const line = new StatusLine();
  const started = Date.now();
  const draw = () => line.show(`den: ${label}  ${Math.floor((Date.now() - started) / 1000)} s`);
  draw();
  const timer = setInterval(draw, 1000);
  try {
    return await work;
  } finally {
    clearInterval(timer);
    line.clear();
  }
}
