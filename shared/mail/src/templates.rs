//! Every message the suite sends: a [`Template`] with its data, rendered
//! from code into a subject, a plain-text body and an HTML body.
//!
//! Each template is a short list of [`Block`]s; the text and the HTML are
//! written from the same blocks, so the two parts always say the same.
//! Everything that comes from outside the code (names, links, a user
//! agent) is cleaned of control and bidirectional-override characters and
//! bounded in length, and HTML-escaped in the HTML part.

use std::fmt;
use std::net::IpAddr;

use chrono::{DateTime, Utc};

/// A message and what it says.
#[derive(Clone, PartialEq, Eq)]
pub enum Template {
    /// "Verify your email": confirms an address belongs to its account.
    VerifyEmail {
        /// The verification link ([`crate::Mailer::link`]).
        link: String,
    },
    /// "Reset your password": the link works once, for a while.
    ResetPassword {
        /// The reset link ([`crate::Mailer::link`]).
        link: String,
        /// How long the link works.
        expires_in_minutes: u32,
    },
    /// "You are invited": to join an organisation.
    Invited {
        /// The organisation.
        organization_name: String,
        /// Who invited.
        inviter_name: String,
        /// The invitation link ([`crate::Mailer::link`]).
        link: String,
        /// When the invitation ends.
        expires_at: DateTime<Utc>,
    },
    /// "You already have an account": someone started a sign-up with an
    /// address that has one (the answer to them said nothing).
    AccountExists {
        /// The sign-in page ([`crate::Mailer::page`]).
        sign_in_link: String,
        /// The page that asks for a password reset.
        reset_link: String,
    },
    /// "Your password was changed".
    PasswordChanged {
        /// When.
        at: DateTime<Utc>,
        /// From which client address, when known.
        ip: Option<IpAddr>,
    },
    /// "A new sign-in" to the account.
    NewSignIn {
        /// When.
        at: DateTime<Utc>,
        /// From which client address, when known.
        ip: Option<IpAddr>,
        /// The client's `User-Agent`, when known.
        user_agent: Option<String>,
    },
}

