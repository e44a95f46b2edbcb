//! [`Purpose`]: why a request leaves the process.

use std::fmt;

/// Why a request leaves the process: the `purpose` label of the metrics
/// and a field of the request's tracing span. A fixed set, named in code
/// (a `&'static str` in snake_case), so the label stays bounded; add a
/// constant here rather than building names at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Purpose(&'static str);

impl Purpose {
    /// OpenID Connect discovery (`/.well-known/openid-configuration`).
    pub const OIDC_DISCOVERY: Self = Self::new("oidc_discovery");
    /// A JSON Web Key Set.
    pub const JWKS: Self = Self::new("jwks");
    /// Exchanging an authorization code for tokens.
    pub const TOKEN_EXCHANGE: Self = Self::new("token_exchange");
    /// Refreshing an access token.
    pub const TOKEN_REFRESH: Self = Self::new("token_refresh");
    /// Revoking a token at its provider.
    pub const REVOCATION: Self = Self::new("revocation");
    /// An OIDC userinfo endpoint.
    pub const USERINFO: Self = Self::new("userinfo");
    /// SAML IdP metadata.
    pub const SAML_METADATA: Self = Self::new("saml_metadata");

    /// A purpose named `name`: lower-case ASCII letters, digits and `_`,
    /// 1 to 32 characters. Checked at compile time when used in a
    /// `const`.
    ///
    /// # Panics
    ///
    /// When `name` breaks that rule.
    pub const fn new(name: &'static str) -> Self {
        let bytes = name.as_bytes();
        assert!(
            !bytes.is_empty() && bytes.len() <= 32,
            "a purpose is 1 to 32 characters"
        );
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            assert!(
                b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_',
                "a purpose is snake_case ASCII"
            );
            i += 1;
        }
        Self(name)
    }

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        self.0
    }
}

impl fmt::Display for Purpose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}
