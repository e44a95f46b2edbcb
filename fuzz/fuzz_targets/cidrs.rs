//! IP allowlists as admins send them: parsed or refused with a reason,
//! never a panic; what is accepted is stored and read back unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use twig_api_keys::cidrs;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let entries: Vec<String> = text.split('\n').map(str::to_string).collect();
    if let Ok(list) = cidrs::parse(&entries) {
        let stored = cidrs::to_stored(&list);
        assert_eq!(cidrs::from_stored(&stored), list);
        let _ = cidrs::allows(&list, "192.0.2.1".parse().ok());
    }
});
