// arriveAtGroup(): the rendezvous of a peer group (den run --join).
//
// ch-run coordinates peers through a POSIX semaphore and shared memory in
// /dev/shm, which stay behind when a peer is killed at the wrong moment. den
// uses an abstract Unix socket instead, "\0den-join/UID/KEY": the kernel
// removes the name with the last process that holds it, so nothing is ever
// left behind. The first peer binds the name and serves; the others connect,
// check with SO_PEERCRED that the server runs as their own uid, and receive
// the container's user and mount namespaces as file descriptors
// (SCM_RIGHTS): no pid is looked up, so none can be reused under them.
// As with ch-run, a group is complete when --join-ct peers arrived; then its
// name is free for a new group. Peers keep their connection: if the server
// leaves before the group is complete (EOF instead of DONE), a peer that
// joined takes over serving, so late peers join while any peer lives.

import { DenError, EXIT_FAILURE } from "../error.ts";
import {
  AF_UNIX,
  EADDRINUSE,
  EAGAIN,
  ECONNREFUSED,
  ECONNRESET,
  ENOENT,
  MSG_CMSG_CLOEXEC,
  MSG_DONTWAIT,
  O_CLOEXEC,
  O_DIRECTORY,
  O_PATH,
  POLLIN,
  SCM_RIGHTS,
  SHUT_RDWR,
  SO_PEERCRED,
  SO_RCVTIMEO,
  SOCK_CLOEXEC,
  SOCK_STREAM,
  SOL_SOCKET,
} from "./constants.ts";
import { errnoError } from "./errno.ts";
import { addressOf, cString, errno, libc, pause } from "./libc.ts";

const HELLO = 0x64656e31; // "den1": greeting, sent on arrival
const READY = 0x64656e32; // "den2": with the namespace fds
const DONE = 0x64656e33; // "den3": the group is complete

/** The container's namespaces, as open file descriptors. */
export interface Namespaces {
  user: number;
  mnt: number;
  /**
   * The container's root directory (O_PATH), when peers need to see the
   * image through it: a SquashFS image is mounted only in the namespace.
   */
  rootFd?: number;
  /** The den that made them (for messages). */
  ownerPid: number;
}

function joinError(msg: string, hint?: string): DenError {
  return new DenError("", msg, { exitCode: EXIT_FAILURE, hint });
}

/** struct sockaddr_un for an abstract name; returns it and its length. */
function abstractAddress(name: string): [Uint8Array<ArrayBuffer>, number] {
  const bytes = new TextEncoder().encode(name);
  const addr = new Uint8Array(110);
  new DataView(addr.buffer).setUint16(0, AF_UNIX, true);
  addr.set(bytes.subarray(0, 106), 3); // sun_path[0] = 0: abstract
  return [addr, 3 + Math.min(bytes.length, 106)];
}

function unixSocket(): number {
  const fd = libc().socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw errnoError("join: can't create socket", errno());
  return fd;
}

/** uid and pid of the process at the other end of a Unix socket. */
function peerCred(fd: number): { pid: number; uid: number } {
  const cred = new Int32Array(3);
  const len = new Uint32Array([12]);
  const lc = libc();
  if (
    lc.getsockopt(
      fd,
      SOL_SOCKET,
      SO_PEERCRED,
      new Uint8Array(cred.buffer),
      new Uint8Array(len.buffer),
    ) !== 0
  ) {
    throw errnoError("join: can't get peer credentials", errno());
  }
  return { pid: cred[0]!, uid: cred[1]! };
}

function writeWords(fd: number, words: number[]): void {
  const b = new Uint8Array(new Int32Array(words).buffer);
  libc().write(fd, b, BigInt(b.length));
}

/** sendmsg() of 4 words plus two file descriptors. */
function sendFds(fd: number, words: number[], fds: number[]): boolean {
  const data = new Uint8Array(new Int32Array(words).buffer);
  const iov = new BigUint64Array([addressOf(data), BigInt(data.length)]);
  const control = new Uint8Array(16 + 4 * fds.length);
  const cv = new DataView(control.buffer);
  cv.setBigUint64(0, BigInt(control.length), true); // cmsg_len
  cv.setInt32(8, SOL_SOCKET, true);
  cv.setInt32(12, SCM_RIGHTS, true);
  fds.forEach((f, i) => cv.setInt32(16 + 4 * i, f, true));
  const msg = msghdr(iov, control);
  return Number(libc().sendmsg(fd, msg, 0)) === data.length;
}

