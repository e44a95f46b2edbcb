//! Bearer tokens: `<prefix><body><checksum>`.
//!
//! - prefix: readable kind, e.g. `twig_st_` for session access tokens;
//! - body: 43 characters of base62 drawn from the OS CSPRNG (43 × log2(62) ≈
//!   256.03 bits);
//! - checksum: CRC-32 of prefix and body, as 6 base62 characters, so a secret
//!   scanner can tell a real token from random text without calling us.
//!
//! Tokens are stored only as their SHA-256 ([`TokenHash`]).

use std::fmt;

use sha2::{Digest, Sha256};

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const BODY_LEN: usize = 43;
const CHECKSUM_LEN: usize = 6;

/// What a token is for; each kind has its own prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TokenKind {
    /// A session's access token, presented on every request.
    SessionAccess,
    /// A session's refresh token, traded for new tokens.
    SessionRefresh,
    /// An API key.
    ApiKey,
    /// The token of a link that proves an email: finishing a sign-up, or
    /// verifying an account's address.
    EmailVerification,
    /// The token of a password-reset link.
    PasswordReset,
    /// The token of an invitation to an organisation.
    Invitation,
}

impl TokenKind {
    /// The readable prefix.
    pub const fn prefix(self) -> &'static str {
        match self {
            Self::SessionAccess => "twig_st_",
            Self::SessionRefresh => "twig_rt_",
            Self::ApiKey => "twig_sk_",
            Self::EmailVerification => "twig_ev_",
            Self::PasswordReset => "twig_pr_",
            Self::Invitation => "twig_iv_",
        }
    }

    /// Every kind.
    pub const ALL: [TokenKind; 6] = [
        Self::SessionAccess,
        Self::SessionRefresh,
        Self::ApiKey,
        Self::EmailVerification,
        Self::PasswordReset,
        Self::Invitation,
    ];

    /// The kind whose prefix starts `text`, if any.
    pub fn of(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| text.starts_with(k.prefix()))
    }

    /// Total length of a token of this kind.
    pub const fn token_len(self) -> usize {
        self.prefix().len() + BODY_LEN + CHECKSUM_LEN
    }
}

/// Why a presented string is not a well-formed token. Says nothing about
/// whether a token with that shape exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenFormatError {
    /// Wrong prefix for the expected kind.
    #[error("not a {0:?} token")]
    WrongKind(TokenKind),
    /// Wrong length or characters outside the alphabet.
    #[error("malformed token")]
    Malformed,
    /// The checksum does not match: a typo or made-up text.
    #[error("token checksum does not match")]
    BadChecksum,
}

/// A freshly generated token. Its text is shown once and then dropped; only
/// [`TokenHash`] is stored.
pub struct Token {
    kind: TokenKind,
    text: zeroize::Zeroizing<String>,
}

impl Token {
    /// Draws a new token of `kind` from the OS CSPRNG.
    pub fn generate(kind: TokenKind) -> Self {
        let mut text = String::with_capacity(kind.token_len());
        text.push_str(kind.prefix());
        let mut buf = [0u8; 64];
        while text.len() < kind.prefix().len() + BODY_LEN {
            getrandom::fill(&mut buf).expect("the OS random number generator failed");
            for &b in &buf {
                // 248 = 4 × 62: rejecting the rest keeps every character uniform.
                if b < 248 && text.len() < kind.prefix().len() + BODY_LEN {
                    text.push(ALPHABET[(b % 62) as usize] as char);
                }
            }
        }
        let checksum = checksum(&text);
        text.push_str(&checksum);
        Self {
            kind,
            text: zeroize::Zeroizing::new(text),
        }
    }

    /// The kind.
    pub fn kind(&self) -> TokenKind {
        self.kind
    }

    /// The token's text, to hand to its owner once.
    pub fn expose(&self) -> &str {
        &self.text
    }

    /// The hash to store.
    pub fn hash(&self) -> TokenHash {
        TokenHash::of(&self.text)
    }

    /// A well-formed token of `kind` with the given 43-character base62
    /// `body` and its checksum (for tests and tools that craft tokens).
    pub fn with_body(kind: TokenKind, body: &str) -> Option<String> {
        if body.len() != BODY_LEN || !body.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return None;
        }
        let head = format!("{}{body}", kind.prefix());
        let sum = checksum(&head);
        Some(head + &sum)
    }

    /// The public start of a token: its prefix and the first 8 characters
    /// of the body. Safe to show and log; it cannot be used to guess the
    /// rest.
    pub fn public_prefix(text: &str) -> String {
        text.chars()
            .take(16)
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '?'
                }
            })
            .collect()
    }

    /// Checks that `text` is a well-formed token of `kind` with a valid
    /// checksum. Cheap, and done before any lookup.
    pub fn check_format(kind: TokenKind, text: &str) -> Result<(), TokenFormatError> {
        if !text.starts_with(kind.prefix()) {
            return Err(TokenFormatError::WrongKind(kind));
        }
        if text.len() != kind.token_len()
            || !text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(TokenFormatError::Malformed);
        }
        let (head, sum) = text.split_at(kind.token_len() - CHECKSUM_LEN);
        if !head[kind.prefix().len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric())
        {
            return Err(TokenFormatError::Malformed);
        }
        if checksum(head) != sum {
            return Err(TokenFormatError::BadChecksum);
        }
        Ok(())
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({:?}, [redacted])", self.kind)
    }
}

