//! Generated protobuf and gRPC code for every twig-identity API.
//!
//! One module per proto package, named like the package
//! (`twig.sessions.v1` → [`sessions::v1`]). [`catalogue`] is the API as
//! read from the descriptor sets: every RPC with its declared access and
//! HTTP bindings.

pub mod catalogue;
pub mod codec;

/// `google.protobuf.Timestamp` from a UTC time.
pub fn timestamp(t: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

/// `google.protobuf.Duration` from a duration (saturating).
pub fn duration(d: std::time::Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// A UTC time from a `google.protobuf.Timestamp`; `None` when it is out of
/// range or its nanos are negative.
pub fn datetime(t: &prost_types::Timestamp) -> Option<chrono::DateTime<chrono::Utc>> {
    u32::try_from(t.nanos)
        .ok()
        .and_then(|nanos| chrono::DateTime::from_timestamp(t.seconds, nanos))
}

/// Encoded `FileDescriptorSet` of every twig proto: what server reflection
/// describes and what [`catalogue`] reads.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/twig_descriptor.bin"));

/// The OpenAPI 3.0.3 document of the HTTP/JSON surface, written by the
/// build script from the descriptor set (`build/openapi.rs`): every
/// `google.api.http` binding, its schemas, security and errors.
pub const OPENAPI_JSON: &str = include_str!(concat!(env!("OUT_DIR"), "/openapi.json"));

pub mod http_template;

/// `google.api`: the standard HTTP rule of an RPC (`google.api.http`, a
/// method option).
pub mod google {
    /// `google.api`
    pub mod api {
        #![allow(clippy::all, missing_docs)]
        tonic::include_proto!("google.api");
    }
}

/// `twig.auth.v1`: who may call each RPC (a method option).
pub mod auth {
    /// `twig.auth.v1`
    pub mod v1 {
        #![allow(clippy::all, missing_docs)]
        tonic::include_proto!("twig.auth.v1");
    }
}

/// `twig.edge.v1`
pub mod edge {
    /// `twig.edge.v1`
    pub mod v1 {
        #![allow(clippy::all, missing_docs)]
        tonic::include_proto!("twig.edge.v1");
    }
}

/// `twig.sessions.v1`
pub mod sessions {
    /// `twig.sessions.v1`
    pub mod v1 {
        #![allow(clippy::all, missing_docs)]
        tonic::include_proto!("twig.sessions.v1");
    }
}

/// `twig.apikeys.v1`
pub mod apikeys {
    /// `twig.apikeys.v1`
    pub mod v1 {
        #![allow(clippy::all, missing_docs)]
        tonic::include_proto!("twig.apikeys.v1");
    }
}

/// `twig.audit.v1`
pub mod audit {
    /// `twig.audit.v1`
    pub mod v1 {
        #![allow(clippy::all, missing_docs)]
        tonic::include_proto!("twig.audit.v1");
    }
}

/// `twig.quota.v1`
pub mod quota {
    /// `twig.quota.v1`
    pub mod v1 {
        #![allow(clippy::all, missing_docs)]
        tonic::include_proto!("twig.quota.v1");
    }
}

/// `twig.vault.v1`
pub mod vault {
    /// `twig.vault.v1`
    pub mod v1 {
        #![allow(clippy::all, missing_docs)]
        tonic::include_proto!("twig.vault.v1");
    }
}
