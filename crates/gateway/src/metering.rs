//! Usage and per-request audit events: journaled locally before the response, then written to Postgres in
//! batches by one task (group commit).
//!
//! A request appends its events to the metering journal (`journal`: a local file, which survives the
//! process being killed) and returns without waiting for Postgres; the writer commits them in order and
//! retries, however long Postgres is away, so an answer's usage row and audit event are never lost and never
//! written twice. Reads that must see them (`/v1/admin/usage`, the audit log) call [`Metering::flush`] first.
//! The in-memory queue is bounded: when it is full, new requests are refused before a provider is called.

use crate::budget::BudgetGuard;
use crate::journal::{ClosedSegment, Entry, Journal, Queued};
use crate::GatewayError;
use ragvault_store::{AuditEntry, NewUsageEvent, Store};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, watch, Notify};

/// Entries gathered into one transaction at most.
const MAX_BATCH: usize = 512;
/// Entries journaled but not yet committed, at most: past this (Postgres away for long), requests are
/// refused before their provider call rather than piling up in memory.
const QUEUE: usize = 32_768;
/// Waits between attempts to commit while Postgres is away: doubling from the first to the last.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_LAST: Duration = Duration::from_secs(5);
/// When the writer looks for entries (it is never woken by an append: see `Writer::run`).
#[derive(Clone, Copy, Debug)]
pub struct WriterPace {
    /// How often it looks while entries arrive: a batch gathers what was appended since the last look.
    pub linger: Duration,
    /// The longest wait between looks while nothing arrives (each empty look doubles the wait from
    /// `linger`); a flush wakes it at once.
    pub idle_look: Duration,
}

impl Default for WriterPace {
    fn default() -> Self {
        WriterPace {
            linger: Duration::from_millis(10),
            idle_look: Duration::from_millis(200),
        }
    }
}
/// The journal is synced to disk this often while entries arrive.
const SYNC_EVERY: Duration = Duration::from_millis(200);

/// The handle requests use; cheap to clone.
#[derive(Clone)]
pub struct Metering {
    queue: mpsc::Sender<Queued>,
    journal: Arc<Journal>,
    /// Tickets handed out to entries (in journal order) and the highest one committed.
    issued: Arc<AtomicU64>,
    committed: watch::Receiver<u64>,
    /// Wakes the writer for a flush (appends never wake it: see `Writer::run`).
    nudge: Arc<Notify>,
    metrics: Arc<UsageMetrics>,
}

/// Committed usage as Prometheus series: calls, tokens and micro-USD per tenant, provider, model, kind
/// and outcome, and provider latency per provider and kind. Counted after the commit, so the metrics
/// never show spend the usage table does not hold.
#[derive(Debug)]
pub struct UsageMetrics {
    /// `[calls, input tokens, output tokens, micro-USD]`.
    totals: ragvault_metrics::CounterVec<4>,
    latency: ragvault_metrics::HistogramVec,
}

impl Default for UsageMetrics {
    fn default() -> Self {
        UsageMetrics {
            totals: ragvault_metrics::CounterVec::new(&[
                "tenant", "provider", "model", "kind", "outcome",
            ]),
            latency: ragvault_metrics::HistogramVec::new(
                &["provider", "kind"],
                &ragvault_metrics::LATENCY_BUCKETS,
            ),
        }
    }
}

impl UsageMetrics {
    fn count(&self, event: &NewUsageEvent) {
        let tenant = event.tenant_id.to_string();
        self.totals.add(
            &[
                &tenant,
                &event.provider,
                &event.model,
                event.kind,
                event.outcome,
            ],
            [
                1,
                event.input_tokens,
                event.output_tokens,
                event.cost_micro_usd,
            ],
        );
        self.latency.observe(
            &[&event.provider, event.kind],
            Duration::from_millis(event.latency_ms),
        );
    }

    pub fn render(&self, out: &mut String) {
        let help = [
            (
                "ragvault_provider_calls_total",
                "Provider calls (generation and embedding), committed to the usage table.",
            ),
            (
                "ragvault_provider_input_tokens_total",
                "Input tokens of provider calls, as the provider reported them.",
            ),
            (
                "ragvault_provider_output_tokens_total",
                "Output tokens of provider calls.",
            ),
            (
                "ragvault_provider_cost_micro_usd_total",
                "Cost of provider calls in micro-USD, from the price table.",
            ),
        ];
        for (index, (name, text)) in help.iter().enumerate() {
            self.totals.render(out, index, name, text);
        }
        self.latency.render(
            out,
            "ragvault_provider_call_duration_seconds",
            "Provider call latency (whole answer, or one embedding request).",
        );
    }
}

