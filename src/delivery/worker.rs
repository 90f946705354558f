//! The dispatcher: leases due deliveries in batches, sends them with bounded concurrency
//! (overall, per hook and per domain, on this node), renews its leases while attempts run,
//! and records outcomes in batches.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use super::client::{AttemptResult, Client};
use super::retry::{self, Decision, Outcome, Policy};
use crate::auth::now_ms;
use crate::router::{HookIndex, LiveHook};
use crate::store::{AttemptRecord, Full, LeasedDelivery, Status, Store};
use crate::telemetry;

/// Dispatcher settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Attempts in flight at once, over all hooks.
    pub concurrency: usize,
    /// Attempts in flight at once for one hook.
    pub per_hook: usize,
    /// Attempts in flight at once for the hooks of one domain.
    pub per_domain: usize,
    /// How long a lease holds without renewal. Leases of attempts in flight are renewed every
    /// third of it, so a node that dies gives its deliveries up within this time.
    pub lease: Duration,
    /// This node's name in leases. Stable across restarts, so a restart can take back the
    /// rows it held when it stopped.
    pub owner: String,
    /// Most rows leased per query.
    pub batch: u32,
    /// Longest sleep between looks at the queue when nothing wakes the dispatcher.
    pub poll: Duration,
    /// `delivery.block_private_networks`.
    pub public_only: bool,
}

/// Rows recorded per transaction, at most.
const RECORD_BATCH: usize = 512;
/// How long the recorder waits for more attempts to end before it writes a short batch.
const RECORD_LINGER: Duration = Duration::from_millis(5);
/// How long shutdown waits for attempts in flight and for their records to be written.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(15);
/// How long attempts cut short at the end of the grace have to hand their records over.
const INTERRUPT_GRACE: Duration = Duration::from_secs(1);

/// What this node is sending: attempts in flight per hook and per domain, and the deliveries
/// held from the start of their attempt until its outcome is written. Held deliveries keep
/// their leases renewed, and one whose lease comes round again is not sent twice.
#[derive(Default)]
struct Busy {
    hooks: HashMap<String, usize>,
    domains: HashMap<String, usize>,
    /// Each held delivery's attempts before the one this node is making.
    held: HashMap<String, u32>,
}

/// Gives back one of `key`'s slots.
fn release_slot(slots: &mut HashMap<String, usize>, key: &str) {
    if let Some(n) = slots.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            slots.remove(key);
        }
    }
}

pub struct Dispatcher {
    store: Arc<dyn Store>,
    index: Arc<HookIndex>,
    client: Client,
    wake: Arc<Notify>,
    settings: Settings,
    busy: Mutex<Busy>,
    /// Signalled when an attempt ends and frees its slots.
    freed: Notify,
    /// Cancelled when shutdown's grace is over: attempts still in flight stop, and are
    /// recorded as interrupted.
    interrupt: CancellationToken,
}

impl Dispatcher {
    pub fn new(store: Arc<dyn Store>, index: Arc<HookIndex>, wake: Arc<Notify>, settings: Settings) -> Arc<Self> {
        Arc::new(Dispatcher {
            store,
            index,
            client: Client::new(settings.public_only),
            wake,
            settings,
            busy: Mutex::default(),
            freed: Notify::new(),
            interrupt: CancellationToken::new(),
        })
    }

