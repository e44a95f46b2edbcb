// A page served from the API's own origin (the test's /app/ routes) that
// keeps its session with the TypeScript client package: the refresh
// token in the HttpOnly session cookie, the access token in memory, every
// call through the client's interceptor. Bundled by esbuild into
// dist/sso.js (scripts/test does).
//
// It shows what the test checks: the status (signed-in / signed-out), who
// is signed in, how many /auth/refresh requests it made, and the last
// call's outcome. `?email=<address>` on the page URL makes the sign-in
// link start single sign-on for that address.

import { Code, ConnectError, createTwigClient } from "../../../clients/typescript/dist/src/index.js";

const show = (id, text) => {
  document.getElementById(id).textContent = String(text);
};

let refreshes = 0;
const counting = (input, init) => {
  if (String(input).endsWith("/auth/refresh")) {
    refreshes += 1;
    show("refreshes", refreshes);
  }
  return fetch(input, init);
};

const client = createTwigClient({ baseUrl: location.origin, fetch: counting });

const params = new URLSearchParams(location.search);
const email = params.get("email");
if (email) {
  const back = `${location.origin}/app/index.html`;
  document.getElementById("sso").href =
    `/sso/start?email=${encodeURIComponent(email)}&return_to=${encodeURIComponent(back)}`;
}

async function whoami() {
  try {
    const me = await client.sessions.getCurrentUser({});
    show("email", me.user.email);
    show("status", "signed-in");
    show("call", "ok");
  } catch (e) {
    const err = ConnectError.from(e);
    show("email", "");
    show("status", err.code === Code.Unauthenticated ? "signed-out" : "error");
    show("call", `${Code[err.code]}: ${err.rawMessage}`);
  }
}

document.getElementById("whoami").addEventListener("click", () => {
  show("call", "");
  whoami();
});
document.getElementById("logout").addEventListener("click", async () => {
  show("call", "");
  try {
    await client.keeper.logout();
  } finally {
    show("email", "");
    show("status", "signed-out");
    show("call", "logged-out");
  }
});

whoami();
