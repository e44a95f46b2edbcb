// SessionKeeper: the browser side of twig-identity's cookie-mode sessions.
//
// The refresh credential lives in an HttpOnly cookie the page never sees;
// the access token and its expiry live here, in memory only (never in
// localStorage, sessionStorage or a cookie the page writes). Every request
// to the `/auth/` routes goes with `credentials: "include"` and the CSRF
// header `x-twig-csrf: 1`.
//
// Refreshes are single-flight: however many callers need a new access token
// at once (from accessToken(), refresh() or the interceptor's retry), one
// `POST /auth/refresh` is made and all of them share its outcome.

import { Code, ConnectError } from "@connectrpc/connect";
import { codeFromString } from "@connectrpc/connect/protocol-connect";

/** The signed-in session, as the last login or refresh described it. */
export interface SessionInfo {
  /** The bearer credential for gRPC-web calls. Kept in memory only. */
  readonly accessToken: string;
  /** When the access token expires (the server's clock). */
  readonly accessExpiresAt: Date;
  readonly sessionId: string;
  readonly userId: string;
  readonly organizationId: string;
}

/**
 * Where the keeper stands:
 * - `unknown`: nothing learnt yet (a fresh page). The first accessToken()
 *   asks `/auth/refresh` whether the cookie still holds a session.
 * - `signed-in`: an access token is held.
 * - `signed-out`: logout(), or the server said there is no session.
 *   accessToken() fails at once, without a request, until login() or an
 *   explicit refresh() succeeds.
 */
export type SessionStatus = "unknown" | "signed-in" | "signed-out";

/** What onChange listeners are told. Token rotations within one session are not reported. */
export type SessionEvent =
  | { readonly type: "signed-in"; readonly session: SessionInfo }
  | { readonly type: "signed-out" };

export type SessionListener = (event: SessionEvent) => void;

export interface SessionKeeperOptions {
  /** Origin (and optional path prefix) that serves `/auth/login`, `/auth/refresh`, `/auth/logout`. */
  authBaseUrl: string;
  /** fetch to use; the global one by default. */
  fetch?: typeof globalThis.fetch;
  /** Refresh when the token expires within this many milliseconds. Default 60 000. */
  refreshBeforeMs?: number;
  /** The clock, in milliseconds since the epoch. Default Date.now. */
  now?: () => number;
}

/**
 * A failed request to an `/auth/` route: the HTTP status and the message of
 * the server's JSON error body. It is a ConnectError (its code from the
 * body's `code`, else from the status), so callers handle one error type.
 */
export class AuthRequestError extends ConnectError {
  /** HTTP status of the answer; 0 when no answer came (network failure). */
  readonly status: number;
  /** The route that failed: "login", "refresh" or "logout". */
  readonly route: AuthRoute;

  constructor(route: AuthRoute, status: number, message: string, code: Code, cause?: unknown) {
    super(message, code, undefined, undefined, cause);
    this.status = status;
    this.route = route;
  }

  // ConnectError's own check would call every ConnectError an
  // AuthRequestError (static methods are inherited); use the prototype chain.
  static override [Symbol.hasInstance](value: unknown): boolean {
    return Function.prototype[Symbol.hasInstance].call(this, value);
  }
}

export type AuthRoute = "login" | "refresh" | "logout";

const CSRF_HEADER = "x-twig-csrf";
const MIN_FRESH_MS = 5_000;

export class SessionKeeper {
  private readonly authBase: string;
  private readonly fetchImpl: typeof globalThis.fetch;
  private readonly refreshBeforeMs: number;
  private readonly now: () => number;

