//! The gRPC methods this server can answer, read once from the descriptor
//! sets of everything it serves: the twig APIs, health and reflection.
//! Anything else a client names is not a method of ours.

use std::collections::HashMap;
use std::sync::OnceLock;

use prost_reflect::DescriptorPool;

/// What is known of one method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Method {
    /// The service's full name, `package.Service`.
    pub(crate) service: &'static str,
    /// The method's name within its service.
    pub(crate) name: &'static str,
    /// The client may send more than one message.
    pub(crate) client_streaming: bool,
}

/// The catalogue: looked up on every request, so hashed with a fast
/// fixed hash (its keys are ours; a client only looks up).
type Catalogue = HashMap<&'static str, Method, foldhash::fast::FixedState>;

/// Every method by its path, `/package.Service/Method`.
pub(crate) fn by_path(path: &str) -> Option<Method> {
    static METHODS: OnceLock<Catalogue> = OnceLock::new();
    METHODS.get_or_init(read_all).get(path).copied()
}

/// A name kept for the life of the process (the catalogue is read once).
fn keep(name: String) -> &'static str {
    Box::leak(name.into_boxed_str())
}

fn read_all() -> Catalogue {
    let sets: [&[u8]; 4] = [
        twig_proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ];
    let mut methods = Catalogue::default();
    for set in sets {
        // The sets are built into the binary: one that does not decode is
        // a build defect, caught by the tests below.
        let pool = DescriptorPool::decode(set).expect("a built-in descriptor set decodes");
        for service in pool.services() {
            for method in service.methods() {
                methods.insert(
                    keep(format!("/{}/{}", service.full_name(), method.name())),
                    Method {
                        service: keep(service.full_name().to_string()),
                        name: keep(method.name().to_string()),
                        client_streaming: method.is_client_streaming(),
                    },
                );
            }
        }
    }
    methods
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn knows_the_served_methods_and_their_shape() {
        let create = by_path("/twig.apikeys.v1.ApiKeyService/CreateApiKey").unwrap();
        assert_eq!(
            (create.service, create.name, create.client_streaming),
            ("twig.apikeys.v1.ApiKeyService", "CreateApiKey", false)
        );
        for unary in [
            "/grpc.health.v1.Health/Check",
            "/grpc.health.v1.Health/Watch",
        ] {
            assert!(!by_path(unary).unwrap().client_streaming, "{unary}");
        }
        for reflection in [
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        ] {
            assert!(
                by_path(reflection).unwrap().client_streaming,
                "{reflection}"
            );
        }
        assert_eq!(by_path("/twig.apikeys.v1.ApiKeyService/Nope"), None);
        assert_eq!(by_path("/junk"), None);
    }
}
