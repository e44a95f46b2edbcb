//! The caller as the edge decided it, carried to a service in another
//! process (`x-twig-principal-bin`, a `twig.auth.v1.ForwardedCaller`).
//!
//! The edge authenticates the end client, checks the RPC's requirement and
//! counts its quota, then forwards the call with this header and its own
//! credential. The receiving auth layer believes the header only next to
//! the edge's credential (`auth.edge_token`); any other copy is removed.

use std::net::IpAddr;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use http::HeaderValue;
use prost::Message as _;
use twig_errors::ApiError;
use twig_proto::auth::v1 as pb;

use crate::principal::{InternalCaller, Principal};

/// The metadata key: binary (`-bin`), and under the `x-twig-principal`
/// prefix every auth layer strips from outside requests.
pub const FORWARDED_HEADER: &str = "x-twig-principal-bin";

/// Marks a request whose caller was decided by the edge: its requirement
/// was checked and its quota counted there, so it is not counted again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forwarded;

/// Who called, as the edge forwards it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForwardedCaller {
    /// The authenticated principal, if the call had a valid bearer.
    pub principal: Option<Principal>,
    /// The internal client the caller proved to be, if any.
    pub internal: Option<InternalCaller>,
    /// The end client's address.
    pub client_ip: Option<IpAddr>,
}

impl ForwardedCaller {
    /// The header value (base64 of the protobuf message, unpadded as gRPC
    /// binary metadata is sent).
    pub fn to_header(&self) -> HeaderValue {
        let encoded = STANDARD_NO_PAD.encode(self.encode());
        HeaderValue::try_from(encoded).expect("base64 is a valid header value")
    }

    /// The protobuf message (for gRPC clients, which base64 binary
    /// metadata themselves).
    pub fn encode(&self) -> Vec<u8> {
        let message = pb::ForwardedCaller {
            principal: self.principal.as_ref().map(Principal::to_pb),
            internal: self
                .internal
                .as_ref()
                .map(|caller| pb::ForwardedInternalCaller {
                    name: caller.name.clone(),
                    scopes: caller.scopes.clone(),
                }),
            client_ip: self.client_ip.map(|ip| ip.to_string()).unwrap_or_default(),
        };
        message.encode_to_vec()
    }

    /// Reads the header the edge set; UNAUTHENTICATED when it cannot be
    /// read (the edge and this service disagree about the format).
    pub fn from_header(value: &HeaderValue) -> Result<Self, ApiError> {
        let unreadable = |what: &str| {
            ApiError::unauthenticated(format!(
                "the edge's forwarded caller ({FORWARDED_HEADER}) could not be read: {what}; \
                 run the edge and the services at the same version"
            ))
        };
        let text = value.as_bytes();
        let bytes = STANDARD_NO_PAD
            .decode(text)
            .or_else(|_| STANDARD.decode(text))
            .map_err(|_| unreadable("not base64"))?;
        let message = pb::ForwardedCaller::decode(bytes.as_slice())
            .map_err(|_| unreadable("not protobuf"))?;
        let client_ip = if message.client_ip.is_empty() {
            None
        } else {
            Some(
                message
                    .client_ip
                    .parse()
                    .map_err(|_| unreadable("client_ip is not an address"))?,
            )
        };
        let principal = message
            .principal
            .map(|p| Principal::from_pb(&p).map_err(unreadable))
            .transpose()?;
        Ok(Self {
            principal,
            internal: message.internal.map(|caller| InternalCaller {
                name: caller.name,
                scopes: caller.scopes,
            }),
            client_ip,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::principal::{Credential, Role, Scope};
    use uuid::Uuid;

    fn principal(credential: Credential) -> Principal {
        Principal {
            user_id: Uuid::new_v4(),
            org_id: Uuid::new_v4(),
            roles: vec![Role::Admin],
            scopes: vec![Scope::Read, Scope::Admin],
            credential,
            expires_at: Some(chrono::DateTime::from_timestamp(1_900_000_000, 0).unwrap()),
        }
    }

    #[test]
    fn a_caller_survives_the_header() {
        for caller in [
            ForwardedCaller {
                principal: Some(principal(Credential::Session {
                    session_id: Uuid::new_v4(),
                })),
                internal: None,
                client_ip: Some("203.0.113.9".parse().unwrap()),
            },
            ForwardedCaller {
                principal: Some(principal(Credential::ApiKey {
                    key_id: Uuid::new_v4(),
                })),
                internal: Some(InternalCaller {
                    name: "runtime".into(),
                    scopes: vec!["vault.reveal".into()],
                }),
                client_ip: Some("2001:db8::1".parse().unwrap()),
            },
            ForwardedCaller::default(),
        ] {
            let back = ForwardedCaller::from_header(&caller.to_header()).unwrap();
            assert_eq!(back, caller);
        }
    }

    #[test]
    fn an_unreadable_header_is_refused() {
        for bad in ["%%%", "AAEC", "Cg"] {
            let err = ForwardedCaller::from_header(&HeaderValue::from_static(bad)).unwrap_err();
            assert_eq!(err.code(), twig_errors::ErrorCode::Unauthenticated, "{bad}");
        }
        let no_credential = pb::ForwardedCaller {
            principal: Some(pb::Principal {
                user_id: Uuid::new_v4().to_string(),
                organization_id: Uuid::new_v4().to_string(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let value = HeaderValue::try_from(STANDARD.encode(no_credential.encode_to_vec())).unwrap();
        assert!(ForwardedCaller::from_header(&value).is_err());
    }
}
