// Image metadata beside the rootfs, where Charliecloud keeps it:
// ROOTFS/ch/metadata.json, plus ROOTFS/ch/environment (NAME=VALUE lines)
// for `ch-run --set-env`.
import { readFileInImage } from "./read_in_image.ts";
import { DenError } from "../error.ts";

/** What den run needs from an image config, in ch/metadata.json. */
export interface ImageMetadata {
  /** OCI architecture ("amd64", "arm64"), null when unknown. */
  arch: string | null;
  variant?: string;
  os?: string;
  /** Environment as a map (last value wins) ... */
  env: Record<string, string>;
  /** ... and as "NAME=VALUE" strings in image order. */
  "env_list": string[];
  entrypoint: string[] | null;
  cmd: string[] | null;
  /** Working directory, "/" by default. */
  cwd: string;
  /** User from the config ("" when unset); den runs as the invoker anyway. */
  user: string;
  labels: Record<string, string>;
  shell?: string[] | null;
  volumes?: string[];
  /** Image name (tag or archive name) and digest, as unpacked. */
  image?: string;
  digest?: string;
  format?: string;
  /** Image creation time from the config (RFC 3339), if any. */
  created?: string;
  /** When den unpacked it (RFC 3339), in images of older dens: the file's
   * change time says it now, and the same archive gives the same file. */
  unpacked?: string;
  layers?: number;
  /** Bytes of file data in the rootfs. */
  size?: number;
}

export const METADATA_PATH = "ch/metadata.json";
export const ENVIRONMENT_PATH = "ch/environment";

/**
 * Read ROOTFS/ch/metadata.json; undefined when the image has none (e.g. a
 * directory made by hand). Synchronous and small: den run calls it on every
 * launch.
 *
 * @example
 * ```ts
 * const meta = readImageMetadata("/var/tmp/ada/den/img/alpine");
 * const argv = [...(meta?.entrypoint ?? []), ...(meta?.cmd ?? [])];
 * ```
 */
export function readImageMetadata(rootfs: string): ImageMetadata | undefined {
  const path = `${rootfs}/${METADATA_PATH}`;
  const text = readFileInImage(rootfs, METADATA_PATH);
  if (text === undefined) return undefined;
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw new DenError("read image metadata", "invalid JSON", { path });
  }
  if (!v || typeof v !== "object" || Array.isArray(v)) {
    throw new DenError("read image metadata", "not a JSON object", { path });
  }
  const o = v as Record<string, unknown>;
  const strList = (x: unknown): string[] | null =>
    Array.isArray(x) && x.every((s) => typeof s === "string") ? x : null;
  const strMap = (x: unknown): Record<string, string> => {
    const out: Record<string, string> = {};
    if (x && typeof x === "object" && !Array.isArray(x)) {
      for (const [k, val] of Object.entries(x)) if (typeof val === "string") out[k] = val;
    }
    return out;
  };
  let envList = strList(o["env_list"]);
  const env = strMap(o.env);
  if (!envList) envList = Object.entries(env).map(([k, val]) => `${k}=${val}`);
  return {
    ...o,
    arch: typeof o.arch === "string" ? o.arch : null,
    env,
    "env_list": envList,
    entrypoint: strList(o.entrypoint),
    cmd: strList(o.cmd),
    cwd: typeof o.cwd === "string" && o.cwd ? o.cwd : "/",
    user: typeof o.user === "string" ? o.user : "",
    labels: strMap(o.labels),
  } as ImageMetadata;
}

/** Metadata from an OCI/docker image config (undefined: a plain rootfs). */
export function metadataFromConfig(config: Record<string, unknown> | undefined): ImageMetadata {
  const c = (config?.config ?? {}) as Record<string, unknown>;
  const strList = (x: unknown): string[] | null =>
    Array.isArray(x) && x.every((s) => typeof s === "string") ? x : null;
  const envList = strList(c.Env) ?? [];
  const env: Record<string, string> = {};
  for (const kv of envList) {
    const eq = kv.indexOf("=");
    if (eq > 0) env[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  const labels: Record<string, string> = {};
  if (c.Labels && typeof c.Labels === "object") {
    for (const [k, v] of Object.entries(c.Labels)) if (typeof v === "string") labels[k] = v;
  }
  const str = (x: unknown) => typeof x === "string" && x ? x : undefined;
  const meta: ImageMetadata = {
    arch: str(config?.architecture) ?? null,
    env,
    "env_list": envList,
    entrypoint: strList(c.Entrypoint),
    cmd: strList(c.Cmd),
    cwd: str(c.WorkingDir) ?? "/",
    user: str(c.User) ?? "",
    labels,
    shell: strList(c.Shell),
    volumes: c.Volumes && typeof c.Volumes === "object" ? Object.keys(c.Volumes) : [],
  };
  if (str(config?.variant)) meta.variant = str(config?.variant);
  if (str(config?.os)) meta.os = str(config?.os);
  if (str(config?.created)) meta.created = str(config?.created);
  return meta;
}

/** Write ch/metadata.json and ch/environment into a rootfs (ch/ must be safe
 * to write: the caller created it). */
export function writeImageMetadata(rootfs: string, meta: ImageMetadata): void {
  Deno.writeTextFileSync(`${rootfs}/${METADATA_PATH}`, JSON.stringify(meta, null, 2) + "\n", {
    mode: 0o644,
  });
  // One NAME=VALUE per line; a value with a newline cannot be represented.
  const lines = meta["env_list"].filter((kv) => kv.includes("=") && !kv.includes("\n"));
  Deno.writeTextFileSync(
    `${rootfs}/${ENVIRONMENT_PATH}`,
    lines.map((l) => l + "\n").join(""),
    { mode: 0o644 },
  );
}
