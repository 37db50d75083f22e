//! Tenant policy files (`policies.dir/<slug>.toml`): parsed or refused with a key and a reason, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err((key, reason)) = ragvault_server::untrusted::policy_file(text) {
        assert!(!key.is_empty(), "a refusal names no key: {reason:?}");
    }
});
