//! What a connection is: its protocol's settings, rollout stage, mapping
//! and pilot, as domain types that can only be built valid. The wire
//! (`grpc.rs`) and the stored JSON both go through these.
//!
//! A connection is protocol-neutral — stage, mapping, pilot and domains
//! mean the same whatever the protocol — and its [`Protocol`] holds what
//! one protocol needs (OpenID Connect now; SAML joins as another variant).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use twig_auth::Role;
use twig_email::{Email, EmailDomain};
use twig_errors::ApiError;
use twig_errors::fields::InvalidField;

/// The longest connection name.
pub const MAX_NAME_CHARS: usize = 100;
/// The most group rules, pilot emails, extra scopes or domains a
/// connection holds.
pub const MAX_RULES: usize = 100;
/// The most emails on a pilot list.
pub const MAX_PILOT_EMAILS: usize = 1000;
/// The longest claim, group, scope or tenant name.
pub const MAX_CLAIM_CHARS: usize = 256;

/// Where a connection is in its rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Nobody signs in through it.
    Off,
    /// Listed emails and members of the pilot group sign in through it;
    /// everyone else keeps their password.
    Pilot,
    /// Every account with an email in its domains signs in through it
    /// only.
    Enforced,
}

impl Stage {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Pilot => "pilot",
            Self::Enforced => "enforced",
        }
    }

    /// The stage stored as `raw`.
    pub fn parse(raw: &str) -> Option<Self> {
        [Self::Off, Self::Pilot, Self::Enforced]
            .into_iter()
            .find(|s| s.as_str() == raw)
    }
}

/// Which kind of OpenID Connect provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    /// Any provider, by its issuer.
    Generic,
    /// Google Workspace: the tenant is the Workspace domain (`hd`).
    GoogleWorkspace,
    /// Microsoft Entra ID: the tenant is the directory id (`tid`).
    MicrosoftEntra,
}

/// An issuer URL: `https` (or `http` to a loopback address, for a
/// provider on the same machine), no user name, query or fragment. Kept
/// exactly as given: an ID token's `iss` must equal it character for
/// character (OpenID Connect Core §3.1.3.7), trailing slash included.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IssuerUrl(String);

impl IssuerUrl {
    /// Checks `raw`.
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        let raw = raw.trim();
        if raw.len() > 2048 {
            return Err("must be at most 2048 characters");
        }
        let url = url::Url::parse(raw).map_err(|_| "must be an absolute URL")?;
        let loopback = match url.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(d)) => d == "localhost",
            None => return Err("must name a host"),
        };
        if url.scheme() != "https" && !(url.scheme() == "http" && loopback) {
            return Err("must be an https URL");
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("must not carry a user name or password");
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err("must not have a query or fragment");
        }
        Ok(Self(raw.to_string()))
    }

    /// The URL, as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for IssuerUrl {
    type Error = &'static str;

    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw)
    }
}

impl From<IssuerUrl> for String {
    fn from(url: IssuerUrl) -> Self {
        url.0
    }
}

/// Where the presets' providers are (`sso_federation.google_issuer`,
/// `sso_federation.microsoft_authority`): the real ones by default, a
/// local stand-in in tests.
#[derive(Debug, Clone)]
pub struct PresetEndpoints {
    /// Google's issuer.
    pub google_issuer: IssuerUrl,
    /// Microsoft's authority; a tenant's issuer is
    /// `<authority>/<tenant>/v2.0`.
    pub microsoft_authority: IssuerUrl,
}

/// An OpenID Connect provider and our client there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OidcSettings {
    /// Which kind.
    pub preset: Preset,
    /// Generic: the issuer. Presets: none (derived from the tenant).
    pub issuer: Option<IssuerUrl>,
    /// Presets: the Workspace domain or the directory id.
    pub tenant: Option<String>,
    /// Our client id there.
    pub client_id: String,
    /// Scopes asked for besides `openid email profile`.
    pub extra_scopes: Vec<String>,
}

impl OidcSettings {
    /// The issuer: the generic one, or the preset's for its tenant.
    pub fn issuer(&self, presets: &PresetEndpoints) -> IssuerUrl {
        match self.preset {
            Preset::Generic => self
                .issuer
                .clone()
                .unwrap_or_else(|| presets.google_issuer.clone()),
            Preset::GoogleWorkspace => presets.google_issuer.clone(),
            Preset::MicrosoftEntra => IssuerUrl(format!(
                "{}/{}/v2.0",
                presets.microsoft_authority.as_str().trim_end_matches('/'),
                self.tenant.as_deref().unwrap_or_default()
            )),
        }
    }