  private session: SessionInfo | undefined;
  private state: SessionStatus = "unknown";
  // How early this session's token is renewed: refreshBeforeMs, but never
  // more than half the token's lifetime as seen when it arrived (a server
  // issuing short tokens must not make every call refresh).
  private margin: number;
  // When the token held now arrived (local clock). A token is never stale
  // by the clock in its first MIN_FRESH_MS: with a client clock far ahead
  // of the server's, every token would otherwise look expired on arrival
  // and each call would refresh. (If the server does refuse it, the
  // interceptor's retry recovers.)
  private receivedAt = 0;
  // Bumped by logout(): a login or refresh called before it must not
  // bring the session back when it answers.
  private epoch = 0;
  private inflight: Promise<SessionInfo> | undefined;
  // The /auth/ requests go one at a time, so the cookies their answers set
  // land in the order the keeper made them (a refresh answered after a
  // logout must not bring the old session's cookie back).
  private queue: Promise<unknown> = Promise.resolve();
  private readonly listeners = new Set<SessionListener>();

  constructor(options: SessionKeeperOptions) {
    if (!options.authBaseUrl) throw new TypeError("SessionKeeper: authBaseUrl is required");
    this.authBase = options.authBaseUrl.replace(/\/+$/, "");
    // Called as a plain function: a browser's window.fetch refuses to run
    // with another object as `this`.
    const f = options.fetch;
    this.fetchImpl = f ?? ((input, init) => globalThis.fetch(input, init));
    this.refreshBeforeMs = options.refreshBeforeMs ?? 60_000;
    if (!(this.refreshBeforeMs >= 0)) throw new RangeError("SessionKeeper: refreshBeforeMs must be >= 0");
    this.now = options.now ?? Date.now;
    this.margin = this.refreshBeforeMs;
  }

  /** The current session, or undefined when not signed in. */
  current(): SessionInfo | undefined {
    return this.session;
  }

  get status(): SessionStatus {
    return this.state;
  }

  /** Listens for sign-in and sign-out; returns the function that stops listening. */
  onChange(listener: SessionListener): () => void {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  }

  /** Signs in with email and password (and, optionally, the organisation to act in). */
  async login(email: string, password: string, organizationId?: string): Promise<SessionInfo> {
    const body: Record<string, string> = { email, password };
    if (organizationId !== undefined) body.organization_id = organizationId;
    // Requests to /auth/ go in order, so a refresh queued before this login
    // lands before it, and one queued after it rotates this login's
    // session: neither needs to be voided. A logout called before this
    // login answers voids it.
    const epoch = this.epoch;
    return this.serial(async () => {
      const res = await this.post("login", body);
      if (res.status !== 200) throw await errorFrom("login", res);
      const session = await parseSession("login", res);
      if (epoch !== this.epoch) throw new ConnectError("logged out before the login completed", Code.Canceled);
      this.adopt(session);
      return session;
    });
  }

  /**
   * Trades the refresh cookie for a new access token. Always asks the server
   * (joining a refresh already in flight). A 401 signs the keeper out and
   * rejects with Code.Unauthenticated.
   */
  refresh(): Promise<SessionInfo> {
    if (this.inflight) return this.inflight;
    // The epoch is taken now, not when the request goes out: a logout
    // called meanwhile outranks this refresh.
    const epoch = this.epoch;
    const p = this.serial(() => this.doRefresh(epoch)).finally(() => {
      if (this.inflight === p) this.inflight = undefined;
    });
    this.inflight = p;
    return p;
  }

  /**
   * An access token that is not within refreshBeforeMs of its expiry,
   * refreshing first when needed. Rejects with Code.Unauthenticated when
   * signed out.
   */
  async accessToken(): Promise<string> {
    // A refresh in flight may be there because the server refused the
    // token held now: wait for its successor.
    if (!this.inflight) {
      if (this.state === "signed-out") throw signedOut();
      const s = this.session;
      if (s && !this.isStale(s)) return s.accessToken;
    }
    try {
      return (await this.refresh()).accessToken;
    } catch (e) {
      // A transient failure (network, 5xx) while the token has not yet
      // expired: use it rather than failing the call.
      const still = this.session;
      if (still && !isUnauthenticated(e) && this.now() < still.accessExpiresAt.getTime()) {
        return still.accessToken;
      }
      throw e;
    }
  }

