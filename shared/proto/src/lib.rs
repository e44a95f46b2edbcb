//! Generated protobuf and gRPC code for every twig-identity API.
//!
//! One module per proto package, named like the package
//! (`twig.sessions.v1` → [`sessions::v1`]).

/// Encoded `FileDescriptorSet` of every twig proto, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/twig_descriptor.bin"));

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