    /// The claim that must name the tenant, and its value, for a preset.
    pub fn tenant_claim(&self) -> Option<(&'static str, &str)> {
        let tenant = self.tenant.as_deref()?;
        match self.preset {
            Preset::Generic => None,
            Preset::GoogleWorkspace => Some(("hd", tenant)),
            Preset::MicrosoftEntra => Some(("tid", tenant)),
        }
    }

    /// Checks what the wire gave.
    pub fn new(
        preset: Preset,
        issuer: &str,
        tenant: &str,
        client_id: &str,
        extra_scopes: &[String],
    ) -> Result<Self, InvalidField> {
        let (issuer, tenant) = match preset {
            Preset::Generic => {
                if !tenant.is_empty() {
                    return Err(InvalidField::new(
                        "connection.oidc.tenant",
                        "is for the Google and Microsoft presets only",
                    ));
                }
                let issuer = IssuerUrl::parse(issuer)
                    .map_err(|why| InvalidField::new("connection.oidc.issuer", why))?;
                (Some(issuer), None)
            }
            Preset::GoogleWorkspace | Preset::MicrosoftEntra => {
                if !issuer.is_empty() {
                    return Err(InvalidField::new(
                        "connection.oidc.issuer",
                        "is derived from the tenant for the Google and Microsoft presets; leave \
                         it empty",
                    ));
                }
                (None, Some(tenant_of(preset, tenant)?))
            }
        };
        let client_id = client_id.trim();
        if client_id.is_empty() {
            return Err(InvalidField::new(
                "connection.oidc.client_id",
                "is required",
            ));
        }
        if client_id.len() > MAX_CLAIM_CHARS || client_id.chars().any(char::is_control) {
            return Err(InvalidField::new(
                "connection.oidc.client_id",
                format!("must be at most {MAX_CLAIM_CHARS} characters, without controls"),
            ));
        }
        twig_errors::fields::distinct("connection.oidc.extra_scopes", extra_scopes, MAX_RULES)?;
        for scope in extra_scopes {
            // RFC 6749 §3.3 scope-token.
            let valid = !scope.is_empty()
                && scope.len() <= MAX_CLAIM_CHARS
                && scope
                    .bytes()
                    .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b));
            if !valid {
                return Err(InvalidField::new(
                    "connection.oidc.extra_scopes",
                    "each must be a scope token (printable ASCII, no spaces, quotes or \
                     backslashes)",
                ));
            }
        }
        Ok(Self {
            preset,
            issuer,
            tenant,
            client_id: client_id.to_string(),
            extra_scopes: extra_scopes.to_vec(),
        })
    }
}

fn tenant_of(preset: Preset, raw: &str) -> Result<String, InvalidField> {
    const FIELD: &str = "connection.oidc.tenant";
    match preset {
        Preset::GoogleWorkspace => EmailDomain::parse(raw)
            .map(|d| d.as_str().to_string())
            .map_err(|why| InvalidField::new(FIELD, format!("the Workspace domain {why}"))),
        _ => {
            let id = uuid::Uuid::parse_str(raw.trim()).map_err(|_| {
                InvalidField::new(FIELD, "must be the directory (tenant) id, a UUID")
            })?;
            Ok(id.hyphenated().to_string())
        }
    }
}

/// What one protocol needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Protocol {
    /// OpenID Connect.
    Oidc(OidcSettings),
}

impl Protocol {
    /// The stored kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Oidc(_) => "oidc",
        }
    }
}

/// Roles as stored: by name.
mod stored_role {
    use serde::{Deserialize, Deserializer, Serializer};
    use twig_auth::Role;

    pub fn serialize<S: Serializer>(role: &Role, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(role.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Role, D::Error> {
        let name = String::deserialize(d)?;
        Role::parse(&name).ok_or_else(|| serde::de::Error::custom(format!("unknown role {name}")))
    }
}

/// One rule of a mapping: members of `group` get `role`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRule {
    /// The group, as the groups claim names it.
    pub group: String,
    /// The role it gives.
    #[serde(with = "stored_role")]
    pub role: Role,
}

/// Which claims give email, name and groups, and the roles groups give.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mapping {
    /// The claim with the email.
    pub email_claim: String,
    /// The claim with the display name.
    pub name_claim: String,
    /// The claim with the groups (a list of strings, or one string).
    pub groups_claim: String,
    /// Group → role; the highest matching role wins.
    pub group_roles: Vec<GroupRule>,
    /// The role without a matching group.
    #[serde(with = "stored_role")]
    pub default_role: Role,
}

impl Default for Mapping {
    fn default() -> Self {
        Self {
            email_claim: "email".into(),
            name_claim: "name".into(),
            groups_claim: "groups".into(),
            group_roles: Vec::new(),
            default_role: Role::Member,
        }
    }
}

