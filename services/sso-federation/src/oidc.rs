//! OpenID Connect with the `openidconnect` crate, every request through
//! `twig-outbound` (its SSRF rules, no redirects, timeouts, size caps).
//!
//! - [`OidcProviders`]: a provider's discovery document and keys, kept
//!   for `sso_federation.metadata_ttl`; an ID token signed with a key not
//!   in the kept set fetches the keys again — at most once per
//!   `sso_federation.jwks_refresh_gap` per issuer, so forged `kid`s cannot
//!   make us hammer a provider.
//! - [`authorization_url`]: the authorization code flow with PKCE (S256),
//!   `state` and `nonce`.
//! - [`OidcProviders::finish`]: the code exchanged (with the PKCE
//!   verifier) and the ID token checked: signature by an asymmetric
//!   algorithm only (never `none`, never HMAC, whatever the provider
//!   advertises), issuer, audience (our client id only, no other), `azp`
//!   when present ours (openidconnect leaves it unchecked), expiry, issue
//!   time not in the future (it accepts any by default), and the nonce of
//!   this sign-in.

use std::sync::Arc;
use std::time::Duration;

use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreIdTokenVerifier, CoreJsonWebKeySet,
    CoreJwsSigningAlgorithm, CoreProviderMetadata,
};
use openidconnect::{
    AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken, Nonce,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, SignatureVerificationError,
    TokenResponse as _,
};
use twig_cache::BoundedCache;
use twig_clock::Clock;
use twig_outbound::{OutboundClient, OutboundError, Purpose};

use crate::connection::IssuerUrl;

/// The algorithms an ID token may be signed with: asymmetric ones only.
pub const ALLOWED_ALGS: [CoreJwsSigningAlgorithm; 9] = [
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha384,
    CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha512,
    CoreJwsSigningAlgorithm::RsaSsaPssSha256,
    CoreJwsSigningAlgorithm::RsaSsaPssSha384,
    CoreJwsSigningAlgorithm::RsaSsaPssSha512,
    CoreJwsSigningAlgorithm::EcdsaP256Sha256,
    CoreJwsSigningAlgorithm::EcdsaP384Sha384,
    CoreJwsSigningAlgorithm::EdDsa,
];

/// How far in the future an ID token's `iat` may be (clock skew).
pub const MAX_FUTURE_IAT: Duration = Duration::from_secs(300);

/// Why an OpenID Connect step failed. [`OidcError::reason`] is the short
/// fixed reason audited and counted.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// The provider could not be reached or refused the request (SSRF
    /// rules included).
    #[error("the identity provider could not be reached: {0}")]
    Unreachable(#[source] OutboundError),
    /// Its discovery document or keys are not usable.
    #[error("the identity provider's configuration is not usable: {0}")]
    BadMetadata(String),
    /// The code exchange failed (e.g. `invalid_grant`: a used code, a
    /// wrong PKCE verifier).
    #[error("the identity provider refused the code: {0}")]
    Exchange(String),
    /// The token response has no ID token.
    #[error("the identity provider sent no ID token")]
    NoIdToken,
    /// The ID token failed a check.
    #[error("the ID token was refused: {0}")]
    Token(String),
}

impl OidcError {
    /// A short fixed reason, for audit details and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unreachable(_) => "idp_unreachable",
            Self::BadMetadata(_) => "idp_metadata",
            Self::Exchange(_) => "code_exchange",
            Self::NoIdToken => "no_id_token",
            Self::Token(_) => "id_token",
        }
    }
}

/// A provider as its discovery document and key set describe it.
pub struct Provider {
    /// The discovery document, with the fetched keys set.
    pub metadata: CoreProviderMetadata,
    /// A multi-tenant provider's issuer template (Microsoft's
    /// `…/{tenantid}/v2.0`): each ID token's issuer is it with the token's
    /// `tid`.
    pub issuer_template: Option<String>,
}

/// The placeholder of a multi-tenant issuer.
const TENANT_PLACEHOLDER: &str = "{tenantid}";

