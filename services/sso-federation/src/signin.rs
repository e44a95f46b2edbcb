//! Whether a sign-in through a connection is accepted, and as whom: the
//! one decision, used by the real sign-in and by the mapping's dry run.
//!
//! In order: the connection is not off; the provider's tenant claim
//! matches (presets); the mapping's email claim holds a valid email, not
//! marked unverified; its domain is one the connection serves — a domain
//! the organisation has proved — so a provider can never sign anyone into
//! an address outside the organisation's own domains; at stage pilot, the
//! email is listed or the groups name the pilot group; the role is the
//! mapping's for the groups, never more.

use twig_auth::Role;
use twig_email::Email;

use crate::connection::{Protocol, Stage};
use crate::connections::Connection;

/// What a sign-in is accepted as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapped {
    /// The email.
    pub email: Email,
    /// The display name (may be empty).
    pub name: String,
    /// The groups the provider names.
    pub groups: Vec<String>,
    /// The role a new member gets.
    pub role: Role,
}

/// Why a sign-in is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The connection is off.
    #[error("single sign-on through this connection is off")]
    Off,
    /// The provider's tenant claim is missing or names another tenant.
    #[error("the identity provider's {claim} claim does not name this organisation's tenant")]
    WrongTenant {
        /// `hd` or `tid`.
        claim: &'static str,
    },
    /// No email in the mapped claim.
    #[error("the ID token has no {0} claim with an email")]
    NoEmail(String),
    /// The email is not valid.
    #[error("the email in the ID token {0}")]
    BadEmail(&'static str),
    /// The provider says the email is not verified.
    #[error("the identity provider says the email is not verified")]
    Unverified,
    /// The email's domain is not one the connection serves.
    #[error(
        "the email's domain {0} is not one of this connection's domains, which the organisation \
         has proved"
    )]
    DomainNotServed(String),
    /// Stage pilot, and the email is neither listed nor in the group.
    #[error("this connection is in pilot, and the account is not part of it")]
    NotInPilot,
}

impl Refusal {
    /// A short fixed reason, for audit details and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Off => "connection_off",
            Self::WrongTenant { .. } => "wrong_tenant",
            Self::NoEmail(_) => "no_email",
            Self::BadEmail(_) => "bad_email",
            Self::Unverified => "email_unverified",
            Self::DomainNotServed(_) => "domain_not_proved",
            Self::NotInPilot => "not_in_pilot",
        }
    }
}

/// The strings of a claim that is a list of strings, or one string.
fn strings(value: Option<&serde_json::Value>) -> Vec<String> {
    match value {
        Some(serde_json::Value::String(s)) => vec![s.clone()],
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .take(crate::connection::MAX_RULES * 10)
            .collect(),
        _ => Vec::new(),
    }
}

