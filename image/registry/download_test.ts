// downloadBlob() against a small server on loopback that misbehaves as real
// ones do (drops, ignoring Range), and a decoder thread that reads the blob
// while it downloads (what den pull does).
import { deepStrictEqual, match, ok, rejects, strictEqual } from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { BlobDecoder } from "../blob_stream.ts";
import { GrowingFile } from "../_decode.ts";
import { RegistryClient } from "./client.ts";
import { downloadBlob, Downloader } from "./download.ts";
import type { PullRef } from "./ref.ts";
import { canMountTmpfs } from "../../tests/_helpers.ts";

const BLOB = new Uint8Array(randomBytes(3 << 20));
const DIGEST = `sha256:${createHash("sha256").update(BLOB).digest("hex")}`;
const DESC = { mediaType: "application/octet-stream", digest: DIGEST, size: BLOB.length };

type Answer = (req: Request, n: number) => Response;

/** A server whose n-th blob GET (from 1) gets answer(req, n). */
function serve(answer: Answer) {
  let n = 0;
  const ranges: string[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    ranges.push(req.headers.get("range") ?? "");
    return answer(req, ++n);
  });
  const host = `127.0.0.1:${server.addr.port}`;
  const ref: PullRef = { registry: host, endpoint: host, repository: "r", text: `${host}/r` };
  return { server, ref, ranges };
}

/** A body that sends `bytes` in 256 KiB pieces (fewer than the blob's: a dropped transfer). */
function body(bytes: Uint8Array): ReadableStream<Uint8Array> {
  let off = 0;
  return new ReadableStream({
    async pull(c) {
      await new Promise((r) => setTimeout(r, 2));
      if (off >= bytes.length) c.close();
      else c.enqueue(bytes.slice(off, off += 256 << 10));
    },
  });
}

const half = BLOB.length >> 1;