  /**
   * For a call the server refused with Unauthenticated although it carried
   * `stale`: a replacement token. Joins a refresh in flight; makes none when
   * the keeper already holds a newer token than `stale`.
   */
  async replaceToken(stale: string): Promise<string> {
    if (this.inflight) return (await this.inflight).accessToken;
    if (this.state === "signed-out") throw signedOut();
    const s = this.session;
    if (s && s.accessToken !== stale) return this.accessToken();
    return (await this.refresh()).accessToken;
  }

  /**
   * Ends the session: local state is cleared at once, whatever the server
   * answers. Rejects (after clearing) when the server could not be told,
   * since its session and cookie may then still be alive.
   */
  async logout(): Promise<void> {
    this.epoch++;
    this.signOut();
    await this.serial(async () => {
      const res = await this.post("logout");
      if (res.status !== 204 && res.status !== 200) throw await errorFrom("logout", res);
    });
  }

  private async doRefresh(epoch: number): Promise<SessionInfo> {
    let res = await this.post("refresh");
    // 409: another tab of this browser traded the same cookie a moment
    // ago; its answer has set the newer one, so one retry succeeds.
    for (let retries = 0; res.status === 409 && retries < 2; retries++) {
      await delay(RACE_RETRY_MS * (retries + 1));
      res = await this.post("refresh");
    }
    if (res.status === 401) {
      const err = await errorFrom("refresh", res);
      if (epoch === this.epoch) this.signOut();
      throw err;
    }
    if (res.status !== 200) throw await errorFrom("refresh", res);
    const session = await parseSession("refresh", res);
    // A logout came in between: it has the last word.
    if (epoch !== this.epoch) throw signedOut();
    this.adopt(session);
    return session;
  }

  private adopt(session: SessionInfo): void {
    const before = this.session;
    this.receivedAt = this.now();
    const lifetime = session.accessExpiresAt.getTime() - this.receivedAt;
    this.margin = Math.max(0, Math.min(this.refreshBeforeMs, lifetime / 2));
    this.session = session;
    this.state = "signed-in";
    if (!before || before.sessionId !== session.sessionId || before.userId !== session.userId) {
      this.emit({ type: "signed-in", session });
    }
  }

  private signOut(): void {
    const was = this.state;
    this.session = undefined;
    this.state = "signed-out";
    if (was !== "signed-out") this.emit({ type: "signed-out" });
  }

  private isStale(s: SessionInfo): boolean {
    const now = this.now();
    return now >= s.accessExpiresAt.getTime() - this.margin && now - this.receivedAt >= MIN_FRESH_MS;
  }

  private serial<T>(task: () => Promise<T>): Promise<T> {
    const run = this.queue.then(task);
    this.queue = run.catch(() => undefined);
    return run;
  }

  private emit(event: SessionEvent): void {
    for (const listener of [...this.listeners]) {
      try {
        listener(event);
      } catch (e) {
        // A listener's failure is its own: reported, not thrown into the
        // keeper (whose state stands) nor into the other listeners.
        reportListenerError(e);
      }
    }
  }

