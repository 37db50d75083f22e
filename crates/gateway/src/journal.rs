//! The metering journal: usage and audit events appended to a local file before the request that made them
//! returns, so a response need not wait for Postgres, yet nothing is lost when Postgres is down or the process
//! is killed. The writer commits entries to Postgres in order and records, in the same transaction, the
//! highest sequence number of this journal it has committed; after a crash the next start replays exactly the
//! entries past that mark, so none is lost and none is written twice.
//!
//! A journal is a folder of segments (`<uuid>.jsonl`, one JSON entry per line). The live segment is replaced
//! by a new one once it is large and fully committed, and a segment is deleted once all of it is in Postgres.
//! Entries hold ids, names and counts only (never a key or document text), as the audit log does.

use crate::GatewayError;
use ragvault_core::TenantId;
use ragvault_store::{AuditEntry, NewUsageEvent};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use time::OffsetDateTime;
use tokio::sync::mpsc;

/// A live segment past this size is replaced once everything in it is committed.
const SEGMENT_BYTES: u64 = 4 * 1024 * 1024;

/// One journal entry: what one request asked to record.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub seq: i64,
    pub usage: Vec<UsageRecord>,
    pub audits: Vec<AuditRecord>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct UsageRecord {
    at_unix_micros: i64,
    tenant_id: TenantId,
    principal: String,
    request_id: Option<String>,
    kind: String,
    provider: String,
    model: String,
    key_version: Option<u64>,
    input_tokens: u64,
    output_tokens: u64,
    cost_micro_usd: u64,
    latency_ms: u64,
    bytes_sent: u64,
    bytes_received: u64,
    outcome: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct AuditRecord {
    tenant_id: Option<TenantId>,
    actor: String,
    action: String,
    target: Option<String>,
    request_id: Option<String>,
    details: serde_json::Value,
}

impl From<&NewUsageEvent> for UsageRecord {
    fn from(e: &NewUsageEvent) -> Self {
        UsageRecord {
            at_unix_micros: i64::try_from(e.at.unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX),
            tenant_id: e.tenant_id,
            principal: e.principal.clone(),
            request_id: e.request_id.clone(),
            kind: e.kind.to_owned(),
            provider: e.provider.clone(),
            model: e.model.clone(),
            key_version: e.key_version,
            input_tokens: e.input_tokens,
            output_tokens: e.output_tokens,
            cost_micro_usd: e.cost_micro_usd,
            latency_ms: e.latency_ms,
            bytes_sent: e.bytes_sent,
            bytes_received: e.bytes_received,
            outcome: e.outcome.to_owned(),
        }
    }
}

impl UsageRecord {
    pub fn event(&self) -> NewUsageEvent {
        NewUsageEvent {
            at: OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.at_unix_micros) * 1000)
                .unwrap_or(OffsetDateTime::UNIX_EPOCH),
            tenant_id: self.tenant_id,
            principal: self.principal.clone(),
            request_id: self.request_id.clone(),
            kind: intern(&self.kind),
            provider: self.provider.clone(),
            model: self.model.clone(),
            key_version: self.key_version,
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            cost_micro_usd: self.cost_micro_usd,
            latency_ms: self.latency_ms,
            bytes_sent: self.bytes_sent,
            bytes_received: self.bytes_received,
            outcome: intern(&self.outcome),
        }
    }
}

impl From<&AuditEntry> for AuditRecord {
    fn from(e: &AuditEntry) -> Self {
        AuditRecord {
            tenant_id: e.tenant_id,
            actor: e.actor.clone(),
            action: e.action.to_owned(),
            target: e.target.clone(),
            request_id: e.request_id.clone(),
            details: e.details.clone(),
        }
    }
}

impl AuditRecord {
    pub fn entry(&self) -> AuditEntry {
        AuditEntry {
            tenant_id: self.tenant_id,
            actor: self.actor.clone(),
            action: intern(&self.action),
            target: self.target.clone(),
            request_id: self.request_id.clone(),
            details: self.details.clone(),
        }
    }
}

/// Event kinds, outcomes and audit actions are a small fixed vocabulary held as `&'static str`; one read back
/// from a journal is interned, so replaying any number of entries allocates each word once.
fn intern(word: &str) -> &'static str {
    static WORDS: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut words = WORDS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(known) = words.get(word) {
        return known;
    }
    let leaked: &'static str = Box::leak(word.to_owned().into_boxed_str());
    words.insert(leaked);
    leaked
}

/// An entry on its way from the journal to the writer: its segment, and its place among every entry this
/// process journaled (for `Metering::flush`).
pub(crate) struct Queued {
    pub segment: String,
    pub ticket: u64,
    pub entry: Entry,
}

/// The segment requests append to now.
struct LiveSegment {
    name: String,
    file: File,
    bytes: u64,
    next_seq: i64,
}

/// A segment left by an earlier life of the process (or replaced in this one), with its entries.
pub(crate) struct ClosedSegment {
    pub name: String,
    pub path: PathBuf,
    pub entries: Vec<Entry>,
    /// Locked: no other process replays it at the same time.
    _lock: File,
}

