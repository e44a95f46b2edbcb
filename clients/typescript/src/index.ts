export {
  SessionKeeper,
  AuthRequestError,
  parseRfc3339,
  type AuthRoute,
  type SessionEvent,
  type SessionInfo,
  type SessionKeeperOptions,
  type SessionListener,
  type SessionStatus,
} from "./session.js";
export { authInterceptor } from "./interceptor.js";
export { createTwigClient, type TwigClient, type TwigClientOptions, type TwigServiceClients } from "./client.js";

export { services } from "./gen/services.js";

// Connect's error type and codes, from the one copy the clients use, so
// `instanceof ConnectError` and `err.code === Code.Unauthenticated` hold in
// the application too.
export { Code, ConnectError } from "@connectrpc/connect";

// The generated messages, enums and service descriptors, one namespace per
// proto package: sessionsV1, apikeysV1, authV1 (principal), auditV1,
// quotaV1, vaultV1, ssoV1, edgeV1 — whatever proto/ holds (written by
// scripts/gen-services.mjs). Single files: "@twig-identity/client/gen/twig/<package>/v1/<file>_pb".
export * from "./gen/packages.js";
