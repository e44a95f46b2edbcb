//! Single sign-on under attack, end to end: a hostile OpenID provider
//! (`twig_tests::forging_idp`) forges ID tokens, replays them, rotates
//! its keys, redirects its discovery and keys to private addresses; a
//! hostile browser (curl) drops, swaps and tampers with the pending
//! sign-in's cookie, state and code, and asks to be sent back anywhere.
//! Every attack is refused — no session cookie, no member added — and
//! audited: refusals before the provider authenticated anyone are counted
//! per connection, reason and period (`sso.sign_in` failure events with a
//! `count`), those after it are one `sso.sign_in` failure event each.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};
use tonic::Code;
use twig_proto::sessions::v1 as spb;
use twig_proto::sso::v1 as pb;
use twig_sso_federation::SsoConfig;
use twig_tests::curl::{CurlBrowser, Hop};
use twig_tests::dns::DnsPeer;
use twig_tests::forging_idp::{Forgery, ForgingIdp, OTHER_AUDIENCE, WRONG_ISSUER};
use twig_tests::{Backend, PASSWORD, TestApp, bearer};

use crate::sso_oidc::{
    oidc_spec, owner, prove, proved_domain, refresh_token_of, return_url, set_stage, sign_in,
    whoami,
};

/// The session cookie a sign-in sets.
const REFRESH_COOKIE: &str = "__Secure-twig_refresh";
/// The cookie of a sign-in in progress.
const PENDING_COOKIE: &str = "__Secure-twig_sso_pending";

/// The app, its origin and the peers it trusts: the DNS server of domain
/// proofs and the forging provider (also the Google Workspace preset's
/// issuer).
struct Setup {
    app: TestApp,
    origin: String,
    dns: DnsPeer,
    idp: ForgingIdp,
}

/// The app with the forging provider, refusals audited every second.
/// `allow_loopback`: outbound requests may go to 127.0.0.1 (where the
/// provider is); without, 127.0.0.1 is refused like any private address.
async fn setup(backend: Backend, allow_loopback: bool) -> Setup {
    let dns = DnsPeer::start().await;
    let idp = ForgingIdp::start().await;
    let server = dns.addr();
    let google = idp.issuer();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let app = TestApp::builder(backend)
        .weak_hashing()
        .config_at_origin(move |c, origin| {
            c.server.public_origins = vec![origin.to_string()];
            if allow_loopback {
                c.outbound.allow_networks = vec!["127.0.0.1/32".parse().unwrap()];
            }
            c.edit::<SsoConfig>(|s| {
                s.dns_servers = vec![server];
                s.dns_timeout = Duration::from_secs(2);
                s.return_urls = vec![return_url(origin)];
                s.google_issuer = google;
                s.refusal_audit_period = Duration::from_secs(1);
            });
            let _ = tx.send(origin.to_string());
        })
        .spawn()
        .await;
    let origin = rx.await.unwrap();
    // The provider dates its tokens by the app's (manual) clock.
    idp.set_clock(app.clock.clone());
    Setup {
        app,
        origin,
        dns,
        idp,
    }
}

/// `CreateConnection` to `issuer` (generic) or to the Google Workspace
/// preset for `tenant`, with a fresh client; admins → ADMIN.
async fn create(
    s: &Setup,
    token: &str,
    issuer: &str,
    tenant: Option<&str>,
    domains: &[&str],
) -> Result<pb::Connection, tonic::Status> {
    let client_id = format!("twig-{}", uuid::Uuid::new_v4().simple());
    let secret = format!("secret-{}", uuid::Uuid::new_v4().simple());
    s.idp.set_client(
        &client_id,
        &secret,
        &format!("{}/sso/oidc/callback", s.origin),
    );
    let (preset, issuer, tenant) = match tenant {
        None => (pb::OidcPreset::Generic, issuer.to_string(), String::new()),
        Some(t) => (
            pb::OidcPreset::GoogleWorkspace,
            String::new(),
            t.to_string(),
        ),
    };
    s.app
        .sso()
        .create_connection(bearer(
            token,
            pb::CreateConnectionRequest {
                connection: Some(oidc_spec(
                    &format!("forging IdP {}", uuid::Uuid::new_v4().simple()),
                    preset,
                    issuer,
                    tenant,
                    (client_id, secret),
                    domains,
                    pb::Pilot::default(),
                )),
            },
        ))
        .await
        .map(|r| r.into_inner().connection.unwrap())
}

/// A connection to the forging provider serving `domain`, enforced.
async fn enforced(s: &Setup, token: &str, tenant: Option<&str>, domain: &str) -> pb::Connection {
    let made = create(s, token, &s.idp.issuer(), tenant, &[domain])
        .await
        .unwrap();
    set_stage(&s.app, token, &made.id, pb::ConnectionStage::Enforced)
        .await
        .unwrap()
}

/// An owner, a proved domain, an enforced connection to the forging
/// provider serving it, and Alice of that domain at the provider.
async fn organisation(s: &mut Setup) -> (String, String, String, pb::Connection) {
    let (token, org) = owner(&s.app).await;
    let domain = proved_domain(&s.app, &mut s.dns, &token, "acme").await;
    let connection = enforced(s, &token, None, &domain).await;
    s.idp
        .set_user(json!({"sub": "u1", "email": format!("alice@{domain}"),
        "email_verified": true, "name": "Alice", "groups": ["staff"]}));
    (token, org, domain, connection)
}

/// Starts a sign-in and lets the provider authorize it: the callback URL
/// the provider sends the browser to, not yet requested.
async fn to_callback(s: &Setup, browser: &CurlBrowser, start_path: &str) -> String {
    let start = browser.get(&format!("{}{start_path}", s.origin)).await;
    assert_eq!(start.status, 303, "{start:#?}");
    let to_idp = start.location().unwrap();
    assert!(
        to_idp.starts_with(&format!("{}/authorize?", s.idp.issuer())),
        "{to_idp}"
    );
    let authorized = browser.get(&to_idp).await;
    assert_eq!(authorized.status, 303, "{authorized:#?}");
    let callback = authorized.location().unwrap();
    assert!(
        callback.starts_with(&format!("{}/sso/oidc/callback?", s.origin)),
        "{callback}"
    );
    callback
}

