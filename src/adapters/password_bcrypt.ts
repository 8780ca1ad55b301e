// The PasswordCheck port on bcryptjs (pure JavaScript, so it runs wherever Prox does). Its async
// functions work in slices of at most ~100 ms between event-loop turns; basic_auth bounds how
// many checks run and caches the successful ones.

import bcrypt from "bcryptjs";
import type { PasswordCheck } from "../ports.ts";

/** bcrypt through bcryptjs; `$2a$`, `$2b$` and `$2y$` hashes. */
export const bcryptPasswords: PasswordCheck = {
  verify: (password, hash) => bcrypt.compare(password, hash),
};

/** A new bcrypt hash of `password` (`prox hash-password`), `$2b$` with cost `cost`. */
export function hashPassword(password: string, cost = 10): Promise<string> {
  return bcrypt.hash(password, cost);
}
