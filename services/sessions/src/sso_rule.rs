//! Passwords and single sign-on: an email whose domain an organisation
//! has proved and enforces single sign-on for signs in there only.
//! Password sign-in, sign-up (and its completion), reset (and its
//! completion) and sign-up through an invitation ask this rule first,
//! through the `PasswordRules` port (sso-federation, in this process or
//! another). The answer depends on the email's domain alone, so the
//! refusal says nothing about whether an account exists.

use twig_audit::{AuditEvent, Outcome};
use twig_email::Email;
use twig_module::{PasswordRules, PasswordSignIn};

use crate::error::SessionError;
use crate::sessions::{ClientContext, Sessions};

type Result<T> = std::result::Result<T, SessionError>;

impl Sessions {
    /// Refuses `action` with a password for `email` when its domain's
    /// connection is enforced (FAILED_PRECONDITION naming where to sign
    /// in), with an audit event in that organisation. Without single
    /// sign-on in the deployment, every email may use a password; when
    /// it runs elsewhere and cannot be asked, nothing is allowed on a
    /// guess (UNAVAILABLE).
    pub(crate) async fn require_password_allowed(
        &self,
        email: &Email,
        action: &'static str,
        client: &ClientContext,
    ) -> Result<()> {
        let Some(PasswordRules(rules)) = self.password_rules().get() else {
            return Ok(());
        };
        match rules
            .password_sign_in(email.as_str())
            .await
            .map_err(SessionError::Remote)?
        {
            PasswordSignIn::Allowed => Ok(()),
            PasswordSignIn::UseSso { org_id, start_path } => {
                metrics::counter!("twig_password_refused_for_sso_total", "action" => action)
                    .increment(1);
                let txn = twig_db::begin_write(self.db()).await?;
                AuditEvent::new("session.password_refused", Outcome::Failure)
                    .org(org_id)
                    .ip(client.ip_string())
                    .details(serde_json::json!({
                        "action": action,
                        "reason": "sso_enforced",
                        "email_domain": email.domain().as_str(),
                    }))
                    .record_at(&txn, self.now())
                    .await?;
                txn.commit().await?;
                Err(SessionError::UseSso(start_path))
            }
        }
    }
}
