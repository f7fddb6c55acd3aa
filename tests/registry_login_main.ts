// A stand-in for cli/main.ts with only `login` and `logout`, for the tests
// while main.ts does not dispatch them yet (registry_login_test.ts prefers
// main.ts as soon as it does). Same error printing and exit codes.
import { DenError, EXIT_FAILURE } from "../error.ts";
import { loginCommand, logoutCommand } from "../cli/login.ts";
import { error } from "../cli/output.ts";

if (import.meta.main) {
  const [verb, ...rest] = Deno.args;
  let code: number;
  try {
    code = verb === "logout" ? await logoutCommand(rest) : await loginCommand(rest);
  } catch (e) {
    error(e);
    code = e instanceof DenError ? e.exitCode : EXIT_FAILURE;
  }
  Deno.exit(code);
}
