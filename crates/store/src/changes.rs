//! Caches of who may call, kept honest across processes.
//!
//! Authenticating a request from Postgres costs a round trip on every call; authenticating from memory is
//! only safe if a revocation made anywhere (another replica, the CLI, an operator's SQL) reaches every
//! replica's memory at once. Triggers (migration 17) announce each such change on [`CHANNEL`] at commit;
//! [`AccessChanges`] listens on a connection of its own and moves its generation on every announcement.
//! A [`GuardedCache`] entry is good only for the generation it was read under, so one announcement voids
//! every cached answer, and an answer read while a change was committing is never kept.
//!
//! While the listener is not connected nothing is cached and every lookup goes to Postgres: a change made
//! while it was away would otherwise go unseen. Reconnecting moves the generation too.

use sqlx::postgres::{PgListener, PgPoolOptions};
use sqlx::PgPool;
use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

/// The channel the access-change triggers notify on.
pub const CHANNEL: &str = "ragvault_access_changes";

/// How long to wait before listening again after the connection was lost or refused.
const RECONNECT_EVERY: Duration = Duration::from_millis(500);

/// The generation of what replicas may cache about access, moved by every announced change.
#[derive(Debug)]
pub struct AccessChanges {
    generation: AtomicU64,
    listening: AtomicBool,
    /// Dropped with the feed: the listener task sees it and ends.
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl AccessChanges {
    /// Listens on a connection of its own (the pool's current login) until the returned feed is dropped.
    pub(crate) fn start(pool: PgPool) -> Arc<AccessChanges> {
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let feed = Arc::new(AccessChanges {
            generation: AtomicU64::new(0),
            listening: AtomicBool::new(false),
            _stop: stop,
        });
        tokio::spawn(listen_until_dropped(Arc::downgrade(&feed), pool, stopped));
        feed
    }

    /// A feed that never listens: caches guarded by it keep nothing (tools that run once, and tests).
    pub fn never() -> Arc<AccessChanges> {
        let (stop, _) = tokio::sync::oneshot::channel();
        Arc::new(AccessChanges {
            generation: AtomicU64::new(0),
            listening: AtomicBool::new(false),
            _stop: stop,
        })
    }

    /// The generation a value read from Postgres now belongs to; `None` while not listening, when nothing
    /// read may be kept.
    pub fn current(&self) -> Option<u64> {
        // Generation first: a reconnect sets `listening` after moving the generation, so a value read
        // under the old generation is never taken for the new one.
        let generation = self.generation.load(Ordering::Acquire);
        self.listening.load(Ordering::Acquire).then_some(generation)
    }

    /// Whether announcements are being received.
    pub fn is_listening(&self) -> bool {
        self.listening.load(Ordering::Acquire)
    }

    /// A change this process made itself: voids its caches now, without waiting for the notification.
    pub fn announce(&self) {
        self.changed();
    }

    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    fn set_listening(&self, listening: bool) {
        // Either way the generation moves: nothing cached before a gap is trusted after it.
        self.changed();
        self.listening.store(listening, Ordering::Release);
    }
}

async fn listen_until_dropped(
    feed: Weak<AccessChanges>,
    pool: PgPool,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            () = listen_once(&feed, &pool) => {}
        }
        let Some(alive) = feed.upgrade() else {
            return;
        };
        alive.set_listening(false);
        drop(alive);
        tokio::select! {
            _ = &mut stopped => return,
            () = tokio::time::sleep(RECONNECT_EVERY) => {}
        }
    }
}

/// Listens until the connection is lost (or cannot be made).
async fn listen_once(feed: &Weak<AccessChanges>, pool: &PgPool) {
    // A pool of one, made from the main pool's current options (with leased database logins, the login in
    // use now): the listener never takes a connection from requests.
    let own = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(2))
        .connect_lazy_with((*pool.connect_options()).clone());
    let mut listener = match PgListener::connect_with(&own).await {
        Ok(listener) => listener,
        Err(e) => {
            tracing::debug!(error = %e, "cannot listen for access changes yet");
            return;
        }
    };
    // Reconnecting by itself would hide the gap; a lost connection is handled here instead.
    listener.eager_reconnect(false);
    if let Err(e) = listener.listen(CHANNEL).await {
        tracing::warn!(error = %e, "cannot listen for access changes");
        return;
    }
    match feed.upgrade() {
        Some(alive) => alive.set_listening(true),
        None => return,
    }
    tracing::debug!("listening for access changes");
    loop {
        match listener.try_recv().await {
            Ok(Some(_)) => match feed.upgrade() {
                Some(alive) => alive.changed(),
                None => return,
            },
            Ok(None) => {
                tracing::warn!("lost the access-change listener: authenticating from Postgres until it is back");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "access-change listener failed: authenticating from Postgres until it is back");
                return;
            }
        }
    }
}

