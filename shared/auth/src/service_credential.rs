//! The credential this process presents to the services it calls in other
//! processes (`remote.token`; their `auth.edge_token`).

use http::HeaderValue;
use twig_config::Secret;

use crate::layer::INTERNAL_TOKEN_HEADER;

/// `x-twig-internal-token` for calls to other twig services, marked
/// sensitive so it never shows in logs or traces.
#[derive(Clone)]
pub struct ServiceCredential(HeaderValue);

impl ServiceCredential {
    /// From the configured secret; `None` when it is not a valid header
    /// value.
    pub fn new(token: &Secret) -> Option<Self> {
        let mut value = HeaderValue::from_str(token.expose()).ok()?;
        value.set_sensitive(true);
        Some(Self(value))
    }

    /// Puts the credential on an outgoing HTTP request's headers.
    pub fn attach(&self, headers: &mut http::HeaderMap) {
        headers.insert(INTERNAL_TOKEN_HEADER, self.0.clone());
    }

    /// A gRPC request carrying the credential.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        let mut value = tonic::metadata::MetadataValue::try_from(self.0.as_bytes())
            .expect("a header value is valid ASCII metadata");
        value.set_sensitive(true);
        request.metadata_mut().insert(INTERNAL_TOKEN_HEADER, value);
        request
    }
}

impl std::fmt::Debug for ServiceCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServiceCredential([redacted])")
    }
}