fn checksum(head: &str) -> String {
    let mut n = crc32fast::hash(head.as_bytes()) as u64;
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8(out.to_vec()).expect("alphabet is ASCII")
}

/// SHA-256 of a token's text: what the database stores and indexes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    /// Hashes any presented text (well-formed or not).
    pub fn of(text: &str) -> Self {
        Self(Sha256::digest(text.as_bytes()).into())
    }

    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// From stored bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }

    /// Lower-case hex, for storage as text.
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenHash({}…)", &self.to_hex()[..8])
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn generated_tokens_have_prefix_length_and_valid_checksum() {
        for kind in TokenKind::ALL {
            let token = Token::generate(kind);
            assert!(token.expose().starts_with(kind.prefix()));
            assert_eq!(token.expose().len(), kind.token_len());
            Token::check_format(kind, token.expose()).unwrap();
            assert_eq!(TokenKind::of(token.expose()), Some(kind));
        }
    }

    #[test]
    fn body_carries_at_least_256_bits() {
        assert!(BODY_LEN as f64 * 62f64.log2() >= 256.0);
    }

    #[test]
    fn a_changed_character_fails_the_checksum() {
        let token = Token::generate(TokenKind::ApiKey);
        let mut text = token.expose().to_string().into_bytes();
        let i = 20;
        text[i] = if text[i] == b'a' { b'b' } else { b'a' };
        let text = String::from_utf8(text).unwrap();
        assert_eq!(
            Token::check_format(TokenKind::ApiKey, &text),
            Err(TokenFormatError::BadChecksum)
        );
    }

    #[test]
    fn garbage_is_refused_without_panic() {
        let kind = TokenKind::SessionAccess;
        for text in [
            "",
            "twig_st_",
            "twig_st_\0",
            &"x".repeat(10_000),
            "twig_st_ü",
        ] {
            assert!(Token::check_format(kind, text).is_err());
        }
        let near = format!("{}{}", kind.prefix(), "é".repeat(24));
        assert!(Token::check_format(kind, &near).is_err());
    }

    #[test]
    fn a_million_draws_are_unique() {
        let mut seen = HashSet::with_capacity(1_000_000);
        for _ in 0..1_000_000 {
            assert!(seen.insert(Token::generate(TokenKind::SessionAccess).hash()));
        }
    }

    #[test]
    fn characters_are_spread_over_the_whole_alphabet() {
        let mut counts = [0u32; 62];
        for _ in 0..2_000 {
            let t = Token::generate(TokenKind::SessionRefresh);
            for b in t.expose()[8..8 + BODY_LEN].bytes() {
                counts[ALPHABET.iter().position(|&a| a == b).unwrap()] += 1;
            }
        }
        // 86 000 draws over 62 symbols: about 1 387 each.
        assert!(
            counts.iter().all(|&c| (1_150..1_650).contains(&c)),
            "{counts:?}"
        );
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::*;

        proptest! {
            /// Any input, however hostile, is refused or accepted without
            /// panicking, and only strings with the right shape pass.
            #[test]
            fn check_format_never_panics(text in ".{0,200}") {
                for kind in TokenKind::ALL {
                    if Token::check_format(kind, &text).is_ok() {
                        prop_assert!(text.starts_with(kind.prefix()));
                        prop_assert_eq!(text.len(), kind.token_len());
                    }
                }
            }

            /// Changing one character of a real token is always caught.
            #[test]
            fn one_changed_character_is_caught(pos in 8usize..57, replacement in "[0-9A-Za-z]") {
                let token = Token::generate(TokenKind::ApiKey);
                let mut chars: Vec<char> = token.expose().chars().collect();
                let new = replacement.chars().next().unwrap();
                prop_assume!(chars[pos] != new);
                chars[pos] = new;
                let changed: String = chars.into_iter().collect();
                prop_assert!(Token::check_format(TokenKind::ApiKey, &changed).is_err());
            }

            /// The public prefix is at most 16 safe characters.
            #[test]
            fn public_prefix_is_short_and_safe(text in ".{0,100}") {
                let prefix = Token::public_prefix(&text);
                prop_assert!(prefix.chars().count() <= 16);
                prop_assert!(prefix.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '?'));
            }
        }
    }
}