/// A map whose entries hold only while no access change was announced since they were read, and at most
/// `ttl` (a bound on what an entry can cost if an announcement were ever missed).
pub struct GuardedCache<K, V> {
    changes: Arc<AccessChanges>,
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<K, (u64, Instant, V)>>,
}

/// The generation a lookup started under: taken before reading Postgres, given back with what was read.
#[derive(Clone, Copy, Debug)]
pub struct CacheTicket(Option<u64>);

impl<K: Eq + Hash, V: Clone> GuardedCache<K, V> {
    pub fn new(changes: Arc<AccessChanges>, ttl: Duration, capacity: usize) -> GuardedCache<K, V> {
        GuardedCache {
            changes,
            ttl,
            capacity,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The cached value, if still good.
    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        let generation = self.changes.current()?;
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let (at_generation, at, value) = entries.get(key)?;
        (*at_generation == generation && at.elapsed() < self.ttl).then(|| value.clone())
    }

    /// Take before reading what will be [`put`](Self::put).
    pub fn ticket(&self) -> CacheTicket {
        CacheTicket(self.changes.current())
    }

    /// Keeps `value` if no change was announced since `ticket` was taken.
    pub fn put(&self, ticket: CacheTicket, key: K, value: V) {
        let Some(generation) = ticket.0 else {
            return;
        };
        if self.changes.current() != Some(generation) {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= self.capacity {
            // Stale entries first; if all are fresh, start over (a full cache is rare and refills in one
            // round trip per key).
            entries.retain(|_, (g, at, _)| *g == generation && at.elapsed() < self.ttl);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(key, (generation, Instant::now(), value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listening() -> Arc<AccessChanges> {
        let feed = AccessChanges::never();
        feed.set_listening(true);
        feed
    }

    #[tokio::test]
    async fn nothing_is_kept_while_not_listening() {
        let cache = GuardedCache::new(AccessChanges::never(), Duration::from_secs(60), 8);
        cache.put(cache.ticket(), "k", 1);
        assert_eq!(cache.get(&"k"), None);
    }

    #[tokio::test]
    async fn an_announced_change_voids_every_entry() {
        let feed = listening();
        let cache = GuardedCache::new(feed.clone(), Duration::from_secs(60), 8);
        cache.put(cache.ticket(), "a", 1);
        cache.put(cache.ticket(), "b", 2);
        assert_eq!(cache.get(&"a"), Some(1));
        feed.changed();
        assert_eq!(cache.get(&"a"), None);
        assert_eq!(cache.get(&"b"), None);
    }

    #[tokio::test]
    async fn a_value_read_while_a_change_committed_is_not_kept() {
        let feed = listening();
        let cache = GuardedCache::new(feed.clone(), Duration::from_secs(60), 8);
        let ticket = cache.ticket();
        feed.changed();
        cache.put(ticket, "a", 1);
        assert_eq!(cache.get(&"a"), None);
    }

    #[tokio::test]
    async fn a_gap_in_listening_voids_entries_from_before_it() {
        let feed = listening();
        let cache = GuardedCache::new(feed.clone(), Duration::from_secs(60), 8);
        cache.put(cache.ticket(), "a", 1);
        feed.set_listening(false);
        feed.set_listening(true);
        assert_eq!(cache.get(&"a"), None);
    }

    #[tokio::test]
    async fn entries_expire_and_capacity_is_bounded() {
        let feed = listening();
        let cache = GuardedCache::new(feed.clone(), Duration::from_millis(20), 2);
        cache.put(cache.ticket(), "a", 1);
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(cache.get(&"a"), None);
        for (i, key) in ["b", "c", "d"].into_iter().enumerate() {
            cache.put(cache.ticket(), key, i);
        }
        let kept = ["b", "c", "d"]
            .iter()
            .filter(|k| cache.get(*k).is_some())
            .count();
        assert!(kept <= 2, "{kept}");
        assert_eq!(cache.get(&"d"), Some(2));
    }
}
