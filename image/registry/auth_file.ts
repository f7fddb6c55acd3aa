// Writing the containers auth.json (containers-auth.json(5)) as podman login
// and skopeo login do, so that they and den share one file: entries under
// "auths", keyed by registry (or registry/repository), with "auth" the
// base64 of "user:password". Everything else in the file is kept. The file
// is replaced atomically (a temporary file, mode 0600, then rename), so a
// reader never sees half of it and a crash leaves the old one.
// Two exports, one file: they share how the file is found, read and written.
import { DenError, osMessage } from "../../error.ts";
import { normalizeAuthKey } from "./auth.ts";

/** The file den login writes: $REGISTRY_AUTH_FILE, else
 * $XDG_RUNTIME_DIR/containers/auth.json, else ~/.config/containers/auth.json. */
export function loginAuthFile(env: Record<string, string | undefined>): string {
  if (env.REGISTRY_AUTH_FILE) return env.REGISTRY_AUTH_FILE;
  if (env.XDG_RUNTIME_DIR) return `${env.XDG_RUNTIME_DIR}/containers/auth.json`;
  if (env.HOME) return `${env.HOME}/.config/containers/auth.json`;
  throw new DenError("login", "no place for the auth file: HOME is not set", {
    hint: "set REGISTRY_AUTH_FILE",
  });
}

function reason(e: unknown): string {
  return osMessage(e).replace(/: '.*'$/, "");
}

function readAuthFile(path: string): Record<string, unknown> {
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return {};
    throw new DenError("read credentials", reason(e), { path });
  }
  if (!text.trim()) return {};
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw new DenError("read credentials", "invalid JSON", { path });
  }
  if (!v || typeof v !== "object" || Array.isArray(v)) {
    throw new DenError("read credentials", "not a JSON object", { path });
  }
  return v as Record<string, unknown>;
}

function writeAuthFile(path: string, v: Record<string, unknown>): void {
  const slash = path.lastIndexOf("/");
  const dir = slash > 0 ? path.slice(0, slash) : slash === 0 ? "/" : ".";
  const tmp = `${path}.${Deno.pid}-${crypto.randomUUID().slice(0, 8)}.tmp`;
  try {
    Deno.mkdirSync(dir, { recursive: true, mode: 0o700 });
    const f = Deno.openSync(tmp, { write: true, createNew: true, mode: 0o600 });
    try {
      f.writeSync(new TextEncoder().encode(JSON.stringify(v, null, "\t") + "\n"));
      f.syncSync();
    } finally {
      f.close();
    }
    // createNew honours the umask: make sure no one else can read secrets.
    Deno.chmodSync(tmp, 0o600);
    Deno.renameSync(tmp, path);
  } catch (e) {
    try {
      Deno.removeSync(tmp);
    } catch {
      // not made
    }
    throw new DenError("write credentials", reason(e), { path });
  }
}

function authsOf(v: Record<string, unknown>, path: string): Record<string, unknown> {
  if (v.auths === undefined) return {};
  if (!v.auths || typeof v.auths !== "object" || Array.isArray(v.auths)) {
    throw new DenError("read credentials", '"auths" is not an object', { path });
  }
  return v.auths as Record<string, unknown>;
}

/** Save user and password for `key` ("registry" or "registry/repo") in `path`. */
export function storeCredentials(
  path: string,
  key: string,
  user: { username: string; password: string },
): void {
  const v = readAuthFile(path);
  const auths = authsOf(v, path);
  const norm = normalizeAuthKey(key);
  for (const k of Object.keys(auths)) if (normalizeAuthKey(k) === norm) delete auths[k];
  const bytes = new TextEncoder().encode(`${user.username}:${user.password}`);
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  auths[key] = { auth: btoa(bin) };
  v.auths = auths;
  writeAuthFile(path, v);
}

/** Remove the entries for `key` from `path`; false when there were none. */
export function removeCredentials(path: string, key: string): boolean {
  const v = readAuthFile(path);
  const auths = authsOf(v, path);
  const norm = normalizeAuthKey(key);
  const found = Object.keys(auths).filter((k) => normalizeAuthKey(k) === norm);
  if (found.length === 0) return false;
  for (const k of found) delete auths[k];
  v.auths = auths;
  writeAuthFile(path, v);
  return true;
}
