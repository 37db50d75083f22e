//! Provider streams (Server-Sent Events): bytes may arrive split anywhere, even inside a UTF-8 character.
//! Whatever the split, the decoder yields the same events as for the whole input (or the same refusal).
#![no_main]
use libfuzzer_sys::fuzz_target;
use ragvault_generation::sse::SseDecoder;

fuzz_target!(|data: &[u8]| {
    let Some((&cuts, stream)) = data.split_first() else {
        return;
    };
    let whole = SseDecoder::default().push(stream);
    let mut pieces = SseDecoder::default();
    let mut events = Vec::new();
    let mut refused = None;
    // Piece lengths from the first byte, cycling through 1..=8.
    let mut at = 0;
    let mut step = 0usize;
    while at < stream.len() {
        let len = 1 + ((cuts as usize >> (step % 8)) & 7);
        let end = (at + len).min(stream.len());
        match pieces.push(&stream[at..end]) {
            Ok(mut more) => events.append(&mut more),
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
        at = end;
        step += 1;
    }
    match (whole, refused) {
        (Ok(expected), None) => assert_eq!(expected, events),
        (Err(expected), Some(got)) => assert_eq!(expected, got),
        (whole, refused) => panic!("whole: {whole:?}, in pieces refused: {refused:?}"),
    }
});