fn claim_name(field: &'static str, raw: &str, default: &str) -> Result<String, InvalidField> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(default.to_string());
    }
    if raw.len() > MAX_CLAIM_CHARS || raw.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(InvalidField::new(
            field,
            format!("must be a claim name of at most {MAX_CLAIM_CHARS} characters, no spaces"),
        ));
    }
    Ok(raw.to_string())
}

/// A role a sign-in may grant: admin or member, never owner.
pub fn grantable(field: &'static str, role: Option<Role>) -> Result<Role, InvalidField> {
    match role {
        Some(Role::Admin) => Ok(Role::Admin),
        Some(Role::Member) => Ok(Role::Member),
        Some(Role::Owner) => Err(InvalidField::new(
            field,
            "cannot be OWNER: ownership is given by an owner, never by a sign-in",
        )),
        None => Err(InvalidField::new(field, "must be ADMIN or MEMBER")),
    }
}

fn group_name(field: &'static str, raw: &str) -> Result<String, InvalidField> {
    if raw.is_empty() || raw.chars().count() > MAX_CLAIM_CHARS || raw.chars().any(char::is_control)
    {
        return Err(InvalidField::new(
            field,
            format!("must be 1 to {MAX_CLAIM_CHARS} characters, without controls"),
        ));
    }
    Ok(raw.to_string())
}

impl Mapping {
    /// Checks what the wire gave (empty claim names take the defaults;
    /// no default role is MEMBER).
    pub fn new(
        email_claim: &str,
        name_claim: &str,
        groups_claim: &str,
        group_roles: Vec<(String, Option<Role>)>,
        default_role: Option<Option<Role>>,
    ) -> Result<Self, InvalidField> {
        if group_roles.len() > MAX_RULES {
            return Err(InvalidField::new(
                "connection.mapping.group_roles",
                format!("must have at most {MAX_RULES} rules"),
            ));
        }
        let mut seen = BTreeSet::new();
        let mut rules = Vec::with_capacity(group_roles.len());
        for (group, role) in group_roles {
            let group = group_name("connection.mapping.group_roles.group", &group)?;
            if !seen.insert(group.clone()) {
                return Err(InvalidField::new(
                    "connection.mapping.group_roles",
                    format!("group {group:?} is listed twice"),
                ));
            }
            let role = grantable("connection.mapping.group_roles.role", role)?;
            rules.push(GroupRule { group, role });
        }
        let default_role = match default_role {
            None => Role::Member,
            Some(role) => grantable("connection.mapping.default_role", role)?,
        };
        Ok(Self {
            email_claim: claim_name("connection.mapping.email_claim", email_claim, "email")?,
            name_claim: claim_name("connection.mapping.name_claim", name_claim, "name")?,
            groups_claim: claim_name("connection.mapping.groups_claim", groups_claim, "groups")?,
            group_roles: rules,
            default_role,
        })
    }

    /// The role `groups` give: the highest of their rules' roles, else
    /// the default. Never owner (rules cannot hold it).
    pub fn role_for(&self, groups: &[String]) -> Role {
        let mut role = self.default_role;
        for rule in &self.group_roles {
            if groups.contains(&rule.group) && rank(rule.role) > rank(role) {
                role = rule.role;
            }
        }
        role
    }
}

fn rank(role: Role) -> u8 {
    match role {
        Role::Member => 1,
        Role::Admin => 2,
        Role::Owner => 3,
    }
}

/// Who signs in through a connection at stage pilot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pilot {
    /// Members of this group.
    pub group: Option<String>,
    /// These emails (normalised).
    pub emails: BTreeSet<String>,
}

impl Pilot {
    /// Checks what the wire gave.
    pub fn new(group: &str, emails: &[String]) -> Result<Self, InvalidField> {
        let group = if group.is_empty() {
            None
        } else {
            Some(group_name("connection.pilot.group", group)?)
        };
        if emails.len() > MAX_PILOT_EMAILS {
            return Err(InvalidField::new(
                "connection.pilot.emails",
                format!("must have at most {MAX_PILOT_EMAILS} emails"),
            ));
        }
        let mut normal = BTreeSet::new();
        for raw in emails {
            let email = Email::parse(raw).map_err(|why| {
                InvalidField::new("connection.pilot.emails", format!("{raw:?} {why}"))
            })?;
            normal.insert(email.as_str().to_string());
        }
        Ok(Self {
            group,
            emails: normal,
        })
    }

    /// Whether the pilot names anyone.
    pub fn is_empty(&self) -> bool {
        self.group.is_none() && self.emails.is_empty()
    }

    /// Whether `email` is listed.
    pub fn lists(&self, email: &Email) -> bool {
        self.emails.contains(email.as_str())
    }

    /// Whether `email`, with `groups`, is in the pilot.
    pub fn includes(&self, email: &Email, groups: &[String]) -> bool {
        self.lists(email)
            || self
                .group
                .as_ref()
                .is_some_and(|g| groups.iter().any(|have| have == g))
    }
}

