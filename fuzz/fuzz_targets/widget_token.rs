//! Widget tokens (`rvw1.<kid>.<claims>.<tag>`) as a browser presents them: the structure, the tag and the
//! claims are decoded before any key is looked up; any string is decoded or refused, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ragvault_gateway::UnverifiedWidgetToken;

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(parsed) = UnverifiedWidgetToken::parse(token) {
        assert!(token.starts_with("rvw1."));
        assert!(token.contains(parsed.kid()));
        // The claims are read only once the tag is checked; here their decoding is exercised alone.
        let _ = parsed.claims();
    }
});