/// Whether `named` (a discovery document's issuer) is `asked` — or, for a
/// multi-tenant provider asked at its `common`, `organizations` or
/// `consumers` address, the template of it (Microsoft's
/// `https://login.microsoftonline.com/{tenantid}/v2.0` for
/// `https://login.microsoftonline.com/common/v2.0`).
pub fn issuer_matches(named: &str, asked: &str) -> bool {
    named == asked
        || (named.matches(TENANT_PLACEHOLDER).count() == 1
            && ["common", "organizations", "consumers"]
                .iter()
                .any(|tenant| named.replace(TENANT_PLACEHOLDER, tenant) == asked))
}

/// The issuer an ID token must name: the provider's, or its template with
/// the token's own `tid` (a directory id, read before the signature is
/// checked — the issuer check and the signature check then both apply).
fn expected_issuer(provider: &Provider, jwt: &str) -> Result<openidconnect::IssuerUrl, OidcError> {
    let Some(template) = &provider.issuer_template else {
        return Ok(provider.metadata.issuer().clone());
    };
    let claims = payload(jwt)?;
    let tid = claims
        .get("tid")
        .and_then(|v| v.as_str())
        .and_then(|t| uuid::Uuid::parse_str(t).ok())
        .filter(|t| !t.is_nil())
        .ok_or_else(|| OidcError::Token("the ID token names no directory (tid)".into()))?;
    openidconnect::IssuerUrl::new(
        template.replace(TENANT_PLACEHOLDER, &tid.hyphenated().to_string()),
    )
    .map_err(|e| OidcError::Token(format!("the issuer is not a URL: {e}")))
}

/// Discovery documents and keys, cached per issuer.
pub struct OidcProviders {
    outbound: OutboundClient,
    clock: Arc<dyn Clock>,
    providers: BoundedCache<String, Arc<Provider>>,
    refreshed: BoundedCache<String, ()>,
    metadata_ttl: Duration,
    refresh_gap: Duration,
}

impl OidcProviders {
    /// Fetching through `outbound`; documents kept `metadata_ttl`, keys
    /// fetched again on an unknown key at most once per `refresh_gap`.
    pub fn new(
        outbound: OutboundClient,
        clock: Arc<dyn Clock>,
        metadata_ttl: Duration,
        refresh_gap: Duration,
    ) -> Self {
        Self {
            outbound,
            clock,
            providers: BoundedCache::new(10_000),
            refreshed: BoundedCache::new(10_000),
            metadata_ttl,
            refresh_gap,
        }
    }

    /// The provider at `issuer`: kept, or fetched now.
    pub async fn provider(&self, issuer: &IssuerUrl) -> Result<Arc<Provider>, OidcError> {
        if let Some(kept) = self.providers.get(&issuer.as_str().to_string()) {
            return Ok(kept);
        }
        self.fetch(issuer).await
    }

