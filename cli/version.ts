/** den's version, printed by `den --version` and `den run --version`. */
export const VERSION = "0.1.0";
