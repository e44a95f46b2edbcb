//! External providers: which values look right for which provider, and
//! how a value is shown masked.

/// The largest value a custom provider takes, in bytes.
pub const MAX_VALUE: usize = 4 * 1024;

/// A provider whose key format is known, or a custom one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provider {
    /// OpenAI: `sk-…`.
    OpenAi,
    /// Anthropic: `sk-ant-…`.
    Anthropic,
    /// Pinecone: `pcsk_…` (or a legacy UUID).
    Pinecone,
    /// Any other provider (a custom LLM endpoint, …): any non-empty value.
    Custom(String),
}

impl Provider {
    /// From the name given on the wire: `openai`, `anthropic`, `pinecone`,
    /// or `custom:<name>` (letters, digits, `-`, `_`, `.`; at most 64).
    pub fn parse(name: &str) -> Result<Self, &'static str> {
        match name {
            "openai" => Ok(Self::OpenAi),
            "anthropic" => Ok(Self::Anthropic),
            "pinecone" => Ok(Self::Pinecone),
            _ => {
                let custom = name
                    .strip_prefix("custom:")
                    .ok_or("must be openai, anthropic, pinecone or custom:<name>")?;
                let ok = !custom.is_empty()
                    && custom.len() <= 64
                    && custom
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
                if ok {
                    Ok(Self::Custom(custom.to_string()))
                } else {
                    Err("custom:<name>: 1 to 64 letters, digits, '-', '_' or '.'")
                }
            }
        }
    }

    /// The name on the wire and in storage.
    pub fn name(&self) -> String {
        match self {
            Self::OpenAi => "openai".into(),
            Self::Anthropic => "anthropic".into(),
            Self::Pinecone => "pinecone".into(),
            Self::Custom(n) => format!("custom:{n}"),
        }
    }

    /// Checks `value` against the provider's format; the error says what
    /// was expected, never the value.
    pub fn check(&self, value: &str) -> Result<(), &'static str> {
        if value.is_empty() {
            return Err("must not be empty");
        }
        if value.len() > MAX_VALUE {
            return Err("must be at most 4096 bytes");
        }
        let token = |rest: &str, min: usize| {
            rest.len() >= min
                && rest
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        };
        match self {
            Self::Anthropic => match value.strip_prefix("sk-ant-") {
                Some(rest) if token(rest, 20) => Ok(()),
                _ => Err(
                    "an Anthropic key starts with sk-ant- followed by at least 20 letters, digits, '-' or '_'",
                ),
            },
            Self::OpenAi => match value.strip_prefix("sk-") {
                Some(rest) if rest.starts_with("ant-") => {
                    Err("this is an Anthropic key (sk-ant-…); store it under anthropic")
                }
                Some(rest) if token(rest, 20) => Ok(()),
                _ => Err(
                    "an OpenAI key starts with sk- followed by at least 20 letters, digits, '-' or '_'",
                ),
            },
            Self::Pinecone => {
                let modern = value
                    .strip_prefix("pcsk_")
                    .is_some_and(|rest| token(rest, 20));
                let legacy = uuid::Uuid::try_parse(value).is_ok();
                if modern || legacy {
                    Ok(())
                } else {
                    Err("a Pinecone key starts with pcsk_ (or is a UUID)")
                }
            }
            Self::Custom(_) => {
                if value.chars().any(twig_errors::fields::is_invisible) {
                    Err(
                        "must not contain control, bidirectional, zero-width or other invisible \
                         characters",
                    )
                } else {
                    Ok(())
                }
            }
        }
    }

    /// The value as listings show it: the provider's prefix and the last
    /// four characters, e.g. `sk-…a1B2`; short values show only `…`.
    pub fn mask(&self, value: &str) -> String {
        let prefix = match self {
            Self::Anthropic => "sk-ant-",
            Self::OpenAi => "sk-",
            Self::Pinecone if value.starts_with("pcsk_") => "pcsk_",
            Self::Pinecone | Self::Custom(_) => "",
        };
        let chars: Vec<char> = value.chars().collect();
        if chars.len() < prefix.chars().count() + 12 {
            return format!("{prefix}…");
        }
        let tail: String = chars[chars.len() - 4..].iter().collect();
        format!("{prefix}…{tail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_formats_are_checked() {
        let openai = Provider::parse("openai").unwrap();
        assert!(
            openai
                .check("sk-proj-abcdefghijklmnopqrstuvwxyz0123")
                .is_ok()
        );
        assert!(openai.check("sk-short").is_err());
        assert!(openai.check("pk-abcdefghijklmnopqrstuvwxyz").is_err());
        assert!(
            openai
                .check("sk-ant-api03-abcdefghijklmnopqrstuvwxyz")
                .is_err()
        );
        let anthropic = Provider::parse("anthropic").unwrap();
        assert!(
            anthropic
                .check("sk-ant-api03-abcdefghijklmnopqrstuvwxyz")
                .is_ok()
        );
        assert!(anthropic.check("sk-abcdefghijklmnopqrstuvwxyz").is_err());
        let pinecone = Provider::parse("pinecone").unwrap();
        assert!(pinecone.check("pcsk_abcdefghijklmnopqrstuvwxyz").is_ok());
        assert!(
            pinecone
                .check("0190a2b4-1111-7222-8333-944445555666")
                .is_ok()
        );
        assert!(pinecone.check("nope").is_err());
        let custom = Provider::parse("custom:my-llm").unwrap();
        assert!(custom.check("anything at all").is_ok());
        assert!(custom.check("").is_err());
        assert!(custom.check("a\nb").is_err());
        assert!(custom.check("value\u{202E}").is_err());
        assert!(custom.check("zero\u{200B}width").is_err());
        assert!(custom.check(&"x".repeat(MAX_VALUE + 1)).is_err());
        for bad in ["", "OpenAI", "custom:", "custom:has space", "custom:ü"] {
            assert!(Provider::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn masks_show_prefix_and_last_four_only() {
        let openai = Provider::parse("openai").unwrap();
        assert_eq!(
            openai.mask("sk-proj-abcdefghijklmnopqrstuvwxa1B2"),
            "sk-…a1B2"
        );
        let anthropic = Provider::parse("anthropic").unwrap();
        assert_eq!(
            anthropic.mask("sk-ant-api03-abcdefghijklmnopqrstuvwxyz9Z"),
            "sk-ant-…yz9Z"
        );
        let custom = Provider::parse("custom:x").unwrap();
        assert_eq!(custom.mask("short"), "…");
        assert_eq!(custom.mask("0123456789abcdef"), "…cdef");
    }
}
