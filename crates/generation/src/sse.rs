//! Incremental Server-Sent Events decoder: bytes arrive in arbitrary pieces (a network read can end inside
//! a line, or inside a UTF-8 character); events come out whole.

/// One event: `event:` name (empty when absent) and its `data:` lines joined by `\n`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SseEvent {
    pub event: String,
    pub data: String,
}

/// Longest line accepted before the stream is declared broken (a provider that never sends a newline must
/// not grow our memory without bound).
pub const MAX_LINE_BYTES: usize = 1 << 20;

#[derive(Default)]
pub struct SseDecoder {
    buffer: Vec<u8>,
    event: String,
    data: Vec<String>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum SseError {
    LineTooLong,
    NotUtf8,
}

impl SseDecoder {
    /// Feeds bytes; returns the events they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, SseError> {
        self.buffer.extend_from_slice(bytes);
        let mut events = Vec::new();
        let mut consumed = 0;
        while let Some(newline) = self.buffer[consumed..].iter().position(|&b| b == b'\n') {
            let mut line = &self.buffer[consumed..consumed + newline];
            consumed += newline + 1;
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            let line = std::str::from_utf8(line).map_err(|_| SseError::NotUtf8)?;
            if line.is_empty() {
                if !self.data.is_empty() || !self.event.is_empty() {
                    events.push(SseEvent {
                        event: std::mem::take(&mut self.event),
                        data: std::mem::take(&mut self.data).join("\n"),
                    });
                }
                continue;
            }
            if line.starts_with(':') {
                continue; // comment / keep-alive
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line, ""),
            };
            match field {
                "event" => self.event = value.to_owned(),
                "data" => self.data.push(value.to_owned()),
                _ => {}
            }
        }
        self.buffer.drain(..consumed);
        if self.buffer.len() > MAX_LINE_BYTES {
            return Err(SseError::LineTooLong);
        }
        Ok(events)
    }

    /// True when bytes or fields of an unfinished event are waiting: a stream that ends here was cut.
    pub fn has_partial_event(&self) -> bool {
        !self.buffer.is_empty() || !self.data.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_survive_any_split() {
        let stream = "event: message_start\ndata: {\"a\":1}\n\n: ping\r\ndata: x\ndata: y\r\n\r\ndata: [DONE]\n\n";
        let whole = SseDecoder::default()
            .push(stream.as_bytes())
            .expect("decode");
        assert_eq!(whole.len(), 3);
        assert_eq!(whole[0].event, "message_start");
        assert_eq!(whole[1].data, "x\ny");
        for split in 0..stream.len() {
            let mut d = SseDecoder::default();
            let mut got = d.push(&stream.as_bytes()[..split]).expect("first");
            got.extend(d.push(&stream.as_bytes()[split..]).expect("second"));
            assert_eq!(got, whole, "split at {split}");
            assert!(!d.has_partial_event());
        }
    }

    #[test]
    fn split_inside_a_utf8_character_is_fine() {
        let stream = "data: grüße\n\n".as_bytes();
        let mut d = SseDecoder::default();
        let mut got = d.push(&stream[..9]).expect("first");
        got.extend(d.push(&stream[9..]).expect("second"));
        assert_eq!(got[0].data, "grüße");
    }

    #[test]
    fn a_cut_stream_is_visible() {
        let mut d = SseDecoder::default();
        d.push(b"data: {\"choices\":[{\"del").expect("partial");
        assert!(d.has_partial_event());
    }
}
