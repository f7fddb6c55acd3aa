// den unpack on archives that lie in their numbers and sizes (issue 7): each
// is refused with one line naming the layer and entry, within seconds, with
// bounded memory, leaving nothing beside DEST.
import { equal, match, ok } from "node:assert/strict";
import { concat, gzip, makeDockerArchive, makeTar } from "./_tar.ts";
import { denPlainArgv } from "./_helpers.ts";

const MiB = 1 << 20;

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

const negative = () => makeTar([{ name: "etc/f", data: "x".repeat(3000), pax: { size: "-1536" } }]);

Deno.test("den unpack refuses a rootfs tarball with PAX size=-1536 (it looped forever)", async () => {
  assertRefused(
    await unpackHostile(negative()),
    // Its first names could be an image archive's: the indexer refuses it.
    /^den: error: open archive \S+a\.tar: bad PAX record size="-1536" \(not a decimal number\) in "etc\/f"$/,
  );
});

Deno.test("den unpack refuses a gzip rootfs tarball with PAX size=-1536", async () => {
  assertRefused(
    await unpackHostile(gzip(negative())),
    /^den: error: .*bad PAX record size="-1536" \(not a decimal number\) in "etc\/f"$/,
  );
});

Deno.test("den unpack refuses a docker-archive layer with PAX size=-1536", async () => {
  assertRefused(
    await unpackHostile(await makeDockerArchive([makeTar([{ name: "ok" }]), negative()])),
    /^den: error: unpack layer 2\/2: bad PAX record size="-1536" .* in "etc\/f"$/,
  );
});

Deno.test("den unpack refuses an outer archive with PAX size=-1536 (the indexer looped)", async () => {
  const archive = makeTar([
    { name: "manifest.json", data: "[]", pax: { size: "-1536" } },
  ]);
  for (const a of [archive, gzip(archive)]) {
    assertRefused(
      await unpackHostile(a),
      /^den: error: open archive .*a\.tar: bad PAX record size="-1536" .* in "manifest\.json"$/,
    );
  }
});

Deno.test("den unpack refuses 40 PAX headers of 8 MiB in little memory", async () => {
  const one = makeTar([{ name: "f", pax: { comment: "x".repeat(8 * MiB - 100) } }], { end: false });
  const x = one.subarray(0, one.length - 512);
  const tar = gzip(concat([...new Array(40).fill(x), makeTar([{ name: "f" }])]));
  const r = await unpackHostile(tar);
  assertRefused(r, /extended headers too large \(over 1048576 bytes for one entry\)/);
  ok(r.rssMiB < 160, `peak RSS ${r.rssMiB} MiB`);
});

Deno.test("den unpack refuses a tiny archive claiming a petabyte sparse file", async () => {
  const tar = makeTar([{
    name: "sp",
    data: "abc",
    pax: { "GNU.sparse.map": "0,3", "GNU.sparse.realsize": String(2 ** 50) },
  }]);
  assertRefused(await unpackHostile(tar), /holes in one layer/);
});

Deno.test("den unpack refuses names that are not valid UTF-8 (they were mapped to %XX)", async () => {
  const bytes = new Uint8Array([0x64, 0x2f, 0x61, 0xff, 0x62]); // d/a\xffb
  const cases = [
    makeTar([{ name: "d/", type: "dir" }, { name: "d/a%FFb", data: "1" }, {
      name: bytes,
      data: "2",
    }]),
    makeTar([{ name: "l", type: "symlink", linkname: bytes }]),
  ];
  assertRefused(
    await unpackHostile(cases[0]!),
    /^den: error: unpack layer 1\/1: refusing name that is not valid UTF-8: "d\/a\\xffb"$/,
  );
  assertRefused(
    await unpackHostile(cases[1]!),
    /^den: error: unpack layer 1\/1: refusing link target that is not valid UTF-8: "d\/a\\xffb"$/,
  );
});