Deno.test("downloadBlob: a registry that ignores Range: the bytes already written are compared, not rewritten", async () => {
  const { server, ref, ranges } = serve((_req, n) =>
    n === 1
      ? new Response(body(BLOB.subarray(0, half)), { status: 200 })
      : new Response(body(BLOB), { status: 200 })
  );
  const dir = Deno.makeTempDirSync();
  try {
    const growing = new GrowingFile();
    const seen: number[] = [];
    const view = new BigInt64Array(growing.shared);
    await downloadBlob(new RegistryClient(ref), DESC, `${dir}/blob`, {
      growing,
      attempts: 3,
      onBytes: () => seen.push(Number(view[0])),
    });
    deepStrictEqual(Deno.readFileSync(`${dir}/blob`), BLOB);
    deepStrictEqual(ranges.slice(-2), ["", `bytes=${half}-`]);
    // What a reader may rely on: the file never shrinks.
    ok(seen.every((v, i) => i === 0 || v >= seen[i - 1]!), "written went backwards");
    deepStrictEqual([...Deno.readDirSync(dir)].map((e) => e.name), ["blob"]);
  } finally {
    await server.shutdown();
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("downloadBlob: different bytes the second time are refused; nothing is left", async () => {
  const other = BLOB.slice();
  other[10] = other[10]! ^ 1;
  const { server, ref } = serve((_req, n) =>
    n === 1
      ? new Response(body(BLOB.subarray(0, half)), { status: 200 })
      : new Response(body(other), { status: 200 })
  );
  const dir = Deno.makeTempDirSync();
  try {
    await rejects(
      downloadBlob(new RegistryClient(ref), DESC, `${dir}/blob`, { attempts: 3 }),
      (e: Error) => {
        match(e.message, /different bytes the second time/);
        return true;
      },
    );
    strictEqual([...Deno.readDirSync(dir)].length, 0);
  } finally {
    await server.shutdown();
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("Downloader: a decoder thread reads the blob while the download thread writes it", async () => {
  // The first transfer drops halfway and is resumed with Range.
  const { server, ref, ranges } = serve((req, n) => {
    const from = Number(/^bytes=(\d+)-$/.exec(req.headers.get("range") ?? "")?.[1] ?? 0);
    const bytes = n === 1 ? BLOB.subarray(0, half) : BLOB.subarray(from);
    return new Response(body(bytes), {
      status: from ? 206 : 200,
      headers: from ? { "content-range": `bytes ${from}-${BLOB.length - 1}/${BLOB.length}` } : {},
    });
  });
  const dir = Deno.makeTempDirSync();
  const downloader = new Downloader();
  const decoder = new BlobDecoder(1);
  try {
    const growing = new GrowingFile();
    let started!: (path: string) => void;
    const start = new Promise<string>((r) => started = r);
    const client = new RegistryClient(ref);
    const done = downloader.download(client, DESC, `${dir}/blob`, {
      growing,
      attempts: 3,
      onStart: started,
    }).then(() => growing.end(GrowingFile.COMPLETE), (e) => {
      growing.end(GrowingFile.FAILED);
      throw e;
    });
    const path = await start;
    const stream = decoder.open({
      path,
      finalPath: `${dir}/blob`,
      growing: growing.shared,
      offset: 0,
      size: BLOB.length,
      algo: "sha256",
    });
    const got = new Uint8Array(BLOB.length);
    let off = 0;
    for await (const chunk of stream.chunks()) {
      got.set(chunk, off);
      off += chunk.length;
    }
    const r = await stream.result();
    await done;
    strictEqual(r.digest, DIGEST);
    strictEqual(off, BLOB.length);
    deepStrictEqual(got, BLOB);
    deepStrictEqual(ranges, ["", `bytes=${half}-`]);
  } finally {
    decoder.close();
    downloader.close();
    await server.shutdown();
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("downloadBlob: resumes from what a killed pull left; starts afresh when that does not verify", async () => {
  const { server, ref, ranges } = serve((req) => {
    const from = Number(/^bytes=(\d+)-$/.exec(req.headers.get("range") ?? "")?.[1] ?? 0);
    return new Response(body(BLOB.subarray(from)), {
      status: from ? 206 : 200,
      headers: from ? { "content-range": `bytes ${from}-${BLOB.length - 1}/${BLOB.length}` } : {},
    });
  });
  const dir = Deno.makeTempDirSync();
  try {
    const final = `${dir}/${DIGEST.slice(7)}`;
    // A killed pull's file, and a smaller one of another.
    Deno.writeFileSync(`${final}.99999-deadbeef.part`, BLOB.subarray(0, half));
    Deno.writeFileSync(`${final}.99998-0123abcd.part`, BLOB.subarray(0, 1000));
    const logs: string[] = [];
    await downloadBlob(new RegistryClient(ref), DESC, final, { log: (m) => logs.push(m) });
    deepStrictEqual(Deno.readFileSync(final), BLOB);
    deepStrictEqual(ranges, [`bytes=${half}-`]);
    match(logs.join("\n"), new RegExp(`resuming at byte ${half} \\(left by an earlier pull\\)`));
    deepStrictEqual(
      [...Deno.readDirSync(dir)].map((e) => e.name).sort(),
      [DIGEST.slice(7), `${DIGEST.slice(7)}.99998-0123abcd.part`],
    );

    // A damaged leftover: the resumed blob does not verify, so it is fetched whole.
    Deno.removeSync(final);
    const bad = BLOB.slice(0, half);
    bad[5] = bad[5]! ^ 1;
    Deno.writeFileSync(`${final}.99997-feedbeef.part`, bad);
    ranges.length = 0;
    await downloadBlob(new RegistryClient(ref), DESC, final, {});
    deepStrictEqual(Deno.readFileSync(final), BLOB);
    deepStrictEqual(ranges, [`bytes=${half}-`, ""]);
  } finally {
    await server.shutdown();
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test({
  name: "downloadBlob: a full disk is one error, not retried like a dropped connection",
  // A small tmpfs is the full disk.
  ignore: !canMountTmpfs(),
  async fn() {
    const { server, ref, ranges } = serve(() => new Response(body(BLOB), { status: 200 }));
    const dir = Deno.makeTempDirSync();
    const mount = (cmd: string, args: string[]) => {
      ok(new Deno.Command(cmd, { args }).outputSync().success, `${cmd} ${args.join(" ")}`);
    };
    mount("mount", ["-t", "tmpfs", "-o", "size=1m", "tmpfs", dir]);
    try {
      await rejects(
        downloadBlob(new RegistryClient(ref), DESC, `${dir}/blob`, { attempts: 5 }),
        (e: Error) => {
          match(e.message, /^can't write .*: No space left on device/);
          return true;
        },
      );
      strictEqual(ranges.length, 1);
      strictEqual([...Deno.readDirSync(dir)].length, 0);
    } finally {
      await server.shutdown();
      mount("umount", [dir]);
      Deno.removeSync(dir, { recursive: true });
    }
  },
});
