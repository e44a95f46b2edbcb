// A front end's first minutes, over gRPC-web with Connect's web transport
// (the one browsers use; here on Node's fetch): a sign-up started for a new
// address (answered at once, with nothing in it: the rest goes by mail),
// then a login to an existing account, an API key created and listed, and
// a bad token's clean failure.
//
// Usage: node grpc_web_flow.mjs <base URL> <origin> <email> <password>
// (the account of <email>, made beforehand by the Rust test through the
// operator's CreateAccount). Prints one JSON line: what the calls
// returned, for the Rust test to check.

import { toJson } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { SessionService, SignUpResponseSchema } from "./gen/twig/sessions/v1/sessions_pb.js";
import { ApiKeyService } from "./gen/twig/apikeys/v1/apikeys_pb.js";
import { Scope } from "./gen/twig/auth/v1/principal_pb.js";

const [baseUrl, origin, email, password] = process.argv.slice(2);
if (!baseUrl || !origin || !email || !password) {
  console.error("usage: node grpc_web_flow.mjs <base URL> <origin> <email> <password>");
  process.exit(2);
}

// What a browser adds to a cross-origin request; the server answers CORS
// for configured origins only.
const transport = createGrpcWebTransport({
  baseUrl,
  useBinaryFormat: true,
  interceptors: [
    (next) => async (req) => {
      req.header.set("origin", origin);
      return next(req);
    },
  ],
});
const sessions = createClient(SessionService, transport);
const keys = createClient(ApiKeyService, transport);

const newcomer = `node-${Date.now()}-${Math.random().toString(16).slice(2)}@example.com`;

let corsAllowOrigin = null;
let corsExposed = null;
const started = await sessions.signUp(
  {
    email: newcomer,
    password: "a long enough password for node",
    displayName: "Node",
    organizationName: "Node org",
  },
  {
    onHeader(headers) {
      corsAllowOrigin = headers.get("access-control-allow-origin");
      corsExposed = headers.get("access-control-expose-headers");
    },
  },
);
const login = await sessions.login({ email, password });
const bearer = { Authorization: `Bearer ${login.tokens.accessToken}` };

const created = await keys.createApiKey(
  { name: "from the web", scopes: [Scope.READ] },
  { headers: bearer },
);
const listed = await keys.listApiKeys({}, { headers: bearer });

let badToken = null;
try {
  await keys.listApiKeys({}, { headers: { Authorization: "Bearer twig_st_not-a-real-token" } });
} catch (e) {
  const err = ConnectError.from(e);
  badToken = { code: Code[err.code], message: err.rawMessage };
}

console.log(
  JSON.stringify({
    signUpAnswer: toJson(SignUpResponseSchema, started),
    newcomer,
    userId: login.user.id,
    organizationId: login.organizationId,
    keyId: created.key.id,
    secret: created.secret,
    listedIds: listed.keys.map((k) => k.id),
    badToken,
    corsAllowOrigin,
    corsExposed,
  }),
);