    /// Fetches `issuer`'s discovery document and keys (and keeps them).
    pub async fn fetch(&self, issuer: &IssuerUrl) -> Result<Arc<Provider>, OidcError> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.as_str().trim_end_matches('/')
        );
        let document: serde_json::Value = self
            .outbound
            .get_json(Purpose::OIDC_DISCOVERY, &url)
            .await
            .map_err(OidcError::Unreachable)?;
        let metadata: CoreProviderMetadata = serde_json::from_value(document).map_err(|e| {
            OidcError::BadMetadata(format!("the discovery document at {url} is not valid: {e}"))
        })?;
        // OpenID Connect Discovery §4.3: the issuer must be exactly the
        // one asked for.
        if !issuer_matches(metadata.issuer().as_str(), issuer.as_str()) {
            return Err(OidcError::BadMetadata(format!(
                "the discovery document names issuer {:?}, not {:?}",
                metadata.issuer().as_str(),
                issuer.as_str()
            )));
        }
        // The endpoints a sign-in will call pass the outbound rules now
        // (scheme, credentials, literal addresses), so a connection that
        // would call a private address is refused when it is made.
        let endpoints = [
            Some(metadata.authorization_endpoint().url().as_str()),
            metadata.token_endpoint().map(|u| u.url().as_str()),
        ];
        for url in endpoints.into_iter().flatten() {
            self.outbound.check_url(url).map_err(|e| {
                OidcError::BadMetadata(format!("the discovery document names {url}: {e}"))
            })?;
        }
        let keys = self.fetch_keys(&metadata).await?;
        let issuer_template = (metadata.issuer().as_str() != issuer.as_str())
            .then(|| metadata.issuer().as_str().to_string());
        let provider = Arc::new(Provider {
            metadata: metadata.set_jwks(keys),
            issuer_template,
        });
        self.providers.insert(
            issuer.as_str().to_string(),
            provider.clone(),
            self.metadata_ttl,
        );
        Ok(provider)
    }

    async fn fetch_keys(
        &self,
        metadata: &CoreProviderMetadata,
    ) -> Result<CoreJsonWebKeySet, OidcError> {
        let url = metadata.jwks_uri().url().as_str();
        let keys: serde_json::Value = self
            .outbound
            .get_json(Purpose::JWKS, url)
            .await
            .map_err(OidcError::Unreachable)?;
        serde_json::from_value(keys)
            .map_err(|e| OidcError::BadMetadata(format!("the key set at {url} is not valid: {e}")))
    }

    /// The provider with its keys fetched again, unless that was done
    /// less than `refresh_gap` ago (then `None`).
    async fn refetch_keys(&self, issuer: &IssuerUrl) -> Result<Option<Arc<Provider>>, OidcError> {
        let key = issuer.as_str().to_string();
        if self.refreshed.get(&key).is_some() {
            return Ok(None);
        }
        self.refreshed.insert(key, (), self.refresh_gap);
        self.fetch(issuer).await.map(Some)
    }

    /// Exchanges `code` (with the PKCE `verifier`) at `issuer` as
    /// `client_id`, and returns the checked ID token's claims, all of
    /// them, as JSON.
    #[allow(clippy::too_many_arguments)]
    pub async fn finish(
        &self,
        issuer: &IssuerUrl,
        client_id: &str,
        client_secret: &str,
        redirect_uri: &str,
        code: &str,
        verifier: &str,
        nonce: &str,
    ) -> Result<serde_json::Map<String, serde_json::Value>, OidcError> {
        let provider = self.provider(issuer).await?;
        let redirect = RedirectUrl::new(redirect_uri.to_string())
            .map_err(|e| OidcError::BadMetadata(format!("the callback URL is not valid: {e}")))?;
        let client = CoreClient::from_provider_metadata(
            provider.metadata.clone(),
            ClientId::new(client_id.to_string()),
            Some(ClientSecret::new(client_secret.to_string())),
        )
        .set_redirect_uri(redirect);
        let http = self.outbound.http_client(Purpose::TOKEN_EXCHANGE);
        let response = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| OidcError::BadMetadata(format!("no token endpoint: {e}")))?
            .set_pkce_verifier(PkceCodeVerifier::new(verifier.to_string()))
            .request_async(&http)
            .await
            .map_err(|e| match e {
                // The answer came but does not read: openidconnect parses
                // the ID token's claims with it, so a token whose claims
                // have the wrong types lands here — a refused token.
                openidconnect::RequestTokenError::Parse(e, _) => {
                    OidcError::Token(format!("the token response is not readable: {e}"))
                }
                e => OidcError::Exchange(exchange_error(&e)),
            })?;
        let id_token = response.id_token().ok_or(OidcError::NoIdToken)?.clone();
        let nonce = Nonce::new(nonce.to_string());
        let expected = expected_issuer(&provider, &id_token.to_string())?;
        let checked = self.verify(&provider, &expected, client_id, &id_token, &nonce);
        let checked = match checked {
            Err(ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey,
            )) => match self.refetch_keys(issuer).await? {
                Some(fresh) => self.verify(&fresh, &expected, client_id, &id_token, &nonce),
                None => checked,
            },
            other => other,
        };
        checked.map_err(|e| OidcError::Token(e.to_string()))?;
        let claims = payload(&id_token.to_string())?;
        // openidconnect does not check `azp`: when present, it must be us
        // (OpenID Connect Core §3.1.3.7, step 5).
        match claims.get("azp") {
            None => {}
            Some(serde_json::Value::String(azp)) if azp == client_id => {}
            Some(_) => {
                return Err(OidcError::Token(
                    "the ID token was issued to another client (azp)".into(),
                ));
            }
        }
        Ok(claims)
    }

    fn verify(
        &self,
        provider: &Provider,
        issuer: &openidconnect::IssuerUrl,
        client_id: &str,
        id_token: &openidconnect::core::CoreIdToken,
        nonce: &Nonce,
    ) -> Result<(), ClaimsVerificationError> {
        let now = self.clock.now();
        let latest_iat = now + chrono::Duration::from_std(MAX_FUTURE_IAT).unwrap_or_default();
        let verifier = CoreIdTokenVerifier::new_public_client(
            ClientId::new(client_id.to_string()),
            issuer.clone(),
            provider.metadata.jwks().clone(),
        )
        .set_allowed_algs(ALLOWED_ALGS)
        .set_time_fn(move || now)
        .set_issue_time_verifier_fn(move |iat| {
            if iat > latest_iat {
                Err(format!("issued in the future ({iat})"))
            } else {
                Ok(())
            }
        });
        id_token.claims(&verifier, nonce).map(|_| ())
    }
}

