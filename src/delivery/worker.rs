//! The dispatcher: leases due deliveries in batches, sends them with bounded concurrency
//! (overall and per hook), and records outcomes in batches.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use super::client::{AttemptResult, Client};
use super::retry::{self, Decision, Outcome, Policy};
use crate::auth::now_ms;
use crate::router::HookIndex;
use crate::store::{AttemptRecord, LeasedDelivery, Status, Store};
use crate::telemetry;

/// Dispatcher settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Attempts in flight at once, over all hooks.
    pub concurrency: usize,
    /// Attempts in flight at once for one hook.
    pub per_hook: usize,
    /// How long a lease holds; longer than any attempt can take.
    pub lease: Duration,
    /// This node's name in leases. Stable across restarts, so a restart can take back the
    /// rows it held when it stopped.
    pub owner: String,
    /// Most rows leased per query.
    pub batch: u32,
    /// Longest sleep between looks at the queue when nothing wakes the dispatcher.
    pub poll: Duration,
}

/// Rows recorded per transaction, at most.
const RECORD_BATCH: usize = 512;

pub struct Dispatcher {
    store: Arc<dyn Store>,
    index: Arc<HookIndex>,
    client: Client,
    wake: Arc<Notify>,
    settings: Settings,
    per_hook: Mutex<HashMap<String, Arc<Semaphore>>>,
    /// Deliveries being attempted now, so a lease that comes round again is not sent twice.
    in_flight: Mutex<HashSet<String>>,
}

impl Dispatcher {
    pub fn new(store: Arc<dyn Store>, index: Arc<HookIndex>, wake: Arc<Notify>, settings: Settings) -> Arc<Self> {
        Arc::new(Dispatcher {
            store,
            index,
            client: Client::new(),
            wake,
            settings,
            per_hook: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(HashSet::new()),
        })
    }

    /// Runs until `shutdown`, then lets attempts in flight finish and records them.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        match self.store.release_leases(&self.settings.owner).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deliveries = n, "taking back deliveries left in flight by the last run"),
            Err(e) => tracing::warn!(error = %e, "could not release old leases; they will expire"),
        }
        let (records, inbox) = mpsc::channel(RECORD_BATCH * 4);
        // Owned here, so that dropping this future (a crash, in tests) stops everything with it.
        let recorder = AbortOnDropHandle::new(tokio::spawn(record(self.store.clone(), inbox)));
        let mut attempts = JoinSet::new();
        let permits = Arc::new(Semaphore::new(self.settings.concurrency));
        while !shutdown.is_cancelled() {
            while attempts.try_join_next().is_some() {}
            let free = permits.available_permits();
            if free == 0 {
                tokio::select! {
                    p = permits.clone().acquire_owned() => drop(p),
                    () = shutdown.cancelled() => break,
                }
                continue;
            }
            let now = now_ms();
            let lease_until = now + self.settings.lease.as_millis() as i64;
            let limit = (free as u32).min(self.settings.batch);
            match self.store.lease(&self.settings.owner, now, lease_until, limit).await {
                Ok(rows) if !rows.is_empty() => {
                    for row in rows {
                        if !self.in_flight.lock().expect("in-flight lock").insert(row.id.clone()) {
                            continue;
                        }
                        let permit = permits.clone().acquire_owned().await.expect("semaphore is never closed");
                        let this = self.clone();
                        let records = records.clone();
                        attempts.spawn(async move {
                            let record = this.attempt(row).await;
                            this.in_flight.lock().expect("in-flight lock").remove(&record.delivery_id);
                            let _ = records.send(record).await;
                            drop(permit);
                        });
                    }
                }
                Ok(_) => self.idle(&shutdown).await,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot lease deliveries; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        () = shutdown.cancelled() => break,
                    }
                }
            }
        }
        // Let attempts in flight finish (each is bounded by its timeout), then flush records.
        while attempts.join_next().await.is_some() {}
        drop(records);
        let _ = recorder.await;
    }

    /// Sleeps until new work is queued, the next retry is due, or the poll interval passes.
    async fn idle(&self, shutdown: &CancellationToken) {
        let poll = self.settings.poll;
        let wait = match self.store.next_due().await {
            Ok(Some(at)) => Duration::from_millis((at - now_ms()).clamp(0, poll.as_millis() as i64) as u64),
            _ => poll,
        };
        if wait.is_zero() {
            return;
        }
        tokio::select! {
            () = self.wake.notified() => {}
            () = tokio::time::sleep(wait) => {}
            () = shutdown.cancelled() => {}
        }
    }

    fn hook_permits(&self, hook_id: &str) -> Arc<Semaphore> {
        let mut map = self.per_hook.lock().expect("per-hook lock");
        map.entry(hook_id.to_owned()).or_insert_with(|| Arc::new(Semaphore::new(self.settings.per_hook))).clone()
    }

    /// One attempt and the record of it.
    async fn attempt(&self, row: LeasedDelivery) -> AttemptRecord {
        let n = row.attempts + 1;
        let Some(live) = self.index.get(&row.hook_id) else {
            telemetry::attempt("failed", Duration::ZERO);
            return record_of(&row, n, AttemptResult::failed("the hook was deleted"), Status::Failed, now_ms());
        };
        let hook = &live.hook;
        let result = {
            let semaphore = self.hook_permits(&row.hook_id);
            let _permit = semaphore.acquire().await.expect("semaphore is never closed");
            self.client.attempt(hook, &row, now_ms() / 1000).await
        };
        let outcome = if result.success() {
            Outcome::Success
        } else {
            Outcome::Failure { retry_after: result.retry_after, gone: result.status == Some(410) }
        };
        let policy = Policy {
            retries: hook.retries,
            delay: Duration::from_secs(u64::from(hook.delay_secs)),
            backoff: hook.backoff,
        };
        let now = now_ms();
        let round = n.saturating_sub(row.retry_from);
        let (status, next_at, label) = match retry::decide(&policy, round, outcome, rand::random::<f64>()) {
            Decision::Delivered => (Status::Delivered, now, "delivered"),
            Decision::GiveUp => (Status::Failed, now, "failed"),
            Decision::RetryIn(wait) => (Status::Pending, now + wait.as_millis() as i64, "retry"),
        };
        telemetry::attempt(label, result.duration);
        record_of(&row, n, result, status, next_at)
    }
}

fn record_of(row: &LeasedDelivery, n: u32, result: AttemptResult, status: Status, next_at_ms: i64) -> AttemptRecord {
    AttemptRecord {
        delivery_id: row.id.clone(),
        n,
        at_ms: now_ms() - result.duration.as_millis() as i64,
        status_code: result.status,
        duration_ms: result.duration.as_millis().min(u128::from(u32::MAX)) as u32,
        error: result.error,
        response: result.response,
        status,
        next_at_ms,
    }
}

/// Writes attempt records in batches until the channel closes. A store failure is retried:
/// the records stay in memory meanwhile, and the dispatcher slows down as the channel fills.
async fn record(store: Arc<dyn Store>, mut inbox: mpsc::Receiver<AttemptRecord>) {
    let mut batch = Vec::with_capacity(RECORD_BATCH);
    while inbox.recv_many(&mut batch, RECORD_BATCH).await > 0 {
        let mut wait = Duration::from_millis(100);
        while let Err(e) = store.record(&batch).await {
            tracing::warn!(error = %e, records = batch.len(), "cannot record attempts; retrying");
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(5));
        }
        batch.clear();
    }
}