/// The name of a connection.
pub fn connection_name(raw: &str) -> Result<String, ApiError> {
    Ok(twig_errors::fields::name(
        "connection.name",
        raw,
        MAX_NAME_CHARS,
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issuers_are_https_or_loopback() {
        assert_eq!(
            IssuerUrl::parse(" https://idp.example.com/realms/a/")
                .unwrap()
                .as_str(),
            "https://idp.example.com/realms/a/"
        );
        assert!(IssuerUrl::parse("http://127.0.0.1:8080/acme").is_ok());
        for bad in [
            "http://idp.example.com",
            "ftp://idp.example.com",
            "https://user:pw@idp.example.com",
            "https://idp.example.com/?a=b",
            "https://idp.example.com/#x",
            "idp.example.com",
            "",
        ] {
            assert!(IssuerUrl::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn presets_derive_their_issuer_and_tenant_claim() {
        let presets = PresetEndpoints {
            google_issuer: IssuerUrl::parse("https://accounts.google.com").unwrap(),
            microsoft_authority: IssuerUrl::parse("https://login.microsoftonline.com").unwrap(),
        };
        let tenant = "9188040D-6C67-4C5B-B112-36A304B66DAD";
        let ms = OidcSettings::new(Preset::MicrosoftEntra, "", tenant, "client", &[]).unwrap();
        assert_eq!(
            ms.issuer(&presets).as_str(),
            "https://login.microsoftonline.com/9188040d-6c67-4c5b-b112-36a304b66dad/v2.0"
        );
        assert_eq!(
            ms.tenant_claim(),
            Some(("tid", "9188040d-6c67-4c5b-b112-36a304b66dad"))
        );
        let google =
            OidcSettings::new(Preset::GoogleWorkspace, "", "Acme.COM", "client", &[]).unwrap();
        assert_eq!(
            google.issuer(&presets).as_str(),
            "https://accounts.google.com"
        );
        assert_eq!(google.tenant_claim(), Some(("hd", "acme.com")));
        assert!(OidcSettings::new(Preset::MicrosoftEntra, "", "contoso", "c", &[]).is_err());
        assert!(
            OidcSettings::new(
                Preset::GoogleWorkspace,
                "https://x.example",
                "a.com",
                "c",
                &[]
            )
            .is_err()
        );
        assert!(
            OidcSettings::new(Preset::Generic, "https://x.example", "a.com", "c", &[]).is_err()
        );
        assert!(OidcSettings::new(Preset::Generic, "https://x.example", "", " ", &[]).is_err());
        assert!(
            OidcSettings::new(
                Preset::Generic,
                "https://x.example",
                "",
                "c",
                &["a b".into()]
            )
            .is_err()
        );
    }

    #[test]
    fn the_mapping_never_grants_more_than_its_rules() {
        let mapping = Mapping::new(
            "",
            "",
            "",
            vec![
                ("admins".into(), Some(Role::Admin)),
                ("staff".into(), Some(Role::Member)),
            ],
            None,
        )
        .unwrap();
        assert_eq!(mapping.email_claim, "email");
        assert_eq!(mapping.role_for(&[]), Role::Member);
        assert_eq!(mapping.role_for(&["staff".into()]), Role::Member);
        assert_eq!(
            mapping.role_for(&["staff".into(), "admins".into()]),
            Role::Admin
        );
        assert_eq!(
            mapping.role_for(&["Admins".into(), "owners".into()]),
            Role::Member
        );
        for bad in [
            Mapping::new("", "", "", vec![("o".into(), Some(Role::Owner))], None),
            Mapping::new("", "", "", vec![], Some(Some(Role::Owner))),
            Mapping::new("", "", "", vec![("g".into(), None)], None),
            Mapping::new("a b", "", "", vec![], None),
            Mapping::new(
                "",
                "",
                "",
                vec![
                    ("g".into(), Some(Role::Admin)),
                    ("g".into(), Some(Role::Member)),
                ],
                None,
            ),
        ] {
            assert!(bad.is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_pilot_names_emails_and_a_group() {
        let pilot = Pilot::new("sso-pilot", &["Ada@Acme.test".into()]).unwrap();
        let ada = Email::parse("ada@acme.test").unwrap();
        let bob = Email::parse("bob@acme.test").unwrap();
        assert!(pilot.lists(&ada) && pilot.includes(&ada, &[]));
        assert!(!pilot.includes(&bob, &["staff".into()]));
        assert!(pilot.includes(&bob, &["sso-pilot".into()]));
        assert!(Pilot::new("", &["not an email".into()]).is_err());
        assert!(Pilot::new("", &[]).unwrap().is_empty());
    }
}
