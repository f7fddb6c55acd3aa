// A registry's own CA certificates, where containers-certs.d(5) keeps them:
// HOST[:PORT]/*.crt under /etc/containers/certs.d, ~/.config/containers/certs.d
// and /etc/docker/certs.d, or in the one directory --cert-dir names (which
// then replaces them, as in podman). They are trusted besides the system's.
// (*.cert and *.key are client certificates, which den does not send.)
import { DenError, osMessage } from "../../error.ts";

export interface CaCertOptions {
  /** --cert-dir: the only directory read. */
  certDir?: string;
  env?: Record<string, string | undefined>;
  /** Directories holding HOST[:PORT]/ (tests); default the three above. */
  roots?: string[];
}

/** PEM texts of the *.crt files for `registry` ("host" or "host:port"). */
export function registryCaCerts(registry: string, options: CaCertOptions = {}): string[] {
  const env = options.env ?? Deno.env.toObject();
  const dirs = options.certDir !== undefined ? [options.certDir] : (options.roots ?? [
    "/etc/containers/certs.d",
    ...(env.HOME ? [`${env.HOME}/.config/containers/certs.d`] : []),
    "/etc/docker/certs.d",
  ]).map((r) => `${r}/${registry}`);
  const pems: string[] = [];
  for (const dir of dirs) {
    let names: string[];
    try {
      names = [...Deno.readDirSync(dir)].filter((e) => !e.isDirectory && e.name.endsWith(".crt"))
        .map((e) => e.name).sort();
    } catch (e) {
      // Only a directory the user named must exist.
      if (options.certDir === undefined && e instanceof Deno.errors.NotFound) continue;
      throw new DenError("read certificates", why(e), { path: dir });
    }
    for (const name of names) {
      let pem: string;
      try {
        pem = Deno.readTextFileSync(`${dir}/${name}`);
      } catch (e) {
        throw new DenError("read certificates", why(e), { path: `${dir}/${name}` });
      }
      if (!pem.includes("-----BEGIN CERTIFICATE-----")) {
        throw new DenError("read certificates", "not a PEM certificate", {
          path: `${dir}/${name}`,
        });
      }
      pems.push(pem);
    }
  }
  return pems;
}

function why(e: unknown): string {
  return osMessage(e).replace(/: '.*'$/, "");
}
