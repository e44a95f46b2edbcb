//! Ports: what one service offers the others (checking a credential,
//! telling who owns a key, counting requests, …), found by type.
//!
//! A module *provides* a port while it builds, or — when its service runs
//! in another process — as a client of that process. A module *needs* a
//! port by taking a late handle ([`Needed`], [`NeededAll`]) while it
//! builds; every handle is filled in one place, [`Ports::resolve`], after
//! every module has built, so two services may need each other. A port
//! provided in this process wins over a client of a remote one; a port
//! nobody provides is absent (`None`), and the needing service answers
//! UNAVAILABLE where it would have used it.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use futures::future::BoxFuture;
use twig_auth::{Authenticator, Principal, Role};
use twig_crypto::TokenKind;
use twig_errors::ApiError;

use crate::ModuleError;

/// A value one service offers others. Cheap to clone (an `Arc` inside).
pub trait Port: Clone + Send + Sync + 'static {
    /// What it is, for declarations and errors (`credential checks`).
    const NAME: &'static str;
}

/// Where a provided port lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The service runs in this process.
    Local,
    /// A client of the service's `remote` address.
    Remote,
}

struct Provided {
    origin: Origin,
    module: &'static str,
    value: Box<dyn Any + Send + Sync>,
}

type Resolver = Box<dyn FnOnce(&Ports) -> Result<(), ModuleError> + Send>;

/// Every provided port, and the handles waiting for them.
#[derive(Default)]
pub struct Ports {
    provided: HashMap<TypeId, Vec<Provided>>,
    waiting: Vec<Resolver>,
    resolved: bool,
}

impl Ports {
    /// `module` provides `port` (from `origin`).
    pub(crate) fn provide<P: Port>(&mut self, module: &'static str, origin: Origin, port: P) {
        self.provided
            .entry(TypeId::of::<P>())
            .or_default()
            .push(Provided {
                origin,
                module,
                value: Box::new(port),
            });
    }

    /// A handle to the one provider of `P` for `module`, filled by
    /// [`Ports::resolve`]. A need nobody fills is said at start: in a
    /// deployment split into processes it usually means a missing
    /// `remote.<service>` address, and what needs the port is then off.
    pub(crate) fn need<P: Port>(&mut self, module: &'static str) -> Needed<P> {
        let handle = Needed(Arc::new(OnceLock::new()));
        let slot = handle.0.clone();
        self.waiting.push(Box::new(move |ports: &Ports| {
            let provider = ports.one::<P>()?;
            if provider.is_none() {
                tracing::warn!(
                    module,
                    port = P::NAME,
                    "no service in this process or at a remote.<service> address provides this \
                     port; what needs it is off (set the address of the service that provides \
                     it if the deployment has one)"
                );
            }
            let _ = slot.set(provider);
            Ok(())
        }));
        handle
    }

    /// A handle to every provider of `P`, filled by [`Ports::resolve`].
    pub(crate) fn need_all<P: Port>(&mut self) -> NeededAll<P> {
        let handle = NeededAll(Arc::new(OnceLock::new()));
        let slot = handle.0.clone();
        self.waiting.push(Box::new(move |ports: &Ports| {
            let _ = slot.set(ports.all::<P>());
            Ok(())
        }));
        handle
    }

    /// Fills every handle: the rule of which provider serves a need lives
    /// here and only here.
    pub(crate) fn resolve(&mut self) -> Result<(), ModuleError> {
        for resolver in std::mem::take(&mut self.waiting) {
            resolver(self)?;
        }
        self.resolved = true;
        Ok(())
    }

    /// The provider of `P`: the one in this process, else the one remote
    /// client, else none. Two providers of the same origin are a wiring
    /// mistake.
    pub fn one<P: Port>(&self) -> Result<Option<P>, ModuleError> {
        let Some(all) = self.provided.get(&TypeId::of::<P>()) else {
            return Ok(None);
        };
        for origin in [Origin::Local, Origin::Remote] {
            let mut of_origin = all.iter().filter(|p| p.origin == origin);
            if let Some(first) = of_origin.next() {
                if let Some(second) = of_origin.next() {
                    return Err(ModuleError::TwoProviders {
                        port: P::NAME,
                        first: first.module,
                        second: second.module,
                    });
                }
                return Ok(first.value.downcast_ref::<P>().cloned());
            }
        }
        Ok(None)
    }

