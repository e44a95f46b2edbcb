//! A hostile OpenID Connect provider for the single sign-on attack tests:
//! a real HTTP server on 127.0.0.1 port 0 that plays an honest provider
//! (discovery, JWKS, authorization code flow with PKCE S256,
//! `client_secret_basic` or `client_secret_post` at the token endpoint)
//! until a test tells it to forge its ID tokens in one of the ways of
//! [`Forgery`], so that the relying party's refusals can be tested.
//!
//! Paths under the issuer `http://127.0.0.1:<port>`:
//! `/.well-known/openid-configuration`, `/jwks`, `/authorize` (GET),
//! `/token` (POST, form) and `/userinfo` (GET or POST, Bearer).
//!
//! Its RSA keys are generated when it starts (and when rotated): none is
//! ever written down.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use rsa::pkcs8::{EncodePublicKey, LineEnding};
use rsa::rand_core::{OsRng, RngCore};
use rsa::sha2::{Digest, Sha256};
use rsa::traits::PublicKeyParts;
use rsa::{Pkcs1v15Sign, RsaPrivateKey};
use serde_json::{Map, Value, json};
use tokio::task::JoinHandle;
use twig_clock::{Clock, SystemClock};

/// The audience, or authorized party, that is not the client in the
/// forgeries that name one ([`Forgery::WrongAudience`],
/// [`Forgery::ExtraAudienceNoAzp`], [`Forgery::AzpOther`]).
pub const OTHER_AUDIENCE: &str = "someone-else";

/// The `iss` of [`Forgery::WrongIssuer`] tokens.
pub const WRONG_ISSUER: &str = "https://issuer.attacker.test";

/// Lifetime of honest ID tokens and of access tokens, in seconds.
pub const TOKEN_LIFETIME_SECS: i64 = 300;

/// How the ID tokens of the next token responses are made. Every forgery
/// starts from the honest token of the authorization (right issuer,
/// audience, nonce, times and signature) and changes only what it names.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Forgery {
    /// Header `{"alg":"RS256","kid":<current>,"typ":"JWT"}`, signed with
    /// the current key.
    #[default]
    Honest,
    /// Header `{"alg":"none"}`, empty signature (`<header>.<payload>.`).
    AlgNone,
    /// Header `alg` HS256 (kid the current key's), HMAC-SHA256 keyed with
    /// the PEM text of the current key's SPKI public key (`-----BEGIN
    /// PUBLIC KEY-----`, 64-column lines, LF line ends, final LF): the
    /// classic algorithm-confusion attack on verifiers that feed "the key"
    /// to whatever `alg` says.
    Hs256WithPublicKey,
    /// As [`Forgery::Hs256WithPublicKey`], keyed with the DER bytes of the
    /// SPKI public key instead of its PEM text.
    Hs256WithPublicKeyDer,
    /// RS256, signed with a key that is never published, under a kid no
    /// JWKS of this provider ever lists.
    UnknownKid,
    /// The honest token with the last four bytes of its signature flipped.
    BadSignature,
    /// `iss` is [`WRONG_ISSUER`].
    WrongIssuer,
    /// `aud` is [`OTHER_AUDIENCE`].
    WrongAudience,
    /// `aud` is `[client_id, OTHER_AUDIENCE]`, and no `azp`.
    ExtraAudienceNoAzp,
    /// `aud` is the client id, `azp` is [`OTHER_AUDIENCE`].
    AzpOther,
    /// No `nonce` claim.
    NoNonce,
    /// `nonce` is a random value, not the authorization's.
    WrongNonce,
    /// `exp` an hour ago, `iat` five minutes before that.
    Expired,
    /// `iat` an hour ahead, `exp` five minutes after that.
    IssuedInFuture,
    /// Honest signature; these claims (an object) merged over the honest
    /// token's claims, the standard ones included (`iss`, `aud`, `exp`,
    /// `iat`, `nonce`, `azp` can be set this way too). A claim given as
    /// JSON `null` is removed from the token.
    Claims(Value),
}

/// An RSA 2048 signing key and its kid.
struct SigningKey {
    kid: String,
    key: RsaPrivateKey,
}

impl SigningKey {
    fn generate() -> Self {
        let key = RsaPrivateKey::new(&mut OsRng, 2048).expect("RSA 2048 key generation");
        Self {
            kid: random_token(12),
            key,
        }
    }

    fn jwk(&self) -> Value {
        let public = self.key.to_public_key();
        json!({
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": self.kid,
            "n": URL_SAFE_NO_PAD.encode(public.n().to_bytes_be()),
            "e": URL_SAFE_NO_PAD.encode(public.e().to_bytes_be()),
        })
    }

    /// RSASSA-PKCS1-v1_5 with SHA-256.
    fn sign_rs256(&self, input: &[u8]) -> Vec<u8> {
        let digest = Sha256::digest(input);
        self.key
            .sign(Pkcs1v15Sign::new::<Sha256>(), &digest)
            .expect("RS256 signature")
    }

    fn public_pem(&self) -> String {
        self.key
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .expect("SPKI PEM")
    }

    fn public_der(&self) -> Vec<u8> {
        self.key
            .to_public_key()
            .to_public_key_der()
            .expect("SPKI DER")
            .into_vec()
    }
}

/// The registered client.
#[derive(Clone, Debug)]
struct Client {
    id: String,
    secret: String,
    redirect_uri: String,
}

/// What an authorization code stands for.
struct Grant {
    client_id: String,
    redirect_uri: String,
    code_challenge: String,
    nonce: Option<String>,
    claims: Map<String, Value>,
    used: bool,
}

struct Settings {
    client: Option<Client>,
    user: Map<String, Value>,
    forgery: Forgery,
    current: Arc<SigningKey>,
    /// Earlier keys still published (`rotate_key(true)`).
    retired: Vec<Arc<SigningKey>>,
    /// The never-published key of [`Forgery::UnknownKid`].
    rogue: Option<Arc<SigningKey>>,
    publish_current: bool,
    grants: HashMap<String, Grant>,
    access_tokens: HashMap<String, Map<String, Value>>,
    last_id_token: Option<String>,
    last_authorization: Option<Vec<(String, String)>>,
    discovery_redirect: Option<String>,
    jwks_redirect: Option<String>,
    discovery_overrides: Map<String, Value>,
    clock: Arc<dyn Clock>,
}

struct Shared {
    issuer: String,
    discovery_fetches: AtomicUsize,
    jwks_fetches: AtomicUsize,
    token_requests: AtomicUsize,
    settings: Mutex<Settings>,
}

