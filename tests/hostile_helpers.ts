// Running den unpack on a hostile archive: bounded in time, peak memory
// measured, and what it left beside DEST listed.
import { equal, match, ok } from "node:assert/strict";
import { denPlainArgv } from "./_helpers.ts";

export interface Unpacked {
  code: number;
  stderr: string;
  /** Peak RSS of den in MiB (GNU time's %M). */
  rssMiB: number;
  /** What is left in the directory besides the archive. */
  left: string[];
}

/** Run `den unpack` on `archive` (written to a fresh directory), killing it
 * after `seconds`: a hang fails the test instead of the suite. */
export async function unpackHostile(
  archive: Uint8Array,
  opts: { seconds?: number; args?: string[] } = {},
): Promise<Unpacked> {
  const dir = Deno.makeTempDirSync({ prefix: "den-hostile-" });
  try {
    Deno.writeFileSync(`${dir}/a.tar`, archive);
    const argv = denPlainArgv(["unpack", "-q", ...(opts.args ?? []), `${dir}/a.tar`, `${dir}/out`]);
    // timeout(1) kills a hung den; GNU time's %M covers it (wait4 reports
    // the largest RSS of the process and its waited-for children).
    const seconds = String(opts.seconds ?? 60);
    const r = await new Deno.Command("/usr/bin/time", {
      args: ["-f", "RSS %M", "timeout", "-s", "KILL", seconds, ...argv],
      stdout: "null",
      stderr: "piped",
    }).output();
    ok(r.code !== 137, "den unpack hung (killed by timeout)");
    const lines = new TextDecoder().decode(r.stderr).trimEnd().split("\n");
    const rss = /^RSS (\d+)$/.exec(lines.pop() ?? "");
    ok(rss, "GNU time reported the peak RSS");
    return {
      code: r.code,
      stderr: lines.filter((l) => !l.startsWith("Command exited")).join("\n"),
      rssMiB: Number(rss[1]) / 1024,
      left: [...Deno.readDirSync(dir)].map((e) => e.name).filter((n) => n !== "a.tar"),
    };
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}

/** Refused with exactly one error line matching `re`, nothing left. */
export function assertRefused(r: Unpacked, re: RegExp): void {
  equal(r.code, 31, r.stderr);
  equal(r.stderr.split("\n").length, 1, r.stderr);
  match(r.stderr, re);
  equal(r.left.length, 0, `left behind: ${r.left}`);
  ok(r.rssMiB < 512, `peak RSS ${r.rssMiB} MiB`);
}