pub(crate) struct Journal {
    dir: PathBuf,
    live: Mutex<LiveSegment>,
    /// Entries appended in this life (the sync task's cue).
    appended: AtomicU64,
}

fn segment_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.jsonl"))
}

fn open_segment(dir: &Path) -> Result<LiveSegment, GatewayError> {
    let name = uuid::Uuid::new_v4().simple().to_string();
    let file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(segment_path(dir, &name))
        .map_err(|e| io_error("create a journal segment", &e))?;
    // Held while the segment is live: a process starting on the same folder leaves it alone.
    file.try_lock()
        .map_err(|e| GatewayError::MeteringUnavailable(format!("lock a journal segment: {e}")))?;
    Ok(LiveSegment {
        name,
        file,
        bytes: 0,
        next_seq: 1,
    })
}

fn io_error(what: &str, e: &std::io::Error) -> GatewayError {
    GatewayError::MeteringUnavailable(format!("could not {what}: {e}"))
}

impl Journal {
    /// Opens the journal folder: the segments already there are returned for replay, and a new live segment
    /// is started.
    pub fn open(dir: &Path) -> Result<(Journal, Vec<ClosedSegment>), GatewayError> {
        std::fs::create_dir_all(dir).map_err(|e| io_error("create the journal folder", &e))?;
        let mut earlier = Vec::new();
        let listing =
            std::fs::read_dir(dir).map_err(|e| io_error("list the journal folder", &e))?;
        for item in listing.flatten() {
            let path = item.path();
            let Some(name) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".jsonl"))
                .map(str::to_owned)
            else {
                continue;
            };
            let file = File::open(&path).map_err(|e| io_error("open a journal segment", &e))?;
            if file.try_lock().is_err() {
                // Another running process (or an earlier service in this one) still owns it.
                continue;
            }
            earlier.push(ClosedSegment {
                entries: read_entries(&file, &path)?,
                name,
                path,
                _lock: file,
            });
        }
        let live = open_segment(dir)?;
        Ok((
            Journal {
                dir: dir.to_owned(),
                live: Mutex::new(live),
                appended: AtomicU64::new(0),
            },
            earlier,
        ))
    }

    /// Appends one entry to the live segment (a `write` to the page cache, which survives the process being
    /// killed; a background task syncs it to disk) and queues it for the writer. Both happen under one lock,
    /// so the writer receives each segment's entries in sequence order, which its commit marks rely on; and
    /// the queue slot is reserved before the write, so an entry is never in the file without being queued.
    pub fn append(
        &self,
        usage: &[NewUsageEvent],
        audits: &[AuditEntry],
        queue: &mpsc::Sender<Queued>,
        tickets: &AtomicU64,
    ) -> Result<u64, GatewayError> {
        let mut live = self
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let slot = queue.try_reserve().map_err(|_| {
            GatewayError::MeteringUnavailable(
                "usage not yet committed has reached its limit (is Postgres down?)".to_owned(),
            )
        })?;
        let entry = Entry {
            seq: live.next_seq,
            usage: usage.iter().map(UsageRecord::from).collect(),
            audits: audits.iter().map(AuditRecord::from).collect(),
        };
        let mut line = serde_json::to_vec(&entry)
            .map_err(|e| GatewayError::MeteringUnavailable(format!("journal entry: {e}")))?;
        line.push(b'\n');
        live.file
            .write_all(&line)
            .map_err(|e| io_error("append to the journal", &e))?;
        live.next_seq += 1;
        live.bytes += line.len() as u64;
        self.appended.fetch_add(1, Ordering::Relaxed);
        let ticket = tickets.fetch_add(1, Ordering::SeqCst) + 1;
        slot.send(Queued {
            segment: live.name.clone(),
            ticket,
            entry,
        });
        Ok(ticket)
    }

    /// Entries appended in this life.
    pub fn appended(&self) -> u64 {
        self.appended.load(Ordering::Relaxed)
    }

    /// The live segment's name and the sequence number its next entry gets.
    #[cfg(test)]
    pub fn position(&self) -> (String, i64) {
        let live = self
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (live.name.clone(), live.next_seq)
    }

    /// Replaces the live segment with a new one when it is large and everything in it up to `committed` is in
    /// Postgres; returns the replaced segment's file to delete.
    pub fn rotate_if_done(&self, committed: i64) -> Option<PathBuf> {
        let mut live = self
            .live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if live.bytes < SEGMENT_BYTES || committed + 1 < live.next_seq {
            return None;
        }
        let fresh = open_segment(&self.dir).ok()?;
        let old = std::mem::replace(&mut *live, fresh);
        Some(segment_path(&self.dir, &old.name))
    }

    /// Flushes the live segment to disk (so a host crash, not only a process crash, keeps it).
    pub fn sync(&self) {
        let file = {
            let live = self
                .live
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            live.file.try_clone()
        };
        if let Ok(file) = file {
            if let Err(e) = file.sync_data() {
                tracing::warn!(error = %e, "could not sync the metering journal");
            }
        }
    }
}