    /// Every provider of `P`, those in this process first.
    pub fn all<P: Port>(&self) -> Vec<P> {
        let Some(all) = self.provided.get(&TypeId::of::<P>()) else {
            return Vec::new();
        };
        [Origin::Local, Origin::Remote]
            .into_iter()
            .flat_map(|origin| all.iter().filter(move |p| p.origin == origin))
            .filter_map(|p| p.value.downcast_ref::<P>().cloned())
            .collect()
    }

    /// Who provides `P`, and from where (for tests and diagnostics).
    pub fn providers<P: Port>(&self) -> Vec<(&'static str, Origin)> {
        self.provided
            .get(&TypeId::of::<P>())
            .map(|all| all.iter().map(|p| (p.module, p.origin)).collect())
            .unwrap_or_default()
    }
}

/// A port one service needs from at most one other, known once the suite
/// is assembled.
pub struct Needed<P>(Arc<OnceLock<Option<P>>>);

impl<P> Clone for Needed<P> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<P> Needed<P> {
    /// The provider, if any (none before the suite is assembled).
    pub fn get(&self) -> Option<&P> {
        self.0.get().and_then(Option::as_ref)
    }

    /// Already resolved to `port` (tests, and parts built outside a suite).
    pub fn ready(port: Option<P>) -> Self {
        Self(Arc::new(OnceLock::from(port)))
    }
}

/// A port one service needs from every other that provides it.
pub struct NeededAll<P>(Arc<OnceLock<Vec<P>>>);

impl<P> Clone for NeededAll<P> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<P> NeededAll<P> {
    /// Every provider (none before the suite is assembled).
    pub fn get(&self) -> &[P] {
        self.0.get().map(Vec::as_slice).unwrap_or(&[])
    }

    /// Already resolved to `ports` (tests, and parts built outside a suite).
    pub fn ready(ports: Vec<P>) -> Self {
        Self(Arc::new(OnceLock::from(ports)))
    }
}

/// Checks one kind of bearer credential: session access tokens (the
/// sessions service), API keys (api-keys).
#[derive(Clone)]
pub struct CredentialCheck {
    /// The kind of token, by its prefix.
    pub kind: TokenKind,
    /// The checker.
    pub check: Arc<dyn Authenticator>,
}

impl Port for CredentialCheck {
    const NAME: &'static str = "credential checks";
}

/// Whether a key belongs to the caller's organisation: the quota service
/// asks before it shows or changes a key's limit.
pub trait KeyOwnership: Send + Sync {
    /// `Ok(false)` when the key is unknown or another organisation's.
    fn owns_key<'a>(
        &'a self,
        principal: &'a Principal,
        key_id: uuid::Uuid,
    ) -> BoxFuture<'a, Result<bool, ApiError>>;
}

/// The [`KeyOwnership`] port (api-keys).
#[derive(Clone)]
pub struct KeyOwners(pub Arc<dyn KeyOwnership>);

impl Port for KeyOwners {
    const NAME: &'static str = "key ownership";
}

/// What becomes of the keys a member created in an organisation when the
/// membership changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberKeysChange {
    /// Refused until resumed: the membership is suspended.
    Stop,
    /// Working again: the membership is reinstated.
    Resume,
    /// Revoked for good: the member was removed or left.
    Revoke,
    /// Scopes cut to these (the member's role changed); a key left with
    /// none is revoked.
    LimitScopes(Vec<twig_auth::Scope>),
}

/// Who owns a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOwner {
    /// A member of the key's organisation: the key lives and dies with
    /// that membership.
    Member(uuid::Uuid),
    /// A service account of the organisation.
    ServiceAccount(uuid::Uuid),
}

/// A key as its holder may see it (no secret, no creator's account).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyDescription {
    /// Id.
    pub id: uuid::Uuid,
    /// Display name.
    pub name: String,
    /// The organisation.
    pub org_id: uuid::Uuid,
    /// Its scopes.
    pub scopes: Vec<twig_auth::Scope>,
    /// Who owns it.
    pub owner: KeyOwner,
}

/// The keys of members, for the sessions service: membership changes
/// reach the keys, and "who am I" describes a key.
pub trait MemberKeyControl: Send + Sync {
    /// Stops, resumes or revokes every key `user_id` created in `org_id`;
    /// idempotent. Returns how many keys changed state.
    fn change_member_keys(
        &self,
        org_id: uuid::Uuid,
        user_id: uuid::Uuid,
        change: MemberKeysChange,
    ) -> BoxFuture<'_, Result<u64, ApiError>>;

