//! The caller header the edge forwards (`x-twig-principal-bin`): any bytes
//! are read or refused, never a panic; what is read survives a round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use twig_auth::ForwardedCaller;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = http::HeaderValue::from_bytes(data) else {
        return;
    };
    if let Ok(caller) = ForwardedCaller::from_header(&value) {
        let again =
            ForwardedCaller::from_header(&caller.to_header()).expect("our own header reads");
        assert_eq!(again, caller);
    }
});