impl Shared {
    fn settings(&self) -> MutexGuard<'_, Settings> {
        self.settings.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The running provider; the server stops when it is dropped.
pub struct ForgingIdp {
    shared: Arc<Shared>,
    addr: SocketAddr,
    server: JoinHandle<()>,
}

impl Drop for ForgingIdp {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl ForgingIdp {
    /// Starts on 127.0.0.1:0 with a fresh RSA 2048 key (kid random),
    /// issuer `http://127.0.0.1:<port>`. No client is registered yet
    /// ([`ForgingIdp::set_client`]); the user is a default one
    /// ([`ForgingIdp::set_user`]); tokens are honest; time is the system
    /// clock's ([`ForgingIdp::set_clock`]).
    pub async fn start() -> Self {
        let key = tokio::task::spawn_blocking(SigningKey::generate)
            .await
            .expect("key generation task");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let user = json!({
            "sub": "forging-idp-user",
            "email": "user@forging-idp.test",
            "email_verified": true,
            "name": "Forging IdP User",
        });
        let shared = Arc::new(Shared {
            issuer: format!("http://{addr}"),
            discovery_fetches: AtomicUsize::new(0),
            jwks_fetches: AtomicUsize::new(0),
            token_requests: AtomicUsize::new(0),
            settings: Mutex::new(Settings {
                client: None,
                user: as_object(user),
                forgery: Forgery::Honest,
                current: Arc::new(key),
                retired: Vec::new(),
                rogue: None,
                publish_current: true,
                grants: HashMap::new(),
                access_tokens: HashMap::new(),
                last_id_token: None,
                last_authorization: None,
                discovery_redirect: None,
                jwks_redirect: None,
                discovery_overrides: Map::new(),
                clock: Arc::new(SystemClock),
            }),
        });
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/authorize", get(authorize))
            .route("/token", axum::routing::post(token))
            .route("/userinfo", get(userinfo).post(userinfo))
            .with_state(shared.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            shared,
            addr,
            server,
        }
    }

    /// `http://127.0.0.1:<port>`, no trailing slash.
    pub fn issuer(&self) -> String {
        self.shared.issuer.clone()
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The one client it knows (the test registers it on the relying
    /// party too); replaces the earlier one.
    pub fn set_client(&self, client_id: &str, client_secret: &str, redirect_uri: &str) {
        self.shared.settings().client = Some(Client {
            id: client_id.to_owned(),
            secret: client_secret.to_owned(),
            redirect_uri: redirect_uri.to_owned(),
        });
    }

    /// The claims (an object: `sub`, `email`, `email_verified`, `name`,
    /// `groups`, any others) of the user who "logs in" on the next
    /// authorizations; each authorization keeps the claims of its moment.
    /// They go into every ID token (and the userinfo answer); `iss`,
    /// `aud`, `exp`, `iat` and `nonce` among them are overridden by the
    /// honest values (use [`Forgery::Claims`] to forge those).
    pub fn set_user(&self, claims: Value) {
        self.shared.settings().user = as_object(claims);
    }

    /// How the next token responses are forged (stays until changed).
    /// [`Forgery::UnknownKid`] generates its never-published key here,
    /// the first time.
    pub fn set_forgery(&self, forgery: Forgery) {
        let need_rogue = forgery == Forgery::UnknownKid && self.shared.settings().rogue.is_none();
        let rogue = need_rogue.then(|| Arc::new(SigningKey::generate()));
        let mut settings = self.shared.settings();
        if let Some(rogue) = rogue {
            settings.rogue.get_or_insert(rogue);
        }
        settings.forgery = forgery;
    }

    /// A new signing key with a new kid, signing from now on. With
    /// `keep_old` the key it replaces stays in the JWKS (as do keys kept
    /// by earlier rotations); without, the JWKS has the new key alone.
    pub fn rotate_key(&self, keep_old: bool) {
        let key = Arc::new(SigningKey::generate());
        let mut settings = self.shared.settings();
        let old = std::mem::replace(&mut settings.current, key);
        if keep_old {
            settings.retired.push(old);
        } else {
            settings.retired.clear();
        }
    }

    /// Whether the JWKS lists the current signing key (it does at
    /// start). Without it, tokens signed with it have a kid the JWKS
    /// does not know (until it is published again).
    pub fn publish_current_key(&self, publish: bool) {
        self.shared.settings().publish_current = publish;
    }

    /// The kid of the current signing key.
    pub fn current_kid(&self) -> String {
        self.shared.settings().current.kid.clone()
    }

    /// The clock that dates the tokens (`iat`, `exp`): by default the
    /// system's; a test moving a `ManualClock` shares it here.
    pub fn set_clock(&self, clock: Arc<dyn Clock>) {
        self.shared.settings().clock = clock;
    }

    /// Requests to the discovery path (redirected ones included).
    pub fn discovery_fetches(&self) -> usize {
        self.shared.discovery_fetches.load(Ordering::SeqCst)
    }

    /// Requests to the JWKS path (redirected ones included).
    pub fn jwks_fetches(&self) -> usize {
        self.shared.jwks_fetches.load(Ordering::SeqCst)
    }

    /// Requests to the token endpoint, refused ones included.
    pub fn token_requests(&self) -> usize {
        self.shared.token_requests.load(Ordering::SeqCst)
    }

    /// The last ID token it issued (to replay it).
    pub fn last_id_token(&self) -> Option<String> {
        self.shared.settings().last_id_token.clone()
    }

    /// The query parameters of the last request to `/authorize`, in
    /// order (to check what the relying party asked for: PKCE, nonce,
    /// state, scope, login_hint).
    pub fn last_authorization(&self) -> Option<Vec<(String, String)>> {
        self.shared.settings().last_authorization.clone()
    }

    /// Discovery answers 302 with this `Location` instead of the
    /// document (`None`: the document again).
    pub fn redirect_discovery_to(&self, location: Option<String>) {
        self.shared.settings().discovery_redirect = location;
    }

    /// The JWKS path answers 302 with this `Location` instead of the key
    /// set (`None`: the key set again).
    pub fn redirect_jwks_to(&self, location: Option<String>) {
        self.shared.settings().jwks_redirect = location;
    }

    /// The discovery document advertises this `jwks_uri` instead of its
    /// own (e.g. one on 169.254.169.254 or 10.0.0.1); `None`: its own.
    pub fn override_jwks_uri(&self, uri: Option<String>) {
        self.override_discovery("jwks_uri", uri.map(Value::String));
    }

    /// Any field of the discovery document set to this value (`issuer`
    /// of another provider, a `token_endpoint` elsewhere, …); JSON `null`
    /// removes the field; `None` drops the override.
    pub fn override_discovery(&self, field: &str, value: Option<Value>) {
        let mut settings = self.shared.settings();
        match value {
            Some(value) => {
                settings.discovery_overrides.insert(field.to_owned(), value);
            }
            None => {
                settings.discovery_overrides.remove(field);
            }
        }
    }
}

fn as_object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("the user's claims must be a JSON object, not {other}"),
    }
}

/// `bytes` random bytes, base64url.
fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    OsRng.fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body.to_string(),
    )
        .into_response()
}

/// An RFC 6749 §5.2 error answer.
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    json_response(
        status,
        &json!({"error": error, "error_description": description}),
    )
}

fn text(status: StatusCode, body: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.to_owned(),
    )
        .into_response()
}

fn redirect(status: StatusCode, location: String) -> Response {
    (status, [(header::LOCATION, location)]).into_response()
}

/// Parameters in their order.
type Pairs = Vec<(String, String)>;

/// Form (or query) parameters; `Err(name)` when one is repeated
/// (RFC 6749 §3.1: parameters must not be included more than once).
fn parse_form(input: &[u8]) -> Result<(Pairs, HashMap<String, String>), String> {
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(input)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let mut map = HashMap::new();
    for (k, v) in &pairs {
        if map.insert(k.clone(), v.clone()).is_some() {
            return Err(k.clone());
        }
    }
    Ok((pairs, map))
}

