//! Email addresses as users type them, normalised.

use std::fmt;

/// A syntactically plausible email address, trimmed and lower-cased.
/// [`Email::parse`] is the only way to build one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    /// Longest address (RFC 5321 path limit).
    pub const MAX_LEN: usize = 254;

    /// Checks and normalises `raw`; the error says what is wrong.
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        let email = raw.trim().to_lowercase();
        if email.is_empty() {
            return Err("is required");
        }
        if email.len() > Self::MAX_LEN {
            return Err("must be at most 254 characters");
        }
        if email
            .chars()
            .any(|c| c.is_whitespace() || twig_errors::fields::is_invisible(c))
        {
            return Err(
                "must not contain spaces, control, bidirectional, zero-width or other invisible \
                 characters",
            );
        }
        let Some((local, domain)) = email.rsplit_once('@') else {
            return Err("must contain @");
        };
        if local.is_empty() || local.contains('@') {
            return Err("must have exactly one @ with a name before it");
        }
        if domain.len() < 3
            || !domain.contains('.')
            || domain.starts_with('.')
            || domain.ends_with('.')
            || domain.contains("..")
        {
            return Err("must end in a domain such as example.com");
        }
        Ok(Self(email))
    }

    /// The normalised text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part before @.
    pub fn local_part(&self) -> &str {
        self.0.rsplit_once('@').map_or("", |(l, _)| l)
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_case_and_spaces() {
        assert_eq!(
            Email::parse("  Ada@Example.COM ").unwrap().as_str(),
            "ada@example.com"
        );
    }

    #[test]
    fn refuses_malformed_addresses() {
        for bad in [
            "",
            "ada",
            "@example.com",
            "ada@",
            "ada@com",
            "a b@example.com",
            "a@b@c.com",
            "ada@.com",
            "ada@x..com",
            "ada\0@example.com",
            "ada\u{202E}@example.com",
            "a\u{200B}da@example.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Email::parse(&format!("{}@example.com", "a".repeat(250))).is_err());
    }
}