impl Metering {
    /// Opens the journal in `journal_dir` and starts the writer, which first replays what an earlier life of
    /// the process journaled but did not commit. `budgets` hears each tenant's month spend after every batch
    /// (soft thresholds).
    pub fn start(
        store: Store,
        budgets: Arc<BudgetGuard>,
        journal_dir: &Path,
    ) -> Result<Metering, GatewayError> {
        Metering::start_paced(store, budgets, journal_dir, WriterPace::default())
    }

    /// [`Metering::start`] with the writer looking for entries at `pace`.
    pub fn start_paced(
        store: Store,
        budgets: Arc<BudgetGuard>,
        journal_dir: &Path,
        pace: WriterPace,
    ) -> Result<Metering, GatewayError> {
        let (journal, earlier) = Journal::open(journal_dir)?;
        let journal = Arc::new(journal);
        let (queue, receiver) = mpsc::channel(QUEUE);
        let (committed_tx, committed) = watch::channel(0);
        let metrics = Arc::new(UsageMetrics::default());
        let nudge = Arc::new(Notify::new());
        let writer = Writer {
            store,
            budgets,
            metrics: metrics.clone(),
            journal: journal.clone(),
            committed: committed_tx,
            nudge: nudge.clone(),
            pace,
        };
        tokio::spawn(writer.run(earlier, receiver));
        tokio::spawn(sync_journal(Arc::downgrade(&journal)));
        Ok(Metering {
            queue,
            journal,
            issued: Arc::new(AtomicU64::new(0)),
            committed,
            nudge,
            metrics,
        })
    }

    pub fn metrics(&self) -> &UsageMetrics {
        &self.metrics
    }

    /// False when the queue of uncommitted entries is full (Postgres away for long): callers refuse work that
    /// would need metering before doing it.
    pub fn has_room(&self) -> bool {
        self.queue.capacity() > 0
    }

    /// Journals usage and audit events; they reach Postgres shortly after (see [`Metering::flush`]).
    pub fn record(
        &self,
        usage: Vec<NewUsageEvent>,
        audits: Vec<AuditEntry>,
    ) -> Result<(), GatewayError> {
        if usage.is_empty() && audits.is_empty() {
            return Ok(());
        }
        self.journal
            .append(&usage, &audits, &self.queue, &self.issued)
            .map(|_| ())
    }

    /// Waits (at most `patience`) until everything journaled before the call is committed; false on timeout.
    pub async fn flush(&self, patience: Duration) -> bool {
        let wanted = self.issued.load(Ordering::SeqCst);
        if *self.committed.borrow() >= wanted {
            return true;
        }
        self.nudge.notify_one();
        let mut committed = self.committed.clone();
        tokio::time::timeout(patience, committed.wait_for(|done| *done >= wanted))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

struct Writer {
    store: Store,
    budgets: Arc<BudgetGuard>,
    metrics: Arc<UsageMetrics>,
    journal: Arc<Journal>,
    committed: watch::Sender<u64>,
    nudge: Arc<Notify>,
    pace: WriterPace,
}

impl Writer {
    async fn run(self, earlier: Vec<ClosedSegment>, mut receiver: mpsc::Receiver<Queued>) {
        for segment in earlier {
            self.replay(segment).await;
        }
        let mut carried: Option<Queued> = None;
        let mut idle_wait = self.pace.linger;
        let mut just_committed = false;
        loop {
            // The writer looks for entries on a clock instead of awaiting the queue: an append that woke it
            // would wake a parked worker thread from inside the request, before its response is written, and
            // on a small machine the woken thread can take the request's CPU for a scheduler slice. Looks come
            // every `linger` while entries arrive and back off to `idle_look` while none do; a flush wakes
            // the writer at once.
            let first = match carried.take() {
                Some(first) => first,
                None => match receiver.try_recv() {
                    Ok(first) => first,
                    Err(TryRecvError::Disconnected) => return,
                    Err(TryRecvError::Empty) => {
                        self.wait_or_flush(idle_wait).await;
                        idle_wait = (idle_wait * 2).min(self.pace.idle_look);
                        just_committed = false;
                        continue;
                    }
                },
            };
            idle_wait = self.pace.linger;
            // Entries found right after a commit have had no time to gather: without the linger every answer
            // at a middling rate would cost a Postgres transaction of its own (several round trips, each
            // waking a worker beside the requests being served). When a full batch is waiting, no linger.
            if just_committed && receiver.len() + 1 < MAX_BATCH {
                self.wait_or_flush(self.pace.linger).await;
            }
            let segment = first.segment.clone();
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match receiver.try_recv() {
                    Ok(next) if next.segment == segment => batch.push(next),
                    Ok(next) => {
                        carried = Some(next);
                        break;
                    }
                    Err(_) => break,
                }
            }
            let last_ticket = batch.last().map_or(0, |q| q.ticket);
            let entries: Vec<Entry> = batch.into_iter().map(|q| q.entry).collect();
            self.commit(&segment, &entries).await;
            self.committed.send_replace(last_ticket);
            just_committed = true;
            let last_seq = entries.last().map_or(0, |e| e.seq);
            if let Some(old) = self.journal.rotate_if_done(last_seq) {
                self.remove_segment(&segment, &old).await;
            }
        }
    }

    /// Sleeps for `wait`, or less when a flush asks for the queue to be committed.
    async fn wait_or_flush(&self, wait: Duration) {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = self.nudge.notified() => {}
        }
    }