    /// Runs until `shutdown`, then lets attempts in flight finish (for a while) and records them.
    /// `hot` brings deliveries the router wrote already leased to this node.
    pub async fn run(self: Arc<Self>, mut hot: mpsc::Receiver<LeasedDelivery>, shutdown: CancellationToken) {
        match self.store.release_leases(&self.settings.owner).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deliveries = n, "taking back deliveries left in flight by the last run"),
            Err(e) => tracing::warn!(error = %e, "could not release old leases; they will expire"),
        }
        let (records, inbox) = mpsc::channel(RECORD_BATCH * 4);
        // The recorders alone own the inbox: should they all stop, sending a record fails and
        // its delivery is let go (its lease runs out), rather than held for good. Their handles
        // are owned here, so that dropping this future (a crash, in tests) stops them with it.
        let inbox = Arc::new(tokio::sync::Mutex::new(inbox));
        let recorders: Vec<_> = (0..self.store.writers())
            .map(|_| {
                let recorder = record(
                    self.store.clone(),
                    self.settings.owner.clone(),
                    inbox.clone(),
                    self.wake.clone(),
                    shutdown.clone(),
                );
                AbortOnDropHandle::new(tokio::spawn(recorder))
            })
            .collect();
        drop(inbox);
        let renewer = AbortOnDropHandle::new(tokio::spawn(self.clone().renew()));
        let mut attempts = JoinSet::new();
        let permits = Arc::new(Semaphore::new(self.settings.concurrency));
        while !shutdown.is_cancelled() {
            while attempts.try_join_next().is_some() {}
            // Deliveries handed over in memory come first: they are already leased to us.
            let mut excess = Vec::new();
            while permits.available_permits() > 0 {
                let Ok(row) = hot.try_recv() else { break };
                self.start(row, &permits, &mut attempts, &records, &mut excess).await;
            }
            self.give_back(excess).await;
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
            let full = self.full();
            match self.store.lease(&self.settings.owner, now, lease_until, limit, &full).await {
                Ok(rows) if !rows.is_empty() => {
                    let mut excess = Vec::new();
                    for row in rows {
                        self.start(row, &permits, &mut attempts, &records, &mut excess).await;
                    }
                    self.give_back(excess).await;
                }
                Ok(_) => {
                    if let Some(row) = self.idle(&mut hot, &shutdown).await {
                        let mut excess = Vec::new();
                        self.start(row, &permits, &mut attempts, &records, &mut excess).await;
                        self.give_back(excess).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot lease deliveries; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        () = shutdown.cancelled() => break,
                    }
                }
            }
        }
        if !drain(&mut attempts, SHUTDOWN_GRACE).await {
            tracing::warn!(
                attempts = attempts.len(),
                "interrupting attempts still in flight; those not answered yet are recorded as interrupted and sent again"
            );
            self.interrupt.cancel();
            if !drain(&mut attempts, INTERRUPT_GRACE).await {
                attempts.shutdown().await;
            }
        }
        // Held deliveries are renewed until their records are written.
        drop(records);
        for recorder in recorders {
            let _ = recorder.await;
        }
        drop(renewer);
    }

    /// Starts an attempt for `row`, or puts it in `excess` when its hook or domain has no slot
    /// free. A row this node is already sending (its lease came round again) is left to that
    /// attempt.
    async fn start(
        self: &Arc<Self>,
        row: LeasedDelivery,
        permits: &Arc<Semaphore>,
        attempts: &mut JoinSet<()>,
        records: &mpsc::Sender<(AttemptRecord, Held)>,
        excess: &mut Vec<String>,
    ) {
        // Looked up once: its domain takes a slot, and the attempt sends with it.
        let live = self.index.get(&row.hook_id);
        let (claim, held) = match self.claim(&row, live.as_ref().map(|l| l.hook.domain.clone())) {
            Ok(claimed) => claimed,
            Err(Refused::Full) => return excess.push(row.id),
            Err(Refused::Held) => return,
        };
        let permit = permits.clone().acquire_owned().await.expect("semaphore is never closed");
        let records = records.clone();
        attempts.spawn(async move {
            let dispatcher = claim.dispatcher.clone();
            if !dispatcher.lease_is_whole(&row).await {
                return;
            }
            let record = dispatcher.attempt(row, live).await;
            // The hook's and domain's slots are free once the attempt ends (or panics: dropping
            // the claim frees them). The delivery stays held, its lease renewed, until the
            // recorder has written the outcome; the permit is kept until the record is handed
            // over, so the dispatcher slows down when recording falls behind.
            drop(claim);
            if let Some(record) = record {
                let _ = records.send((record, held)).await;
            }
            drop(permit);
        });
    }

    /// Whether `row`'s lease has at least half its time to run, renewing it if not: a delivery
    /// handed over in memory may have waited there a while. False when it ran out and another
    /// node took the row, or the store cannot say (its lease then runs out).
    async fn lease_is_whole(&self, row: &LeasedDelivery) -> bool {
        let (now, lease) = (now_ms(), self.settings.lease.as_millis() as i64);
        if row.lease_until_ms.saturating_sub(now) >= lease / 2 {
            return true;
        }
        match self.store.renew_leases(&self.settings.owner, std::slice::from_ref(&row.id), now + lease).await {
            Ok(renewed) => renewed == 1,
            Err(e) => {
                tracing::warn!(error = %e, delivery = %row.id, "cannot renew a lease; the delivery waits for it to run out");
                false
            }
        }
    }

    /// Leased rows of hooks that filled up: back to the queue.
    async fn give_back(&self, excess: Vec<String>) {
        if let Err(e) = self.store.release(&self.settings.owner, &excess).await {
            tracing::warn!(error = %e, "cannot release leases; they will expire");
        }
    }

    /// The hooks and domains with as many attempts in flight as they may have: their
    /// deliveries are not to be leased now.
    fn full(&self) -> Full {
        let busy = self.busy.lock().expect("busy lock");
        let at = |slots: &HashMap<String, usize>, limit: usize| -> Vec<String> {
            slots.iter().filter(|(_, n)| **n >= limit).map(|(key, _)| key.clone()).collect()
        };
        Full { hooks: at(&busy.hooks, self.settings.per_hook), domains: at(&busy.domains, self.settings.per_domain) }
    }

    /// Takes a slot of its hook and of its `domain` for `row`, until the claim is dropped, and
    /// holds the delivery, until that is dropped. A hook this node does not know yet has no
    /// domain here; its attempt looks it up.
    fn claim(self: &Arc<Self>, row: &LeasedDelivery, domain: Option<String>) -> Result<(Claim, Held), Refused> {
        let mut busy = self.busy.lock().expect("busy lock");
        // Leased again with the same attempt count, it is the attempt this node is making (its
        // lease ran out meanwhile); with a higher one, that attempt's record is written, and
        // the new lease is a new attempt (a retry due now, say) even if the hold is not let go
        // yet.
        if busy.held.get(&row.id).is_some_and(|n| *n >= row.attempts) {
            return Err(Refused::Held);
        }
        let hook_full = busy.hooks.get(&row.hook_id).is_some_and(|n| *n >= self.settings.per_hook);
        let domain_full =
            domain.as_ref().and_then(|d| busy.domains.get(d)).is_some_and(|n| *n >= self.settings.per_domain);
        if hook_full || domain_full {
            return Err(Refused::Full);
        }
        *busy.hooks.entry(row.hook_id.clone()).or_default() += 1;
        if let Some(d) = &domain {
            *busy.domains.entry(d.clone()).or_default() += 1;
        }
        busy.held.insert(row.id.clone(), row.attempts);
        let claim = Claim { dispatcher: self.clone(), hook_id: row.hook_id.clone(), domain };
        Ok((claim, Held { dispatcher: self.clone(), id: row.id.clone(), attempts: row.attempts }))
    }

    /// Keeps the leases of held deliveries from expiring, however long their attempts and
    /// records take.
    async fn renew(self: Arc<Self>) {
        let every = self.settings.lease / 3;
        loop {
            tokio::time::sleep(every).await;
            let ids: Vec<String> = self.busy.lock().expect("busy lock").held.keys().cloned().collect();
            if ids.is_empty() {
                continue;
            }
            let until = now_ms() + self.settings.lease.as_millis() as i64;
            if let Err(e) = self.store.renew_leases(&self.settings.owner, &ids, until).await {
                tracing::warn!(error = %e, "cannot renew leases");
            }
        }
    }

    /// Sleeps until new work is queued, the next retry is due, or the poll interval passes;
    /// returns a delivery handed over in memory meanwhile.
    async fn idle(
        &self,
        hot: &mut mpsc::Receiver<LeasedDelivery>,
        shutdown: &CancellationToken,
    ) -> Option<LeasedDelivery> {
        let poll = self.settings.poll;
        let wait = match self.store.next_due().await {
            Ok(Some(at)) => Duration::from_millis((at - now_ms()).clamp(0, poll.as_millis() as i64) as u64),
            _ => poll,
        };
        // Due rows that could not be leased belong to hooks or domains at their cap, or wait for
        // an earlier event of their call: wait for an attempt to end, or for the poll, rather
        // than for the clock.
        let freed = async { if wait.is_zero() { self.freed.notified().await } else { std::future::pending().await } };
        tokio::select! {
            row = hot.recv() => row,
            () = freed => None,
            () = self.wake.notified() => None,
            () = tokio::time::sleep(if wait.is_zero() { poll } else { wait }) => None,
            () = shutdown.cancelled() => None,
        }
    }

    /// The hook of a delivery. One this node has not heard of yet (created on another node a
    /// moment ago) is looked up in the store before the delivery is given up on.
    async fn hook(&self, id: &str) -> crate::store::Result<Option<Arc<LiveHook>>> {
        if let Some(live) = self.index.get(id) {
            return Ok(Some(live));
        }
        let stored = self.store.hook_by_id(id).await?;
        self.index.refresh(id, stored);
        Ok(self.index.get(id))
    }

    /// One attempt with the hook as the index had it (`known`), and the record of it; `None`
    /// when there is nothing to record: it could not even be tried (the store was unreachable;
    /// its lease then runs out and it is tried again), or its hook is disabled.
    async fn attempt(&self, mut row: LeasedDelivery, known: Option<Arc<LiveHook>>) -> Option<AttemptRecord> {
        let n = row.attempts + 1;
        let hook = match known {
            Some(live) => Ok(Some(live)),
            None => self.hook(&row.hook_id).await,
        };
        let hook = match hook {
            Ok(hook) => hook,
            Err(e) => {
                tracing::warn!(error = %e, hook = %row.hook_id, "cannot look up a hook; the delivery waits");
                return None;
            }
        };
        let record = match hook {
            None => {
                telemetry::attempt("failed", Duration::ZERO);
                record_of(&row, n, AttemptResult::failed("the hook was deleted"), Status::Failed, now_ms())
            }
            // An operator disables a hook to stop what it sends: its deliveries wait, unleased
            // (the lease leaves disabled hooks out), until it is enabled again. This one was
            // leased just before.
            Some(live) if !live.hook.enabled => {
                self.give_back(vec![row.id.clone()]).await;
                return None;
            }
            Some(live) => {
                let hook = &live.hook;
                let body = std::mem::take(&mut row.request.body);
                let result = match self.client.attempt(hook, &row, body, now_ms() / 1000, &self.interrupt).await {
                    Ok(result) => result,
                    // Not in the metrics: the process is about to end.
                    Err(cut) => {
                        let record = record_of(&row, n, cut, Status::Pending, now_ms());
                        return Some(AttemptRecord { counted: false, ..record });
                    }
                };
                let outcome = if result.success() {
                    Outcome::Success
                } else {
                    Outcome::Failure { retry_after: result.retry_after }
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
        };
        Some(record)
    }
}

/// Why a leased row was not claimed.
enum Refused {
    /// Its hook or its domain has as many attempts in flight as it may.
    Full,
    /// This node is sending it, or writing its outcome.
    Held,
}

/// A delivery's slots (of its hook and its domain) while its attempt runs. Dropping it frees
/// them, so an attempt that panics cannot keep them.
struct Claim {
    dispatcher: Arc<Dispatcher>,
    hook_id: String,
    domain: Option<String>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        let d = &self.dispatcher;
        {
            let mut busy = d.busy.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            release_slot(&mut busy.hooks, &self.hook_id);
            if let Some(domain) = &self.domain {
                release_slot(&mut busy.domains, domain);
            }
        }
        d.freed.notify_one();
    }
}