/// `application/x-www-form-urlencoded` decoding of one value (`+` is a
/// space), as the id and secret of Basic client authentication are
/// encoded (RFC 6749 §2.3.1).
fn form_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

async fn discovery(State(shared): State<Arc<Shared>>) -> Response {
    shared.discovery_fetches.fetch_add(1, Ordering::SeqCst);
    let settings = shared.settings();
    if let Some(location) = &settings.discovery_redirect {
        return redirect(StatusCode::FOUND, location.clone());
    }
    let issuer = &shared.issuer;
    let mut doc = as_object(json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "jwks_uri": format!("{issuer}/jwks"),
        "userinfo_endpoint": format!("{issuer}/userinfo"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "email", "profile", "groups"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": [
            "iss", "sub", "aud", "exp", "iat", "nonce", "azp",
            "email", "email_verified", "name", "groups"
        ],
    }));
    for (field, value) in &settings.discovery_overrides {
        if value.is_null() {
            doc.remove(field);
        } else {
            doc.insert(field.clone(), value.clone());
        }
    }
    json_response(StatusCode::OK, &Value::Object(doc))
}

async fn jwks(State(shared): State<Arc<Shared>>) -> Response {
    shared.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    let settings = shared.settings();
    if let Some(location) = &settings.jwks_redirect {
        return redirect(StatusCode::FOUND, location.clone());
    }
    let current = settings
        .publish_current
        .then_some(&settings.current)
        .into_iter();
    let keys: Vec<Value> = current
        .chain(settings.retired.iter())
        .map(|key| key.jwk())
        .collect();
    json_response(StatusCode::OK, &json!({ "keys": keys }))
}

async fn authorize(State(shared): State<Arc<Shared>>, RawQuery(query): RawQuery) -> Response {
    let query = query.unwrap_or_default();
    let (pairs, params) = match parse_form(query.as_bytes()) {
        Ok(parsed) => parsed,
        Err(name) => return text(StatusCode::BAD_REQUEST, &format!("{name} is repeated")),
    };
    let mut settings = shared.settings();
    settings.last_authorization = Some(pairs);
    let Some(client) = settings.client.clone() else {
        return text(StatusCode::BAD_REQUEST, "no client is registered");
    };
    if params.get("client_id") != Some(&client.id) {
        return text(StatusCode::BAD_REQUEST, "unknown client_id");
    }
    if params.get("redirect_uri") != Some(&client.redirect_uri) {
        return text(
            StatusCode::BAD_REQUEST,
            "redirect_uri is not the registered one",
        );
    }
    let state = params.get("state");
    // From here on errors go back to the client (RFC 6749 §4.1.2.1).
    let back = |pairs: &[(&str, &str)]| {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in pairs {
            query.append_pair(k, v);
        }
        if let Some(state) = state {
            query.append_pair("state", state);
        }
        let sep = if client.redirect_uri.contains('?') {
            '&'
        } else {
            '?'
        };
        redirect(
            StatusCode::SEE_OTHER,
            format!("{}{sep}{}", client.redirect_uri, query.finish()),
        )
    };
    if params.get("response_type").map(String::as_str) != Some("code") {
        return back(&[
            ("error", "unsupported_response_type"),
            ("error_description", "only response_type=code"),
        ]);
    }
    let scopes = params.get("scope").map(String::as_str).unwrap_or_default();
    if !scopes.split(' ').any(|s| s == "openid") {
        return back(&[
            ("error", "invalid_scope"),
            ("error_description", "scope must include openid"),
        ]);
    }
    let Some(challenge) = params.get("code_challenge").filter(|c| !c.is_empty()) else {
        return back(&[
            ("error", "invalid_request"),
            ("error_description", "code_challenge is required"),
        ]);
    };
    if params.get("code_challenge_method").map(String::as_str) != Some("S256") {
        return back(&[
            ("error", "invalid_request"),
            ("error_description", "code_challenge_method must be S256"),
        ]);
    }
    let code = random_token(32);
    let grant = Grant {
        client_id: client.id.clone(),
        redirect_uri: client.redirect_uri.clone(),
        code_challenge: challenge.clone(),
        nonce: params.get("nonce").cloned(),
        claims: settings.user.clone(),
        used: false,
    };
    settings.grants.insert(code.clone(), grant);
    back(&[("code", &code)])
}

/// Why a token request's client is refused.
enum ClientRefusal {
    /// Basic and `client_secret` in the body at once.
    TwoMethods,
    /// No credentials, or wrong ones (`basic`: they came by Basic).
    Invalid { basic: bool },
}

impl ClientRefusal {
    fn response(self) -> Response {
        match self {
            Self::TwoMethods => oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "more than one client authentication method",
            ),
            Self::Invalid { basic } => {
                let mut response = oauth_error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    "client authentication failed",
                );
                if basic {
                    response.headers_mut().insert(
                        header::WWW_AUTHENTICATE,
                        header::HeaderValue::from_static("Basic realm=\"forging-idp\""),
                    );
                }
                response
            }
        }
    }
}

/// The client of a token request, authenticated by Basic (id and secret
/// form-urlencoded, RFC 6749 §2.3.1) or `client_id` and `client_secret`
/// in the body.
fn authenticate(
    client: Option<&Client>,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
) -> Result<Client, ClientRefusal> {
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .map(|(_, credentials)| credentials.trim().to_owned());
    let invalid_client = |basic: bool| ClientRefusal::Invalid { basic };
    let (id, secret, by_basic) = if let Some(credentials) = basic {
        if params.contains_key("client_secret") {
            return Err(ClientRefusal::TwoMethods);
        }
        let decoded = STANDARD
            .decode(credentials)
            .ok()
            .and_then(|raw| String::from_utf8(raw).ok());
        let Some((id, secret)) = decoded.as_deref().and_then(|d| d.split_once(':')) else {
            return Err(invalid_client(true));
        };
        let (Some(id), Some(secret)) = (form_decode(id), form_decode(secret)) else {
            return Err(invalid_client(true));
        };
        if params
            .get("client_id")
            .is_some_and(|body_id| *body_id != id)
        {
            return Err(invalid_client(true));
        }
        (id, secret, true)
    } else if let (Some(id), Some(secret)) = (params.get("client_id"), params.get("client_secret"))
    {
        (id.clone(), secret.clone(), false)
    } else {
        return Err(invalid_client(false));
    };
    match client {
        Some(client) if client.id == id && client.secret == secret => Ok(client.clone()),
        _ => Err(invalid_client(by_basic)),
    }
}

