//! The one catalogue of the API, read once from the descriptor sets built
//! into the binary.
//!
//! Every gRPC method the binary can serve is an [`Rpc`]: its path, service,
//! name and streaming, its messages (the [`MethodDescriptor`]), and its two
//! method options decoded — `(twig.auth.v1.access)`, who may call it, and
//! `(google.api.http)`, its HTTP/JSON bindings. The access policy
//! (`twig_auth::AccessPolicy`), the edge's HTTP/JSON routes and the
//! server's lookup of each request's method (metric labels, framing) all
//! read the API here, and nowhere else is it walked at run time (server
//! reflection serves the encoded sets as they are).
//!
//! Health and reflection are in the catalogue too: the server answers them
//! on the same port, so a lookup by path must know them. Their sets come
//! from tonic-health and tonic-reflection, whose services the server runs
//! anyway, and they declare neither option. Taking them here keeps one
//! catalogue with no extra sets passed in.
//!
//! The sets are built into the binary, so one that does not decode is a
//! build defect rather than something to handle at run time:
//! [`Catalogue::get`] panics on it, and the tests below read the real sets
//! so it never gets that far.
//!
//! The build script (`build/openapi.rs`) reads the twig set on its own: it
//! runs in another process, before this crate is compiled.

use std::collections::HashMap;
use std::sync::OnceLock;

use prost_reflect::{DescriptorPool, DynamicMessage, ExtensionDescriptor, MethodDescriptor};

use crate::auth::v1::Access;
use crate::google::api::HttpRule;

/// The encoded sets the catalogue is read from, in this order.
const SETS: [&[u8]; 4] = [
    crate::FILE_DESCRIPTOR_SET,
    tonic_health::pb::FILE_DESCRIPTOR_SET,
    tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
    tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
];

/// The `(twig.auth.v1.access)` method option.
const ACCESS: &str = "twig.auth.v1.access";
/// The `(google.api.http)` method option.
const HTTP: &str = "google.api.http";

/// One gRPC method.
#[derive(Debug, Clone)]
pub struct Rpc {
    /// `/package.Service/Method`.
    pub path: String,
    /// The service's full name, `package.Service`.
    pub service: String,
    /// The method's name within its service.
    pub name: String,
    /// The client may send more than one message.
    pub client_streaming: bool,
    /// The server may answer with more than one message.
    pub server_streaming: bool,
    /// Its `(twig.auth.v1.access)` option, if it declares one.
    pub access: Option<Access>,
    /// Its `(google.api.http)` option, if it declares one.
    pub http: Option<HttpRule>,
    /// The method itself: its input and output messages.
    pub method: MethodDescriptor,
}

/// Every gRPC method the binary can serve, in the order of the sets.
#[derive(Debug)]
pub struct Catalogue {
    pool: DescriptorPool,
    rpcs: Vec<Rpc>,
    /// Index into `rpcs` by path. Looked up on every request, so hashed
    /// with a fast fixed hash (its keys are ours; a client only looks up).
    by_path: HashMap<String, usize, foldhash::fast::FixedState>,
}

impl Catalogue {
    /// The catalogue of this binary, read on first use.
    pub fn get() -> &'static Catalogue {
        static CATALOGUE: OnceLock<Catalogue> = OnceLock::new();
        CATALOGUE.get_or_init(|| {
            Catalogue::decode(&SETS)
                .unwrap_or_else(|e| panic!("the built-in descriptor sets do not decode: {e}"))
        })
    }

    /// The method at `path` (`/package.Service/Method`), if it is one.
    pub fn rpc(&self, path: &str) -> Option<&Rpc> {
        self.by_path.get(path).map(|&i| &self.rpcs[i])
    }

    /// Every method, in the order of the sets.
    pub fn rpcs(&self) -> impl ExactSizeIterator<Item = &Rpc> {
        self.rpcs.iter()
    }

    /// Every message, enum and service of the sets.
    pub fn pool(&self) -> &DescriptorPool {
        &self.pool
    }

    fn decode(sets: &[&[u8]]) -> Result<Self, String> {
        let mut pool = DescriptorPool::new();
        for set in sets {
            pool.decode_file_descriptor_set(*set)
                .map_err(|e| e.to_string())?;
        }
        let extension = |name: &str| {
            pool.get_extension_by_name(name)
                .ok_or_else(|| format!("no set defines the {name} option"))
        };
        let (access, http) = (extension(ACCESS)?, extension(HTTP)?);
        let mut rpcs = Vec::new();
        let mut by_path = HashMap::default();
        for service in pool.services() {
            for method in service.methods() {
                let path = format!("/{}/{}", service.full_name(), method.name());
                let options = method.options();
                let rpc = Rpc {
                    service: service.full_name().to_string(),
                    name: method.name().to_string(),
                    client_streaming: method.is_client_streaming(),
                    server_streaming: method.is_server_streaming(),
                    access: option(&options, &access).map_err(|e| format!("{path}: {e}"))?,
                    http: option(&options, &http).map_err(|e| format!("{path}: {e}"))?,
                    method,
                    path,
                };
                by_path.insert(rpc.path.clone(), rpcs.len());
                rpcs.push(rpc);
            }
        }
        Ok(Self {
            pool,
            rpcs,
            by_path,
        })
    }
}

