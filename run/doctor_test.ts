import { equal } from "node:assert/strict";
import { type Check, doctorStatus, formatReport, kernelAtLeast, kernelVersion } from "./doctor.ts";

const CHECKS: Check[] = [
  { name: "kernel", status: "ok", detail: "Linux 6.1.0" },
  { name: "ids", status: "info", detail: "uid 1000 (ada), gid 1000 (ada)" },
  {
    name: "user+mount namespaces",
    status: "fail",
    detail: "a container failed: can't clone a user namespace: No space left on device (ENOSPC)",
    fix: "sysctl user.max_user_namespaces is 0",
    required: true,
  },
  { name: "/dev/fuse", status: "fail", detail: "missing", fix: "modprobe fuse" },
];

Deno.test("formatReport() aligns names, marks failures, puts each fix below its check", () => {
  equal(
    formatReport(CHECKS),
    "ok    kernel                 Linux 6.1.0\n" +
      "      ids                    uid 1000 (ada), gid 1000 (ada)\n" +
      "FAIL  user+mount namespaces  a container failed: can't clone a user namespace: " +
      "No space left on device (ENOSPC)\n" +
      "                             fix: sysctl user.max_user_namespaces is 0\n" +
      "FAIL  /dev/fuse              missing\n" +
      "                             fix: modprobe fuse\n" +
      "den run cannot work here: user+mount namespaces\n",
  );
});

Deno.test("doctorStatus() is 1 only when a check den run needs fails", () => {
  equal(doctorStatus(CHECKS), 1);
  equal(doctorStatus(CHECKS.filter((c) => !c.required)), 0);
  equal(formatReport(CHECKS.slice(0, 2)).endsWith("den run works here\n"), true);
});

Deno.test("kernelAtLeast() compares major.minor of a release string", () => {
  equal(kernelAtLeast("5.11.0-1-amd64", 5, 11), true);
  equal(kernelAtLeast("5.10.209", 5, 11), false);
  equal(kernelAtLeast("6.1.0", 5, 11), true);
  equal(kernelAtLeast("4.18.0-553.el8", 4, 18), true);
  equal(kernelVersion("weird"), undefined);
});
