// The host's user database: /etc/passwd and /etc/group first (no NSS
// modules to load: ~1 ms that every MPI rank would pay), then libc's
// getpwuid()/getgrgid(), so NSS (LDAP, sssd) users that are not in the
// files still get their names inside the container.

import { libc, readCString } from "./libc.ts";

export interface HostUsers {
  uid: number;
  gid: number;
  passwdEntry(uid: number): { name: string; gecos: string } | undefined;
  groupName(gid: number): string | undefined;
}

/** The fields of the line of a colon-separated database whose third field is id. */
function fileEntry(path: string, id: number): string[] | undefined {
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch {
    return undefined;
  }
  const key = String(id);
  for (const line of text.split("\n")) {
    const f = line.split(":");
    if (f.length >= 3 && f[2] === key && f[0] && !f[0].startsWith("+")) return f;
  }
  return undefined;
}

export function hostUsers(): HostUsers {
  return {
    uid: Deno.uid() ?? 0,
    gid: Deno.gid() ?? 0,
    passwdEntry(uid) {
      const f = fileEntry("/etc/passwd", uid);
      if (f) return { name: f[0]!, gecos: f[4] ?? "" };
      const p = libc().getpwuid(uid);
      if (p === null) return undefined;
      const view = new Deno.UnsafePointerView(p);
      // struct passwd: pw_name at 0, pw_gecos at 24 on 64-bit glibc.
      const str = (off: number) =>
        readCString(Deno.UnsafePointer.create(view.getBigUint64(off))) ?? "";
      return { name: str(0), gecos: str(24) };
    },
    groupName(gid) {
      const f = fileEntry("/etc/group", gid);
      if (f) return f[0];
      const p = libc().getgrgid(gid);
      if (p === null) return undefined;
      return readCString(
        Deno.UnsafePointer.create(
          new Deno.UnsafePointerView(p).getBigUint64(0),
        ),
      );
    },
  };
}