/// The method option `extension` as its message, if it is set.
fn option<T: prost::Message + Default>(
    options: &DynamicMessage,
    extension: &ExtensionDescriptor,
) -> Result<Option<T>, String> {
    if !options.has_extension(extension) {
        return Ok(None);
    }
    let undecodable = || format!("the {} option does not decode", extension.full_name());
    options
        .get_extension(extension)
        .as_message()
        .ok_or_else(undecodable)?
        .transcode_to()
        .map(Some)
        .map_err(|_| undecodable())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::v1::Caller;
    use crate::google::api::http_rule::Pattern;

    #[test]
    fn reads_the_twig_apis_and_their_options() {
        let catalogue = Catalogue::get();
        let create = catalogue
            .rpc("/twig.apikeys.v1.ApiKeyService/CreateApiKey")
            .unwrap();
        assert_eq!(
            (
                create.service.as_str(),
                create.name.as_str(),
                create.client_streaming,
                create.server_streaming
            ),
            (
                "twig.apikeys.v1.ApiKeyService",
                "CreateApiKey",
                false,
                false
            )
        );
        assert_eq!(create.method.input().name(), "CreateApiKeyRequest");
        assert_eq!(
            create.access.as_ref().map(|a| a.caller()),
            Some(Caller::Principal)
        );
        assert_eq!(
            create.http.as_ref().and_then(|h| h.pattern.clone()),
            Some(Pattern::Post("/v1/api-keys".into()))
        );

        let login = catalogue
            .rpc("/twig.sessions.v1.SessionService/Login")
            .unwrap();
        assert_eq!(
            login.access.as_ref().map(|a| a.caller()),
            Some(Caller::Public)
        );
        let reveal = catalogue
            .rpc("/twig.vault.v1.VaultService/RevealProviderKey")
            .unwrap();
        assert_eq!(
            reveal.access.as_ref().map(|a| a.internal_scope.as_str()),
            Some("vault.reveal")
        );

        // Every twig RPC is here, each once, and found by its path.
        let twig: Vec<_> = catalogue
            .rpcs()
            .filter(|r| r.service.starts_with("twig."))
            .collect();
        assert!(twig.len() >= 40, "{} twig RPCs", twig.len());
        for rpc in catalogue.rpcs() {
            assert_eq!(
                catalogue.rpc(&rpc.path).map(|r| r.path.as_str()),
                Some(rpc.path.as_str())
            );
        }
        assert_eq!(catalogue.by_path.len(), catalogue.rpcs().len());
    }

    #[test]
    fn knows_health_and_reflection_and_their_shape() {
        let catalogue = Catalogue::get();
        for unary in [
            "/grpc.health.v1.Health/Check",
            "/grpc.health.v1.Health/Watch",
        ] {
            let rpc = catalogue.rpc(unary).unwrap();
            assert!(!rpc.client_streaming, "{unary}");
            assert!(rpc.access.is_none() && rpc.http.is_none(), "{unary}");
        }
        assert!(
            catalogue
                .rpc("/grpc.health.v1.Health/Watch")
                .unwrap()
                .server_streaming
        );
        for reflection in [
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        ] {
            assert!(
                catalogue.rpc(reflection).unwrap().client_streaming,
                "{reflection}"
            );
        }
        assert!(
            catalogue
                .rpc("/twig.apikeys.v1.ApiKeyService/Nope")
                .is_none()
        );
        assert!(catalogue.rpc("/junk").is_none());
    }

    #[test]
    fn sets_that_cannot_be_read_are_refused() {
        assert!(Catalogue::decode(&[b"\xff\xff\xff"]).is_err());
        // Without the twig set, neither option is defined.
        let err = Catalogue::decode(&[tonic_health::pb::FILE_DESCRIPTOR_SET]).unwrap_err();
        assert!(err.contains("twig.auth.v1.access"), "{err}");
    }
}