fn code_verifier_ok(verifier: &str) -> bool {
    (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

async fn token(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    shared.token_requests.fetch_add(1, Ordering::SeqCst);
    let params = match parse_form(&body) {
        Ok((_, params)) => params,
        Err(name) => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                &format!("{name} is repeated"),
            );
        }
    };
    let mut settings = shared.settings();
    let client = match authenticate(settings.client.as_ref(), &headers, &params) {
        Ok(client) => client,
        Err(refusal) => return refusal.response(),
    };
    if params.get("grant_type").map(String::as_str) != Some("authorization_code") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "only authorization_code",
        );
    }
    let Some(code) = params.get("code") else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "code is missing",
        );
    };
    let invalid_grant = |why: &str| oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", why);
    // A presented code is spent, whatever comes of it.
    let Some(grant) = settings.grants.get_mut(code) else {
        return invalid_grant("unknown code");
    };
    if std::mem::replace(&mut grant.used, true) {
        return invalid_grant("code already used");
    }
    if grant.client_id != client.id {
        return invalid_grant("code issued to another client");
    }
    if params.get("redirect_uri") != Some(&grant.redirect_uri) {
        return invalid_grant("redirect_uri does not match the authorization's");
    }
    let Some(verifier) = params.get("code_verifier") else {
        return invalid_grant("code_verifier is missing");
    };
    if !code_verifier_ok(verifier)
        || URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) != grant.code_challenge
    {
        return invalid_grant("code_verifier does not match code_challenge");
    }
    let claims = grant.claims.clone();
    let nonce = grant.nonce.clone();
    let access_token = random_token(32);
    settings
        .access_tokens
        .insert(access_token.clone(), claims.clone());
    let forge = Forge {
        issuer: shared.issuer.clone(),
        client_id: client.id,
        now: settings.clock.now().timestamp(),
        forgery: settings.forgery.clone(),
        current: settings.current.clone(),
        rogue: settings.rogue.clone(),
    };
    // Sign without the lock: RSA is slow in debug builds.
    drop(settings);
    let id_token = forge.id_token(claims, nonce);
    shared.settings().last_id_token = Some(id_token.clone());
    json_response(
        StatusCode::OK,
        &json!({
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": TOKEN_LIFETIME_SECS,
            "id_token": id_token,
        }),
    )
}

async fn userinfo(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim().to_owned());
    let claims = token.and_then(|t| shared.settings().access_tokens.get(&t).cloned());
    match claims {
        Some(claims) => json_response(StatusCode::OK, &Value::Object(claims)),
        None => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer error=\"invalid_token\"")],
        )
            .into_response(),
    }
}

/// Everything an ID token is made of, taken out of the settings.
struct Forge {
    issuer: String,
    client_id: String,
    now: i64,
    forgery: Forgery,
    current: Arc<SigningKey>,
    rogue: Option<Arc<SigningKey>>,
}

enum Signer {
    Rs256(Arc<SigningKey>),
    Hs256(Vec<u8>),
    Unsigned,
}

impl Forge {
    fn id_token(&self, mut claims: Map<String, Value>, nonce: Option<String>) -> String {
        let now = self.now;
        claims.insert("iss".into(), json!(self.issuer));
        claims.insert("aud".into(), json!(self.client_id));
        claims.insert("exp".into(), json!(now + TOKEN_LIFETIME_SECS));
        claims.insert("iat".into(), json!(now));
        match nonce {
            Some(nonce) => claims.insert("nonce".into(), json!(nonce)),
            None => claims.remove("nonce"),
        };
        let mut header = json!({"alg": "RS256", "kid": self.current.kid, "typ": "JWT"});
        let mut signer = Signer::Rs256(self.current.clone());
        let mut flip_signature = false;
        match &self.forgery {
            Forgery::Honest => {}
            Forgery::AlgNone => {
                header = json!({"alg": "none"});
                signer = Signer::Unsigned;
            }
            Forgery::Hs256WithPublicKey => {
                header["alg"] = json!("HS256");
                signer = Signer::Hs256(self.current.public_pem().into_bytes());
            }
            Forgery::Hs256WithPublicKeyDer => {
                header["alg"] = json!("HS256");
                signer = Signer::Hs256(self.current.public_der());
            }
            Forgery::UnknownKid => {
                let rogue = self
                    .rogue
                    .clone()
                    .unwrap_or_else(|| Arc::new(SigningKey::generate()));
                header["kid"] = json!(rogue.kid);
                signer = Signer::Rs256(rogue);
            }
            Forgery::BadSignature => flip_signature = true,
            Forgery::WrongIssuer => {
                claims.insert("iss".into(), json!(WRONG_ISSUER));
            }
            Forgery::WrongAudience => {
                claims.insert("aud".into(), json!(OTHER_AUDIENCE));
            }
            Forgery::ExtraAudienceNoAzp => {
                claims.insert("aud".into(), json!([self.client_id, OTHER_AUDIENCE]));
                claims.remove("azp");
            }
            Forgery::AzpOther => {
                claims.insert("azp".into(), json!(OTHER_AUDIENCE));
            }
            Forgery::NoNonce => {
                claims.remove("nonce");
            }
            Forgery::WrongNonce => {
                claims.insert("nonce".into(), json!(random_token(16)));
            }
            Forgery::Expired => {
                claims.insert("exp".into(), json!(now - 3600));
                claims.insert("iat".into(), json!(now - 3600 - TOKEN_LIFETIME_SECS));
            }
            Forgery::IssuedInFuture => {
                claims.insert("iat".into(), json!(now + 3600));
                claims.insert("exp".into(), json!(now + 3600 + TOKEN_LIFETIME_SECS));
            }
            Forgery::Claims(overrides) => {
                for (name, value) in overrides.as_object().into_iter().flatten() {
                    if value.is_null() {
                        claims.remove(name);
                    } else {
                        claims.insert(name.clone(), value.clone());
                    }
                }
            }
        }
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(Value::Object(claims).to_string())
        );
        let mut signature = match signer {
            Signer::Rs256(key) => key.sign_rs256(signing_input.as_bytes()),
            Signer::Hs256(key) => {
                let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key");
                mac.update(signing_input.as_bytes());
                mac.finalize().into_bytes().to_vec()
            }
            Signer::Unsigned => Vec::new(),
        };
        if flip_signature {
            let len = signature.len();
            for byte in &mut signature[len.saturating_sub(4)..] {
                *byte ^= 0xff;
            }
        }
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use axum::body::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client as HttpClient;
    use hyper_util::rt::TokioExecutor;
    use openidconnect::core::{
        CoreAuthenticationFlow, CoreClient, CoreIdToken, CoreIdTokenClaims, CoreIdTokenVerifier,
        CoreJsonWebKeySet, CoreJwsSigningAlgorithm, CoreProviderMetadata,
    };
    use openidconnect::{
        AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, PkceCodeChallenge,
        RedirectUrl, Scope, TokenResponse as _,
    };
    use rsa::{BigUint, RsaPublicKey};

    use super::*;

    const CLIENT_ID: &str = "twig-rp";
    // Characters Basic authentication must form-urlencode (RFC 6749 §2.3.1).
    const CLIENT_SECRET: &str = "s3cret:with/odd+chars&=% é";
    const REDIRECT_URI: &str = "http://127.0.0.1:9/sso/callback";

    /// One HTTP/1 request, no redirect followed (also the HTTP client of
    /// openidconnect).
    async fn send(
        request: http::Request<Vec<u8>>,
    ) -> Result<http::Response<Vec<u8>>, std::io::Error> {
        let client = HttpClient::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let (parts, body) = request.into_parts();
        let request = http::Request::from_parts(parts, Full::new(Bytes::from(body)));
        let response = client
            .request(request)
            .await
            .map_err(std::io::Error::other)?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(std::io::Error::other)?
            .to_bytes();
        Ok(http::Response::from_parts(parts, body.to_vec()))
    }

    async fn get(url: &str) -> http::Response<Vec<u8>> {
        send(http::Request::get(url).body(Vec::new()).unwrap())
            .await
            .unwrap()
    }