impl Template {
    /// The template's name: the `template` label of the metrics and the
    /// logs (a fixed set).
    pub fn name(&self) -> &'static str {
        match self {
            Self::VerifyEmail { .. } => "verify_email",
            Self::ResetPassword { .. } => "reset_password",
            Self::Invited { .. } => "invited",
            Self::AccountExists { .. } => "account_exists",
            Self::PasswordChanged { .. } => "password_changed",
            Self::NewSignIn { .. } => "new_sign_in",
        }
    }

    /// The message for `product`, greeting `name` when given.
    pub fn render(&self, product: &str, name: Option<&str>) -> Rendered {
        let product = clean(product, 100);
        let mut blocks = vec![Block::Para(match name.map(|n| clean(n, 100)) {
            Some(name) if !name.is_empty() => format!("Hello {name},"),
            _ => "Hello,".into(),
        })];
        let subject = match self {
            Self::VerifyEmail { link } => {
                blocks.extend([
                    Block::Para(format!(
                        "Please confirm that this is your email address for {product}."
                    )),
                    Block::Button("Verify my email", link.clone()),
                    Block::Note(format!(
                        "If you did not create a {product} account, ignore this message."
                    )),
                ]);
                format!("Verify your email for {product}")
            }
            Self::ResetPassword {
                link,
                expires_in_minutes,
            } => {
                blocks.extend([
                    Block::Para(format!(
                        "Someone asked to reset the password of your {product} account. \
                         To choose a new password, open this link within {}.",
                        minutes(*expires_in_minutes)
                    )),
                    Block::Button("Choose a new password", link.clone()),
                    Block::Note(
                        "The link works once. If you did not ask for this, ignore this \
                         message: your password stays as it is."
                            .into(),
                    ),
                ]);
                format!("Reset your {product} password")
            }
            Self::Invited {
                organization_name,
                inviter_name,
                link,
                expires_at,
            } => {
                let organization = clean(organization_name, 100);
                let inviter = clean(inviter_name, 100);
                blocks.extend([
                    Block::Para(format!(
                        "{inviter} invited you to join {organization} on {product}."
                    )),
                    Block::Button("Accept the invitation", link.clone()),
                    Block::Note(format!(
                        "The invitation works until {}. If you did not expect it, ignore \
                         this message.",
                        when(expires_at)
                    )),
                ]);
                format!("You are invited to join {organization} on {product}")
            }
            Self::AccountExists {
                sign_in_link,
                reset_link,
            } => {
                blocks.extend([
                    Block::Para(format!(
                        "Someone tried to sign up for {product} with this email address, \
                         which already has an account."
                    )),
                    Block::Button("Sign in", sign_in_link.clone()),
                    Block::Para("Forgot your password? You can choose a new one.".into()),
                    Block::Button("Reset my password", reset_link.clone()),
                    Block::Note(
                        "If this was not you, ignore this message: nothing has changed.".into(),
                    ),
                ]);
                format!("You already have a {product} account")
            }
            Self::PasswordChanged { at, ip } => {
                let mut facts = vec![("When", when(at))];
                if let Some(ip) = ip {
                    facts.push(("Address", ip.to_string()));
                }
                blocks.extend([
                    Block::Para(format!(
                        "The password of your {product} account was changed."
                    )),
                    Block::Facts(facts),
                    Block::Note(
                        "If this was you, there is nothing to do. If it was not, reset your \
                         password now and tell your administrator."
                            .into(),
                    ),
                ]);
                format!("Your {product} password was changed")
            }
            Self::NewSignIn { at, ip, user_agent } => {
                let mut facts = vec![("When", when(at))];
                if let Some(ip) = ip {
                    facts.push(("Address", ip.to_string()));
                }
                if let Some(agent) = user_agent.as_deref().map(|a| clean(a, 200))
                    && !agent.is_empty()
                {
                    facts.push(("Device", agent));
                }
                blocks.extend([
                    Block::Para(format!("Someone signed in to your {product} account.")),
                    Block::Facts(facts),
                    Block::Note(
                        "If this was you, there is nothing to do. If it was not, change your \
                         password now and sign out of every session."
                            .into(),
                    ),
                ]);
                format!("A new sign-in to your {product} account")
            }
        };
        Rendered {
            text: text(&blocks, &product),
            html: html(&subject, &blocks, &product),
            subject,
        }
    }
}

/// Names and times only: a link holds a token and is never printed.
impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = f.debug_struct(self.name());
        match self {
            Self::VerifyEmail { .. } | Self::AccountExists { .. } => {}
            Self::ResetPassword {
                expires_in_minutes, ..
            } => {
                out.field("expires_in_minutes", expires_in_minutes);
            }
            Self::Invited { expires_at, .. } => {
                out.field("expires_at", expires_at);
            }
            Self::PasswordChanged { at, .. } | Self::NewSignIn { at, .. } => {
                out.field("at", at);
            }
        }
        out.finish_non_exhaustive()
    }
}

/// A rendered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The subject.
    pub subject: String,
    /// The plain-text part.
    pub text: String,
    /// The HTML part.
    pub html: String,
}

