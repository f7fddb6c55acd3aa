// den login's check: the registry's /v2/ endpoint with the given user and
// password, through the same challenge handling as a pull (Basic, or a
// Bearer token from the realm, asked for with Basic credentials and no
// scope, as docker login does).
import { DenError, usageError } from "../../error.ts";
import type { Credentials } from "./auth.ts";
import { RegistryClient } from "./client.ts";
import { HOST_RE, type PullRef } from "./ref.ts";

/** Where and under which key a `den login REGISTRY` argument logs in. */
export interface LoginTarget {
  /** The key in auth.json: "registry" or "registry/repository". */
  key: string;
  ref: PullRef;
}

/** "host[:port]", "host/repo", "docker://host", "https://host/": the registry to log in to. */
export function parseLoginTarget(arg: string): LoginTarget {
  const key = arg.replace(/^(docker|https?):\/\//, "").replace(/\/+$/, "");
  const slash = key.indexOf("/");
  const host = slash < 0 ? key : key.slice(0, slash);
  if (!host || !HOST_RE.test(host) || /[^a-z0-9._/-]/.test(key.slice(host.length))) {
    throw usageError(`invalid registry: "${arg}"`);
  }
  const registry = host === "index.docker.io" || host === "registry-1.docker.io"
    ? "docker.io"
    : host;
  return {
    key: registry + key.slice(host.length),
    ref: {
      registry,
      endpoint: registry === "docker.io" ? "registry-1.docker.io" : registry,
      repository: slash < 0 ? "" : key.slice(slash + 1),
      text: registry,
    },
  };
}

export interface VerifyLoginOptions {
  tlsVerify?: boolean;
  caCerts?: string[];
  log?: (msg: string) => void;
}

/** Throws DenError when the registry refuses `creds`. */
export async function verifyLogin(
  target: LoginTarget,
  creds: Credentials,
  options: VerifyLoginOptions = {},
): Promise<void> {
  const client = new RegistryClient(target.ref, {
    tlsVerify: options.tlsVerify,
    caCerts: options.caCerts,
    credentials: creds,
    log: options.log,
    attempts: 2,
  });
  const res = await client.get("/v2/", "/v2/");
  await res.body?.cancel();
  if (!res.ok) {
    throw new DenError("", `/v2/: HTTP ${res.status} from ${target.ref.registry}`, {
      hint: "is this a registry (OCI distribution API)?",
    });
  }
}
