//! Request messages of the public RPCs from arbitrary bytes: decoded or
//! refused (what the server answers INVALID_ARGUMENT), never a panic,
//! however deep or long the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use twig_proto::{apikeys, audit, edge, quota, sessions, vault};

fn decode<M: Message + Default>(bytes: &[u8]) {
    if let Ok(message) = M::decode(bytes) {
        // Whatever was read encodes again.
        let _ = message.encode_to_vec();
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    match which % 10 {
        0 => decode::<sessions::v1::SignUpRequest>(bytes),
        1 => decode::<sessions::v1::LoginRequest>(bytes),
        2 => decode::<apikeys::v1::CreateApiKeyRequest>(bytes),
        3 => decode::<apikeys::v1::UpdateApiKeyRequest>(bytes),
        4 => decode::<quota::v1::SetLimitRequest>(bytes),
        5 => decode::<quota::v1::CheckRequest>(bytes),
        6 => decode::<vault::v1::AddProviderKeyRequest>(bytes),
        7 => decode::<vault::v1::SealRequest>(bytes),
        8 => decode::<edge::v1::AuthorizeRequest>(bytes),
        _ => decode::<audit::v1::ListEventsRequest>(bytes),
    }
});
