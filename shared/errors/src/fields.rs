//! Bounds on request fields: the one rule every service applies to the
//! names, free text, repeated fields and times a client sends.
//!
//! - **Names** a person chose (display names, organisation names, key
//!   names): trimmed, NFC-normalised, 1 to a maximum number of characters
//!   (counted after normalisation), and without invisible characters.
//! - **Invisible characters** are refused in every text field shown to
//!   people or matched exactly (names, emails, subjects, contexts, audit
//!   filters): control characters (Unicode Cc), format characters (Cf:
//!   bidirectional overrides and isolates such as U+202E, the marks
//!   U+200E/U+200F/U+061C, zero-width spaces and joiners, the byte order
//!   mark, soft hyphens, tag characters), line and paragraph separators
//!   (U+2028, U+2029) and the Hangul fillers that render as blanks. They
//!   let one name look like another, or reorder what is shown after them.
//! - **Repeated fields** hold each value once, up to a maximum.
//! - **Times** in the future are at most [`MAX_AHEAD`] away.
//!
//! Every refusal is INVALID_ARGUMENT naming the field.

use chrono::{DateTime, Utc};
use unicode_normalization::UnicodeNormalization;

use crate::ApiError;

/// The farthest a requested time (an expiry) may lie in the future: ten
/// years.
pub const MAX_AHEAD: chrono::TimeDelta = chrono::TimeDelta::days(3653);

/// One request field that breaks its bound, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct InvalidField {
    /// The request field, e.g. `organization_name`.
    pub field: &'static str,
    /// What is wrong with it and what to send instead.
    pub reason: String,
}

