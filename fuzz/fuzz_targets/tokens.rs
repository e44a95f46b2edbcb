//! Bearer tokens as clients send them: kind by prefix, format and checksum,
//! the public prefix kept for audit events. Never a panic; a token that
//! passes the format check has the kind its prefix says.
#![no_main]

use libfuzzer_sys::fuzz_target;
use twig_crypto::{Token, TokenKind};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let kind = TokenKind::of(text);
    let prefix = Token::public_prefix(text);
    assert!(prefix.len() <= text.len().max(16) + 16);
    for k in [
        TokenKind::SessionAccess,
        TokenKind::SessionRefresh,
        TokenKind::ApiKey,
    ] {
        if Token::check_format(k, text).is_ok() {
            assert_eq!(kind, Some(k), "{text:?} passed as {k:?}");
        }
    }
});
