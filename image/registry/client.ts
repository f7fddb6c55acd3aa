// The HTTP side of the distribution API (distribution-spec "pull"): which
// scheme a registry speaks, redirects, retries, and authentication (anonymous
// first, then what the registry's challenge asks for).
import { Readable } from "node:stream";
import { DenError } from "../../error.ts";
import {
  basicAuthorization,
  type Challenge,
  type Credentials,
  findCredentials,
  parseChallenges,
} from "./auth.ts";
import { isLoopback, type PullRef } from "./ref.ts";

export interface ClientOptions {
  /** Verify TLS certificates (default true). false also allows plain http. */
  tlsVerify?: boolean;
  /** Environment for credential lookup (default: the process's). */
  env?: Record<string, string | undefined>;
  /** Aborts every request (SIGINT/SIGTERM). */
  signal?: AbortSignal;
  /** Attempts for a request that fails with a network error, 429 or 5xx. */
  attempts?: number;
  /** Called with what the client does (for -v); never with secrets. */
  log?: (msg: string) => void;
  /** PEM certificates trusted besides the system's (certs.d, --cert-dir). */
  caCerts?: string[];
  /** Use these instead of looking in the auth files (den login checks them). */
  credentials?: Credentials;
  /** Start where another client is (its session): scheme and authorization known. */
  session?: ClientSession;
}

/** What a client learnt by talking to the registry: where it answers, and the authorization it took. */
export interface ClientSession {
  base?: string;
  authorization?: string;
}

type Send = (url: URL, headers: Headers, signal?: AbortSignal) => Promise<Response>;

const NULL_BODY = new Set([101, 204, 205, 304]);

/** fetch with redirects left to the caller (so Authorization never leaves the registry). */
const fetchSend: Send = (url, headers, signal) =>
  fetch(url, { headers, redirect: "manual", signal });

function httpClient(caCerts: string[]): Deno.HttpClient {
  try {
    return Deno.createHttpClient({ caCerts });
  } catch (e) {
    throw new DenError("", `invalid CA certificate: ${networkReason(e)}`);
  }
}

/** fetch trusting more CAs (a registry's own, from certs.d or --cert-dir). */
function caSend(client: Deno.HttpClient): Send {
  return (url, headers, signal) => fetch(url, { headers, redirect: "manual", signal, client });
}

/** https without certificate checks: fetch cannot skip them, node:https can. */
const insecureSend: Send = async (url, headers, signal) => {
  if (url.protocol !== "https:") return await fetchSend(url, headers, signal);
  const https = await import("node:https");
  return await new Promise<Response>((resolve, reject) => {
    const req = https.request(url, {
      method: "GET",
      headers: Object.fromEntries(headers),
      rejectUnauthorized: false,
      signal,
    }, (res) => {
      const h = new Headers();
      for (const [k, v] of Object.entries(res.headers)) {
        if (Array.isArray(v)) v.forEach((x) => h.append(k, x));
        else if (v !== undefined) h.set(k, String(v));
      }
      const status = res.statusCode ?? 502;
      const body = NULL_BODY.has(status)
        ? null
        : Readable.toWeb(res) as unknown as ReadableStream<Uint8Array>;
      if (!body) res.resume();
      resolve(new Response(body, { status, headers: h }));
    });
    req.on("error", reject);
    req.end();
  });
};

/** The reason of a fetch failure without Deno's "error sending request for url (...)". */
export function networkReason(e: unknown): string {
  let msg = e instanceof Error ? e.message : String(e);
  const cause = (e as { cause?: unknown })?.cause;
  if (cause instanceof Error && cause.message) msg = cause.message;
  msg = msg.replace(/^error sending request for url \([^)]*\): /, "")
    .replace(/^client error \(Connect\): /, "")
    .replace(/ \(os error \d+\)/, "");
  return msg;
}

function isCertificateError(e: unknown): boolean {
  return /certificate|UnknownIssuer|CaUsedAsEndEntity|NotValidForName/i.test(networkReason(e));
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve, reject) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(t);
      reject(signal.reason);
    }, { once: true });
  });

/** A client for one repository of one registry. */
export class RegistryClient {
  #base?: string;
  #authorization?: string;
  #credentials?: Credentials | null;
  #send: Send;
  #attempts: number;

  constructor(readonly ref: PullRef, readonly options: ClientOptions = {}) {
    this.#send = options.tlsVerify === false
      ? insecureSend
      : options.caCerts?.length
      ? caSend(httpClient(options.caCerts))
      : fetchSend;
    this.#attempts = options.attempts ?? 4;
    this.#base = options.session?.base;
    this.#authorization = options.session?.authorization;
  }

  /** This client's session, for a client on another thread to start from. */
  get session(): ClientSession {
    return { base: this.#base, authorization: this.#authorization };
  }

  #log(msg: string) {
    this.options.log?.(msg);
  }