/** struct msghdr (64-bit) around one iovec and a control buffer. */
function msghdr(
  iov: BigUint64Array<ArrayBuffer>,
  control: Uint8Array<ArrayBuffer>,
): Uint8Array<ArrayBuffer> {
  const msg = new Uint8Array(56);
  const v = new DataView(msg.buffer);
  v.setBigUint64(16, addressOf(iov), true);
  v.setBigUint64(24, 1n, true);
  v.setBigUint64(32, addressOf(control), true);
  v.setBigUint64(40, BigInt(control.length), true);
  return msg;
}

/** recvmsg() of 4 words and up to three fds; undefined on EOF. */
export function receive(fd: number, flags = 0): { words: Int32Array; fds: number[] } | undefined {
  const data = new Uint8Array(16);
  const iov = new BigUint64Array([addressOf(data), 16n]);
  const control = new Uint8Array(16 + 16); // CMSG_SPACE(3 * 4)
  const msg = msghdr(iov, control);
  const n = Number(libc().recvmsg(fd, msg, MSG_CMSG_CLOEXEC | flags));
  if (n < 0) {
    const code = errno();
    if (code === EAGAIN) throw new TimeoutError();
    // The server closed with our connection not yet accepted: it left.
    if (code === ECONNRESET) return undefined;
    throw errnoError("join: can't receive from peer group", code);
  }
  if (n === 0) return undefined;
  const fds: number[] = [];
  const controllen = Number(new DataView(msg.buffer).getBigUint64(40, true));
  const cv = new DataView(control.buffer);
  if (
    controllen >= 20 && cv.getInt32(8, true) === SOL_SOCKET && cv.getInt32(12, true) === SCM_RIGHTS
  ) {
    const count = (Number(cv.getBigUint64(0, true)) - 16) / 4;
    for (let i = 0; i < count; i++) fds.push(cv.getInt32(16 + 4 * i, true));
  }
  return { words: new Int32Array(data.buffer, 0, Math.floor(n / 4)), fds };
}

class TimeoutError extends Error {}

/** Serves a group's namespaces to peers that connect. */
export class GroupServer {
  readonly #fd: number;
  readonly #uid: number;
  #arrived: number;
  readonly #count?: number;
  #ns?: Namespaces;
  #waiting: number[] = [];
  #joined: number[] = [];
  #closed = false;
  #onClose?: () => void;
  readonly #log: (msg: string) => void;

  constructor(fd: number, count: number | undefined, arrived: number, log: (m: string) => void) {
    this.#fd = fd;
    this.#uid = Deno.uid() ?? -1;
    this.#count = count;
    this.#arrived = arrived;
    this.#log = log;
    void this.#acceptLoop();
  }

  /** Peers still expected (undefined when the count is unknown). */
  get left(): number | undefined {
    return this.#count === undefined ? undefined : Math.max(0, this.#count - this.#arrived);
  }