    /// The key with this id, in any organisation; `None` when unknown.
    fn describe_key(
        &self,
        key_id: uuid::Uuid,
    ) -> BoxFuture<'_, Result<Option<KeyDescription>, ApiError>>;
}

/// The [`MemberKeyControl`] port (api-keys).
#[derive(Clone)]
pub struct MemberKeys(pub Arc<dyn MemberKeyControl>);

impl Port for MemberKeys {
    const NAME: &'static str = "member keys";
}

/// A brake on public requests: at most `limit` requests of kind `name`
/// per `period` for one key (a client address, an email, an
/// organisation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Brake {
    /// What is braked (`sign_up_per_address`…): a bounded label.
    pub name: &'static str,
    /// Requests admitted per period.
    pub limit: u64,
    /// The period (1 s to 1 day).
    pub period: std::time::Duration,
}

/// Brakes on public requests — sign-ups, reset requests, invitations,
/// refreshes, link attempts — counted by the quota service, shared by
/// every replica when it counts in Redis.
pub trait Throttling: Send + Sync {
    /// Counts one request of `brake` for `key`; RESOURCE_EXHAUSTED (with
    /// the retry delay) when over. The key is stored only as a hash.
    fn throttle<'a>(
        &'a self,
        brake: &'a Brake,
        key: &'a str,
    ) -> BoxFuture<'a, Result<(), ApiError>>;
}

/// The [`Throttling`] port (quota).
#[derive(Clone)]
pub struct Throttles(pub Arc<dyn Throttling>);

impl Port for Throttles {
    const NAME: &'static str = "throttles";
}

/// Where a sealed value belongs: bound into its ciphertext, so it opens
/// only for the same organisation, purpose and record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealContext {
    /// The organisation.
    pub org: uuid::Uuid,
    /// What the value is for, e.g. `sso-client-secret`.
    pub purpose: String,
    /// The caller's record it belongs to.
    pub record: String,
}

/// Encryption of other services' secrets (client secrets of identity
/// providers, connector tokens) by the secrets vault's transit API.
pub trait Sealing: Send + Sync {
    /// Encrypts `plaintext` for `context`.
    fn seal<'a>(
        &'a self,
        context: &'a SealContext,
        plaintext: &'a [u8],
    ) -> BoxFuture<'a, Result<String, ApiError>>;

    /// Decrypts what [`Sealing::seal`] returned, for the same context.
    fn unseal<'a>(
        &'a self,
        context: &'a SealContext,
        sealed: &'a str,
    ) -> BoxFuture<'a, Result<zeroize::Zeroizing<Vec<u8>>, ApiError>>;
}

/// The [`Sealing`] port (secrets-vault).
#[derive(Clone)]
pub struct Sealer(pub Arc<dyn Sealing>);

impl Port for Sealer {
    const NAME: &'static str = "sealing";
}

// ----- identity and sessions (the sessions service) -------------------

/// How a session was authenticated, stored on the session and in the
/// audit event of its creation. Only valid values exist: `password`,
/// `sso:<connection id>` (a UUID), `oauth:<provider>` (1–32 of `a-z`,
/// `0-9`, `-`, `_`, starting with a letter).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SessionMethod {
    /// Email and password (login, sign-up).
    Password,
    /// A single sign-on connection.
    Sso(uuid::Uuid),
    /// An OAuth provider.
    OAuth(OAuthProvider),
}

/// The name of an OAuth provider, valid by construction.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OAuthProvider(String);

impl OAuthProvider {
    /// The longest provider name.
    pub const MAX_CHARS: usize = 32;