  private async post(route: AuthRoute, body?: unknown): Promise<Response> {
    const headers: Record<string, string> = { [CSRF_HEADER]: "1", accept: "application/json" };
    const init: RequestInit = { method: "POST", credentials: "include", headers, cache: "no-store" };
    if (body !== undefined) {
      headers["content-type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const f = this.fetchImpl;
    try {
      return await f(`${this.authBase}/auth/${route}`, init);
    } catch (e) {
      const err = ConnectError.from(e, Code.Unavailable);
      throw new AuthRequestError(route, 0, err.rawMessage, err.code, e);
    }
  }
}

function reportListenerError(e: unknown): void {
  const report = (globalThis as { reportError?: (e: unknown) => void }).reportError;
  if (typeof report === "function") report(e);
  else console.error("SessionKeeper: an onChange listener threw", e);
}

function signedOut(): ConnectError {
  return new ConnectError("not signed in", Code.Unauthenticated);
}

function isUnauthenticated(e: unknown): boolean {
  return e instanceof ConnectError && e.code === Code.Unauthenticated;
}

async function errorFrom(route: AuthRoute, res: Response): Promise<AuthRequestError> {
  let message = "";
  let code: Code | undefined;
  try {
    const body: unknown = await res.json();
    if (isRecord(body)) {
      if (typeof body.message === "string") message = body.message;
      if (typeof body.code === "string") code = codeFromString(body.code);
    }
  } catch {
    // No JSON body (a proxy's page, an empty answer): the status says it.
  }
  if (!message) message = `${route}: HTTP ${res.status}${res.statusText ? ` ${res.statusText}` : ""}`;
  return new AuthRequestError(route, res.status, message, code ?? codeFromStatus(res.status));
}

/** How long to wait before retrying a refresh that lost a race (409). */
const RACE_RETRY_MS = 150;

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function codeFromStatus(status: number): Code {
  switch (status) {
    case 400:
      return Code.InvalidArgument;
    case 401:
      return Code.Unauthenticated;
    case 403:
      return Code.PermissionDenied;
    case 404:
      return Code.NotFound;
    case 409:
      return Code.AlreadyExists;
    case 412:
      return Code.FailedPrecondition;
    case 429:
      return Code.ResourceExhausted;
    case 502:
    case 503:
    case 504:
      return Code.Unavailable;
    default:
      return status >= 500 ? Code.Internal : Code.Unknown;
  }
}

async function parseSession(route: AuthRoute, res: Response): Promise<SessionInfo> {
  let body: unknown;
  try {
    body = await res.json();
  } catch (e) {
    throw new AuthRequestError(route, res.status, `${route}: the answer is not JSON`, Code.Internal, e);
  }
  const bad = (what: string) =>
    new AuthRequestError(route, res.status, `${route}: the answer has no valid ${what}`, Code.Internal);
  if (!isRecord(body)) throw bad("body");
  const str = (key: string): string => {
    const v = body[key];
    if (typeof v !== "string" || v === "") throw bad(key);
    return v;
  };
  const accessToken = str("access_token");
  const expires = parseRfc3339(str("access_expires_at"));
  if (expires === undefined) throw bad("access_expires_at");
  return Object.freeze({
    accessToken,
    accessExpiresAt: new Date(expires),
    sessionId: str("session_id"),
    userId: str("user_id"),
    organizationId: str("organization_id"),
  });
}

const RFC3339 =
  /^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))$/;

/**
 * Milliseconds since the epoch of an RFC 3339 timestamp, or undefined.
 * By hand: Date.parse is not bound to accept nanosecond fractions or
 * offsets in every browser.
 */
export function parseRfc3339(text: string): number | undefined {
  const m = RFC3339.exec(text);
  if (!m) return undefined;
  const [, y, mo, d, h, mi, s, frac, z, sign, oh, om] = m;
  const n = (v: string | undefined) => Number(v ?? "0");
  const month = n(mo);
  const day = n(d);
  if (month < 1 || month > 12 || day < 1 || day > 31 || n(h) > 23 || n(mi) > 59 || n(s) > 60) {
    return undefined;
  }
  const ms = frac ? Number(frac.slice(0, 3).padEnd(3, "0")) : 0;
  let t = Date.UTC(n(y), month - 1, day, n(h), n(mi), Math.min(n(s), 59), ms);
  if (!z) {
    const offset = (n(oh) * 60 + n(om)) * 60_000;
    t -= sign === "-" ? -offset : offset;
  }
  return Number.isFinite(t) ? t : undefined;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
