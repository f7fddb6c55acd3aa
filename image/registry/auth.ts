// Registry authentication: WWW-Authenticate challenges (RFC 7235), and
// credentials from the files podman, skopeo and docker write, in the order
// containers-auth.json(5) gives. Secrets stay in Credentials objects: no
// error or message here includes a password, an "auth" value or a token.
import { DenError, osMessage } from "../../error.ts";

/** One challenge of a WWW-Authenticate header. */
export interface Challenge {
  /** Lower-case scheme: "bearer", "basic". */
  scheme: string;
  /** Parameters, names lower-cased ("realm", "service", "scope"). */
  params: Record<string, string>;
}

/**
 * Parse a WWW-Authenticate header into its challenges. A header may hold
 * several (`Basic realm="a", Bearer realm="b",service="c"`): a token not
 * followed by "=" starts a new challenge.
 */
export function parseChallenges(header: string): Challenge[] {
  const out: Challenge[] = [];
  let i = 0;
  const n = header.length;
  const skip = (re: RegExp) => {
    while (i < n && re.test(header[i]!)) i++;
  };
  const token = (): string => {
    const start = i;
    while (i < n && /[!#$%&'*+.^_`|~0-9A-Za-z-]/.test(header[i]!)) i++;
    return header.slice(start, i);
  };
  let current: Challenge | undefined;
  while (i < n) {
    skip(/[\s,]/);
    if (i >= n) break;
    const word = token();
    if (!word) {
      i++; // a stray character: ignore it
      continue;
    }
    skip(/[ \t]/);
    if (header[i] === "=" && current) {
      i++;
      skip(/[ \t]/);
      let value = "";
      if (header[i] === '"') {
        i++;
        while (i < n && header[i] !== '"') {
          if (header[i] === "\\" && i + 1 < n) i++;
          value += header[i++];
        }
        i++; // closing quote
      } else {
        const start = i;
        while (i < n && header[i] !== "," && !/\s/.test(header[i]!)) i++;
        value = header.slice(start, i);
      }
      current.params[word.toLowerCase()] = value;
    } else if (header[i] === "=") {
      // token68 or a parameter before any scheme: skip it
      while (i < n && header[i] !== ",") i++;
    } else {
      current = { scheme: word.toLowerCase(), params: {} };
      out.push(current);
    }
  }
  return out;
}

/** A user name and password for one registry, and the file they came from. */
export interface Credentials {
  username: string;
  password: string;
  /** The auth file they were read from, for error messages. */
  source: string;
}

/** The credential files to read, in order (containers-auth.json(5), then docker's). */
export function authFilePaths(env: Record<string, string | undefined>): string[] {
  const out: string[] = [];
  if (env.REGISTRY_AUTH_FILE) out.push(env.REGISTRY_AUTH_FILE);
  if (env.XDG_RUNTIME_DIR) out.push(`${env.XDG_RUNTIME_DIR}/containers/auth.json`);
  if (env.HOME) {
    out.push(`${env.HOME}/.config/containers/auth.json`);
    out.push(`${env.HOME}/.docker/config.json`);
  }
  return out;
}

/** "https://index.docker.io/v1/" and "docker.io" name the same registry. */
export function normalizeAuthKey(key: string): string {
  let k = key.replace(/^[a-z]+:\/\//i, "").replace(/\/+$/, "");
  k = k.replace(/\/v[12]$/, "");
  const slash = k.indexOf("/");
  const host = slash < 0 ? k : k.slice(0, slash);
  const rest = slash < 0 ? "" : k.slice(slash);
  if (host === "index.docker.io" || host === "registry-1.docker.io") return `docker.io${rest}`;
  return k;
}

function decodeAuth(auth: string, source: string, key: string): Credentials {
  let text: string;
  try {
    const bin = atob(auth);
    text = new TextDecoder("utf-8", { fatal: true }).decode(
      Uint8Array.from(bin, (c) => c.charCodeAt(0)),
    );
  } catch {
    throw new DenError("read credentials", `"auth" of ${JSON.stringify(key)} is not base64`, {
      path: source,
    });
  }
  const colon = text.indexOf(":");
  if (colon < 0) {
    throw new DenError(
      "read credentials",
      `"auth" of ${JSON.stringify(key)} is not "user:password"`,
      { path: source },
    );
  }
  return { username: text.slice(0, colon), password: text.slice(colon + 1), source };
}

/**
 * Credentials for a registry and repository from the first auth file that
 * has an entry: "registry/repo/path" entries before "registry/repo", before
 * "registry" (as podman matches them). In docker's config.json, a
 * credHelpers entry for the registry comes first, and credsStore after the
 * auths (docker's order); both run `docker-credential-NAME get`. Undefined
 * when no file has one.
 */
export async function findCredentials(
  registry: string,
  repository: string,
  env: Record<string, string | undefined>,
): Promise<Credentials | undefined> {
  const wanted: string[] = [];
  const parts = repository.split("/");
  for (let i = parts.length; i > 0; i--) wanted.push(`${registry}/${parts.slice(0, i).join("/")}`);
  wanted.push(registry);
  for (const path of authFilePaths(env)) {
    let text: string;
    try {
      text = Deno.readTextFileSync(path);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotADirectory) continue;
      throw new DenError("read credentials", osMessage(e), {
        path,
      });
    }
    let v: unknown;
    try {
      v = JSON.parse(text);
    } catch {
      throw new DenError("read credentials", "invalid JSON", { path });
    }
    const cfg = (v && typeof v === "object" ? v : {}) as Record<string, unknown>;
    const helpers = cfg.credHelpers && typeof cfg.credHelpers === "object"
      ? cfg.credHelpers as Record<string, unknown>
      : {};
    for (const [key, name] of Object.entries(helpers)) {
      if (normalizeAuthKey(key) !== registry || typeof name !== "string" || !name) continue;
      const c = await fromHelper(name, registry, path, env);
      if (c) return c;
    }
    const auths = cfg.auths && typeof cfg.auths === "object" ? cfg.auths : {};
    const byKey = new Map<string, [string, Record<string, unknown>]>();
    for (const [key, entry] of Object.entries(auths as Record<string, unknown>)) {
      if (entry && typeof entry === "object") {
        byKey.set(normalizeAuthKey(key), [key, entry as Record<string, unknown>]);
      }
    }
    for (const w of wanted) {
      const found = byKey.get(w);
      if (!found) continue;
      const [key, entry] = found;
      if (typeof entry.auth === "string" && entry.auth) return decodeAuth(entry.auth, path, key);
      if (typeof entry.username === "string" && typeof entry.password === "string") {
        return { username: entry.username, password: entry.password, source: path };
      }
    }
    if (typeof cfg.credsStore === "string" && cfg.credsStore) {
      const c = await fromHelper(cfg.credsStore, registry, path, env);
      if (c) return c;
    }
  }
  return undefined;
}

/**
 * `docker-credential-NAME get` with the server on stdin (Hub's is docker's
 * "https://index.docker.io/v1/"); its stdout is {"Username","Secret"}.
 * Undefined when the helper has nothing for this server. Neither its output
 * nor its messages reach an error: they may hold the secret.
 */
async function fromHelper(
  name: string,
  registry: string,
  configFile: string,
  env: Record<string, string | undefined>,
): Promise<Credentials | undefined> {
  const helper = `docker-credential-${name}`;
  const source = `${helper} (named in ${configFile})`;
  if (!/^[A-Za-z0-9._-]+$/.test(name)) {
    throw new DenError(
      "read credentials",
      `invalid credential helper name ${JSON.stringify(name)}`,
      {
        path: configFile,
      },
    );
  }
  const server = registry === "docker.io" ? "https://index.docker.io/v1/" : registry;
  let out: Deno.CommandOutput;
  try {
    const child = new Deno.Command(helper, {
      args: ["get"],
      env: Object.fromEntries(
        Object.entries(env).filter((e): e is [string, string] => e[1] !== undefined),
      ),
      clearEnv: true,
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const w = child.stdin.getWriter();
    await w.write(new TextEncoder().encode(server + "\n"));
    await w.close();
    out = await child.output();
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new DenError("read credentials", `${helper} is not on PATH`, { path: configFile });
    }
    throw new DenError("read credentials", `can't run ${helper}`, { path: configFile });
  }
  const text = new TextDecoder().decode(out.stdout);
  if (!out.success) {
    // docker-credential-helpers' ErrCredentialsNotFound.
    if (/credentials not found/i.test(text)) return undefined;
    throw new DenError("read credentials", `${helper} get failed (exit status ${out.code})`, {
      path: configFile,
    });
  }
  let v: { Username?: unknown; Secret?: unknown };
  try {
    v = JSON.parse(text);
  } catch {
    throw new DenError("read credentials", `${helper} get: not JSON`, { path: configFile });
  }
  if (typeof v?.Secret !== "string" || !v.Secret) return undefined;
  return {
    username: typeof v.Username === "string" ? v.Username : "",
    password: v.Secret,
    source,
  };
}

/** The Authorization header value of Basic credentials (UTF-8, RFC 7617). */
export function basicAuthorization(c: Credentials): string {
  const bytes = new TextEncoder().encode(`${c.username}:${c.password}`);
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return `Basic ${btoa(bin)}`;
}