    /// `raw` when it is a valid provider name.
    pub fn new(raw: &str) -> Result<Self, InvalidSessionMethod> {
        let valid = !raw.is_empty()
            && raw.len() <= Self::MAX_CHARS
            && raw.starts_with(|c: char| c.is_ascii_lowercase())
            && raw
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if valid {
            Ok(Self(raw.to_string()))
        } else {
            Err(InvalidSessionMethod(format!(
                "an OAuth provider is 1 to {} of a-z, 0-9, '-', '_', starting with a letter",
                Self::MAX_CHARS
            )))
        }
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why a text is not a [`SessionMethod`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid session method: {0}")]
pub struct InvalidSessionMethod(String);

impl SessionMethod {
    /// An OAuth provider's method.
    pub fn oauth(provider: &str) -> Result<Self, InvalidSessionMethod> {
        OAuthProvider::new(provider).map(Self::OAuth)
    }

    /// Reads the stored or wire form (`password`, `sso:<uuid>`,
    /// `oauth:<provider>`); anything else is refused.
    pub fn parse(raw: &str) -> Result<Self, InvalidSessionMethod> {
        if raw == "password" {
            return Ok(Self::Password);
        }
        if let Some(id) = raw.strip_prefix("sso:") {
            // Only the canonical, lower-case hyphenated form, so that one
            // connection has one spelling.
            return match uuid::Uuid::parse_str(id) {
                Ok(uuid) if uuid.hyphenated().to_string() == id && !uuid.is_nil() => {
                    Ok(Self::Sso(uuid))
                }
                _ => Err(InvalidSessionMethod(
                    "an SSO connection id is a lower-case hyphenated UUID".into(),
                )),
            };
        }
        if let Some(provider) = raw.strip_prefix("oauth:") {
            return Self::oauth(provider);
        }
        Err(InvalidSessionMethod(
            "must be `password`, `sso:<connection id>` or `oauth:<provider>`".into(),
        ))
    }

    /// The stored and wire form.
    pub fn as_string(&self) -> String {
        self.to_string()
    }
}

impl std::fmt::Display for SessionMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Password => f.write_str("password"),
            Self::Sso(id) => write!(f, "sso:{}", id.hyphenated()),
            Self::OAuth(provider) => write!(f, "oauth:{}", provider.as_str()),
        }
    }
}

impl std::str::FromStr for SessionMethod {
    type Err = InvalidSessionMethod;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Where a session's client is, when the issuing service knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionClient {
    /// The client's address.
    pub ip: Option<std::net::IpAddr>,
    /// Its user agent (cut to 512 characters by the sessions service).
    pub user_agent: Option<String>,
}

/// A minted session's credentials, shown to the client once.
#[derive(Debug, Clone)]
pub struct IssuedSession {
    /// The session.
    pub session_id: uuid::Uuid,
    /// The access token.
    pub access_token: twig_config::Secret,
    /// Its expiry.
    pub access_expires_at: chrono::DateTime<chrono::Utc>,
    /// The refresh token.
    pub refresh_token: twig_config::Secret,
    /// Its expiry.
    pub refresh_expires_at: chrono::DateTime<chrono::Utc>,
}

/// Minting sessions for users another service authenticated (SSO, OAuth
/// connectors). The sessions service refuses a disabled user
/// (FAILED_PRECONDITION), a user who is not a member of the organisation
/// (PERMISSION_DENIED) and an unknown user or organisation (NOT_FOUND).
pub trait SessionIssuing: Send + Sync {
    /// A new session of `user_id` in `org_id`, authenticated by `method`.
    fn issue_session<'a>(
        &'a self,
        user_id: uuid::Uuid,
        org_id: uuid::Uuid,
        method: &'a SessionMethod,
        client: &'a SessionClient,
    ) -> BoxFuture<'a, Result<IssuedSession, ApiError>>;

    /// A password sign-in, as `Login` does it (brakes, delays, audit):
    /// the user, the organisation and the session. Another service uses
    /// it when a person proves their password to it (linking a sign-in
    /// method to their account).
    fn sign_in_with_password<'a>(
        &'a self,
        email: &'a str,
        password: &'a str,
        client: &'a SessionClient,
    ) -> BoxFuture<'a, Result<(uuid::Uuid, uuid::Uuid, IssuedSession), ApiError>>;
}

/// The [`SessionIssuing`] port (sessions).
#[derive(Clone)]
pub struct SessionIssuer(pub Arc<dyn SessionIssuing>);

impl Port for SessionIssuer {
    const NAME: &'static str = "session issuing";
}

/// A user as other services see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryUser {
    /// Id.
    pub id: uuid::Uuid,
    /// Normalised email.
    pub email: String,
    /// Display name.
    pub display_name: String,
    /// Whether the user is disabled (no session may be issued).
    pub disabled: bool,
}

/// What [`UserDirectory::provision_user`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisionedUser {
    /// The user, new or existing.
    pub user: DirectoryUser,
    /// The user's role in the organisation: the one asked for when the
    /// membership is new, else the existing one, unchanged.
    pub role: Role,
    /// Whether the user was created.
    pub created_user: bool,
    /// Whether the membership was created.
    pub joined: bool,
}

