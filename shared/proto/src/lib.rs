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

/// A duration from a `google.protobuf.Duration`; `None` when it is
/// negative or its nanos are out of range.
pub fn std_duration(d: &prost_types::Duration) -> Option<std::time::Duration> {
    let secs = u64::try_from(d.seconds).ok()?;
    let nanos = u32::try_from(d.nanos).ok().filter(|n| *n < 1_000_000_000)?;
    Some(std::time::Duration::new(secs, nanos))
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

/// Every proto package under `proto/`, as the build script generates it
/// (`twig.sessions.v1` → `twig::sessions::v1`): a new package needs no
/// edit here.
#[allow(clippy::all, missing_docs)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/twig_packages.rs"));
}

/// `google.api`: the standard HTTP rule of an RPC (`google.api.http`, a
/// method option).
pub use generated::google;
/// One module per twig package, named like the package without `twig.`
/// (`twig.sessions.v1` → [`sessions::v1`], `twig.auth.v1` → `auth::v1`).
pub use generated::twig::*;
