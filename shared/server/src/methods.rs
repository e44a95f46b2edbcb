//! The gRPC methods this server can answer, read once from the descriptor
//! sets of everything it serves: the twig APIs, health and reflection.
//! Anything else a client names is not a method of ours.

use std::collections::HashMap;
use std::sync::OnceLock;

use prost_reflect::DescriptorPool;

/// What is known of one method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Method {
    /// The client may send more than one message.
    pub(crate) client_streaming: bool,
}

/// Every method by its path, `/package.Service/Method`.
pub(crate) fn by_path(path: &str) -> Option<Method> {
    static METHODS: OnceLock<HashMap<String, Method>> = OnceLock::new();
    METHODS.get_or_init(read_all).get(path).copied()
}

fn read_all() -> HashMap<String, Method> {
    let sets: [&[u8]; 4] = [
        twig_proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ];
    let mut methods = HashMap::new();
    for set in sets {
        // The sets are built into the binary: one that does not decode is
        // a build defect, caught by the tests below.
        let pool = DescriptorPool::decode(set).expect("a built-in descriptor set decodes");
        for service in pool.services() {
            for method in service.methods() {
                methods.insert(
                    format!("/{}/{}", service.full_name(), method.name()),
                    Method {
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
        let unary = Method {
            client_streaming: false,
        };
        assert_eq!(
            by_path("/twig.apikeys.v1.ApiKeyService/CreateApiKey"),
            Some(unary)
        );
        assert_eq!(by_path("/grpc.health.v1.Health/Check"), Some(unary));
        assert_eq!(by_path("/grpc.health.v1.Health/Watch"), Some(unary));
        for reflection in [
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        ] {
            assert_eq!(
                by_path(reflection),
                Some(Method {
                    client_streaming: true
                })
            );
        }
        assert_eq!(by_path("/twig.apikeys.v1.ApiKeyService/Nope"), None);
        assert_eq!(by_path("/junk"), None);
    }
}
