//! Subjects: what a limit counts.

/// A subject, `kind:value`, checked. [`Subject::parse`] is the only way in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Subject(String);

/// The kinds a subject may have.
pub const KINDS: [&str; 5] = ["key", "org", "user", "ip", "custom"];

impl Subject {
    /// The longest subject.
    pub const MAX_LEN: usize = 256;

    /// Checks `raw`; the error says what is wrong.
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        if raw.is_empty() {
            return Err("is required, as kind:value (e.g. key:0190…)");
        }
        if raw.len() > Self::MAX_LEN {
            return Err("must be at most 256 characters");
        }
        let Some((kind, value)) = raw.split_once(':') else {
            return Err("must be kind:value, kind one of key, org, user, ip, custom");
        };
        if !KINDS.contains(&kind) {
            return Err("kind must be one of key, org, user, ip, custom");
        }
        if value.is_empty()
            || value
                .chars()
                .any(|c| c.is_whitespace() || twig_errors::fields::is_invisible(c))
        {
            return Err(
                "value must be non-empty, without spaces, control, bidirectional, zero-width or \
                 other invisible characters",
            );
        }
        Ok(Self(raw.to_string()))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The text, owned.
    pub fn into_string(self) -> String {
        self.0
    }

    /// The kind: `key`, `org`, `user`, `ip` or `custom`.
    pub fn kind(&self) -> &str {
        self.0.split_once(':').map_or("", |(k, _)| k)
    }

    /// What follows the kind.
    pub fn value(&self) -> &str {
        self.0.split_once(':').map_or("", |(_, v)| v)
    }

    /// The subject of an organisation.
    pub fn org(org_id: uuid::Uuid) -> Self {
        Self(format!("org:{org_id}"))
    }

    /// The subject of an API key.
    pub fn key(key_id: uuid::Uuid) -> Self {
        Self(format!("key:{key_id}"))
    }

    /// The subject of a brake on public requests (`crate::brakes`): a
    /// kind of its own, which [`Subject::parse`] refuses, so no `Check`
    /// reaches it.
    pub fn brake(name: &str, key_hash: &str) -> Self {
        Self(format!("brake:{name}:{key_hash}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_known_kinds_only() {
        assert!(Subject::parse("key:0190abc").is_ok());
        assert!(Subject::parse("ip:2001:db8::1").is_ok());
        for bad in [
            "",
            "key",
            "key:",
            "nope:x",
            "key:a b",
            "key:\0",
            "custom:a\u{202E}b",
            "custom:\u{200B}",
            &format!("key:{}", "a".repeat(300)),
        ] {
            assert!(Subject::parse(bad).is_err(), "{bad:?}");
        }
    }
}
