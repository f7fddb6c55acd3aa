import { equal } from "node:assert/strict";
import { usernsHint } from "./spawn.ts";

const procWith = (files: Record<string, string>) => (path: string) => files[path];

Deno.test("usernsHint() names user.max_user_namespaces when it is 0", () => {
  equal(
    usernsHint(procWith({ "/proc/sys/user/max_user_namespaces": "0" })),
    "unprivileged user namespaces are disabled: sysctl user.max_user_namespaces is 0",
  );
});

Deno.test("usernsHint() names Debian's kernel.unprivileged_userns_clone when it is 0", () => {
  equal(
    usernsHint(procWith({
      "/proc/sys/user/max_user_namespaces": "96364",
      "/proc/sys/kernel/unprivileged_userns_clone": "0",
    })),
    "unprivileged user namespaces are disabled: sysctl kernel.unprivileged_userns_clone is 0",
  );
});

Deno.test("usernsHint() names Ubuntu's AppArmor restriction", () => {
  equal(
    usernsHint(procWith({ "/proc/sys/kernel/apparmor_restrict_unprivileged_userns": "1" })),
    "AppArmor restricts user namespaces: sysctl kernel.apparmor_restrict_unprivileged_userns is 1",
  );
});

Deno.test("usernsHint() falls back to the sysctl to check", () => {
  equal(
    usernsHint(procWith({})),
    "user namespaces look unavailable (check sysctl user.max_user_namespaces)",
  );
});