/// `%XX` decoding (and `+` as a space) of one query value.
fn decode(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 3 <= bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

/// Percent-encoding of everything but RFC 3986's unreserved characters.
fn encode(raw: &str) -> String {
    raw.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The query parameters of `url`, in order.
fn query(url: &str) -> Vec<(String, String)> {
    let query = url.split_once('?').map(|(_, q)| q).unwrap_or_default();
    let query = query.split('#').next().unwrap_or_default();
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn param(url: &str, name: &str) -> String {
    query(url)
        .into_iter()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("no {name} in {url}"))
        .1
}

/// `url` with the query parameter `name` set to `value`.
fn with_param(url: &str, name: &str, value: &str) -> String {
    let (base, _) = url.split_once('?').unwrap();
    let pairs: Vec<String> = query(url)
        .into_iter()
        .map(|(k, v)| {
            let v = if k == name { value.to_string() } else { v };
            format!("{}={}", encode(&k), encode(&v))
        })
        .collect();
    format!("{base}?{}", pairs.join("&"))
}

/// The value of cookie `name` in the browser's jar, if it holds one.
fn jar_cookie(browser: &CurlBrowser, name: &str) -> Option<String> {
    let text = std::fs::read_to_string(browser.jar()).unwrap_or_default();
    text.lines()
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .find(|fields| fields.len() == 7 && fields[5] == name)
        .map(|fields| fields[6].to_string())
        .filter(|v| !v.is_empty())
}

/// Rewrites the value of cookie `name` in the browser's jar.
fn edit_jar_cookie(browser: &CurlBrowser, name: &str, change: impl Fn(&str) -> String) {
    let text = std::fs::read_to_string(browser.jar()).unwrap();
    let mut found = false;
    let edited: Vec<String> = text
        .lines()
        .map(|line| {
            let mut fields: Vec<String> = line.split('\t').map(str::to_string).collect();
            if fields.len() == 7 && fields[5] == name {
                found = true;
                fields[6] = change(&fields[6]);
                fields.join("\t")
            } else {
                line.to_string()
            }
        })
        .collect();
    assert!(found, "no {name} in the jar: {text}");
    std::fs::write(browser.jar(), edited.join("\n") + "\n").unwrap();
}

/// `raw` with the character at `at` replaced by another cookie-safe one.
fn flip_char(raw: &str, at: usize) -> String {
    raw.char_indices()
        .map(|(i, c)| {
            if i != at {
                c
            } else if c == 'a' {
                'b'
            } else if c == 'A' {
                'B'
            } else if c.is_ascii_lowercase() || c.is_ascii_digit() {
                'a'
            } else {
                'A'
            }
        })
        .collect()
}

/// A refused answer: `status`, the refusal page, no session cookie set
/// in it and none in the browser.
#[track_caller]
fn assert_refused(what: &str, hops: &[Hop], browser: &CurlBrowser, status: u16) {
    let last = hops.last().unwrap();
    assert_eq!(last.status, status, "{what}: {hops:#?}");
    assert!(
        last.body.starts_with("Sign-in refused: "),
        "{what}: {}",
        last.body
    );
    assert_eq!(
        last.header("cache-control"),
        Some("no-store"),
        "{what}: {last:#?}"
    );
    assert_no_session(what, hops, browser);
}

#[track_caller]
fn assert_no_session(what: &str, hops: &[Hop], browser: &CurlBrowser) {
    for hop in hops {
        assert!(
            hop.set_cookies()
                .iter()
                .all(|c| !c.starts_with(&format!("{REFRESH_COOKIE}="))),
            "{what}: a session cookie was set: {hop:#?}"
        );
    }
    assert_eq!(
        jar_cookie(browser, REFRESH_COOKIE),
        None,
        "{what}: the browser holds a session"
    );
}

/// A sign-in that worked: back to `to` with the session cookie.
#[track_caller]
fn assert_signed_in(what: &str, hops: &[Hop], to: &str) {
    let last = hops.last().unwrap();
    assert_eq!(last.status, 303, "{what}: {hops:#?}");
    assert_eq!(last.location().as_deref(), Some(to), "{what}");
    refresh_token_of(last);
}

async fn members(s: &Setup, token: &str, org: &str) -> Vec<spb::Member> {
    s.app
        .sessions()
        .list_members(bearer(
            token,
            spb::ListMembersRequest {
                organization_id: org.to_string(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .members
}

/// Every `sso.sign_in` event: outcome, target, details.
async fn sso_events(app: &TestApp) -> Vec<(String, Option<String>, Value)> {
    twig_audit::events_with_action(&app.db, "sso.sign_in")
        .await
        .unwrap()
        .into_iter()
        .map(|e| {
            (
                e.outcome,
                e.target,
                serde_json::from_str(&e.details).unwrap(),
            )
        })
        .collect()
}

/// The refusals after authentication: one event each, no count.
async fn audited_refusals(app: &TestApp) -> Vec<Value> {
    sso_events(app)
        .await
        .into_iter()
        .filter(|(outcome, _, d)| outcome == "failure" && d.get("count").is_none())
        .map(|(_, _, d)| d)
        .collect()
}

async fn successes(app: &TestApp) -> Vec<Value> {
    sso_events(app)
        .await
        .into_iter()
        .filter(|(outcome, _, _)| outcome == "success")
        .map(|(_, _, d)| d)
        .collect()
}

/// The refusals before authentication, counted: reason → (total count,
/// targets), once the period they fell in has ended (the clock is moved
/// past it) and the writer has written them, until every `expected`
/// reason has its count (at most 15 s). Exactly `expected` is asserted.
async fn counted_refusals(
    app: &TestApp,
    expected: &[(&str, u64)],
) -> BTreeMap<String, Vec<String>> {
    app.clock.advance(Duration::from_secs(2));
    let deadline = Instant::now() + Duration::from_secs(15);
    let want: BTreeMap<String, u64> = expected.iter().map(|(r, n)| (r.to_string(), *n)).collect();
    loop {
        let mut counts = BTreeMap::<String, u64>::new();
        let mut targets = BTreeMap::<String, Vec<String>>::new();
        for (outcome, target, details) in sso_events(app).await {
            let Some(count) = details.get("count").and_then(Value::as_u64) else {
                continue;
            };
            assert_eq!(outcome, "failure", "{details}");
            let reason = details["reason"].as_str().unwrap().to_string();
            *counts.entry(reason.clone()).or_default() += count;
            targets
                .entry(reason)
                .or_default()
                .push(target.unwrap_or_default());
        }
        let complete = want
            .iter()
            .all(|(r, n)| counts.get(r).copied().unwrap_or(0) >= *n);
        if complete {
            assert_eq!(counts, want, "the counted refusals");
            return targets;
        }
        assert!(
            Instant::now() < deadline,
            "counted refusals: expected {want:?}, audited {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The payload of a compact JWS.
fn jwt_payload(token: &str) -> Value {
    let part = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap(),
    )
    .unwrap()
}

async fn forged_id_tokens_are_refused_and_counted(backend: Backend) {
    let mut s = setup(backend, true).await;
    let (token, org, domain, connection) = organisation(&mut s).await;
    let Some(pb::connection::Protocol::Oidc(oidc)) = &connection.protocol else {
        panic!("an OIDC connection");
    };
    let client_id = oidc.client_id.clone();
    let forgeries = [
        Forgery::AlgNone,
        Forgery::Hs256WithPublicKey,
        Forgery::Hs256WithPublicKeyDer,
        Forgery::UnknownKid,
        Forgery::BadSignature,
        Forgery::WrongIssuer,
        Forgery::WrongAudience,
        Forgery::ExtraAudienceNoAzp,
        Forgery::AzpOther,
        Forgery::NoNonce,
        Forgery::WrongNonce,
        Forgery::Expired,
        Forgery::IssuedInFuture,
        // Besides the forgeries by name: another audience beside ours,
        // even with our azp; an issuer that differs by a trailing slash;
        // a token for another client that names us as azp.
        Forgery::Claims(json!({"aud": [client_id, OTHER_AUDIENCE], "azp": client_id})),
        Forgery::Claims(json!({"iss": format!("{}/", s.idp.issuer())})),
        Forgery::Claims(json!({"aud": OTHER_AUDIENCE, "azp": client_id})),
    ];
    for forgery in forgeries.iter().cloned() {
        s.idp.set_forgery(forgery.clone());
        let tokens_before = s.idp.token_requests();
        let keys_before = s.idp.jwks_fetches();
        let browser = CurlBrowser::new();
        let hops = sign_in(&s.origin, &browser, &connection.start_path).await;
        let what = format!("{forgery:?}");
        assert_refused(&what, &hops, &browser, 403);
        let body = &hops.last().unwrap().body;
        assert!(body.contains("the ID token was refused"), "{what}: {body}");
        // The code was exchanged (the token is what was refused).
        assert_eq!(s.idp.token_requests(), tokens_before + 1, "{what}");
        let refetched = s.idp.jwks_fetches() - keys_before;
        if forgery == Forgery::UnknownKid {
            // An unknown kid fetches the keys again, once, and is still
            // refused.
            assert_eq!(refetched, 1, "{what}: the keys fetched again once");
        } else {
            assert_eq!(refetched, 0, "{what}: no key fetched");
        }
        // The pending sign-in is over.
        assert_eq!(jar_cookie(&browser, PENDING_COOKIE), None, "{what}");
    }
    assert!(successes(&s.app).await.is_empty());
    assert!(audited_refusals(&s.app).await.is_empty());
    assert_eq!(members(&s, &token, &org).await.len(), 1, "the owner only");

    // Counted: one event for the connection, with the count.
    let targets = counted_refusals(&s.app, &[("id_token", forgeries.len() as u64)]).await;
    assert_eq!(
        targets["id_token"],
        vec![format!("connection:{}", connection.id)]
    );

    // The same provider, honest, signs Alice in.
    s.idp.set_forgery(Forgery::Honest);
    let browser = CurlBrowser::new();
    let hops = sign_in(&s.origin, &browser, &connection.start_path).await;
    assert_signed_in("honest", &hops, &return_url(&s.origin));
    let me = whoami(&s.app, &s.origin, &browser).await;
    assert_eq!(me.user.unwrap().email, format!("alice@{domain}"));
    assert_eq!(me.organization_id, org);
    assert_eq!(members(&s, &token, &org).await.len(), 2);
    s.app.stop().await;
}

async fn rotated_keys_are_fetched_again_at_most_once_per_gap(backend: Backend) {
    let mut s = setup(backend, true).await;
    let (_token, _org, _domain, connection) = organisation(&mut s).await;
    // Making the connection fetched the document and the keys.
    assert_eq!(s.idp.discovery_fetches(), 1);
    assert_eq!(s.idp.jwks_fetches(), 1);
    let hops = sign_in(&s.origin, &CurlBrowser::new(), &connection.start_path).await;
    assert_signed_in("before the rotation", &hops, &return_url(&s.origin));
    assert_eq!(s.idp.jwks_fetches(), 1, "the kept keys were used");

    // The provider rotates its key (the old one is gone from its JWKS):
    // the unknown kid fetches the keys again, and the token is accepted.
    s.idp.rotate_key(false);
    let hops = sign_in(&s.origin, &CurlBrowser::new(), &connection.start_path).await;
    assert_signed_in("after the rotation", &hops, &return_url(&s.origin));
    assert_eq!(s.idp.jwks_fetches(), 2, "one fetch for the new kid");

    // Another unknown kid right after: refused without fetching the keys
    // again (at most one fetch per jwks_refresh_gap per provider).
    s.idp.set_forgery(Forgery::UnknownKid);
    let browser = CurlBrowser::new();
    let hops = sign_in(&s.origin, &browser, &connection.start_path).await;
    assert_refused("unknown kid", &hops, &browser, 403);
    assert_eq!(s.idp.jwks_fetches(), 2, "no fetch within the gap");
    // Even a real rotation within the gap waits for it.
    s.idp.set_forgery(Forgery::Honest);
    s.idp.rotate_key(false);
    let browser = CurlBrowser::new();
    let hops = sign_in(&s.origin, &browser, &connection.start_path).await;
    assert_refused("rotated again within the gap", &hops, &browser, 403);
    assert_eq!(s.idp.jwks_fetches(), 2, "no fetch within the gap");
    assert_eq!(successes(&s.app).await.len(), 2);
    counted_refusals(&s.app, &[("id_token", 2)]).await;
    s.app.stop().await;
}

async fn states_codes_cookies_and_nonces_are_bound_and_used_once(backend: Backend) {
    let mut s = setup(backend, true).await;
    let (token, org, _domain, connection) = organisation(&mut s).await;
    let start = connection.start_path.clone();

    // A callback in a browser that started no sign-in: 400.
    let callback = to_callback(&s, &CurlBrowser::new(), &start).await;
    let stranger = CurlBrowser::new();
    let hop = stranger.get(&callback).await;
    assert_refused("no pending cookie", &[hop], &stranger, 400);

    // A state that is not the one of this browser's sign-in.
    let browser = CurlBrowser::new();
    let callback = to_callback(&s, &browser, &start).await;
    let other_state = to_callback(&s, &CurlBrowser::new(), &start).await;
    let swapped = with_param(&callback, "state", &param(&other_state, "state"));
    let hop = browser.get(&swapped).await;
    assert_refused("state mismatch", std::slice::from_ref(&hop), &browser, 400);
    assert!(
        hop.set_cookies()
            .iter()
            .any(|c| c.starts_with(&format!("{PENDING_COOKIE}=;"))),
        "the pending sign-in is cleared: {hop:#?}"
    );
    assert_eq!(s.idp.token_requests(), 0, "no code was exchanged yet");

    // A sign-in that works, its cookie copied into a second browser
    // first (an attacker who captured both).
    let alice = CurlBrowser::new();
    let callback = to_callback(&s, &alice, &start).await;
    let thief = CurlBrowser::new();
    std::fs::copy(alice.jar(), thief.jar()).unwrap();
    let hop = alice.get(&callback).await;
    assert_signed_in("alice", std::slice::from_ref(&hop), &return_url(&s.origin));
    assert_eq!(jar_cookie(&alice, PENDING_COOKIE), None, "cleared");
    let used_code = param(&callback, "code");
    // The same callback again in the same browser: its sign-in is over.
    let again = alice.get(&callback).await;
    assert_eq!(again.status, 400, "{again:#?}");
    assert!(
        again
            .set_cookies()
            .iter()
            .all(|c| !c.starts_with(&format!("{REFRESH_COOKIE}="))),
        "{again:#?}"
    );
    // With the captured cookie: the state was used once.
    let replayed = thief.get(&callback).await;
    assert_refused(
        "replayed state",
        std::slice::from_ref(&replayed),
        &thief,
        400,
    );
    assert!(replayed.body.contains("already used"), "{}", replayed.body);
    assert_eq!(s.idp.token_requests(), 1, "the replay exchanged nothing");
    assert_eq!(successes(&s.app).await.len(), 1, "one session only");

    // An honest token of that sign-in, replayed into a new one (its
    // nonce is the earlier sign-in's): refused.
    let earlier = s.idp.last_id_token().unwrap();
    let claims = jwt_payload(&earlier);
    s.idp.set_forgery(Forgery::Claims(claims));
    let browser = CurlBrowser::new();
    let hops = sign_in(&s.origin, &browser, &start).await;
    assert_refused("replayed ID token", &hops, &browser, 403);
    assert!(
        hops.last()
            .unwrap()
            .body
            .contains("the ID token was refused"),
        "{}",
        hops.last().unwrap().body
    );
    s.idp.set_forgery(Forgery::Honest);

    // A code used before, in a new sign-in of its own: the provider
    // refuses it.
    let browser = CurlBrowser::new();
    let callback = to_callback(&s, &browser, &start).await;
    let hop = browser
        .get(&with_param(&callback, "code", &used_code))
        .await;
    assert_refused("code used twice", std::slice::from_ref(&hop), &browser, 403);
    assert!(
        hop.body.contains("the identity provider refused the code"),
        "{}",
        hop.body
    );

    // A callback without a code.
    let browser = CurlBrowser::new();
    let callback = to_callback(&s, &browser, &start).await;
    let no_code = format!(
        "{}/sso/oidc/callback?state={}",
        s.origin,
        encode(&param(&callback, "state"))
    );
    let hop = browser.get(&no_code).await;
    assert_refused("no code", &[hop], &browser, 400);

    // A sign-in that took longer than sign_in_timeout (10 minutes).
    let browser = CurlBrowser::new();
    let callback = to_callback(&s, &browser, &start).await;
    s.app.clock.advance(Duration::from_secs(601));
    let hop = browser.get(&callback).await;
    assert_refused("expired", &[hop], &browser, 400);

    // The provider answers an error (the person declined).
    let browser = CurlBrowser::new();
    let callback = to_callback(&s, &browser, &start).await;
    let denied = format!(
        "{}/sso/oidc/callback?error=access_denied&state={}",
        s.origin,
        encode(&param(&callback, "state"))
    );
    let hop = browser.get(&denied).await;
    assert_refused("idp error", std::slice::from_ref(&hop), &browser, 403);
    assert!(hop.body.contains("access_denied"), "{}", hop.body);

    // A pending cookie changed by one character (in the sealed part, in
    // the organisation or the connection it names): not readable.
    // Where in the cookie's value a character is changed.
    type Position = fn(&str) -> usize;
    let tamperings: [(&str, Position); 3] = [
        ("sealed part", |v| v.len() - 20),
        ("organisation", |_| 3),
        ("connection", |v| v.find('.').unwrap() + 15),
    ];
    for (what, position) in tamperings {
        let browser = CurlBrowser::new();
        let callback = to_callback(&s, &browser, &start).await;
        edit_jar_cookie(&browser, PENDING_COOKIE, |v| flip_char(v, position(v)));
        let hop = browser.get(&callback).await;
        assert_refused(what, &[hop], &browser, 400);
    }

    assert_eq!(successes(&s.app).await.len(), 1);
    assert!(audited_refusals(&s.app).await.is_empty());
    assert_eq!(members(&s, &token, &org).await.len(), 2, "owner and Alice");
    counted_refusals(
        &s.app,
        &[
            ("no_pending_sign_in", 2),
            ("state_mismatch", 1),
            ("replayed", 1),
            ("id_token", 1),
            ("code_exchange", 1),
            ("idp_error", 1),
            ("bad_cookie", 3),
            ("no_code", 1),
            ("sign_in_expired", 1),
        ],
    )
    .await;
    s.app.stop().await;
}

async fn pkce_binds_the_code_to_the_browser_that_started(backend: Backend) {
    let mut s = setup(backend, true).await;
    let (_token, _org, _domain, connection) = organisation(&mut s).await;
    let start = connection.start_path.clone();

    // Every start sends an S256 challenge (and a state and a nonce).
    let mut challenges = Vec::new();
    for _ in 0..2 {
        let browser = CurlBrowser::new();
        let hop = browser.get(&format!("{}{start}", s.origin)).await;
        assert_eq!(hop.status, 303, "{hop:#?}");
        let sent = query(&hop.location().unwrap());
        let get = |name: &str| {
            sent.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("no {name} in {sent:?}"))
        };
        assert_eq!(get("code_challenge_method"), "S256");
        let challenge = get("code_challenge");
        assert_eq!(challenge.len(), 43, "a SHA-256, base64url: {challenge}");
        assert!(!get("state").is_empty() && !get("nonce").is_empty());
        challenges.push(challenge);
    }
    assert_ne!(challenges[0], challenges[1], "a verifier per sign-in");
    // The provider saw the same (the browser went there).
    let browser = CurlBrowser::new();
    let callback = to_callback(&s, &browser, &start).await;
    let asked = s.idp.last_authorization().unwrap();
    assert!(
        asked
            .iter()
            .any(|(k, v)| k == "code_challenge_method" && v == "S256")
    );
    assert!(
        asked
            .iter()
            .any(|(k, v)| k == "code_challenge" && v.len() == 43)
    );
    // With its own verifier, the exchange works (the provider checks it).
    let hop = browser.get(&callback).await;
    assert_signed_in("own verifier", &[hop], &return_url(&s.origin));

    // A code from a sign-in another browser started, brought into this
    // browser's sign-in: this browser's verifier does not match the
    // challenge the code was issued for.
    let victim = CurlBrowser::new();
    let victims_callback = to_callback(&s, &victim, &start).await;
    let attacker = CurlBrowser::new();
    let attackers_callback = to_callback(&s, &attacker, &start).await;
    let before = s.idp.token_requests();
    let hop = attacker
        .get(&with_param(
            &attackers_callback,
            "code",
            &param(&victims_callback, "code"),
        ))
        .await;
    assert_refused(
        "another verifier",
        std::slice::from_ref(&hop),
        &attacker,
        403,
    );
    assert!(hop.body.contains("invalid_grant"), "{}", hop.body);
    assert_eq!(
        s.idp.token_requests(),
        before + 1,
        "the provider refused it"
    );
    // The provider spent that code: the victim's own callback fails too
    // (one exchange per code).
    let hop = victim.get(&victims_callback).await;
    assert_refused("spent code", std::slice::from_ref(&hop), &victim, 403);
    assert_eq!(s.idp.token_requests(), before + 2);
    assert_eq!(successes(&s.app).await.len(), 1);
    counted_refusals(&s.app, &[("code_exchange", 2)]).await;
    s.app.stop().await;
}

async fn connections_list(s: &Setup, token: &str) -> Vec<pb::Connection> {
    s.app
        .sso()
        .list_connections(bearer(token, pb::ListConnectionsRequest {}))
        .await
        .unwrap()
        .into_inner()
        .connections
}

/// `CreateConnection` to `issuer` is refused with FAILED_PRECONDITION,
/// saying each of `mentions`.
async fn refused_create(s: &Setup, token: &str, issuer: &str, what: &str, mentions: &[&str]) {
    let refused = create(s, token, issuer, None, &[]).await.unwrap_err();
    assert_eq!(
        refused.code(),
        Code::FailedPrecondition,
        "{what}: {refused:?}"
    );
    for mention in mentions {
        assert!(
            refused.message().contains(mention),
            "{what}: {}",
            refused.message()
        );
    }
}

async fn discovery_and_keys_never_reach_private_addresses(backend: Backend) {
    // Without allow_networks: loopback is refused like any private
    // address, before any request leaves.
    let s = setup(backend, false).await;
    let (token, _) = owner(&s.app).await;
    let port = s.idp.addr().port();
    for (issuer, code, mentions) in [
        (s.idp.issuer(), Code::FailedPrecondition, "127.0.0.1"),
        (
            format!("http://localhost:{port}"),
            Code::FailedPrecondition,
            "127.0.0.1",
        ),
        (
            "https://169.254.169.254".into(),
            Code::FailedPrecondition,
            "169.254.169.254",
        ),
        (
            "https://10.0.0.1".into(),
            Code::FailedPrecondition,
            "10.0.0.1",
        ),
        ("https://[::1]".into(), Code::FailedPrecondition, "::1"),
        (
            "https://localhost".into(),
            Code::FailedPrecondition,
            "localhost",
        ),
        // 127.0.0.1 and 169.254.169.254 written otherwise.
        (
            "https://2130706433".into(),
            Code::FailedPrecondition,
            "127.0.0.1",
        ),
        (
            "https://0x7f.1".into(),
            Code::FailedPrecondition,
            "127.0.0.1",
        ),
        (
            "https://[::ffff:a9fe:a9fe]".into(),
            Code::FailedPrecondition,
            "refused",
        ),
        // The issuer rule refuses plain http to anything but loopback.
        (
            "http://169.254.169.254".into(),
            Code::InvalidArgument,
            "https",
        ),
        ("http://10.0.0.1".into(), Code::InvalidArgument, "https"),
    ] {
        let refused = create(&s, &token, &issuer, None, &[]).await.unwrap_err();
        assert_eq!(refused.code(), code, "{issuer}: {refused:?}");
        assert!(
            refused.message().contains(mentions),
            "{issuer}: {}",
            refused.message()
        );
        if code == Code::FailedPrecondition {
            assert!(
                refused.message().contains("refused"),
                "{issuer}: {}",
                refused.message()
            );
        }
    }
    assert_eq!(s.idp.discovery_fetches(), 0, "nothing reached the provider");
    assert!(
        connections_list(&s, &token).await.is_empty(),
        "nothing stored"
    );
    s.app.stop().await;

    // With 127.0.0.1/32 allowed (where the provider is): its redirects
    // are not followed, and the addresses it names are checked too.
    let mut s = setup(backend, true).await;
    let (token, _) = owner(&s.app).await;
    let issuer = s.idp.issuer();
    s.idp
        .redirect_discovery_to(Some("http://169.254.169.254/latest/meta-data/".into()));
    refused_create(&s, &token, &issuer, "discovery redirected", &["redirect"]).await;
    assert_eq!(s.idp.discovery_fetches(), 1);
    assert_eq!(s.idp.jwks_fetches(), 0);
    s.idp.redirect_discovery_to(None);

    for jwks_uri in [
        "http://10.0.0.1/jwks",
        "http://169.254.169.254/latest/meta-data",
    ] {
        s.idp.override_jwks_uri(Some(jwks_uri.into()));
        let host = jwks_uri.split('/').nth(2).unwrap();
        let mentions = [&format!("refused to connect to {host}")[..]];
        refused_create(&s, &token, &issuer, jwks_uri, &mentions).await;
    }
    s.idp.override_jwks_uri(None);
    assert_eq!(s.idp.jwks_fetches(), 0);

    s.idp
        .redirect_jwks_to(Some("http://169.254.169.254/latest/meta-data/iam".into()));
    refused_create(&s, &token, &issuer, "jwks redirected", &["redirect"]).await;
    assert_eq!(s.idp.jwks_fetches(), 1);
    s.idp.redirect_jwks_to(None);

    s.idp
        .override_discovery("issuer", Some(json!(WRONG_ISSUER)));
    refused_create(&s, &token, &issuer, "another issuer", &["names issuer"]).await;
    s.idp.override_discovery("issuer", None);
    assert!(
        connections_list(&s, &token).await.is_empty(),
        "nothing stored"
    );

    // Its token endpoint moved to the metadata service: the endpoints a
    // sign-in would call pass the outbound rules when the connection is
    // made, so it is refused then, and nothing is ever sent there.
    s.idp.override_discovery(
        "token_endpoint",
        Some(json!("http://169.254.169.254/latest/meta-data/iam/token")),
    );
    let domain = proved_domain(&s.app, &mut s.dns, &token, "acme").await;
    let refused = create(&s, &token, &issuer, None, &[&domain])
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains("169.254.169.254"),
        "{}",
        refused.message()
    );
    assert!(
        connections_list(&s, &token).await.is_empty(),
        "nothing stored"
    );
    assert_eq!(s.idp.token_requests(), 0);
    // Every refused provider is in the organisation's audit log, with why.
    let refused = twig_audit::events_with_action(&s.app.db, "sso.connection_refused")
        .await
        .unwrap();
    assert!(!refused.is_empty());
    assert!(refused.iter().all(|e| e.outcome == "failure"));
    let reasons: Vec<Value> = refused
        .iter()
        .map(|e| serde_json::from_str::<Value>(&e.details).unwrap()["reason"].clone())
        .collect();
    assert!(reasons.contains(&json!("idp_unreachable")), "{reasons:?}");
    assert!(reasons.contains(&json!("idp_metadata")), "{reasons:?}");
    s.app.stop().await;
}

async fn return_urls_outside_the_allowlist_are_refused(backend: Backend) {
    let mut s = setup(backend, true).await;
    let (_token, _org, _domain, connection) = organisation(&mut s).await;
    let origin = s.origin.clone();
    let host_port = origin.trim_start_matches("http://").to_string();
    let port: u16 = host_port.rsplit(':').next().unwrap().parse().unwrap();
    let bad = [
        "//evil.example".to_string(),
        "/\\evil.example".into(),
        "\\\\evil.example".into(),
        "https:evil.example".into(),
        "http:evil.example".into(),
        "http:/evil.example/app/".into(),
        "javascript:alert(1)".into(),
        "data:text/html,<script>alert(1)</script>".into(),
        "https://evil.example/".into(),
        "/app/".into(),
        format!("{origin}.evil.example/app/"),
        format!("http://127.0.0.1.evil.example:{port}/app/"),
        format!("http://user@{host_port}/app/"),
        format!("http://user:pw@{host_port}/app/"),
        format!("http://{host_port}@evil.example/app/"),
        format!("https://evil.example/{origin}/app/"),
        format!("https://evil.example#@{host_port}/app/"),
        format!("{origin}/app/\\@evil.example"),
        format!("http:\\\\{host_port}\\app\\"),
        format!("{origin}\\app\\"),
        format!("http://127.0.0.1:{}/app/", port.wrapping_add(1)),
        format!("https://{host_port}/app/"),
        format!("http://localhost:{port}/app/"),
        format!("http://[::1]:{port}/app/"),
        format!("{origin}/"),
        format!("{origin}/app"),
        format!("{origin}/other/"),
        format!("{origin}/app/../admin"),
        format!("{origin}/app/%2e%2e/admin"),
        format!("{origin}/app/.%2E/admin"),
        format!("{origin}/app/%2E./admin"),
        format!("{origin}/app/#fragment"),
        format!("{origin}/app/\r\nSet-Cookie: x=y"),
        format!("{origin}/app/ x"),
        format!(" {origin}/app/"),
        format!("{origin}/app/{}", "a".repeat(3000)),
    ];
    for target in &bad {
        let browser = CurlBrowser::new();
        let url = format!(
            "{origin}{}&return_to={}",
            connection.start_path,
            encode(target)
        );
        let hop = browser.get(&url).await;
        assert_eq!(hop.status, 400, "{target:?}: {hop:#?}");
        assert!(
            hop.body
                .contains("return URL is not one of the allowed ones"),
            "{target:?}: {}",
            hop.body
        );
        assert!(hop.header("location").is_none(), "{target:?}: {hop:#?}");
        assert!(
            hop.set_cookies().is_empty(),
            "{target:?}: no cookie set: {hop:#?}"
        );
        assert_eq!(jar_cookie(&browser, PENDING_COOKIE), None, "{target:?}");
    }
    assert_eq!(
        s.idp.discovery_fetches(),
        1,
        "only when the connection was made"
    );

    // Allowed: under the entry, query kept; the browser lands there.
    for good in [
        format!("{origin}/app/x"),
        format!("{origin}/app/x/y?tab=keys"),
    ] {
        let browser = CurlBrowser::new();
        let url = format!(
            "{origin}{}&return_to={}",
            connection.start_path,
            encode(&good)
        );
        let hops = browser
            .follow(&url, |next| next.starts_with(&format!("{origin}/app/")), 10)
            .await;
        assert_eq!(hops[0].status, 303, "{good}: {hops:#?}");
        assert!(
            hops[0]
                .location()
                .unwrap()
                .starts_with(&format!("{}/authorize?", s.idp.issuer())),
            "{good}: {hops:#?}"
        );
        assert!(
            hops[0]
                .set_cookies()
                .iter()
                .any(|c| c.starts_with(&format!("{PENDING_COOKIE}="))),
            "{good}: {hops:#?}"
        );
        assert_signed_in(&good, &hops, &good);
    }
    // Each refused return URL is counted, with a few of them as samples.
    let targets = counted_refusals(&s.app, &[("bad_return_url", bad.len() as u64)]).await;
    assert!(
        targets["bad_return_url"].iter().all(String::is_empty),
        "no connection: {targets:?}"
    );
    assert!(audited_refusals(&s.app).await.is_empty());
    s.app.stop().await;
}

async fn a_provider_cannot_take_over_an_account_of_another_domain(backend: Backend) {
    let mut s = setup(backend, true).await;
    let (token, org, domain, connection) = organisation(&mut s).await;
    // Another organisation proves a domain; a victim has an account there.
    let (other_token, other_org) = owner(&s.app).await;
    let theirs = proved_domain(&s.app, &mut s.dns, &other_token, "theirs").await;
    let victim = format!("victim@{theirs}");
    s.app.sign_up(&victim).await;
    let unproved = format!("unproved-{}.test", uuid::Uuid::new_v4().simple());

    let cases = [
        (json!({"email": victim.clone()}), "domain_not_proved"),
        (json!({"email": victim.to_uppercase()}), "domain_not_proved"),
        (
            json!({"email": format!("someone@{unproved}")}),
            "domain_not_proved",
        ),
        (
            json!({"email": format!("eve@{domain}.evil.test")}),
            "domain_not_proved",
        ),
        (
            json!({"email": format!("eve@sub.{domain}")}),
            "domain_not_proved",
        ),
        (
            json!({"email": format!("alice@{domain}"), "email_verified": false}),
            "email_unverified",
        ),
        (
            json!({"email": format!("alice@{domain}"), "email_verified": "false"}),
            "email_unverified",
        ),
        (
            json!({"email": victim.clone(), "email_verified": false}),
            "email_unverified",
        ),
        // Addresses that might parse as one of the proved domain.
        (
            json!({"email": format!("alice@{domain}@evil.test")}),
            "bad_email",
        ),
        (
            json!({"email": format!("\"alice@{domain}\"@evil.test")}),
            "bad_email",
        ),
        (
            json!({"email": format!("eve@evil.test,alice@{domain}")}),
            "bad_email",
        ),
        (json!({"email": format!("{victim}.")}), "bad_email"),
    ];
    // Each with the admins group, which maps to ADMIN.
    for (claims, _) in &cases {
        let mut claims = claims.clone();
        claims["groups"] = json!(["admins"]);
        claims["sub"] = json!(format!("u-{}", uuid::Uuid::new_v4().simple()));
        s.idp.set_forgery(Forgery::Claims(claims.clone()));
        let browser = CurlBrowser::new();
        let hops = sign_in(&s.origin, &browser, &connection.start_path).await;
        assert_refused(&claims.to_string(), &hops, &browser, 403);
    }
    let refusals = audited_refusals(&s.app).await;
    let reasons: Vec<&str> = refusals
        .iter()
        .map(|d| d["reason"].as_str().unwrap())
        .collect();
    let expected: Vec<&str> = cases.iter().map(|(_, r)| *r).collect();
    assert_eq!(reasons, expected, "{refusals:#?}");
    for (details, (claims, _)) in refusals.iter().zip(&cases) {
        if claims["email"].is_string() {
            assert_eq!(details["email"], claims["email"], "{details}");
        }
        assert_eq!(details["connection"], json!(connection.id));
    }
    assert!(successes(&s.app).await.is_empty());
    // An email claim that is not a string: the token response does not
    // even parse (openidconnect reads the ID token's claims with it), so
    // it is counted before anyone is authenticated, as a refused token.
    // So is an email_verified that is neither a boolean nor a string.
    let alice = format!("alice@{domain}");
    let unreadable = [
        json!({"email": [alice.clone()]}),
        json!({"email": alice.clone(), "email_verified": 0}),
        json!({"email": alice.clone(), "email_verified": [false]}),
        json!({"email": alice.clone(), "email_verified": {}}),
    ];
    for mut claims in unreadable.clone() {
        claims["groups"] = json!(["admins"]);
        s.idp.set_forgery(Forgery::Claims(claims.clone()));
        let browser = CurlBrowser::new();
        let hops = sign_in(&s.origin, &browser, &connection.start_path).await;
        assert_refused(&claims.to_string(), &hops, &browser, 403);
    }
    counted_refusals(&s.app, &[("id_token", unreadable.len() as u64)]).await;

    // A domain this organisation proved and served, then released, and
    // that the other organisation has proved since: no longer served.
    let released = proved_domain(&s.app, &mut s.dns, &token, "released").await;
    let spec = |domains: Vec<String>| pb::ConnectionSpec {
        name: connection.name.clone(),
        protocol: connection.protocol.clone().map(|p| match p {
            pb::connection::Protocol::Oidc(o) => pb::connection_spec::Protocol::Oidc(o),
        }),
        mapping: connection.mapping.clone(),
        pilot: connection.pilot.clone(),
        domains,
    };
    let serving = s
        .app
        .sso()
        .update_connection(bearer(
            &token,
            pb::UpdateConnectionRequest {
                connection_id: connection.id.clone(),
                connection: Some(spec(vec![domain.clone(), released.clone()])),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .connection
        .unwrap();
    assert_eq!(serving.domains.len(), 2);
    let claim = s
        .app
        .sso()
        .list_domains(bearer(&token, pb::ListDomainsRequest {}))
        .await
        .unwrap()
        .into_inner()
        .domains
        .into_iter()
        .find(|d| d.domain == released)
        .unwrap();
    s.app
        .sso()
        .delete_domain(bearer(
            &token,
            pb::DeleteDomainRequest {
                domain_id: claim.id,
            },
        ))
        .await
        .unwrap();
    prove(&s.app, &mut s.dns, &other_token, &released).await;
    let taken_over = format!("ceo@{released}");
    s.app.sign_up(&taken_over).await;
    s.idp.set_forgery(Forgery::Claims(
        json!({"email": taken_over, "groups": ["admins"]}),
    ));
    let browser = CurlBrowser::new();
    let hops = sign_in(&s.origin, &browser, &connection.start_path).await;
    assert_refused("released domain", &hops, &browser, 403);
    let last = audited_refusals(&s.app).await.pop().unwrap();
    assert_eq!(last["reason"], "domain_not_proved", "{last}");
    assert_eq!(last["email"], json!(taken_over));
    s.app.login(&taken_over).await;

    // No account was joined to this organisation, none to the other.
    assert_eq!(members(&s, &token, &org).await.len(), 1, "the owner only");
    let theirs_members = members(&s, &other_token, &other_org).await;
    assert_eq!(theirs_members.len(), 1, "{theirs_members:?}");
    // The victim keeps their password and their one membership.
    let victims = s.app.login(&victim).await;
    let me = s
        .app
        .sessions()
        .get_current_user(bearer(&victims.access_token, spb::GetCurrentUserRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(me.memberships.len(), 1, "{:?}", me.memberships);
    assert_ne!(me.organization_id, org);
    // A password login with that password still works for the victim.
    s.app
        .sessions()
        .login(spb::LoginRequest {
            email: victim.clone(),
            password: PASSWORD.into(),
            organization_id: String::new(),
        })
        .await
        .unwrap();
    // Nobody was made for the unproved address.
    let nobody = s
        .app
        .sessions()
        .login(spb::LoginRequest {
            email: format!("someone@{unproved}"),
            password: PASSWORD.into(),
            organization_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(nobody.code(), Code::Unauthenticated, "{nobody:?}");
    s.app.stop().await;
}

async fn google_workspace_tokens_must_name_the_tenant(backend: Backend) {
    let mut s = setup(backend, true).await;
    let (token, org) = owner(&s.app).await;
    let domain = proved_domain(&s.app, &mut s.dns, &token, "workspace").await;
    let connection = enforced(&s, &token, Some(&domain), &domain).await;
    let Some(pb::connection::Protocol::Oidc(oidc)) = &connection.protocol else {
        panic!("an OIDC connection");
    };
    assert_eq!(oidc.preset, pb::OidcPreset::GoogleWorkspace as i32);
    assert_eq!(oidc.issuer, s.idp.issuer(), "the configured Google issuer");
    s.idp
        .set_user(json!({"sub": "g1", "email": format!("alice@{domain}"),
        "email_verified": true}));

    for hd in [
        Value::Null,
        json!("other-workspace.test"),
        json!(format!("{domain}.evil.test")),
        json!(format!("sub.{domain}")),
        json!([domain.clone()]),
        json!(""),
    ] {
        s.idp.set_forgery(Forgery::Claims(json!({ "hd": hd })));
        let browser = CurlBrowser::new();
        let hops = sign_in(&s.origin, &browser, &connection.start_path).await;
        assert_refused(&format!("hd {hd}"), &hops, &browser, 403);
    }
    let refusals = audited_refusals(&s.app).await;
    assert_eq!(refusals.len(), 6, "{refusals:#?}");
    assert!(
        refusals.iter().all(|d| d["reason"] == "wrong_tenant"),
        "{refusals:#?}"
    );
    assert_eq!(members(&s, &token, &org).await.len(), 1);

    s.idp
        .set_forgery(Forgery::Claims(json!({ "hd": domain.to_uppercase() })));
    let browser = CurlBrowser::new();
    let hops = sign_in(&s.origin, &browser, &connection.start_path).await;
    assert_signed_in("the tenant's hd", &hops, &return_url(&s.origin));
    let me = whoami(&s.app, &s.origin, &browser).await;
    assert_eq!(me.user.unwrap().email, format!("alice@{domain}"));
    assert_eq!(me.organization_id, org);
    assert_eq!(successes(&s.app).await.len(), 1);
    s.app.stop().await;
}

on_both_backends!(
    forged_id_tokens_are_refused_and_counted,
    rotated_keys_are_fetched_again_at_most_once_per_gap,
    states_codes_cookies_and_nonces_are_bound_and_used_once,
    pkce_binds_the_code_to_the_browser_that_started,
    discovery_and_keys_never_reach_private_addresses,
    return_urls_outside_the_allowlist_are_refused,
    a_provider_cannot_take_over_an_account_of_another_domain,
    google_workspace_tokens_must_name_the_tenant,
);
