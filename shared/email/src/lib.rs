//! Email addresses as users type them, normalised: one address, one
//! identity. The rule every path that takes an email follows (sign-up,
//! login, provisioning through the `UserDirectory` port, SSO), and the
//! rule for the domain after @ ([`EmailDomain`]: domains an organisation
//! claims for single sign-on are compared with emails in this form).

use std::fmt;

use unicode_normalization::UnicodeNormalization;
use unicode_security::MixedScript;

/// A syntactically plausible email address: trimmed, lower-cased, in
/// Unicode canonical composition (NFC), with no invisible, format or
/// other default-ignorable characters (variation selectors, the combining
/// grapheme joiner), no compatibility forms (fullwidth letters, ligatures) and
/// no mixing of scripts within its name or a domain label.
/// [`Email::parse`] is the only way to build one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    /// Longest address (RFC 5321 path limit).
    pub const MAX_LEN: usize = 254;
    /// Longest name before @, in bytes (RFC 5321): mail to a longer one
    /// cannot be sent.
    pub const MAX_LOCAL_LEN: usize = 64;

    /// Checks and normalises `raw`; the error says what is wrong.
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        // Composed or decomposed, "josé" is one address.
        let email: String = raw.trim().to_lowercase().nfc().collect();
        if email.is_empty() {
            return Err("is required");
        }
        if email.len() > Self::MAX_LEN {
            return Err("must be at most 254 characters");
        }
        if email.chars().any(|c| {
            c.is_whitespace()
                || twig_errors::fields::is_invisible(c)
                || twig_errors::fields::is_default_ignorable(c)
        }) {
            return Err(
                "must not contain spaces, control, bidirectional, zero-width or other invisible \
                 characters",
            );
        }
        if !email.is_ascii() && !email.nfkc().eq(email.chars()) {
            return Err(
                "must not contain fullwidth letters, ligatures or other compatibility forms: \
                 type the plain characters (a, not ａ)",
            );
        }
        let Some((local, domain)) = email.rsplit_once('@') else {
            return Err("must contain @");
        };
        if local.is_empty() || local.contains('@') {
            return Err("must have exactly one @ with a name before it");
        }
        if local.len() > Self::MAX_LOCAL_LEN {
            return Err("must have a name before @ of at most 64 characters");
        }
        if !is_dot_atom(local) {
            return Err(
                "must have a name before @ of letters, digits and . ! # $ % & ' * + / = ? ^ _ ` \
                 { | } ~ - only (no quotes, comments or backslashes; no dot first, last or twice \
                 in a row)",
            );
        }
        let domain = normal_domain(domain)?;
        let email: String = format!("{local}@{domain}").nfc().collect();
        if email.len() > Self::MAX_LEN {
            return Err("must be at most 254 characters");
        }
        if !local.is_ascii() && !local.is_single_script() {
            return Err(
                "must not mix scripts within its name or a domain label (such as a Cyrillic а \
                 among Latin letters): such an address looks like another one",
            );
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

    /// The domain after @, in the same normalised form as
    /// [`EmailDomain`]'s.
    pub fn domain(&self) -> EmailDomain {
        EmailDomain(self.0.rsplit_once('@').map_or("", |(_, d)| d).to_string())
    }
}

/// The domain of an email address, normalised as [`Email::parse`]
/// normalises the part after @ (lower case, Unicode form of a Punycode
/// label, UTS 46 with STD3 rules): `Bücher.Example` and
/// `xn--bcher-kva.example` are one domain. [`EmailDomain::parse`] is the
/// only way to build one from text.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EmailDomain(String);

impl EmailDomain {
    /// Checks and normalises `raw` (a domain, without `@`); the error says
    /// what is wrong.
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        let raw = raw.trim();
        if raw.contains('@') {
            return Err("must be a domain such as example.com, without @");
        }
        let lowered: String = raw.to_lowercase().nfc().collect();
        if lowered.chars().any(|c| {
            c.is_whitespace()
                || twig_errors::fields::is_invisible(c)
                || twig_errors::fields::is_default_ignorable(c)
        }) {
            return Err("must not contain spaces or invisible characters");
        }
        if !lowered.is_ascii() && !lowered.nfkc().eq(lowered.chars()) {
            return Err(
                "must not contain fullwidth letters, ligatures or other compatibility forms",
            );
        }
        if lowered.len() > Email::MAX_LEN - 2 {
            return Err("must be at most 252 characters");
        }
        normal_domain(&lowered).map(Self)
    }

    /// The normalised text (Unicode form).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The ASCII (Punycode) form, as DNS is asked.
    pub fn to_ascii(&self) -> String {
        idna::domain_to_ascii(&self.0).unwrap_or_else(|_| self.0.clone())
    }
}

impl fmt::Display for EmailDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The rule for a domain after @ (already lower-cased, NFC, free of
/// invisible characters and compatibility forms): at least two labels,
/// letters, digits and hyphens under UTS 46 with STD3 rules (no IP
/// address), kept in its Unicode form (a Punycode label decoded), one
/// script per label.
fn normal_domain(domain: &str) -> Result<String, &'static str> {
    if domain.len() < 3
        || !domain.contains('.')
        || domain.starts_with('.')
        || domain.ends_with('.')
        || domain.contains("..")
    {
        return Err("must end in a domain such as example.com");
    }
    // One domain, one form: an internationalised domain written in
    // Punycode (xn--…) is the same domain as its Unicode form, which is
    // the one kept. Letters, digits and hyphens only: no IP address.
    let (unicode, checked) = idna::uts46::Uts46::new().to_unicode(
        domain.as_bytes(),
        idna::uts46::AsciiDenyList::STD3,
        idna::uts46::Hyphens::Check,
    );
    if checked.is_err() {
        return Err(
            "must end in a domain name such as example.com (letters, digits and hyphens; \
             no IP address)",
        );
    }
    // A top-level label is never all digits (RFC 3696 §2): what ends
    // in one is an IPv4 address, not a domain.
    if unicode
        .rsplit('.')
        .next()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(
            "must end in a domain name such as example.com (letters, digits and hyphens; \
             no IP address)",
        );
    }
    let unicode: String = unicode.nfc().collect();
    if !unicode.is_ascii() && unicode.split('.').any(|l| !l.is_single_script()) {
        return Err(
            "must not mix scripts within its name or a domain label (such as a Cyrillic а \
             among Latin letters): such an address looks like another one",
        );
    }
    Ok(unicode)
}

