/**
 * den: unprivileged containers for HPC. The public API: plan a container
 * (pure), run a plan (Linux user + mount namespaces through libc FFI), and
 * unpack Docker/OCI image archives into image directories.
 *
 * @example
 * ```ts
 * import { planContainer, runPlan } from "./mod.ts";
 * ```
 * @module
 */

export { DenError, type DenErrorOptions, EXIT_CMD, EXIT_FAILURE, EXIT_USAGE } from "./error.ts";
export {
  type Bind,
  type HostFacts,
  type HostView,
  type ImageConfig,
  type MountOp,
  type Plan,
  planContainer,
  type RunOptions,
} from "./run/plan.ts";
export { applyEnvOps, type EnvOp } from "./run/env.ts";
export { runPlan } from "./run/run_plan.ts";
export {
  unpackImage,
  type UnpackOptions,
  type UnpackProgress,
  type UnpackResult,
  type UnpackStats,
} from "./image/unpack_image.ts";
export { type ImageMetadata, readImageMetadata } from "./image/metadata.ts";
export { resolveImage, storageDir } from "./image/store.ts";
export { type ImageRef, parseImageRef } from "./image/ref.ts";
