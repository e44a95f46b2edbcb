// authInterceptor: puts the session's access token on every call and
// recovers once from a token the server no longer accepts.

import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import type { SessionKeeper } from "./session.js";

/**
 * A Connect interceptor that sends `Authorization: Bearer <access token>`
 * from the keeper (refreshed before it expires).
 *
 * When a unary call fails with Unauthenticated although it carried a token
 * (revoked, or expired by the server's clock), the keeper gets one
 * replacement — sharing a refresh already in flight, and making none if the
 * token was replaced since this call started — and the call is retried once.
 * A second Unauthenticated goes to the caller.
 *
 * Not retried: calls that carried no token (the keeper is signed out; public
 * RPCs such as SignUp go through like that), calls that set their own
 * Authorization header (an API key, say; left untouched), streaming calls
 * (their request stream cannot be replayed), and every other error code.
 */
export function authInterceptor(keeper: SessionKeeper): Interceptor {
  return (next) => async (req) => {
    if (req.header.has("authorization")) return next(req);
    const token = await tokenFor(keeper);
    if (token === undefined) return next(req);
    req.header.set("authorization", `Bearer ${token}`);
    try {
      return await next(req);
    } catch (e) {
      if (req.stream || req.signal.aborted || !isUnauthenticated(e)) throw e;
      const fresh = await keeper.replaceToken(token);
      req.header.set("authorization", `Bearer ${fresh}`);
      return await next(req);
    }
  };
}

// The keeper's token, or undefined when it is signed out (the call then
// goes without one). Other failures (the refresh could not be made) fail
// the call.
async function tokenFor(keeper: SessionKeeper): Promise<string | undefined> {
  try {
    return await keeper.accessToken();
  } catch (e) {
    if (isUnauthenticated(e) && keeper.status === "signed-out") return undefined;
    throw e;
  }
}

function isUnauthenticated(e: unknown): boolean {
  return e instanceof ConnectError && e.code === Code.Unauthenticated;
}