/// A delivery this node holds from its attempt's start until the outcome is written (or
/// given up on): its lease is renewed meanwhile, so no other attempt can lease it.
struct Held {
    dispatcher: Arc<Dispatcher>,
    id: String,
    attempts: u32,
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut busy = self.dispatcher.busy.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Unless a later attempt holds it now.
        if busy.held.get(&self.id) == Some(&self.attempts) {
            busy.held.remove(&self.id);
        }
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
        counted: true,
    }
}

/// Waits up to `grace` for every attempt to end; false if some are still running.
async fn drain(attempts: &mut JoinSet<()>, grace: Duration) -> bool {
    tokio::time::timeout(grace, async { while attempts.join_next().await.is_some() {} }).await.is_ok()
}

/// Writes attempt records in batches until the channel closes. A store failure is retried
/// (the dispatcher slows down as the channel fills); a batch the store refuses is written
/// record by record so one bad record cannot hold up the others. After shutdown, retrying
/// stops after a grace period: unrecorded deliveries are still leased to this node and are
/// sent again after it restarts. A batch that finishes deliveries wakes the dispatcher: the
/// next event of an ordered call waits until the one before it is recorded.
async fn record(
    store: Arc<dyn Store>,
    owner: String,
    inbox: Arc<tokio::sync::Mutex<mpsc::Receiver<(AttemptRecord, Held)>>>,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let mut incoming = Vec::with_capacity(RECORD_BATCH);
    // After shutdown, how long retrying may go on, for all batches together.
    let mut deadline = None;
    loop {
        {
            let mut inbox = inbox.lock().await;
            if inbox.recv_many(&mut incoming, RECORD_BATCH).await == 0 {
                return;
            }
            // Linger a moment for more: one commit for many attempts is what makes recording
            // cheap, on PostgreSQL above all, where every commit waits for a disk flush.
            if incoming.len() < RECORD_BATCH && !inbox.is_closed() {
                tokio::time::sleep(RECORD_LINGER).await;
                while incoming.len() < RECORD_BATCH {
                    match inbox.try_recv() {
                        Ok(r) => incoming.push(r),
                        Err(_) => break,
                    }
                }
            }
        }
        // The deliveries stay held until their outcomes are written, or given up on.
        let (batch, mut held): (Vec<AttemptRecord>, Vec<Held>) = incoming.drain(..).unzip();
        let mut wait = Duration::from_millis(100);
        loop {
            match store.record(&owner, &batch).await {
                Ok(()) => break,
                Err(crate::store::StoreError::Unavailable(e)) => {
                    tracing::warn!(error = %e, records = batch.len(), "store unavailable; cannot record attempts yet");
                }
                Err(e) => {
                    tracing::warn!(error = %e, records = batch.len(), "cannot record attempts; recording one by one");
                    for (one, hold) in batch.iter().zip(held.drain(..)) {
                        if let Err(e) = store.record(&owner, std::slice::from_ref(one)).await {
                            tracing::error!(error = %e, delivery = %one.delivery_id, "cannot record an attempt; the delivery will be sent again");
                        }
                        drop(hold);
                    }
                    break;
                }
            }
            if shutdown.is_cancelled() {
                let at = *deadline.get_or_insert_with(|| tokio::time::Instant::now() + SHUTDOWN_GRACE);
                if tokio::time::Instant::now() >= at {
                    tracing::error!(
                        records = batch.len(),
                        "gave up recording attempts at shutdown; those deliveries will be sent again"
                    );
                    break;
                }
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(5));
        }
        drop(held);
        if batch.iter().any(|r| r.status != Status::Pending) {
            wake.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hook::payload::Request;

    async fn dispatcher(dir: &std::path::Path) -> Arc<Dispatcher> {
        crate::app::install_crypto_provider();
        let store = crate::store::open(&format!("sqlite://{}", dir.join("t.db").display())).await.unwrap();
        let settings = Settings {
            concurrency: 4,
            per_hook: 1,
            per_domain: 4,
            lease: Duration::from_secs(60),
            owner: "me".into(),
            batch: 16,
            poll: Duration::from_secs(1),
            public_only: false,
        };
        Dispatcher::new(store, Arc::new(HookIndex::new(Vec::new()).0), Arc::default(), settings)
    }

    fn row(id: &str, hook: &str, attempts: u32) -> LeasedDelivery {
        LeasedDelivery {
            id: id.into(),
            hook_id: hook.into(),
            attempts,
            retry_from: 0,
            next_at_ms: 0,
            lease_until_ms: i64::MAX,
            request: Request {
                method: http::Method::POST,
                url: "http://x/".into(),
                headers: vec![],
                body: String::new(),
            },
            event: None,
        }
    }

    #[tokio::test]
    async fn a_delivery_is_held_until_its_record_is_written_and_slots_free_when_the_attempt_ends() {
        let dir = tempfile::tempdir().unwrap();
        let d = dispatcher(dir.path()).await;
        let (claim, held) = d.claim(&row("a", "h", 0), None).ok().unwrap();
        // Its hook has one slot.
        assert!(matches!(d.claim(&row("b", "h", 0), None), Err(Refused::Full)));
        drop(claim);
        let (other, other_held) = d.claim(&row("b", "h", 0), None).ok().unwrap();
        drop((other, other_held));
        // The attempt is over but not recorded: leased again as it was, it is still this one.
        assert!(matches!(d.claim(&row("a", "h", 0), None), Err(Refused::Held)));
        // Recorded and leased again for its next attempt before the hold was let go.
        let (retry, retry_held) = d.claim(&row("a", "h", 1), None).ok().unwrap();
        drop(held);
        assert!(matches!(d.claim(&row("a", "h", 1), None), Err(Refused::Held)), "the retry's hold stays");
        drop((retry, retry_held));
        assert!(d.busy.lock().unwrap().held.is_empty());
    }

    #[tokio::test]
    async fn an_attempt_that_panics_frees_its_slots_and_its_hold() {
        let dir = tempfile::tempdir().unwrap();
        let d = dispatcher(dir.path()).await;
        let claimed = d.claim(&row("a", "h", 0), Some("example.com".into())).ok().unwrap();
        let task = tokio::spawn(async move {
            let _claimed = claimed;
            panic!("an attempt panics");
        });
        assert!(task.await.unwrap_err().is_panic());
        let busy = d.busy.lock().unwrap();
        assert!(busy.hooks.is_empty() && busy.domains.is_empty() && busy.held.is_empty());
    }
}