/// The authorization URL of a sign-in: with `state`, `nonce` and the
/// PKCE challenge of `verifier`, asking `scopes` besides `openid`.
pub fn authorization_url(
    provider: &Provider,
    client_id: &str,
    redirect_uri: &str,
    scopes: &[String],
    login_hint: Option<&str>,
) -> Result<Authorization, OidcError> {
    let redirect = RedirectUrl::new(redirect_uri.to_string())
        .map_err(|e| OidcError::BadMetadata(format!("the callback URL is not valid: {e}")))?;
    let client = CoreClient::from_provider_metadata(
        provider.metadata.clone(),
        ClientId::new(client_id.to_string()),
        None,
    )
    .set_redirect_uri(redirect);
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut request = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .set_pkce_challenge(challenge);
    for scope in scopes {
        request = request.add_scope(Scope::new(scope.clone()));
    }
    if let Some(hint) = login_hint {
        request = request.add_extra_param("login_hint", hint.to_string());
    }
    let (url, state, nonce) = request.url();
    Ok(Authorization {
        url: url.to_string(),
        state: state.secret().clone(),
        nonce: nonce.secret().clone(),
        verifier: verifier.secret().clone(),
    })
}

/// A started authorization: where to send the browser, and what to keep
/// until it comes back.
pub struct Authorization {
    /// The provider's authorization URL.
    pub url: String,
    /// The `state` sent.
    pub state: String,
    /// The `nonce` sent.
    pub nonce: String,
    /// The PKCE verifier (its S256 challenge was sent).
    pub verifier: String,
}

/// The claims of a JWT already checked: its payload, decoded.
fn payload(jwt: &str) -> Result<serde_json::Map<String, serde_json::Value>, OidcError> {
    use base64::Engine as _;
    let part = jwt
        .split('.')
        .nth(1)
        .ok_or_else(|| OidcError::Token("not a JWT".into()))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| OidcError::Token("the payload is not base64url".into()))?;
    serde_json::from_slice(&bytes)
        .map_err(|_| OidcError::Token("the payload is not a JSON object".into()))
}

/// What a failed exchange says, without any token.
fn exchange_error<RE: std::error::Error + 'static>(
    error: &openidconnect::RequestTokenError<
        RE,
        openidconnect::StandardErrorResponse<openidconnect::core::CoreErrorResponseType>,
    >,
) -> String {
    match error {
        openidconnect::RequestTokenError::ServerResponse(answer) => {
            format!("{}", answer.error())
        }
        openidconnect::RequestTokenError::Request(e) => format!("request failed: {e}"),
        openidconnect::RequestTokenError::Parse(e, _) => format!("unreadable answer: {e}"),
        openidconnect::RequestTokenError::Other(e) => e.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_multi_tenant_template_matches_its_shared_addresses_only() {
        let template = "https://login.microsoftonline.com/{tenantid}/v2.0";
        for asked in ["common", "organizations", "consumers"] {
            assert!(issuer_matches(
                template,
                &format!("https://login.microsoftonline.com/{asked}/v2.0")
            ));
        }
        assert!(issuer_matches(
            "https://idp.example/",
            "https://idp.example/"
        ));
        for (named, asked) in [
            (template, "https://login.microsoftonline.com/contoso/v2.0"),
            (template, "https://login.microsoftonline.com/common/v2.0/"),
            (
                "https://evil.example/{tenantid}/v2.0",
                "https://login.microsoftonline.com/common/v2.0",
            ),
            ("https://idp.example", "https://idp.example/"),
            ("https://{tenantid}/{tenantid}", "https://common/common"),
        ] {
            assert!(!issuer_matches(named, asked), "{named} for {asked}");
        }
    }
}