  /** "https://host:port" or, for loopback (or --tls-verify=false) registries
   * that do not speak TLS, "http://host:port". Decided on the first request. */
  async #resolveBase(path: string, headers: Headers): Promise<Response> {
    const https = `https://${this.ref.endpoint}`;
    try {
      const r = await this.#send(new URL(https + path), headers, this.options.signal);
      this.#base = https;
      return r;
    } catch (e) {
      if (this.options.signal?.aborted) throw this.options.signal.reason;
      const plainOk = isLoopback(this.ref.endpoint) || this.options.tlsVerify === false;
      if (!plainOk || isCertificateError(e)) throw this.#connectError(e, https);
      const http = `http://${this.ref.endpoint}`;
      this.#log(`${https}: ${networkReason(e)}; trying ${http}`);
      try {
        const r = await this.#send(new URL(http + path), headers, this.options.signal);
        this.#base = http;
        return r;
      } catch (e2) {
        if (this.options.signal?.aborted) throw this.options.signal.reason;
        // The https error is the one that explains (TLS spoken, refused...).
        throw this.#connectError(e, https, e2);
      }
    }
  }

  #connectError(e: unknown, url: string, also?: unknown): DenError {
    const reason = networkReason(e);
    if (isCertificateError(e)) {
      return new DenError("", `can't connect to ${url}: ${reason}`, {
        hint: "the registry's certificate is not trusted: put its CA in --cert-dir DIR or " +
          `/etc/containers/certs.d/${this.ref.registry}/ (*.crt); --tls-verify=false skips the check`,
      });
    }
    const more = also ? ` (plain http: ${networkReason(also)})` : "";
    return new DenError("", `can't connect to ${url}: ${reason}${more}`);
  }

  /**
   * GET a path of the API ("/v2/REPO/manifests/TAG"), with authentication,
   * redirects and retries. Returns the final response (any status but 401
   * after authenticating; callers judge the rest). `what` names the
   * request in errors.
   */
  async get(
    path: string,
    what: string,
    extra: Record<string, string> = {},
  ): Promise<Response> {
    let authTries = 0;
    for (let attempt = 1;; attempt++) {
      let res: Response;
      try {
        res = await this.#getOnce(path, extra);
      } catch (e) {
        if (e instanceof DenError || this.options.signal?.aborted) throw e;
        if (attempt >= this.#attempts) throw this.#connectError(e, `${this.#base}${path}`);
        this.#log(`${what}: ${networkReason(e)}; retrying`);
        await sleep(backoff(attempt), this.options.signal);
        continue;
      }
      if (res.status === 401 && authTries < 2) {
        authTries++;
        const header = res.headers.get("www-authenticate") ?? "";
        await res.body?.cancel();
        const before = this.#authorization;
        await this.#authenticate(parseChallenges(header), what);
        if (this.#authorization !== before) continue;
      }
      if (res.status === 401) {
        await res.body?.cancel();
        throw await this.#unauthorized(what);
      }
      if ((res.status === 429 || res.status >= 500) && attempt < this.#attempts) {
        const after = Number(res.headers.get("retry-after"));
        await res.body?.cancel();
        const ms = Number.isFinite(after) && after > 0
          ? Math.min(after, 60) * 1000
          : backoff(attempt);
        this.#log(`${what}: HTTP ${res.status}; retrying in ${(ms / 1000).toFixed(1)} s`);
        await sleep(ms, this.options.signal);
        continue;
      }
      return res;
    }
  }

  /** One GET, following redirects; Authorization only goes to the registry itself. */
  async #getOnce(path: string, extra: Record<string, string>): Promise<Response> {
    const headers = new Headers({ "user-agent": "den", ...extra });
    if (this.#authorization) headers.set("authorization", this.#authorization);
    let res = this.#base
      ? await this.#send(new URL(this.#base + path), headers, this.options.signal)
      : await this.#resolveBase(path, headers);
    let url = new URL(this.#base + path);
    const origin = url.origin;
    for (
      let hops = 0;
      res.status >= 300 && res.status < 400 && res.headers.has("location");
      hops++
    ) {
      await res.body?.cancel();
      if (hops >= 5) throw new DenError("", `too many redirects from ${this.#base}${path}`);
      url = new URL(res.headers.get("location")!, url);
      if (url.protocol !== "https:" && url.protocol !== "http:") {
        throw new DenError("", `redirect to unsupported URL scheme ${url.protocol}`);
      }
      const h = new Headers(headers);
      if (url.origin !== origin) h.delete("authorization");
      res = await this.#send(url, h, this.options.signal);
    }
    return res;
  }

  async #creds(): Promise<Credentials | undefined> {
    if (this.#credentials === undefined && this.options.credentials) {
      this.#credentials = this.options.credentials;
    }
    if (this.#credentials === undefined) {
      this.#credentials = await findCredentials(
        this.ref.registry,
        this.ref.repository,
        this.options.env ?? Deno.env.toObject(),
      ) ?? null;
      if (this.#credentials) {
        this.#log(`credentials for ${this.ref.registry} from ${this.#credentials.source}`);
      }
    }
    return this.#credentials ?? undefined;
  }

  async #unauthorized(what: string): Promise<DenError> {
    const c = await this.#creds();
    if (c && this.options.credentials) {
      return new DenError(
        "",
        `${what}: ${this.ref.registry} refused the user name or password of ${
          JSON.stringify(c.username)
        }`,
      );
    }
    if (c) {
      return new DenError(
        "",
        `${what}: access denied by ${this.ref.registry} with the credentials of ${
          JSON.stringify(c.username)
        } from ${c.source}`,
        {
          hint: c.source.startsWith("docker-credential-")
            ? "check what that credential helper holds for this registry"
            : "check the user name and password (or token) in that file",
        },
      );
    }
    return new DenError("", `${what}: ${this.ref.registry} requires authentication`, {
      hint: "put credentials in $REGISTRY_AUTH_FILE or ~/.config/containers/auth.json " +
        "(podman login and skopeo login write it)",
    });
  }

  async #authenticate(challenges: Challenge[], what: string): Promise<void> {
    const bearer = challenges.find((c) => c.scheme === "bearer");
    const basic = challenges.find((c) => c.scheme === "basic");
    const creds = await this.#creds();
    if (bearer) {
      this.#authorization = await this.#token(bearer, creds, what);
      return;
    }
    if (basic && creds) {
      this.#authorization = basicAuthorization(creds);
      return;
    }
    if (!basic) {
      throw new DenError("", `${what}: HTTP 401 with no challenge den understands`);
    }
  }

  /** A Bearer token from the challenge's realm (distribution token spec). */
  async #token(ch: Challenge, creds: Credentials | undefined, what: string): Promise<string> {
    const realm = ch.params.realm;
    if (!realm) throw new DenError("", `${what}: Bearer challenge without a realm`);
    let url: URL;
    try {
      url = new URL(realm);
    } catch {
      throw new DenError("", `${what}: Bearer realm is not a URL: ${JSON.stringify(realm)}`);
    }
    if (url.protocol !== "https:" && url.protocol !== "http:") {
      throw new DenError("", `${what}: Bearer realm is not http(s): ${url.protocol}`);
    }
    if (ch.params.service) url.searchParams.set("service", ch.params.service);
    // No scope for a check of credentials (den login asks for /v2/), as docker login.
    const scope = ch.params.scope ??
      (this.ref.repository ? `repository:${this.ref.repository}:pull` : "");
    for (const s of scope.split(" ").filter(Boolean)) url.searchParams.append("scope", s);
    const headers = new Headers({ "user-agent": "den" });
    if (creds) headers.set("authorization", basicAuthorization(creds));
    const shown = `${url.origin}${url.pathname}`;
    this.#log(`token from ${shown} (${creds ? "as " + creds.username : "anonymous"})`);
    let res: Response;
    try {
      res = await this.#send(url, headers, this.options.signal);
    } catch (e) {
      if (this.options.signal?.aborted) throw e;
      throw this.#connectError(e, shown);
    }
    if (res.status === 401 || res.status === 403) {
      await res.body?.cancel();
      throw await this.#unauthorized(what);
    }
    if (!res.ok) {
      await res.body?.cancel();
      throw new DenError("", `token request to ${shown}: HTTP ${res.status}`);
    }
    let body: { token?: unknown; access_token?: unknown };
    try {
      body = JSON.parse(await readLimited(res, 1 << 20, `token from ${shown}`));
    } catch (e) {
      if (e instanceof DenError) throw e;
      throw new DenError("", `token from ${shown}: not valid JSON`);
    }
    const token = typeof body?.token === "string" && body.token
      ? body.token
      : typeof body?.access_token === "string" && body.access_token
      ? body.access_token
      : undefined;
    if (!token) throw new DenError("", `token from ${shown}: no "token" in the answer`);
    return `Bearer ${token}`;
  }
}

/** 0.5 s, 1 s, 2 s, ... up to 8 s. */
function backoff(attempt: number): number {
  return Math.min(8000, 500 * 2 ** (attempt - 1));
}

/** The body as text, refused when larger than max. */
async function readLimited(res: Response, max: number, what: string): Promise<string> {
  return new TextDecoder().decode(await readBytesLimited(res, max, what));
}

/** The body as bytes, refused when larger than max. */
export async function readBytesLimited(
  res: Response,
  max: number,
  what: string,
): Promise<Uint8Array> {
  const len = Number(res.headers.get("content-length"));
  if (Number.isFinite(len) && len > max) {
    await res.body?.cancel();
    throw new DenError("", `${what}: too large (${len} bytes, at most ${max})`);
  }
  const parts: Uint8Array[] = [];
  let n = 0;
  if (res.body) {
    for await (const chunk of res.body) {
      n += chunk.length;
      if (n > max) throw new DenError("", `${what}: too large (more than ${max} bytes)`);
      parts.push(chunk);
    }
  }
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}