/// A piece of a message.
enum Block {
    /// A paragraph.
    Para(String),
    /// A link to act on: a button in HTML, the bare link in text.
    Button(&'static str, String),
    /// Labelled values.
    Facts(Vec<(&'static str, String)>),
    /// A smaller paragraph.
    Note(String),
}

fn text(blocks: &[Block], product: &str) -> String {
    let mut out = String::new();
    for block in blocks {
        match block {
            Block::Para(p) | Block::Note(p) => out.push_str(p),
            Block::Button(label, link) => {
                out.push_str(label);
                out.push_str(":\n");
                out.push_str(link);
            }
            Block::Facts(facts) => {
                let lines: Vec<String> = facts.iter().map(|(k, v)| format!("  {k}: {v}")).collect();
                out.push_str(&lines.join("\n"));
            }
        }
        out.push_str("\n\n");
    }
    out.push_str("— ");
    out.push_str(product);
    out.push('\n');
    out
}

fn html(subject: &str, blocks: &[Block], product: &str) -> String {
    const SMALL: &str = "font-size:13px;color:#555";
    let mut out = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>{}</title></head>\n\
         <body style=\"font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;\
         line-height:1.5;color:#222;max-width:560px;margin:0 auto;padding:24px\">\n",
        escape(subject)
    );
    for block in blocks {
        match block {
            Block::Para(p) => out.push_str(&format!("<p>{}</p>\n", escape(p))),
            Block::Button(label, link) => out.push_str(&format!(
                "<p><a href=\"{link}\" style=\"display:inline-block;padding:10px 18px;\
                 background:#2f6f4f;color:#fff;text-decoration:none;border-radius:4px\">\
                 {label}</a></p>\n<p style=\"{SMALL}\">Or paste this link into your browser:\
                 <br>{link}</p>\n",
                link = escape(link),
                label = escape(label),
            )),
            Block::Facts(facts) => {
                out.push_str("<table role=\"presentation\">\n");
                for (k, v) in facts {
                    out.push_str(&format!(
                        "<tr><td style=\"{SMALL};padding-right:12px\">{}</td><td>{}</td></tr>\n",
                        escape(k),
                        escape(v)
                    ));
                }
                out.push_str("</table>\n");
            }
            Block::Note(p) => out.push_str(&format!("<p style=\"{SMALL}\">{}</p>\n", escape(p))),
        }
    }
    out.push_str(&format!(
        "<p style=\"{SMALL}\">— {}</p>\n</body>\n</html>\n",
        escape(product)
    ));
    out
}

/// `text` for HTML text and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Text from outside the code, safe to show: control characters become
/// spaces, bidirectional overrides and isolates are removed (they could
/// reorder what is shown), surrounding space is trimmed, and at most
/// `max` characters are kept.
fn clean(text: &str, max: usize) -> String {
    let bidi = |c: char| matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
    let cleaned: String = text
        .chars()
        .filter(|&c| !bidi(c))
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let cleaned = cleaned.trim();
    if cleaned.chars().count() <= max {
        return cleaned.to_string();
    }
    let mut cut: String = cleaned.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

fn when(at: &DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

fn minutes(n: u32) -> String {
    match n {
        1 => "1 minute".into(),
        n if n % 60 == 0 && n >= 120 => format!("{} hours", n / 60),
        60 => "1 hour".into(),
        n => format!("{n} minutes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINK: &str = "https://app.example.com/verify?token=twig_vt_abc%2Bdef";

    fn at() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-06T09:30:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn every_template() -> Vec<Template> {
        vec![
            Template::VerifyEmail { link: LINK.into() },
            Template::ResetPassword {
                link: LINK.into(),
                expires_in_minutes: 30,
            },
            Template::Invited {
                organization_name: "Acme".into(),
                inviter_name: "Ann".into(),
                link: LINK.into(),
                expires_at: at(),
            },
            Template::AccountExists {
                sign_in_link: LINK.into(),
                reset_link: LINK.into(),
            },
            Template::PasswordChanged {
                at: at(),
                ip: Some("203.0.113.7".parse().unwrap()),
            },
            Template::NewSignIn {
                at: at(),
                ip: Some("2001:db8::1".parse().unwrap()),
                user_agent: Some("Firefox/140".into()),
            },
        ]
    }

    #[test]
    fn every_mail_template_has_a_subject_and_both_parts() {
        let mut names = Vec::new();
        for template in every_template() {
            let r = template.render("Twig Cloud", Some("Ann"));
            assert!(r.subject.contains("Twig Cloud"), "{}", r.subject);
            assert!(r.text.starts_with("Hello Ann,"), "{}", r.text);
            assert!(r.html.starts_with("<!DOCTYPE html>"), "{}", r.html);
            assert!(r.html.contains("Hello Ann,"));
            assert!(r.text.ends_with("— Twig Cloud\n"));
            if template.name() != "password_changed" && template.name() != "new_sign_in" {
                assert!(r.text.contains(LINK), "{}", r.text);
                assert!(r.html.contains(&format!("href=\"{LINK}\"")), "{}", r.html);
            }
            names.push(template.name());
        }
        assert_eq!(
            names,
            [
                "verify_email",
                "reset_password",
                "invited",
                "account_exists",
                "password_changed",
                "new_sign_in"
            ]
        );
    }

    #[test]
    fn mail_subjects_say_what_happened() {
        let subjects: Vec<String> = every_template()
            .iter()
            .map(|t| t.render("twig", None).subject)
            .collect();
        assert_eq!(
            subjects,
            [
                "Verify your email for twig",
                "Reset your twig password",
                "You are invited to join Acme on twig",
                "You already have a twig account",
                "Your twig password was changed",
                "A new sign-in to your twig account",
            ]
        );
    }

    #[test]
    fn mail_reset_says_ignore_it_and_once_and_for_how_long() {
        let r = every_template()[1].render("twig", None);
        assert!(r.text.starts_with("Hello,\n"));
        assert!(r.text.contains("within 30 minutes"), "{}", r.text);
        assert!(r.text.contains("The link works once"), "{}", r.text);
        assert!(
            r.text.contains("If you did not ask for this, ignore"),
            "{}",
            r.text
        );
        assert_eq!(minutes(120), "2 hours");
        assert_eq!(minutes(60), "1 hour");
        assert_eq!(minutes(90), "90 minutes");
    }

    #[test]
    fn mail_html_escapes_what_it_did_not_write() {
        let template = Template::Invited {
            organization_name: "<script>alert('x')</script> & Co".into(),
            inviter_name: "\"Mallory\" <m@evil.example>".into(),
            link: "https://app.example.com/join?token=a\"><script>x</script>".into(),
            expires_at: at(),
        };
        let r = template.render("Acme & <Sons>", Some("<b>Ann</b>"));
        assert!(!r.html.contains("<script>"), "{}", r.html);
        assert!(!r.html.contains("<b>"), "{}", r.html);
        assert!(!r.html.contains("<m@"), "{}", r.html);
        assert!(
            r.html
                .contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; Co"),
            "{}",
            r.html
        );
        assert!(r.html.contains("Acme &amp; &lt;Sons&gt;"), "{}", r.html);
        assert!(
            r.html
                .contains("href=\"https://app.example.com/join?token=a&quot;&gt;"),
            "{}",
            r.html
        );
        // The text part shows the names as written: it is not HTML.
        assert!(
            r.text
                .contains("<script>alert('x')</script> & Co on Acme & <Sons>")
        );
        assert_eq!(
            r.subject,
            "You are invited to join <script>alert('x')</script> & Co on Acme & <Sons>"
        );
    }

    #[test]
    fn mail_text_from_outside_is_cleaned_and_bounded() {
        let template = Template::NewSignIn {
            at: at(),
            ip: None,
            user_agent: Some(format!("Evil\r\nBcc: x@y\u{202E}moc.{}", "a".repeat(500))),
        };
        let r = template.render("twig", Some("Ann\nSmith"));
        assert!(r.text.starts_with("Hello Ann Smith,"), "{}", r.text);
        let device = r.text.lines().find(|l| l.contains("Device:")).unwrap();
        assert!(device.contains("Evil  Bcc: x@ymoc."), "{device}");
        assert!(!device.contains('\u{202E}'));
        assert!(
            device.ends_with('…') && device.chars().count() < 220,
            "{device}"
        );
        assert!(!r.text.contains("Address:"));
        let invited = Template::Invited {
            organization_name: "x".repeat(300),
            inviter_name: "Ann".into(),
            link: LINK.into(),
            expires_at: at(),
        };
        assert!(invited.render("twig", None).subject.chars().count() < 140);
    }

    #[test]
    fn mail_templates_never_print_their_links() {
        for template in every_template() {
            let shown = format!("{template:?}");
            assert!(!shown.contains("token"), "{shown}");
            assert!(shown.starts_with(template.name()), "{shown}");
        }
        let r = every_template()[4].render("twig", None);
        assert!(
            r.text
                .contains("  When: 2026-12-06 09:30 UTC\n  Address: 203.0.113.7")
        );
    }
}
