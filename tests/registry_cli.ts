// `den pull` for the tests until cli/main.ts dispatches it: the same one
// catch-all and exit status as cli/main.ts.
import { DenError, EXIT_FAILURE } from "../error.ts";
import { pullCommand } from "../cli/pull.ts";
import { error } from "../cli/output.ts";

let code: number;
try {
  code = await pullCommand(Deno.args);
} catch (e) {
  error(e);
  code = e instanceof DenError ? e.exitCode : EXIT_FAILURE;
}
Deno.exit(code);