  async #acceptLoop(): Promise<void> {
    let failures = 0;
    while (!this.#closed) {
      const c = await libc().accept4(this.#fd, null, null, SOCK_CLOEXEC);
      if (this.#closed) {
        // Taken by this thread while den was closing: it still joins.
        if (c >= 0) {
          if (this.#ns) this.#arrive(c);
          libc().close(c);
        }
        break;
      }
      if (c < 0) {
        if (++failures > 100) break; // errno is another thread's: just stop
        continue;
      }
      failures = 0;
      this.#arrive(c);
    }
  }

  /** A peer connected: greet it, and hand it the namespaces when ready. */
  #arrive(c: number): void {
    let cred;
    try {
      cred = peerCred(c);
    } catch {
      libc().close(c);
      return;
    }
    if (cred.uid !== this.#uid) {
      libc().close(c); // never hand our namespaces to another user
      return;
    }
    this.#arrived++;
    writeWords(c, [HELLO, Deno.pid, this.#arrived, this.#count ?? 0]);
    if (this.#ns) this.#send(c);
    else this.#waiting.push(c);
  }

  /** Peers in the listen backlog, taken on this thread (poll, then accept). */
  #drain(): void {
    const pfd = new Int16Array(4);
    new Int32Array(pfd.buffer)[0] = this.#fd;
    pfd[2] = POLLIN;
    for (let i = 0; i < 4096; i++) {
      pfd[3] = 0;
      if (libc().poll(new Uint8Array(pfd.buffer), 1n, 0) !== 1) return;
      const c = libc().accept4_now(this.#fd, null, null, SOCK_CLOEXEC);
      if (c < 0) return;
      this.#arrive(c);
    }
  }

  #send(c: number): void {
    const ns = this.#ns!;
    const fds = ns.rootFd === undefined ? [ns.user, ns.mnt] : [ns.user, ns.mnt, ns.rootFd];
    sendFds(c, [READY, ns.ownerPid, this.left ?? -1, 0], fds);
    this.#joined.push(c);
    if (this.left === 0) this.close(true);
  }

  /**
   * The namespaces are ready: hand them to every peer, now and later. The
   * server closes ns.user and ns.mnt when it closes; ns.rootFd stays its
   * opener's.
   */
  ready(ns: Namespaces): void {
    this.#ns = ns;
    for (const c of this.#waiting.splice(0)) this.#send(c);
  }

  /**
   * Wait, at most ms, for the peers still expected: this den's command has
   * ended, but a rank that starts a moment late must still find the group
   * (its namespaces, held open here) instead of making a container of its
   * own. True when the group is complete (the server has closed).
   */
  async awaitPeers(ms: number): Promise<boolean> {
    if (this.#closed || this.left === undefined) return this.#closed;
    const closed = new Promise<true>((ok) => this.#onClose = () => ok(true));
    return await Promise.race([closed, pause(ms).then(() => false)]);
  }

  /** Stop serving; the name disappears. Peers learn whether the group is
   * complete (DONE) or was left early (EOF: one of them takes over). */
  close(complete = false): void {
    if (this.#closed) return;
    this.#closed = true;
    // Peers already at the door still join: the open namespace fds keep
    // the container's namespaces alive after its command has exited (a
    // first rank of /bin/true would otherwise send them all to start over).
    if (this.#ns) this.#drain();
    // The name goes first, so that a peer woken by the EOF below finds it
    // free (shutdown() wakes the accept4() waiting on another thread).
    libc().shutdown(this.#fd, SHUT_RDWR);
    libc().close(this.#fd);
    const done = complete || this.left === 0;
    for (const c of this.#waiting.splice(0)) libc().close(c);
    for (const c of this.#joined.splice(0)) {
      if (done) writeWords(c, [DONE, Deno.pid, 0, 0]);
      libc().close(c);
    }
    // The server's hold on the namespaces goes too: a SquashFS mount lives
    // exactly as long as they do. Peers that took them hold their own.
    const ns = this.#ns;
    this.#ns = undefined;
    if (ns) [ns.user, ns.mnt].forEach((f) => libc().close(f));
    this.#log("join: done");
    this.#onClose?.();
  }
}

/** Try to own the group's name; the listening socket, or undefined. */
function tryBind(name: string): number | undefined {
  const fd = unixSocket();
  const [addr, len] = abstractAddress(name);
  if (libc().bind(fd, addr, len) === 0) {
    if (libc().listen(fd, 4096) !== 0) {
      const code = errno();
      libc().close(fd);
      throw errnoError("join: can't listen", code);
    }
    return fd;
  }
  const code = errno();
  libc().close(fd);
  if (code === EADDRINUSE) return undefined;
  throw errnoError("join: can't bind socket", code);
}

export type Arrival =
  | { role: "winner"; server: GroupServer }
  | { role: "peer"; ns: Namespaces; left: number | undefined; conn: number };

export interface ArriveOptions {
  /** Abstract socket name of the group. */
  name: string;
  tag: string;
  count?: number;
  timeoutMs: number;
  log: (msg: string) => void;
}

/**
 * Arrive at a peer group: become its server (the winner, who makes the
 * container) or receive the winner's namespaces.
 */
export function arriveAtGroup(o: ArriveOptions): Arrival {
  const deadline = Date.now() + o.timeoutMs;
  for (;;) {
    const listening = tryBind(o.name);
    if (listening !== undefined) {
      o.log("join: I won");
      o.log("join: winner initializing new namespaces");
      const server = new GroupServer(listening, o.count, 1, o.log);
      const left = server.left;
      if (left !== undefined) o.log(`join: ${left} peers left excluding myself`);
      if (left === 0) {
        o.log("join: cleaning up IPC resources");
        server.close(true);
      }
      return { role: "winner", server };
    }
    const fd = unixSocket();
    let keep = false;
    try {
      const [addr, len] = abstractAddress(o.name);
      if (libc().connect(fd, addr, len) !== 0) {
        const code = errno();
        // The server left between our bind and connect: try again.
        if (code === ECONNREFUSED && Date.now() < deadline) continue;
        throw errnoError("join: can't connect to peer group", code);
      }
      o.log("join: I lost");
      const peer = peerCred(fd);
      if (peer.uid !== Deno.uid()) {
        throw joinError(
          `join: peer group ${
            JSON.stringify(o.tag)
          } is held by another user (uid ${peer.uid}, pid ${peer.pid})`,
          "choose another --join-tag",
        );
      }
      const ns = receiveNamespaces(fd, o, deadline, peer.pid);
      keep = ns !== undefined;
      if (ns) return ns;
      // The server closed without answering: it left; arrive again.
      if (Date.now() >= deadline) {
        throw joinError(
          `join: peer group ${JSON.stringify(o.tag)}: the first peer (pid ${peer.pid}) failed`,
        );
      }
    } finally {
      if (!keep) libc().close(fd);
    }
  }
}

function receiveNamespaces(
  fd: number,
  o: ArriveOptions,
  deadline: number,
  serverPid: number,
): Arrival | undefined {
  let arrived: number | undefined;
  let count = o.count;
  const timeout = () => {
    const seen = arrived === undefined
      ? `the first peer (pid ${serverPid}) did not answer`
      : `${arrived} of ${count || "?"} peers arrived`;
    return joinError(
      `join: timed out after ${Math.round(o.timeoutMs / 1000)} s waiting for peer group ${
        JSON.stringify(o.tag)
      }: ${seen}`,
    );
  };
  for (;;) {
    const ms = deadline - Date.now();
    if (ms <= 0) throw timeout();
    const tv = new BigInt64Array([BigInt(Math.floor(ms / 1000)), BigInt((ms % 1000) * 1000)]);
    libc().setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, new Uint8Array(tv.buffer), 16);
    let m;
    try {
      m = receive(fd);
    } catch (e) {
      if (e instanceof TimeoutError) throw timeout();
      throw e;
    }
    if (!m) return undefined;
    const [kind, pid, a, b] = m.words;
    if (kind === HELLO) {
      arrived = a;
      count = b || count;
      continue;
    }
    if (kind === READY && (m.fds.length === 2 || m.fds.length === 3)) {
      o.log(`join: joining namespaces of pid ${pid}`);
      const left = a! < 0 ? undefined : a;
      if (left !== undefined) o.log(`join: ${left} peers left`);
      if (left === 0) o.log("join: cleaning up IPC resources");
      const ns = { user: m.fds[0]!, mnt: m.fds[1]!, rootFd: m.fds[2], ownerPid: pid! };
      return { role: "peer", ns, left, conn: fd };
    }
    m.fds.forEach((f) => libc().close(f));
    throw joinError(`join: peer group ${JSON.stringify(o.tag)}: unexpected message`);
  }
}

/**
 * A joined peer serves the group if the server leaves before the group is
 * complete. Waits for its connection to speak (DONE, or EOF when the
 * server left) in a poll(2) on another thread: no timer, whose first use
 * would start Deno's timer machinery in every rank. Returns a stop function.
 */
/** How often (10 ms apart) a peer tries to own a name its server left. */
const TAKEOVER_TRIES = 25;

export function serveWhenFree(o: ArriveOptions, peer: Arrival & { role: "peer" }): () => void {
  let server: GroupServer | undefined;
  let conn = peer.conn;
  const done = () => {
    if (conn >= 0) libc().close(conn);
    conn = -1;
  };
  // The last peer: the group is complete, nobody is left to serve.
  if (peer.left === 0) {
    done();
    return done;
  }
  let stopped = false;
  const watch = async () => {
    // struct pollfd { int fd; short events; short revents; }
    const pfd = new Int32Array([conn, POLLIN]);
    for (;;) {
      await libc().poll_wait(new Uint8Array(pfd.buffer), 1n, -1);
      if (conn < 0) return; // stopped meanwhile
      let m;
      try {
        m = receive(conn, MSG_DONTWAIT);
      } catch (e) {
        if (e instanceof TimeoutError) continue; // EINTR: nothing yet
        return done();
      }
      if (m) return done(); // DONE: complete
      done();
      // EOF: the server left. Its name goes with its listening socket,
      // which a thread of its may still hold for a moment; bound after
      // that, the name is another peer's, which took over.
      let fd: number | undefined;
      for (let i = 0; i < TAKEOVER_TRIES && !stopped; i++) {
        if ((fd = tryBind(o.name)) !== undefined) break;
        await pause(10);
      }
      if (fd === undefined) return;
      if (stopped) return void libc().close(fd);
      const count = peer.left === undefined ? undefined : peer.left + 1;
      server = new GroupServer(fd, count, 1, () => {});
      server.ready({ ...peer.ns, ownerPid: Deno.pid });
      return;
    }
  };
  watch();
  return () => {
    stopped = true;
    done();
    server?.close();
  };
}

/**
 * Open a process's user and mount namespaces (--join-pid), and with
 * `root`, its root directory (where a joiner sees a SquashFS image).
 */
export function openNamespaces(pid: number, o: { root?: boolean } = {}): Namespaces {
  const opened: number[] = [];
  const open = (path: string, flags = 0): number => {
    const fd = libc().open(cString(path), O_CLOEXEC | flags);
    if (fd < 0) {
      const code = errno();
      opened.forEach((f) => libc().close(f));
      if (code === ENOENT) throw joinError(`join: no PID ${pid}: ${path} not found`);
      throw errnoError(`join: can't open ${path}`, code);
    }
    opened.push(fd);
    return fd;
  };
  const user = open(`/proc/${pid}/ns/user`);
  const mnt = open(`/proc/${pid}/ns/mnt`);
  const rootFd = o.root ? open(`/proc/${pid}/root`, O_PATH | O_DIRECTORY) : undefined;
  return { user, mnt, rootFd, ownerPid: pid };
}

// fcntl.h: a directory opened only to look up paths under it.

/** An O_PATH descriptor of a directory (close-on-exec), or the errno. */
export function openDirectoryPath(path: string): number {
  const fd = libc().open(cString(path), O_CLOEXEC | O_PATH | O_DIRECTORY);
  if (fd < 0) throw errnoError("can't open", errno(), { path });
  return fd;
}

/**
 * A connected pair of Unix stream sockets (close-on-exec), made from an
 * abstract listening socket since libc's socketpair() is not in den's
 * table. Only a connection from den itself is accepted (SO_PEERCRED): one
 * from anyone else who found the random name is closed.
 */
export function socketPair(): [number, number] {
  const rand = crypto.getRandomValues(new Uint8Array(12));
  const name = `den-pair/${Deno.pid}/${[...rand].map((b) => b.toString(16)).join("")}`;
  const listening = tryBind(name);
  if (listening === undefined) throw errnoError("can't bind socket", EADDRINUSE);
  const ends: number[] = [];
  try {
    const fd = unixSocket();
    ends.push(fd);
    const [addr, len] = abstractAddress(name);
    if (libc().connect(fd, addr, len) !== 0) throw errnoError("can't connect socket", errno());
    for (;;) {
      const c = libc().accept4_now(listening, null, null, SOCK_CLOEXEC);
      if (c < 0) throw errnoError("can't accept", errno());
      if (peerCred(c).pid === Deno.pid) return [fd, c];
      libc().close(c);
    }
  } catch (e) {
    ends.forEach((f) => libc().close(f));
    throw e;
  } finally {
    libc().close(listening);
  }
}
