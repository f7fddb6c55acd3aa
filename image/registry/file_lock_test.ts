import { ok, strictEqual } from "node:assert/strict";
import { lockFile } from "./file_lock.ts";

function tmp(): string {
  return Deno.makeTempDirSync({ prefix: "den-lock-" });
}

Deno.test("lockFile() excludes a second holder until release, then removes the file", async () => {
  const dir = tmp();
  const path = `${dir}/x.lock`;
  const a = await lockFile(path);
  ok(a);
  const holder = JSON.parse(Deno.readTextFileSync(path));
  strictEqual(holder.pid, Deno.pid);
  let got = false;
  const b = lockFile(path).then((l) => {
    got = true;
    return l;
  });
  await new Promise((r) => setTimeout(r, 150));
  strictEqual(got, false);
  a.release();
  const lb = await b;
  ok(lb && got);
  lb.release();
  strictEqual([...Deno.readDirSync(dir)].length, 0);
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("lockFile() returns undefined when the work is done meanwhile", async () => {
  const dir = tmp();
  const path = `${dir}/x.lock`;
  using _a = await lockFile(path);
  let done = false;
  setTimeout(() => done = true, 100);
  strictEqual(await lockFile(path, { done: () => done }), undefined);
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("lockFile() takes over the lock of a dead process on this host at once", async () => {
  const dir = tmp();
  const path = `${dir}/x.lock`;
  // A lock written by a process of this host that has exited: find its host
  // identity from a lock of our own.
  const mine = await lockFile(`${dir}/own.lock`);
  const host = JSON.parse(Deno.readTextFileSync(`${dir}/own.lock`)).host;
  mine!.release();
  const child = new Deno.Command("sleep", { args: ["0"] }).spawn();
  await child.status;
  Deno.writeTextFileSync(
    path,
    JSON.stringify({ pid: child.pid, start: "1", host, token: "dead" }),
  );
  const msgs: string[] = [];
  const t0 = performance.now();
  const l = await lockFile(path, { log: (m) => msgs.push(m), staleMs: 60_000 });
  ok(performance.now() - t0 < 1000);
  ok(l);
  ok(msgs.some((m) => m.includes("taking over")), String(msgs));
  l.release();
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("lockFile() waits for a live remote holder while its lock changes, not after", async () => {
  const dir = tmp();
  const path = `${dir}/x.lock`;
  const remote = JSON.stringify({ pid: 1, start: "1", host: "node7/boot/pid:[1]", token: "r" });
  Deno.writeTextFileSync(path, remote);
  // Heartbeats for 400 ms, then the remote node "dies".
  const beat = setInterval(() => {
    const d = new Date(Date.now() + Math.floor(Math.random() * 1e6));
    Deno.utimeSync(path, d, d);
  }, 40);
  setTimeout(() => clearInterval(beat), 400);
  const t0 = performance.now();
  const l = await lockFile(path, { staleMs: 250 });
  const waited = performance.now() - t0;
  ok(waited >= 600, `waited ${waited} ms`);
  ok(l);
  ok(JSON.parse(Deno.readTextFileSync(path)).pid === Deno.pid);
  l.release();
  strictEqual([...Deno.readDirSync(dir)].length, 0);
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("lockFile() takes over an unreadable lock that never changes", async () => {
  const dir = tmp();
  const path = `${dir}/x.lock`;
  Deno.writeTextFileSync(path, "");
  const l = await lockFile(path, { staleMs: 100 });
  ok(l);
  l.release();
  Deno.removeSync(dir, { recursive: true });
});

Deno.test("lockFile() stops waiting when aborted", async () => {
  const dir = tmp();
  const path = `${dir}/x.lock`;
  using _a = await lockFile(path);
  const c = new AbortController();
  setTimeout(() => c.abort(new Error("stop")), 50);
  let err: unknown;
  try {
    await lockFile(path, { signal: c.signal });
  } catch (e) {
    err = e;
  }
  strictEqual((err as Error).message, "stop");
  Deno.removeSync(dir, { recursive: true });
});