/// Users for services that authenticate them elsewhere: look-ups, and
/// just-in-time provisioning.
pub trait UserDirectory: Send + Sync {
    /// The user with this email (normalised as sign-up does), if any.
    fn find_user_by_email<'a>(
        &'a self,
        email: &'a str,
    ) -> BoxFuture<'a, Result<Option<DirectoryUser>, ApiError>>;

    /// The user with this id, if any.
    fn find_user<'a>(
        &'a self,
        user_id: uuid::Uuid,
    ) -> BoxFuture<'a, Result<Option<DirectoryUser>, ApiError>>;

    /// Makes the user with `email` a member of `org_id` with `role`,
    /// creating the user (without a password) when absent. Idempotent: an
    /// existing member keeps their role — never raised, never lowered.
    /// `Role::Owner` is refused (PERMISSION_DENIED): ownership is granted
    /// by an owner, not by a login; an unknown organisation is NOT_FOUND.
    fn provision_user<'a>(
        &'a self,
        email: &'a str,
        display_name: &'a str,
        org_id: uuid::Uuid,
        role: Role,
    ) -> BoxFuture<'a, Result<ProvisionedUser, ApiError>>;

    /// An account for `email`, which the caller has seen verified,
    /// without a password, owning a new organisation (its id returned).
    /// ALREADY_EXISTS when the email has an account.
    fn create_federated_account<'a>(
        &'a self,
        email: &'a str,
        display_name: &'a str,
    ) -> BoxFuture<'a, Result<(DirectoryUser, uuid::Uuid), ApiError>>;

    /// Whether the user has a password, and their home organisation.
    fn sign_in_facts<'a>(
        &'a self,
        user_id: uuid::Uuid,
    ) -> BoxFuture<'a, Result<SignInFacts, ApiError>>;
}

/// What a sign-in through another service needs to know of a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignInFacts {
    /// Whether the account has a password.
    pub has_password: bool,
    /// The organisation a sign-in lands in: the oldest active membership.
    pub home_org: Option<uuid::Uuid>,
}

/// The [`UserDirectory`] port (sessions).
#[derive(Clone)]
pub struct Users(pub Arc<dyn UserDirectory>);

impl Port for Users {
    const NAME: &'static str = "user directory";
}

// ----- single sign-on (the sso-federation service) -------------------

/// Whether an email may use a password, from single sign-on's rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSignIn {
    /// It may (no connection enforces its domain).
    Allowed,
    /// Its domain's connection is enforced: sign in there.
    UseSso {
        /// The organisation whose connection it is.
        org_id: uuid::Uuid,
        /// Where a browser starts that sign-in (a path on this service).
        start_path: String,
    },
}

/// Asked by the sessions service before a password sign-in, sign-up or
/// reset: an email in a domain whose connection is enforced must use it.
/// The answer depends on the email's domain only, never on whether an
/// account exists.
pub trait PasswordPolicy: Send + Sync {
    /// Whether `email` may use a password.
    fn password_sign_in<'a>(
        &'a self,
        email: &'a str,
    ) -> BoxFuture<'a, Result<PasswordSignIn, ApiError>>;
}

/// The [`PasswordPolicy`] port (sso-federation).
#[derive(Clone)]
pub struct PasswordRules(pub Arc<dyn PasswordPolicy>);

impl Port for PasswordRules {
    const NAME: &'static str = "password rules";
}

// ----- plans (the quota service) -------------------------------------

/// An organisation's plan, as the services that gate a feature on it need
/// it. What a plan includes is the configuration's
/// ([`twig_config::PlansConfig`]); who is on which plan, the quota
/// service's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgPlan {
    /// The plan's name in `[plans]`.
    pub name: String,
    /// What it includes.
    pub features: Vec<twig_config::Feature>,
}

impl OrgPlan {
    /// Whether the plan includes `feature`.
    pub fn has(&self, feature: twig_config::Feature) -> bool {
        self.features.contains(&feature)
    }

    /// The refusal of `feature` on this plan: FAILED_PRECONDITION naming
    /// the plan, the feature and what to do. Every service that gates a
    /// feature refuses with it.
    pub fn refusal(&self, feature: twig_config::Feature) -> ApiError {
        ApiError::failed_precondition(format!(
            "the organisation's plan `{}` does not include {} (`{}`); the platform operator \
             can move the organisation to a plan that does",
            self.name,
            feature.describe(),
            feature.as_str()
        ))
    }
}

