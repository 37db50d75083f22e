//! Request bodies, decoded by the routes' own extractor: any bytes give a value or a 4xx with a stable code,
//! never a panic or a 5xx.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    if let Err((status, code)) = ragvault_server::untrusted::json_body(usize::from(which), body) {
        assert!(status.is_client_error(), "{status} {code}");
        assert!(!code.is_empty());
    }
});
