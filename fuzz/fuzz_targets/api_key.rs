//! `Authorization: Bearer rvk_…` values: anything a client sends is parsed or refused, never a panic; what
//! parses has the documented shape.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ragvault_credentials::PresentedKey;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(key) = PresentedKey::parse(raw) {
        assert!(raw.starts_with("rvk_"));
        assert_eq!(key.public_id().len(), 12);
        assert!(raw.contains(key.public_id()));
    }
});
