//! Audio to text through an OpenAI-compatible `/v1/audio/transcriptions` endpoint (Whisper), with the
//! provider key leased through the credentials crate. The transcript is then ingested as plain text.

use ragvault_credentials::{LeaseManager, LeasedCallError, ProviderCallError, ProviderKeyRef};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum TranscriptionError {
    /// Worth trying again later (network, 429, 5xx, key source down).
    #[error("transcription unavailable: {0}")]
    Unavailable(String),
    /// The provider refused this audio (4xx) or answered nonsense.
    #[error("transcription refused: {0}")]
    Refused(String),
}

#[derive(Clone, Debug)]
pub struct TranscriberConfig {
    pub provider: String,
    /// Base URL ending in `/v1`.
    pub base_url: String,
    pub model: String,
    pub timeout: Duration,
}

pub struct Transcriber {
    config: TranscriberConfig,
    client: reqwest::Client,
    leases: Arc<LeaseManager>,
    key_ref: ProviderKeyRef,
}

impl Transcriber {
    pub fn new(
        config: TranscriberConfig,
        leases: Arc<LeaseManager>,
    ) -> Result<Transcriber, TranscriptionError> {
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| TranscriptionError::Unavailable(format!("http client: {e}")))?;
        Ok(Transcriber {
            key_ref: ProviderKeyRef::operator(&config.provider),
            config,
            client,
            leases,
        })
    }

    /// The transcript of one audio file.
    pub async fn transcribe(
        &self,
        audio: &[u8],
        file_name: &str,
    ) -> Result<String, TranscriptionError> {
        let url = format!(
            "{}/audio/transcriptions",
            self.config.base_url.trim_end_matches('/')
        );
        let result = self
            .leases
            .call_with_lease(&self.key_ref, |lease| {
                let form = reqwest::multipart::Form::new()
                    .text("model", self.config.model.clone())
                    .text("response_format", "json")
                    .part(
                        "file",
                        reqwest::multipart::Part::bytes(audio.to_vec())
                            .file_name(file_name.to_owned()),
                    );
                let request =
                    lease.with_key(|key| self.client.post(&url).bearer_auth(key).multipart(form));
                async move {
                    let response = request.send().await.map_err(|e| {
                        ProviderCallError::Other(TranscriptionError::Unavailable(format!(
                            "request failed: {}",
                            e.without_url()
                        )))
                    })?;
                    let status = response.status();
                    if status.as_u16() == 401 || status.as_u16() == 403 {
                        return Err(ProviderCallError::Unauthorized(
                            TranscriptionError::Unavailable(format!(
                                "provider refused the key ({status})"
                            )),
                        ));
                    }
                    if status.as_u16() == 429 || status.is_server_error() {
                        return Err(ProviderCallError::Other(TranscriptionError::Unavailable(
                            format!("provider answered {status}"),
                        )));
                    }
                    if !status.is_success() {
                        return Err(ProviderCallError::Other(TranscriptionError::Refused(
                            format!("provider answered {status}"),
                        )));
                    }
                    let body: serde_json::Value = response.json().await.map_err(|e| {
                        ProviderCallError::Other(TranscriptionError::Refused(format!(
                            "unreadable response: {}",
                            e.without_url()
                        )))
                    })?;
                    body["text"].as_str().map(str::to_owned).ok_or_else(|| {
                        ProviderCallError::Other(TranscriptionError::Refused(
                            "response has no `text`".into(),
                        ))
                    })
                }
            })
            .await;
        match result {
            Ok(text) => Ok(text),
            Err(LeasedCallError::Provider(e)) => Err(e),
            Err(LeasedCallError::Credentials(e)) => Err(TranscriptionError::Unavailable(format!(
                "no usable key for provider {}: {e}",
                self.config.provider
            ))),
        }
    }
}

/// Audio containers recognised by their first bytes: WAV (`RIFF....WAVE`), MP3 (an ID3 tag or an MPEG frame
/// sync) and M4A/MP4 audio (`....ftyp`).
pub fn is_audio(head: &[u8]) -> bool {
    let wav = head.len() >= 12 && &head[..4] == b"RIFF" && &head[8..12] == b"WAVE";
    let mp3 = head.starts_with(b"ID3")
        || (head.len() >= 2 && head[0] == 0xff && (head[1] & 0xe0) == 0xe0);
    let m4a = head.len() >= 12
        && &head[4..8] == b"ftyp"
        && matches!(&head[8..12], b"M4A " | b"M4B " | b"mp42" | b"isom");
    wav || mp3 || m4a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audio_containers_are_recognised() {
        assert!(is_audio(b"RIFF\x24\x00\x00\x00WAVEfmt "));
        assert!(is_audio(b"ID3\x04\x00"));
        assert!(is_audio(&[0xff, 0xfb, 0x90, 0x00]));
        assert!(is_audio(b"\x00\x00\x00\x20ftypM4A \x00\x00"));
        assert!(!is_audio(b"RIFF\x24\x00\x00\x00AVI "));
        assert!(!is_audio(b"plain text"));
    }
}