/// Which plan an organisation is on.
pub trait PlanLookup: Send + Sync {
    /// The plan of `org_id` (the configured default plan when the
    /// operator never moved it).
    fn plan_of(&self, org_id: uuid::Uuid) -> BoxFuture<'_, Result<OrgPlan, ApiError>>;
}

/// The [`PlanLookup`] port (quota).
#[derive(Clone)]
pub struct Plans(pub Arc<dyn PlanLookup>);

impl Port for Plans {
    const NAME: &'static str = "organisation plans";
}

impl Plans {
    /// The plan of `org_id` from the needed port; UNAVAILABLE when no
    /// quota service runs here or at a `remote.quota` address (a gated
    /// feature is never allowed on a guess).
    pub async fn of(needed: &Needed<Plans>, org_id: uuid::Uuid) -> Result<OrgPlan, ApiError> {
        let Some(Plans(plans)) = needed.get() else {
            return Err(ApiError::unavailable(
                "organisations' plans are kept by the quota service, which neither runs in this \
                 process nor has a remote.quota address",
            ));
        };
        plans.plan_of(org_id).await
    }
}

#[cfg(test)]
mod session_method_tests {
    use super::*;

    #[test]
    fn valid_methods_round_trip() {
        let id = uuid::Uuid::new_v4();
        for (raw, method) in [
            ("password".to_string(), SessionMethod::Password),
            (format!("sso:{id}"), SessionMethod::Sso(id)),
            (
                "oauth:github".to_string(),
                SessionMethod::oauth("github").unwrap(),
            ),
            (
                "oauth:google-workspace_2".to_string(),
                SessionMethod::oauth("google-workspace_2").unwrap(),
            ),
        ] {
            assert_eq!(SessionMethod::parse(&raw).unwrap(), method, "{raw}");
            assert_eq!(method.to_string(), raw);
        }
    }

    #[test]
    fn anything_else_is_refused() {
        let id = uuid::Uuid::new_v4();
        let long = format!("oauth:{}", "a".repeat(OAuthProvider::MAX_CHARS + 1));
        for raw in [
            "",
            "Password",
            "password ",
            "passkey",
            "sso:",
            "sso:not-a-uuid",
            &format!("sso:{}", id.simple()),
            &format!("sso:{}", id.hyphenated().to_string().to_uppercase()),
            "sso:00000000-0000-0000-0000-000000000000",
            "oauth:",
            "oauth:GitHub",
            "oauth:1password",
            "oauth:git hub",
            "oauth:github\n",
            "oauth:gïthub",
            &long,
            "saml:github",
        ] {
            assert!(SessionMethod::parse(raw).is_err(), "{raw:?} was accepted");
        }
        assert!(SessionMethod::oauth("").is_err());
        assert!(
            SessionMethod::oauth(&"a".repeat(OAuthProvider::MAX_CHARS)).is_ok(),
            "the longest name"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq)]
    struct Colour(&'static str);

    impl Port for Colour {
        const NAME: &'static str = "colour";
    }

    #[test]
    fn a_local_provider_wins_over_a_remote_one() {
        let mut ports = Ports::default();
        let needed = ports.need::<Colour>("test");
        let all = ports.need_all::<Colour>();
        assert_eq!(needed.get(), None, "nothing before resolution");
        ports.provide("far", Origin::Remote, Colour("blue"));
        ports.provide("near", Origin::Local, Colour("red"));
        ports.resolve().unwrap();
        assert_eq!(needed.get(), Some(&Colour("red")));
        assert_eq!(all.get(), [Colour("red"), Colour("blue")]);
    }

    #[test]
    fn an_unprovided_port_is_absent() {
        let mut ports = Ports::default();
        let needed = ports.need::<Colour>("test");
        ports.resolve().unwrap();
        assert_eq!(needed.get(), None);
        assert!(ports.all::<Colour>().is_empty());
    }

    #[test]
    fn two_local_providers_are_refused() {
        let mut ports = Ports::default();
        let _needed = ports.need::<Colour>("test");
        ports.provide("a", Origin::Local, Colour("red"));
        ports.provide("b", Origin::Local, Colour("green"));
        let err = ports.resolve().unwrap_err().to_string();
        assert!(
            err.contains("colour") && err.contains('a') && err.contains('b'),
            "{err}"
        );
    }
}