/// Every whole entry of a segment. A last line cut off by a crash mid-write is skipped: its request never got
/// its response, as the write had not finished.
fn read_entries(file: &File, path: &Path) -> Result<Vec<Entry>, GatewayError> {
    let mut entries = Vec::new();
    for line in BufReader::new(file).lines() {
        let line = line.map_err(|e| io_error("read a journal segment", &e))?;
        match serde_json::from_str::<Entry>(&line) {
            Ok(entry) => entries.push(entry),
            Err(e) => {
                tracing::warn!(segment = %path.display(), error = %e, "skipping a torn journal line");
            }
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(tenant: TenantId, cost: u64) -> NewUsageEvent {
        NewUsageEvent {
            at: OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap(),
            tenant_id: tenant,
            principal: "api_key:abc".into(),
            request_id: Some("req-1".into()),
            kind: "generation",
            provider: "openai".into(),
            model: "gpt-4o-mini".into(),
            key_version: Some(3),
            input_tokens: 10,
            output_tokens: 20,
            cost_micro_usd: cost,
            latency_ms: 7,
            bytes_sent: 100,
            bytes_received: 200,
            outcome: "ok",
        }
    }

    #[test]
    fn entries_survive_a_restart_and_a_torn_last_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let tenant = TenantId(uuid::Uuid::new_v4());
        let (journal, earlier) = Journal::open(dir.path()).unwrap();
        assert!(earlier.is_empty());
        let (queue, mut received) = mpsc::channel(8);
        let tickets = AtomicU64::new(0);
        let mut audit = AuditEntry::new("api_key:abc", "retrieval");
        audit.tenant_id = Some(tenant);
        journal
            .append(&[usage(tenant, 50)], &[audit], &queue, &tickets)
            .unwrap();
        journal
            .append(&[usage(tenant, 70)], &[], &queue, &tickets)
            .unwrap();
        let (first, second) = (received.try_recv().unwrap(), received.try_recv().unwrap());
        assert_eq!((first.entry.seq, second.entry.seq), (1, 2));
        assert_eq!((first.ticket, second.ticket), (1, 2));
        let name = first.segment;
        // A crash in the middle of a third write.
        let path = segment_path(dir.path(), &name);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"{\"seq\":3,\"usage\":[{\"at_unix").unwrap();
        drop(journal);

        let (_, earlier) = Journal::open(dir.path()).unwrap();
        let replayed = earlier.iter().find(|s| s.name == name).unwrap();
        assert_eq!(replayed.entries.len(), 2);
        let event = replayed.entries[0].usage[0].event();
        assert_eq!(event.at, usage(tenant, 50).at);
        assert_eq!(
            (event.kind, event.outcome, event.cost_micro_usd),
            ("generation", "ok", 50)
        );
        assert_eq!(replayed.entries[0].audits[0].entry().action, "retrieval");
        assert_eq!(replayed.entries[1].usage[0].cost_micro_usd, 70);
    }

    #[test]
    fn a_segment_another_journal_still_owns_is_not_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let (first, _) = Journal::open(dir.path()).unwrap();
        let (queue, _received) = mpsc::channel(8);
        let audit = AuditEntry::new("system", "retrieval");
        first
            .append(&[], &[audit], &queue, &AtomicU64::new(0))
            .unwrap();
        let (_second, earlier) = Journal::open(dir.path()).unwrap();
        assert!(
            earlier.is_empty(),
            "the first journal's live segment is locked"
        );
        drop(first);
        let (_third, earlier) = Journal::open(dir.path()).unwrap();
        assert_eq!(earlier.len(), 1, "once its owner is gone it is replayed");
    }

    #[test]
    fn a_live_segment_is_replaced_only_when_large_and_fully_committed() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = Journal::open(dir.path()).unwrap();
        let tenant = TenantId(uuid::Uuid::new_v4());
        let (queue, _received) = mpsc::channel(8);
        journal
            .append(&[usage(tenant, 1)], &[], &queue, &AtomicU64::new(0))
            .unwrap();
        assert!(journal.rotate_if_done(1).is_none(), "small segments stay");
        journal.live.lock().unwrap().bytes = SEGMENT_BYTES;
        assert!(
            journal.rotate_if_done(0).is_none(),
            "uncommitted entries keep it"
        );
        let old = journal.rotate_if_done(1).expect("replaced");
        assert!(old.exists());
        assert_eq!(journal.position().1, 1, "the new segment starts at 1");
    }
}

#[cfg(test)]
mod full_queue {
    use super::*;

    #[test]
    fn a_full_queue_refuses_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = Journal::open(dir.path()).unwrap();
        let (queue, _received) = mpsc::channel(1);
        let tickets = AtomicU64::new(0);
        let audit = AuditEntry::new("system", "retrieval");
        journal
            .append(&[], std::slice::from_ref(&audit), &queue, &tickets)
            .unwrap();
        assert!(journal.append(&[], &[audit], &queue, &tickets).is_err());
        assert_eq!(
            journal.position().1,
            2,
            "the refused entry took no sequence number"
        );
        assert_eq!(journal.appended(), 1);
    }
}