    fn body_json(response: &http::Response<Vec<u8>>) -> Value {
        serde_json::from_slice(response.body()).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {}",
                String::from_utf8_lossy(response.body())
            )
        })
    }

    fn location(response: &http::Response<Vec<u8>>) -> String {
        response.headers()[header::LOCATION]
            .to_str()
            .unwrap()
            .to_owned()
    }

    fn form(pairs: &[(&str, &str)]) -> String {
        let mut s = url::form_urlencoded::Serializer::new(String::new());
        s.extend_pairs(pairs);
        s.finish()
    }

    async fn started() -> ForgingIdp {
        let idp = ForgingIdp::start().await;
        idp.set_client(CLIENT_ID, CLIENT_SECRET, REDIRECT_URI);
        idp.set_user(json!({
            "sub": "u-42",
            "email": "ada@example.test",
            "email_verified": true,
            "name": "Ada",
            "groups": ["admins"],
        }));
        idp
    }

    async fn authorize_raw(idp: &ForgingIdp, pairs: &[(&str, &str)]) -> http::Response<Vec<u8>> {
        get(&format!("{}/authorize?{}", idp.issuer(), form(pairs))).await
    }

    /// The query of a redirect to `base`.
    fn redirect_params(response: &http::Response<Vec<u8>>, base: &str) -> HashMap<String, String> {
        assert_eq!(response.status(), StatusCode::SEE_OTHER);
        let location = location(response);
        let query = location
            .strip_prefix(base)
            .and_then(|rest| rest.strip_prefix(['?', '&']))
            .unwrap_or_else(|| panic!("{location} is not a redirect to {base}"));
        parse_form(query.as_bytes()).unwrap().1
    }

    struct Authorized {
        code: String,
        verifier: String,
        nonce: Nonce,
    }

    const STATE: &str = "state with spaces&=?#é";

    async fn authorize(idp: &ForgingIdp) -> Authorized {
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let nonce = Nonce::new_random();
        let response = authorize_raw(
            idp,
            &[
                ("response_type", "code"),
                ("client_id", CLIENT_ID),
                ("redirect_uri", REDIRECT_URI),
                ("scope", "openid email profile"),
                ("state", STATE),
                ("nonce", nonce.secret()),
                ("code_challenge", challenge.as_str()),
                ("code_challenge_method", "S256"),
            ],
        )
        .await;
        let params = redirect_params(&response, REDIRECT_URI);
        assert_eq!(params["state"], STATE);
        Authorized {
            code: params["code"].clone(),
            verifier: verifier.secret().clone(),
            nonce,
        }
    }

    enum Auth<'a> {
        Basic(&'a str, &'a str),
        Post(&'a str, &'a str),
    }

    async fn token_raw(
        idp: &ForgingIdp,
        auth: Auth<'_>,
        pairs: &[(&str, &str)],
    ) -> http::Response<Vec<u8>> {
        let mut pairs = pairs.to_vec();
        let mut request = http::Request::post(format!("{}/token", idp.issuer()))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
        match auth {
            Auth::Basic(id, secret) => {
                let enc = |s: &str| {
                    url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()
                };
                let credentials: String = format!("{}:{}", enc(id), enc(secret));
                request = request.header(
                    header::AUTHORIZATION,
                    format!("Basic {}", STANDARD.encode(credentials)),
                );
            }
            Auth::Post(id, secret) => {
                pairs.push(("client_id", id));
                pairs.push(("client_secret", secret));
            }
        }
        send(request.body(form(&pairs).into_bytes()).unwrap())
            .await
            .unwrap()
    }

    async fn redeem(idp: &ForgingIdp, auth: Auth<'_>, a: &Authorized) -> http::Response<Vec<u8>> {
        token_raw(
            idp,
            auth,
            &[
                ("grant_type", "authorization_code"),
                ("code", &a.code),
                ("redirect_uri", REDIRECT_URI),
                ("code_verifier", &a.verifier),
            ],
        )
        .await
    }

    /// A whole flow: the ID token of the token response and the nonce.
    async fn id_token(idp: &ForgingIdp) -> (String, Nonce) {
        let a = authorize(idp).await;
        let response = redeem(idp, Auth::Basic(CLIENT_ID, CLIENT_SECRET), &a).await;
        assert_eq!(response.status(), StatusCode::OK);
        let body = body_json(&response);
        let token = body["id_token"].as_str().unwrap().to_owned();
        (token, a.nonce)
    }

    async fn fetch_jwks(idp: &ForgingIdp) -> CoreJsonWebKeySet {
        let response = get(&format!("{}/jwks", idp.issuer())).await;
        assert_eq!(response.status(), StatusCode::OK);
        serde_json::from_slice(response.body()).unwrap()
    }

    fn verifier(idp: &ForgingIdp, jwks: CoreJsonWebKeySet) -> CoreIdTokenVerifier<'static> {
        CoreIdTokenVerifier::new_confidential_client(
            ClientId::new(CLIENT_ID.into()),
            ClientSecret::new(CLIENT_SECRET.into()),
            IssuerUrl::new(idp.issuer()).unwrap(),
            jwks,
        )
    }

    /// The verified claims, or the error's `Debug` text.
    fn verify(
        verifier: &CoreIdTokenVerifier<'_>,
        token: &str,
        nonce: &Nonce,
    ) -> Result<CoreIdTokenClaims, String> {
        let token = CoreIdToken::from_str(token).map_err(|e| format!("parse: {e:?}"))?;
        token
            .claims(verifier, nonce)
            .cloned()
            .map_err(|e| format!("{e:?}"))
    }

    /// Header and payload of a compact JWS, and its signature bytes.
    fn parts(token: &str) -> (Value, Value, Vec<u8>) {
        let mut it = token.split('.');
        let mut next = || URL_SAFE_NO_PAD.decode(it.next().unwrap()).unwrap();
        let header = serde_json::from_slice(&next()).unwrap();
        let payload = serde_json::from_slice(&next()).unwrap();
        (header, payload, next())
    }

    #[tokio::test]
    async fn discovery_deserializes_as_core_provider_metadata() {
        let idp = started().await;
        let issuer = idp.issuer();
        assert!(!issuer.ends_with('/'));
        assert_eq!(issuer, format!("http://{}", idp.addr()));
        let response = get(&format!("{issuer}/.well-known/openid-configuration")).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let doc = body_json(&response);
        assert_eq!(doc["code_challenge_methods_supported"], json!(["S256"]));
        assert_eq!(
            doc["token_endpoint_auth_methods_supported"],
            json!(["client_secret_basic", "client_secret_post"])
        );
        let metadata: CoreProviderMetadata = serde_json::from_slice(response.body()).unwrap();
        assert_eq!(metadata.issuer().as_str(), issuer);
        assert_eq!(
            metadata.jwks_uri().as_str(),
            format!("{issuer}/jwks").as_str()
        );
        assert_eq!(
            metadata.token_endpoint().unwrap().as_str(),
            format!("{issuer}/token").as_str()
        );
        assert_eq!(
            metadata.id_token_signing_alg_values_supported(),
            &vec![CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256]
        );

        // openidconnect's own discovery: the document, its issuer check,
        // then the JWKS
        let discovered =
            CoreProviderMetadata::discover_async(IssuerUrl::new(issuer.clone()).unwrap(), &send)
                .await
                .unwrap();
        assert_eq!(discovered.jwks().keys().len(), 1);
        assert_eq!(idp.discovery_fetches(), 2);
        assert_eq!(idp.jwks_fetches(), 1);

        let jwks = body_json(&get(&format!("{issuer}/jwks")).await);
        let key = &jwks["keys"][0];
        assert_eq!(key["kty"], "RSA");
        assert_eq!(key["use"], "sig");
        assert_eq!(key["alg"], "RS256");
        assert_eq!(key["kid"], idp.current_kid());
        assert_eq!(key["e"], "AQAB");
        assert_eq!(
            URL_SAFE_NO_PAD
                .decode(key["n"].as_str().unwrap())
                .unwrap()
                .len(),
            256
        );
    }

    #[tokio::test]
    async fn honest_flow_verifies_by_hand_and_with_client_secret_post() {
        let idp = started().await;
        let (token, nonce) = id_token(&idp).await;
        let (header, payload, signature) = parts(&token);
        assert_eq!(
            header,
            json!({"alg": "RS256", "kid": idp.current_kid(), "typ": "JWT"})
        );
        assert_eq!(payload["iss"], idp.issuer());
        assert_eq!(payload["aud"], CLIENT_ID);
        assert_eq!(payload["nonce"], nonce.secret().as_str());
        assert_eq!(
            payload["exp"].as_i64().unwrap() - payload["iat"].as_i64().unwrap(),
            TOKEN_LIFETIME_SECS
        );
        assert_eq!(payload["groups"], json!(["admins"]));
        assert_eq!(signature.len(), 256);
        assert_eq!(idp.last_id_token().as_deref(), Some(token.as_str()));

        let verifier = verifier(&idp, fetch_jwks(&idp).await);
        let claims = verify(&verifier, &token, &nonce).unwrap();
        assert_eq!(claims.subject().as_str(), "u-42");
        assert_eq!(claims.email().unwrap().as_str(), "ada@example.test");
        assert_eq!(claims.email_verified(), Some(true));
        assert!(claims.authorized_party().is_none());

        // the same with the credentials in the body, and the userinfo
        // endpoint with the access token
        let a = authorize(&idp).await;
        let response = redeem(&idp, Auth::Post(CLIENT_ID, CLIENT_SECRET), &a).await;
        assert_eq!(response.status(), StatusCode::OK);
        let body = body_json(&response);
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["expires_in"], TOKEN_LIFETIME_SECS);
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
        verify(&verifier, body["id_token"].as_str().unwrap(), &a.nonce).unwrap();
        let userinfo = send(
            http::Request::get(format!("{}/userinfo", idp.issuer()))
                .header(
                    header::AUTHORIZATION,
                    format!("Bearer {}", body["access_token"].as_str().unwrap()),
                )
                .body(Vec::new())
                .unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(body_json(&userinfo)["sub"], "u-42");
        assert_eq!(idp.token_requests(), 2);
    }

    /// The relying party's library drives the flow: discovery, the
    /// authorization URL with PKCE and nonce, the code exchange with
    /// `client_secret_basic` (its default), ID token verification.
    #[tokio::test]
    async fn openidconnect_client_completes_the_flow() {
        let idp = started().await;
        let metadata =
            CoreProviderMetadata::discover_async(IssuerUrl::new(idp.issuer()).unwrap(), &send)
                .await
                .unwrap();
        let client = CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(CLIENT_ID.into()),
            Some(ClientSecret::new(CLIENT_SECRET.into())),
        )
        .set_redirect_uri(RedirectUrl::new(REDIRECT_URI.into()).unwrap());
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, csrf, nonce) = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .add_scope(Scope::new("email".into()))
            .set_pkce_challenge(challenge)
            .url();
        let params = redirect_params(&get(url.as_str()).await, REDIRECT_URI);
        assert_eq!(&params["state"], csrf.secret());
        let asked: HashMap<_, _> = idp.last_authorization().unwrap().into_iter().collect();
        assert_eq!(asked["nonce"], *nonce.secret());
        assert_eq!(asked["code_challenge_method"], "S256");

        let response = client
            .exchange_code(AuthorizationCode::new(params["code"].clone()))
            .unwrap()
            .set_pkce_verifier(verifier)
            .request_async(&send)
            .await
            .unwrap();
        let claims = response
            .id_token()
            .unwrap()
            .claims(&client.id_token_verifier(), &nonce)
            .unwrap();
        assert_eq!(claims.subject().as_str(), "u-42");
    }

    /// Each forgery fails the default verification of a confidential
    /// client, for the reason it was made for.
    #[tokio::test]
    async fn forgeries_fail_default_verification() {
        let idp = started().await;
        let verifier = verifier(&idp, fetch_jwks(&idp).await);
        let cases = [
            (Forgery::AlgNone, "SignatureVerification(NoSignature)"),
            (
                Forgery::Hs256WithPublicKey,
                "SignatureVerification(DisallowedAlg(",
            ),
            (
                Forgery::Hs256WithPublicKeyDer,
                "SignatureVerification(DisallowedAlg(",
            ),
            (Forgery::UnknownKid, "SignatureVerification(NoMatchingKey)"),
            (Forgery::BadSignature, "SignatureVerification(CryptoError("),
            (Forgery::WrongIssuer, "InvalidIssuer("),
            (Forgery::WrongAudience, "InvalidAudience("),
            (Forgery::ExtraAudienceNoAzp, "InvalidAudience("),
            (Forgery::NoNonce, "InvalidNonce(\"missing nonce claim\")"),
            (Forgery::WrongNonce, "InvalidNonce(\"nonce mismatch\")"),
            (Forgery::Expired, "Expired("),
        ];
        for (forgery, expected) in cases {
            idp.set_forgery(forgery.clone());
            let (token, nonce) = id_token(&idp).await;
            let error = verify(&verifier, &token, &nonce).expect_err(&format!("{forgery:?}"));
            println!("{forgery:?}: {error}");
            assert!(error.starts_with(expected), "{forgery:?}: {error}");
        }
    }

    /// What openidconnect 4.1 accepts by default (the relying party must
    /// check these itself), and the checks that refuse them.
    #[tokio::test]
    async fn azp_other_and_future_iat_pass_default_verification() {
        let idp = started().await;
        let jwks = fetch_jwks(&idp).await;

        // `azp` is never checked (the library leaves steps 4-5 of OIDC
        // Core §3.1.3.7 out): the relying party must compare it itself
        idp.set_forgery(Forgery::AzpOther);
        let (token, nonce) = id_token(&idp).await;
        let claims = verify(&verifier(&idp, jwks.clone()), &token, &nonce).unwrap();
        assert_eq!(claims.authorized_party().unwrap().as_str(), OTHER_AUDIENCE);

        // `iat` is accepted whatever it is unless an issue-time check is set
        idp.set_forgery(Forgery::IssuedInFuture);
        let (token, nonce) = id_token(&idp).await;
        let (_, payload, _) = parts(&token);
        let now = SystemClock.now().timestamp();
        assert!(payload["iat"].as_i64().unwrap() >= now + 3500);
        verify(&verifier(&idp, jwks.clone()), &token, &nonce).unwrap();
        let strict = verifier(&idp, jwks.clone()).set_issue_time_verifier_fn(|iat| {
            if iat > SystemClock.now() + chrono::Duration::seconds(60) {
                Err(format!("issued in the future: {iat}"))
            } else {
                Ok(())
            }
        });
        let error = verify(&strict, &token, &nonce).unwrap_err();
        println!("IssuedInFuture with an iat check: {error}");
        assert!(
            error.starts_with("Expired(\"issued in the future"),
            "{error}"
        );
        // an honest token passes that check
        idp.set_forgery(Forgery::Honest);
        let (token, nonce) = id_token(&idp).await;
        verify(&strict, &token, &nonce).unwrap();
    }

    /// The algorithm-confusion tokens are the real attack (an HMAC keyed
    /// with the published key's PEM), and openidconnect refuses them even
    /// with HS256 allowed (it keys HMAC with the client secret) or any
    /// algorithm allowed; `alg: none` stays refused too.
    #[tokio::test]
    async fn confusion_forgeries_are_the_real_thing_and_stay_refused() {
        let idp = started().await;
        let jwks_json = body_json(&get(&format!("{}/jwks", idp.issuer())).await);
        let key = &jwks_json["keys"][0];
        let num = |field: &str| {
            BigUint::from_bytes_be(
                &URL_SAFE_NO_PAD
                    .decode(key[field].as_str().unwrap())
                    .unwrap(),
            )
        };
        let public = RsaPublicKey::new(num("n"), num("e")).unwrap();
        let pem = public.to_public_key_pem(LineEnding::LF).unwrap();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n") && pem.ends_with("-----\n"));
        let der = public.to_public_key_der().unwrap().into_vec();
        let jwks: CoreJsonWebKeySet = serde_json::from_value(jwks_json.clone()).unwrap();
        let hs256_allowed = verifier(&idp, jwks.clone()).set_allowed_algs([
            CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
            CoreJwsSigningAlgorithm::HmacSha256,
        ]);
        for (forgery, mac_key) in [
            (Forgery::Hs256WithPublicKey, pem.into_bytes()),
            (Forgery::Hs256WithPublicKeyDer, der),
        ] {
            idp.set_forgery(forgery.clone());
            let (token, nonce) = id_token(&idp).await;
            let (header, _, signature) = parts(&token);
            assert_eq!(header["alg"], "HS256");
            let (input, _) = token.rsplit_once('.').unwrap();
            let mut mac = Hmac::<Sha256>::new_from_slice(&mac_key).unwrap();
            mac.update(input.as_bytes());
            mac.verify_slice(&signature)
                .expect("HMAC keyed with the public key");
            let error = verify(&hs256_allowed, &token, &nonce).unwrap_err();
            println!("{forgery:?} with HS256 allowed: {error}");
            assert!(
                error.starts_with("SignatureVerification(CryptoError("),
                "{error}"
            );
            let any = verifier(&idp, jwks.clone()).allow_any_alg();
            let error = verify(&any, &token, &nonce).unwrap_err();
            assert!(
                error.starts_with("SignatureVerification(CryptoError("),
                "{error}"
            );
        }
        idp.set_forgery(Forgery::AlgNone);
        let (token, nonce) = id_token(&idp).await;
        assert!(token.ends_with('.'));
        assert_eq!(parts(&token).0, json!({"alg": "none"}));
        let any = verifier(&idp, jwks).allow_any_alg();
        let error = verify(&any, &token, &nonce).unwrap_err();
        println!("AlgNone with any alg allowed: {error}");
        assert_eq!(error, "SignatureVerification(NoSignature)");
    }

    #[tokio::test]
    async fn claims_forgery_is_signed_honestly_and_replay_verifies_again() {
        let idp = started().await;
        let verifier = verifier(&idp, fetch_jwks(&idp).await);
        idp.set_forgery(Forgery::Claims(json!({
            "email": "mallory@example.test",
            "email_verified": false,
            "groups": ["root"],
            "name": null,
        })));
        let (token, nonce) = id_token(&idp).await;
        let claims = verify(&verifier, &token, &nonce).unwrap();
        assert_eq!(claims.email().unwrap().as_str(), "mallory@example.test");
        assert_eq!(claims.email_verified(), Some(false));
        assert!(claims.name().is_none());
        assert_eq!(parts(&token).1["groups"], json!(["root"]));
        // nothing in the library stops a replay: the relying party must
        // spend its login state (nonce) once
        let replayed = idp.last_id_token().unwrap();
        assert_eq!(replayed, token);
        verify(&verifier, &replayed, &nonce).unwrap();
    }

    #[tokio::test]
    async fn token_endpoint_refusals() {
        let idp = started().await;
        let invalid = |response: &http::Response<Vec<u8>>, status, error: &str| {
            assert_eq!(response.status(), status);
            assert_eq!(body_json(response)["error"], error);
        };

        // a code is good once
        let a = authorize(&idp).await;
        let ok = redeem(&idp, Auth::Basic(CLIENT_ID, CLIENT_SECRET), &a).await;
        assert_eq!(ok.status(), StatusCode::OK);
        let again = redeem(&idp, Auth::Basic(CLIENT_ID, CLIENT_SECRET), &a).await;
        invalid(&again, StatusCode::BAD_REQUEST, "invalid_grant");

        // a wrong verifier: invalid_grant, and the code is spent
        let mut a = authorize(&idp).await;
        let right = std::mem::replace(
            &mut a.verifier,
            PkceCodeChallenge::new_random_sha256().1.secret().clone(),
        );
        let wrong = redeem(&idp, Auth::Basic(CLIENT_ID, CLIENT_SECRET), &a).await;
        invalid(&wrong, StatusCode::BAD_REQUEST, "invalid_grant");
        a.verifier = right;
        let spent = redeem(&idp, Auth::Basic(CLIENT_ID, CLIENT_SECRET), &a).await;
        invalid(&spent, StatusCode::BAD_REQUEST, "invalid_grant");

        // no verifier
        let a = authorize(&idp).await;
        let response = token_raw(
            &idp,
            Auth::Basic(CLIENT_ID, CLIENT_SECRET),
            &[
                ("grant_type", "authorization_code"),
                ("code", &a.code),
                ("redirect_uri", REDIRECT_URI),
            ],
        )
        .await;
        invalid(&response, StatusCode::BAD_REQUEST, "invalid_grant");

        // another redirect_uri
        let a = authorize(&idp).await;
        let response = token_raw(
            &idp,
            Auth::Basic(CLIENT_ID, CLIENT_SECRET),
            &[
                ("grant_type", "authorization_code"),
                ("code", &a.code),
                ("redirect_uri", "http://127.0.0.1:9/other"),
                ("code_verifier", &a.verifier),
            ],
        )
        .await;
        invalid(&response, StatusCode::BAD_REQUEST, "invalid_grant");

        // a wrong secret (Basic and body), an unknown client: 401, and
        // the code survives for the right client
        let a = authorize(&idp).await;
        let response = redeem(&idp, Auth::Basic(CLIENT_ID, "wrong"), &a).await;
        invalid(&response, StatusCode::UNAUTHORIZED, "invalid_client");
        assert!(response.headers().contains_key(header::WWW_AUTHENTICATE));
        let response = redeem(&idp, Auth::Post(CLIENT_ID, "wrong"), &a).await;
        invalid(&response, StatusCode::UNAUTHORIZED, "invalid_client");
        let response = redeem(&idp, Auth::Basic("someone-else", CLIENT_SECRET), &a).await;
        invalid(&response, StatusCode::UNAUTHORIZED, "invalid_client");
        let response = redeem(&idp, Auth::Post(CLIENT_ID, CLIENT_SECRET), &a).await;
        assert_eq!(response.status(), StatusCode::OK);

        // an unknown code, another grant type
        let a = Authorized {
            code: "no-such-code".into(),
            ..authorize(&idp).await
        };
        let response = redeem(&idp, Auth::Basic(CLIENT_ID, CLIENT_SECRET), &a).await;
        invalid(&response, StatusCode::BAD_REQUEST, "invalid_grant");
        let response = token_raw(
            &idp,
            Auth::Basic(CLIENT_ID, CLIENT_SECRET),
            &[("grant_type", "client_credentials")],
        )
        .await;
        invalid(&response, StatusCode::BAD_REQUEST, "unsupported_grant_type");
        assert_eq!(idp.token_requests(), 12);
    }

    #[tokio::test]
    async fn authorize_refusals() {
        let idp = started().await;
        let (challenge, _) = PkceCodeChallenge::new_random_sha256();
        fn request<'a>(
            client_id: &'a str,
            redirect_uri: &'a str,
            challenge: Option<&'a str>,
            method: Option<&'a str>,
        ) -> Vec<(&'static str, &'a str)> {
            let mut pairs = vec![
                ("response_type", "code"),
                ("client_id", client_id),
                ("redirect_uri", redirect_uri),
                ("scope", "openid"),
                ("state", "s t"),
                ("nonce", "n"),
            ];
            if let Some(challenge) = challenge {
                pairs.push(("code_challenge", challenge));
            }
            if let Some(method) = method {
                pairs.push(("code_challenge_method", method));
            }
            pairs
        }
        let c = Some(challenge.as_str());

        let response = authorize_raw(&idp, &request("other", REDIRECT_URI, c, Some("S256"))).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let response = authorize_raw(
            &idp,
            &request(
                CLIENT_ID,
                "http://127.0.0.1:9/sso/callback/",
                c,
                Some("S256"),
            ),
        )
        .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert!(!response.headers().contains_key(header::LOCATION));

        for (challenge, method) in [(None, Some("S256")), (c, None), (c, Some("plain"))] {
            let response =
                authorize_raw(&idp, &request(CLIENT_ID, REDIRECT_URI, challenge, method)).await;
            let params = redirect_params(&response, REDIRECT_URI);
            assert_eq!(params["error"], "invalid_request");
            assert_eq!(params["state"], "s t");
            assert!(!params.contains_key("code"));
        }

        // a registered redirect_uri with a query of its own gets `&`
        let with_query = "http://127.0.0.1:9/cb?tenant=a%20b";
        idp.set_client(CLIENT_ID, CLIENT_SECRET, with_query);
        let response = authorize_raw(&idp, &request(CLIENT_ID, with_query, c, Some("S256"))).await;
        let location = location(&response);
        assert!(
            location.starts_with("http://127.0.0.1:9/cb?tenant=a%20b&code="),
            "{location}"
        );
        assert!(location.ends_with("&state=s+t"), "{location}");
    }

    #[tokio::test]
    async fn discovery_and_jwks_redirects_and_overrides() {
        let idp = started().await;
        let issuer = idp.issuer();
        let discovery_url = format!("{issuer}/.well-known/openid-configuration");

        idp.redirect_discovery_to(Some("http://169.254.169.254/latest/meta-data/".into()));
        let response = get(&discovery_url).await;
        assert_eq!(response.status(), StatusCode::FOUND);
        assert_eq!(
            location(&response),
            "http://169.254.169.254/latest/meta-data/"
        );
        // openidconnect does not follow it (its HTTP client would)
        let error =
            CoreProviderMetadata::discover_async(IssuerUrl::new(issuer.clone()).unwrap(), &send)
                .await
                .unwrap_err();
        println!("discovery redirected: {error:?}");
        idp.redirect_discovery_to(None);

        idp.redirect_jwks_to(Some("http://10.0.0.1/jwks".into()));
        let response = get(&format!("{issuer}/jwks")).await;
        assert_eq!(response.status(), StatusCode::FOUND);
        assert_eq!(location(&response), "http://10.0.0.1/jwks");
        idp.redirect_jwks_to(None);

        idp.override_jwks_uri(Some("http://169.254.169.254/jwks".into()));
        let doc = body_json(&get(&discovery_url).await);
        assert_eq!(doc["jwks_uri"], "http://169.254.169.254/jwks");
        assert_eq!(doc["token_endpoint"], format!("{issuer}/token"));
        idp.override_jwks_uri(None);
        assert_eq!(
            body_json(&get(&discovery_url).await)["jwks_uri"],
            format!("{issuer}/jwks")
        );

        // a document naming another issuer fails openidconnect's discovery
        idp.override_discovery("issuer", Some(json!("https://issuer.attacker.test")));
        let error =
            CoreProviderMetadata::discover_async(IssuerUrl::new(issuer.clone()).unwrap(), &send)
                .await
                .unwrap_err();
        assert!(
            format!("{error:?}").contains("unexpected issuer"),
            "{error:?}"
        );
        idp.override_discovery("issuer", None);

        assert_eq!(idp.discovery_fetches(), 5);
        assert_eq!(idp.jwks_fetches(), 1);
    }

    #[tokio::test]
    async fn key_rotation_and_publication() {
        let idp = started().await;
        let first_jwks = fetch_jwks(&idp).await;
        let first_kid = idp.current_kid();

        idp.rotate_key(true);
        let second_kid = idp.current_kid();
        assert_ne!(first_kid, second_kid);
        let kids = |jwks: &CoreJsonWebKeySet| -> Vec<String> {
            jwks.keys()
                .iter()
                .map(|k| openidconnect::JsonWebKey::key_id(k).unwrap().to_string())
                .collect()
        };
        let both = fetch_jwks(&idp).await;
        assert_eq!(kids(&both), vec![second_kid.clone(), first_kid.clone()]);
        let (token, nonce) = id_token(&idp).await;
        assert_eq!(parts(&token).0["kid"], second_kid);
        verify(&verifier(&idp, both), &token, &nonce).unwrap();
        // a verifier with the JWKS of before the rotation does not know it
        let error = verify(&verifier(&idp, first_jwks), &token, &nonce).unwrap_err();
        assert_eq!(error, "SignatureVerification(NoMatchingKey)");

        idp.rotate_key(false);
        let third_kid = idp.current_kid();
        assert_eq!(kids(&fetch_jwks(&idp).await), vec![third_kid.clone()]);

        idp.publish_current_key(false);
        let without = fetch_jwks(&idp).await;
        assert!(kids(&without).is_empty());
        let (token, nonce) = id_token(&idp).await;
        let error = verify(&verifier(&idp, without), &token, &nonce).unwrap_err();
        assert_eq!(error, "SignatureVerification(NoMatchingKey)");
        idp.publish_current_key(true);
        verify(&verifier(&idp, fetch_jwks(&idp).await), &token, &nonce).unwrap();
    }
}