impl InvalidField {
    /// `field` is wrong because of `reason`.
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

impl From<InvalidField> for ApiError {
    fn from(e: InvalidField) -> Self {
        ApiError::invalid_field(e.field, e.reason)
    }
}

impl From<InvalidField> for tonic::Status {
    fn from(e: InvalidField) -> Self {
        ApiError::from(e).into()
    }
}

/// True for a character no text field accepts: control (Cc), format (Cf),
/// line or paragraph separator, or a Hangul filler (renders as nothing).
pub fn is_invisible(c: char) -> bool {
    if c.is_control() {
        return true;
    }
    matches!(
        u32::from(c),
        // Format characters (Cf), Unicode 16.
        0x00AD
            | 0x0600..=0x0605
            | 0x061C
            | 0x06DD
            | 0x070F
            | 0x0890..=0x0891
            | 0x08E2
            | 0x180E
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x2064
            | 0x2066..=0x206F
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0001
            | 0xE0020..=0xE007F
            // Line and paragraph separators (Zl, Zp).
            | 0x2028..=0x2029
            // Hangul fillers: letters that render as blanks.
            | 0x115F..=0x1160
            | 0x3164
            | 0xFFA0
    )
}

/// True for a default-ignorable code point (Unicode's
/// `Default_Ignorable_Code_Point`, Unicode 16): characters a renderer
/// shows as nothing unless it supports them — besides the format
/// characters, the combining grapheme joiner, variation selectors, Khmer
/// inherent vowels and Mongolian free variation selectors. Names may
/// carry some of them (an emoji's variation selector); an identifier such
/// as an email must not, or two that look the same would differ.
pub fn is_default_ignorable(c: char) -> bool {
    matches!(
        u32::from(c),
        0x00AD
            | 0x034F
            | 0x061C
            | 0x115F..=0x1160
            | 0x17B4..=0x17B5
            | 0x180B..=0x180F
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x206F
            | 0x3164
            | 0xFE00..=0xFE0F
            | 0xFEFF
            | 0xFFA0
            | 0xFFF0..=0xFFF8
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0000..=0xE0FFF
    )
}

/// Refuses text with an invisible character (see [`is_invisible`]),
/// naming the first one found.
pub fn visible(field: &'static str, text: &str) -> Result<(), InvalidField> {
    match text.chars().find(|c| is_invisible(*c)) {
        None => Ok(()),
        Some(c) => Err(InvalidField::new(
            field,
            format!(
                "must not contain control, bidirectional, zero-width or other invisible \
                 characters (found U+{:04X})",
                u32::from(c)
            ),
        )),
    }
}

/// A name a person chose: trimmed, NFC-normalised, 1 to `max_chars`
/// characters, without invisible characters.
pub fn name(field: &'static str, raw: &str, max_chars: usize) -> Result<String, InvalidField> {
    optional_name(field, raw, max_chars)?.ok_or_else(|| InvalidField::new(field, "is required"))
}

/// Like [`name`], but an empty (or all-blank) value is `None`, for names
/// with a default.
pub fn optional_name(
    field: &'static str,
    raw: &str,
    max_chars: usize,
) -> Result<Option<String>, InvalidField> {
    let name: String = raw.trim().nfc().collect();
    if name.is_empty() {
        return Ok(None);
    }
    if name.chars().count() > max_chars {
        return Err(InvalidField::new(
            field,
            format!("must be at most {max_chars} characters"),
        ));
    }
    visible(field, &name)?;
    Ok(Some(name))
}

/// Text used exactly as sent (an identifier, a context bound into a
/// ciphertext, a filter): 1 to `max_chars` characters, without invisible
/// characters. Not trimmed or normalised, since it must match byte for
/// byte.
pub fn exact_text(field: &'static str, text: &str, max_chars: usize) -> Result<(), InvalidField> {
    if text.is_empty() {
        return Err(InvalidField::new(field, "is required"));
    }
    if text.chars().count() > max_chars {
        return Err(InvalidField::new(
            field,
            format!("must be at most {max_chars} characters"),
        ));
    }
    visible(field, text)
}

/// A repeated field: at most `max` items, each once.
pub fn distinct<T: PartialEq>(
    field: &'static str,
    items: &[T],
    max: usize,
) -> Result<(), InvalidField> {
    if items.len() > max {
        return Err(InvalidField::new(
            field,
            format!("must have at most {max} entries"),
        ));
    }
    for (i, item) in items.iter().enumerate() {
        if items[..i].contains(item) {
            return Err(InvalidField::new(
                field,
                "must list each value once (remove the repeated entry)",
            ));
        }
    }
    Ok(())
}

/// A requested expiry: after `now`, and at most [`MAX_AHEAD`] after it.
pub fn expiry(
    field: &'static str,
    at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), InvalidField> {
    if at <= now {
        return Err(InvalidField::new(field, "must be in the future"));
    }
    if at - now > MAX_AHEAD {
        return Err(InvalidField::new(
            field,
            "must be at most 10 years ahead; leave it unset for a key that does not expire",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_ignorables_include_what_renders_as_nothing_beyond_format_characters() {
        for c in [
            '\u{ad}',
            '\u{34f}',
            '\u{fe0f}',
            '\u{e0100}',
            '\u{200b}',
            '\u{180b}',
        ] {
            assert!(is_default_ignorable(c), "U+{:04X}", u32::from(c));
        }
        for c in ['a', '\u{e9}', '\u{301}', '\u{430}', ' ', '\u{2764}'] {
            assert!(!is_default_ignorable(c), "U+{:04X}", u32::from(c));
        }
    }

    #[test]
    fn names_are_trimmed_normalised_and_bounded_in_characters() {
        assert_eq!(name("n", "  Acme  ", 10).unwrap(), "Acme");
        // "e" + combining acute becomes one character, "é".
        assert_eq!(name("n", "Cafe\u{301}", 4).unwrap(), "Caf\u{e9}");
        assert_eq!(name("n", &"ü".repeat(10), 10).unwrap(), "ü".repeat(10));
        assert!(name("n", &"ü".repeat(11), 10).is_err());
        assert_eq!(
            name("display_name", " \u{3000} ", 10).unwrap_err(),
            InvalidField::new("display_name", "is required")
        );
        assert_eq!(optional_name("n", "   ", 10).unwrap(), None);
        // Emoji, accents and non-Latin scripts are names like any other.
        for ok in ["Ünïcødé", "株式会社", "عربي", "O'Brien & Sons", "🌱 twig"] {
            assert!(name("n", ok, 50).is_ok(), "{ok}");
        }
    }

    #[test]
    fn invisible_characters_are_refused_and_named() {
        for bad in [
            "evil\u{202E}gpj.exe",
            "a\u{2066}b",
            "a\u{200E}b",
            "a\u{200F}b",
            "a\u{61C}b",
            "zero\u{200B}width",
            "join\u{200D}er",
            "\u{FEFF}bom",
            "tab\there",
            "new\nline",
            "nul\0",
            "del\u{7F}",
            "c1\u{85}next",
            "line\u{2028}sep",
            "soft\u{AD}hyphen",
            "tag\u{E0041}",
            "\u{3164}",
        ] {
            let err = name("organization_name", bad, 100).unwrap_err();
            assert_eq!(err.field, "organization_name");
            assert!(err.reason.contains("U+"), "{bad:?}: {}", err.reason);
        }
        assert!(
            visible("n", "x\u{202E}")
                .unwrap_err()
                .reason
                .contains("U+202E")
        );
    }

    #[test]
    fn exact_text_is_kept_as_sent() {
        assert!(exact_text("purpose", " padded ", 20).is_ok());
        assert!(exact_text("purpose", "", 20).is_err());
        assert!(exact_text("purpose", &"x".repeat(21), 20).is_err());
        assert!(exact_text("purpose", "a\u{202E}", 20).is_err());
    }

    #[test]
    fn repeated_fields_hold_each_value_once_up_to_a_maximum() {
        assert!(distinct("scopes", &[1, 2, 3], 4).is_ok());
        assert!(distinct::<i32>("scopes", &[], 4).is_ok());
        let repeated = distinct("scopes", &[1, 2, 1], 4).unwrap_err();
        assert_eq!(repeated.field, "scopes");
        assert!(distinct("scopes", &[1; 1000], 4).is_err());
        assert!(distinct("scopes", &[1, 2, 3, 4, 5], 4).is_err());
    }

    #[test]
    fn expiries_are_in_the_future_and_within_ten_years() {
        let now = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .to_utc();
        assert!(expiry("expires_at", now + chrono::TimeDelta::seconds(1), now).is_ok());
        assert!(expiry("expires_at", now + MAX_AHEAD, now).is_ok());
        assert!(expiry("expires_at", now, now).is_err());
        assert!(expiry("expires_at", now - chrono::TimeDelta::days(1), now).is_err());
        let far = DateTime::parse_from_rfc3339("9999-12-31T23:59:59Z")
            .unwrap()
            .to_utc();
        let err = expiry("expires_at", far, now).unwrap_err();
        assert_eq!(err.field, "expires_at");
        assert!(err.reason.contains("10 years"));
    }

    #[test]
    fn a_refusal_is_invalid_argument_naming_the_field() {
        let api: ApiError = InvalidField::new("scopes", "must list each value once").into();
        assert_eq!(api.code(), crate::ErrorCode::InvalidArgument);
        assert_eq!(api.violations()[0].field, "scopes");
    }
}