/// Decides a sign-in through `connection` with the ID token's `claims`.
pub fn admit(
    connection: &Connection,
    claims: &serde_json::Map<String, serde_json::Value>,
) -> Result<Mapped, Refusal> {
    if connection.stage == Stage::Off {
        return Err(Refusal::Off);
    }
    let Protocol::Oidc(oidc) = &connection.protocol;
    if let Some((claim, tenant)) = oidc.tenant_claim() {
        let named = claims
            .get(claim)
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        if !named.eq_ignore_ascii_case(tenant) {
            return Err(Refusal::WrongTenant { claim });
        }
    }
    let mapping = &connection.mapping;
    let raw = claims
        .get(&mapping.email_claim)
        .and_then(|v| v.as_str())
        .ok_or_else(|| Refusal::NoEmail(mapping.email_claim.clone()))?;
    let email = Email::parse(raw).map_err(Refusal::BadEmail)?;
    // Absent is accepted (Entra ID sends none); anything but true (or
    // the string "true") is not.
    match claims.get("email_verified") {
        None | Some(serde_json::Value::Bool(true)) => {}
        Some(serde_json::Value::String(s)) if s == "true" => {}
        Some(_) => return Err(Refusal::Unverified),
    }
    let domain = email.domain();
    if !connection.domains.iter().any(|d| d == domain.as_str()) {
        return Err(Refusal::DomainNotServed(domain.as_str().to_string()));
    }
    let groups = strings(claims.get(&mapping.groups_claim));
    if connection.stage == Stage::Pilot && !connection.pilot.includes(&email, &groups) {
        return Err(Refusal::NotInPilot);
    }
    let name = claims
        .get(&mapping.name_claim)
        .and_then(|v| v.as_str())
        .map(|n| n.chars().filter(|c| !c.is_control()).take(100).collect())
        .unwrap_or_default();
    Ok(Mapped {
        role: mapping.role_for(&groups),
        email,
        name,
        groups,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::connection::{GroupRule, Mapping, OidcSettings, Pilot, Preset};

    fn connection(stage: Stage) -> Connection {
        Connection {
            id: uuid::Uuid::now_v7(),
            org_id: uuid::Uuid::now_v7(),
            name: "acme".into(),
            stage,
            protocol: Protocol::Oidc(
                OidcSettings::new(Preset::Generic, "https://idp.acme.test", "", "twig", &[])
                    .unwrap(),
            ),
            mapping: Mapping {
                group_roles: vec![GroupRule {
                    group: "admins".into(),
                    role: Role::Admin,
                }],
                ..Mapping::default()
            },
            pilot: Pilot::new("pilot", &["ada@acme.test".into()]).unwrap(),
            domains: vec!["acme.test".into()],
            has_secret: true,
            created_at: chrono::DateTime::UNIX_EPOCH,
            updated_at: chrono::DateTime::UNIX_EPOCH,
        }
    }

    fn claims(value: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn a_member_of_a_proved_domain_is_admitted_with_the_mapped_role() {
        let c = connection(Stage::Enforced);
        let mapped = admit(
            &c,
            &claims(json!({"email": "Bob@ACME.test", "name": "Bob", "groups": ["admins", "x"]})),
        )
        .unwrap();
        assert_eq!(mapped.email.as_str(), "bob@acme.test");
        assert_eq!(mapped.role, Role::Admin);
        assert_eq!(mapped.name, "Bob");
        let plain = admit(
            &c,
            &claims(json!({"email": "carol@acme.test", "groups": "x"})),
        )
        .unwrap();
        assert_eq!(plain.role, Role::Member);
    }

    #[test]
    fn refusals_name_their_reason() {
        let c = connection(Stage::Enforced);
        for (token, reason) in [
            (json!({}), "no_email"),
            (json!({"email": 7}), "no_email"),
            (json!({"email": "not-an-email"}), "bad_email"),
            (
                json!({"email": "bob@acme.test", "email_verified": false}),
                "email_unverified",
            ),
            (
                json!({"email": "bob@acme.test", "email_verified": "false"}),
                "email_unverified",
            ),
            (
                json!({"email": "bob@acme.test", "email_verified": 0}),
                "email_unverified",
            ),
            (
                json!({"email": "bob@acme.test", "email_verified": null}),
                "email_unverified",
            ),
            (
                json!({"email": "bob@acme.test", "email_verified": "1"}),
                "email_unverified",
            ),
            (json!({"email": "bob@other.test"}), "domain_not_proved"),
            (json!({"email": "bob@sub.acme.test"}), "domain_not_proved"),
            (json!({"email": "bob@acme.test.evil"}), "domain_not_proved"),
        ] {
            assert_eq!(
                admit(&c, &claims(token.clone())).unwrap_err().reason(),
                reason,
                "{token}"
            );
        }
        assert_eq!(
            admit(
                &connection(Stage::Off),
                &claims(json!({"email": "bob@acme.test"}))
            )
            .unwrap_err(),
            Refusal::Off
        );
    }

    #[test]
    fn the_pilot_admits_listed_emails_and_the_group_only() {
        let c = connection(Stage::Pilot);
        assert!(admit(&c, &claims(json!({"email": "ada@acme.test"}))).is_ok());
        assert!(
            admit(
                &c,
                &claims(json!({"email": "bob@acme.test", "groups": ["pilot"]}))
            )
            .is_ok()
        );
        assert_eq!(
            admit(
                &c,
                &claims(json!({"email": "bob@acme.test", "groups": ["staff"]}))
            )
            .unwrap_err(),
            Refusal::NotInPilot
        );
    }

    #[test]
    fn presets_check_their_tenant() {
        let mut c = connection(Stage::Enforced);
        c.protocol = Protocol::Oidc(
            OidcSettings::new(Preset::GoogleWorkspace, "", "acme.test", "twig", &[]).unwrap(),
        );
        assert!(
            admit(
                &c,
                &claims(json!({"email": "bob@acme.test", "hd": "acme.test"}))
            )
            .is_ok()
        );
        for token in [
            json!({"email": "bob@acme.test"}),
            json!({"email": "bob@acme.test", "hd": "other.test"}),
        ] {
            assert_eq!(
                admit(&c, &claims(token)).unwrap_err(),
                Refusal::WrongTenant { claim: "hd" }
            );
        }
    }
}
