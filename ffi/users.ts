// The host's user database through libc, so NSS (LDAP, sssd) users that are
// not in /etc/passwd still get their names inside the container.

import { libc, readCString } from "./libc.ts";

export interface HostUsers {
  uid: number;
  gid: number;
  passwdEntry(uid: number): { name: string; gecos: string } | undefined;
  groupName(gid: number): string | undefined;
}

export function hostUsers(): HostUsers {
  const lc = libc();
  return {
    uid: Deno.uid() ?? 0,
    gid: Deno.gid() ?? 0,
    passwdEntry(uid) {
      const p = lc.getpwuid(uid);
      if (p === null) return undefined;
      const view = new Deno.UnsafePointerView(p);
      // struct passwd: pw_name at 0, pw_gecos at 24 on 64-bit glibc.
      const str = (off: number) =>
        readCString(Deno.UnsafePointer.create(view.getBigUint64(off))) ?? "";
      return { name: str(0), gecos: str(24) };
    },
    groupName(gid) {
      const p = lc.getgrgid(gid);
      if (p === null) return undefined;
      return readCString(
        Deno.UnsafePointer.create(
          new Deno.UnsafePointerView(p).getBigUint64(0),
        ),
      );
    },
  };
}