/// The name before @ as RFC 5322's dot-atom, with letters and marks of
/// any script (RFC 6531): no quoted strings, comments or escapes, no dot
/// first, last or twice in a row.
fn is_dot_atom(local: &str) -> bool {
    const SPECIALS: &str = "!#$%&'*+/=?^_`{|}~-";
    !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && local.chars().all(|c| {
            c.is_ascii_alphanumeric()
                || c == '.'
                || SPECIALS.contains(c)
                || (!c.is_ascii()
                    && (c.is_alphanumeric() || unicode_normalization::char::is_combining_mark(c)))
        })
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
    fn a_domain_has_the_form_of_the_part_after_at() {
        let domain = EmailDomain::parse(" B\u{fc}cher.Example ").unwrap();
        assert_eq!(domain.as_str(), "b\u{fc}cher.example");
        assert_eq!(EmailDomain::parse("XN--BCHER-KVA.example").unwrap(), domain);
        assert_eq!(domain.to_ascii(), "xn--bcher-kva.example");
        assert_eq!(
            Email::parse("u1@xn--bcher-kva.example").unwrap().domain(),
            domain
        );
        for bad in [
            "",
            "example",
            "a@example.com",
            "127.0.0.1",
            "[::1]",
            "exa_mple.com",
            "-example.com",
            "ex\u{430}mple.com",
            "ex\u{200b}ample.com",
            "ex\u{ff41}mple.com",
            ".example.com",
            "example..com",
            "example.com.",
        ] {
            assert!(EmailDomain::parse(bad).is_err(), "{bad:?}");
        }
        assert!(EmailDomain::parse(&format!("{}.com", "a.".repeat(130))).is_err());
    }

    #[test]
    fn normalises_case_and_spaces() {
        assert_eq!(
            Email::parse("  Ada@Example.COM ").unwrap().as_str(),
            "ada@example.com"
        );
    }

    #[test]
    fn composed_and_decomposed_forms_are_one_address() {
        let composed = Email::parse("jos\u{e9}@example.com").unwrap();
        let decomposed = Email::parse("jose\u{301}@example.com").unwrap();
        assert_eq!(composed, decomposed);
        assert_eq!(composed.as_str(), "jos\u{e9}@example.com");
        assert_eq!(
            Email::parse("JOSE\u{301}@EXAMPLE.COM").unwrap(),
            composed,
            "case folded too"
        );
    }

    #[test]
    fn a_punycode_domain_is_its_unicode_form() {
        let unicode = Email::parse("u1@b\u{fc}cher.example").unwrap();
        assert_eq!(Email::parse("u1@xn--bcher-kva.example").unwrap(), unicode);
        assert_eq!(Email::parse("U1@XN--BCHER-KVA.EXAMPLE").unwrap(), unicode);
        assert_eq!(unicode.as_str(), "u1@b\u{fc}cher.example");
        // A Punycode label that decodes to a look-alike is refused too.
        assert!(Email::parse("ada@xn--exmple-4nf.com").is_err());
    }

    #[test]
    fn refuses_look_alike_forms() {
        for (bad, why) in [
            ("\u{ff41}da@example.com", "compatibility"),
            ("ada@ex\u{ff41}mple.com", "compatibility"),
            ("\u{fb01}le@example.com", "compatibility"),
            ("\u{430}da@example.com", "mix scripts"),
            ("ada@ex\u{430}mple.com", "mix scripts"),
            ("ad\u{200b}a@example.com", "invisible"),
            ("ad\u{ad}a@example.com", "invisible"),
            ("ad\u{34f}a@example.com", "invisible"),
            ("ad\u{fe0f}a@example.com", "invisible"),
            ("ada\u{e0100}@example.com", "invisible"),
        ] {
            let err = Email::parse(bad).unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }

    #[test]
    fn accepts_addresses_in_one_script() {
        for good in [
            "\u{43f}\u{440}\u{438}\u{432}\u{435}\u{442}@\u{43f}\u{440}\u{438}\u{43c}\u{435}\u{440}.\u{440}\u{444}",
            "\u{5c71}\u{7530}.\u{305f}\u{308d}\u{3046}@example.jp",
            "ada.lovelace+1@example.com",
            "m\u{fc}ller@example.de",
        ] {
            assert!(Email::parse(good).is_ok(), "{good:?}");
        }
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
            "\"ada\"@example.com",
            "a(comment)@example.com",
            "a\\b@example.com",
            ".ada@example.com",
            "ada.@example.com",
            "a..da@example.com",
            "a,da@example.com",
            "ada@[127.0.0.1]",
            "ada@127.0.0.1",
            "ada@example.123",
            "ada@exa_mple.com",
            "ada@-example.com",
            "ada@xn--zz.example",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Email::parse(&format!("{}@example.com", "a".repeat(250))).is_err());
        assert!(Email::parse(&format!("{}@example.com", "a".repeat(64))).is_ok());
        let long = Email::parse(&format!("{}@example.com", "a".repeat(65))).unwrap_err();
        assert!(long.contains("at most 64"), "{long}");
    }
}