    /// Commits what an earlier life journaled past its segment's mark, then deletes the segment.
    async fn replay(&self, segment: ClosedSegment) {
        let mark = self
            .retry("read a journal mark", || {
                self.store.journal_mark(&segment.name)
            })
            .await;
        let pending: Vec<Entry> = segment
            .entries
            .into_iter()
            .filter(|e| e.seq > mark)
            .collect();
        if !pending.is_empty() {
            tracing::info!(
                segment = %segment.name,
                entries = pending.len(),
                "replaying metering journal entries not yet in Postgres"
            );
        }
        for chunk in pending.chunks(MAX_BATCH) {
            self.commit(&segment.name, chunk).await;
        }
        self.remove_segment(&segment.name, &segment.path).await;
    }

    async fn remove_segment(&self, name: &str, path: &Path) {
        if let Err(e) = std::fs::remove_file(path) {
            tracing::warn!(segment = %name, error = %e, "could not delete a committed journal segment");
            return;
        }
        self.retry("forget a journal segment", || {
            self.store.forget_journal_segment(name)
        })
        .await;
    }

    /// Commits entries of one segment with their mark, retrying until Postgres takes them.
    async fn commit(&self, segment: &str, entries: &[Entry]) {
        let Some(last) = entries.last() else { return };
        let usage: Vec<NewUsageEvent> = entries
            .iter()
            .flat_map(|e| e.usage.iter().map(|u| u.event()))
            .collect();
        let audits: Vec<AuditEntry> = entries
            .iter()
            .flat_map(|e| e.audits.iter().map(|a| a.entry()))
            .collect();
        let spent = self
            .retry("write a usage batch", || {
                self.store
                    .record_journal_batch(&usage, &audits, Some((segment, last.seq)))
            })
            .await;
        usage.iter().for_each(|event| self.metrics.count(event));
        for (tenant, month, spent) in spent {
            if let Err(e) = self.budgets.observe_spend(tenant, month, spent).await {
                tracing::warn!(error = %e, "could not check the soft budget threshold");
            }
        }
    }

    /// Runs a store call until it succeeds, waiting longer between attempts (Postgres restarting).
    async fn retry<T, F, Fut>(&self, what: &str, mut call: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ragvault_store::StoreError>>,
    {
        let mut wait = RETRY_FIRST;
        loop {
            match call().await {
                Ok(value) => return value,
                Err(e) => {
                    tracing::warn!(error = %e, "metering could not {what}; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(RETRY_LAST);
                }
            }
        }
    }
}

/// Syncs the journal to disk while entries arrive; ends when the service drops its journal.
async fn sync_journal(journal: std::sync::Weak<Journal>) {
    let mut synced = 0;
    loop {
        tokio::time::sleep(SYNC_EVERY).await;
        let Some(journal) = journal.upgrade() else {
            return;
        };
        let appended = journal.appended();
        if appended != synced {
            synced = appended;
            let _ = tokio::task::spawn_blocking(move || journal.sync()).await;
        }
    }
}
