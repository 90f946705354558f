//! The router: an in-memory index of compiled hooks, keyed by (domain, event name), that
//! matches events and renders their deliveries, then hands them to the store in one
//! transaction. No store query per event.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use std::time::Duration;

use tokio::sync::{Notify, mpsc, watch};

use crate::event::{Event, Incoming, JsonEvent, RouteKey};
use crate::hook::{CompiledHook, DocError};
use crate::store::{LeasedDelivery, NewDelivery, Store, StoreError, StoredHook};
use crate::telemetry;

/// A hook in the index.
#[derive(Debug)]
pub struct LiveHook {
    pub id: String,
    pub hook: CompiledHook,
}

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

#[derive(Default)]
struct Index {
    by_id: HashMap<String, Arc<LiveHook>>,
    /// Enabled hooks only: domain → event name → hooks. Looked up for every event, so hashed
    /// with foldhash rather than SipHash (its keys come from admins' hooks, not from events, and
    /// foldhash is seeded per process all the same).
    by_key: FastMap<String, FastMap<String, Vec<Arc<LiveHook>>>>,
}

impl Index {
    fn insert(&mut self, live: Arc<LiveHook>) {
        if live.hook.enabled {
            let events = self.by_key.entry(live.hook.domain.clone()).or_default();
            events.entry(live.hook.event.clone()).or_default().push(live.clone());
        }
        self.by_id.insert(live.id.clone(), live);
    }

    fn remove(&mut self, id: &str) {
        let Some(old) = self.by_id.remove(id) else {
            return;
        };
        if let Some(events) = self.by_key.get_mut(&old.hook.domain) {
            if let Some(hooks) = events.get_mut(&old.hook.event) {
                hooks.retain(|h| h.id != id);
                if hooks.is_empty() {
                    events.remove(&old.hook.event);
                }
            }
            if events.is_empty() {
                self.by_key.remove(&old.hook.domain);
            }
        }
    }
}

/// Every hook, compiled, updated in place as the API changes hooks.
pub struct HookIndex {
    index: RwLock<Index>,
    /// Bumped on every change, so sources can follow the set of subscribed event names.
    version: watch::Sender<u64>,
}

impl HookIndex {
    /// Builds the index from stored hooks. A stored hook that no longer compiles is left out
    /// and returned with its error.
    pub fn new(hooks: Vec<StoredHook>) -> (Self, Vec<(String, DocError)>) {
        let mut index = Index::default();
        let mut broken = Vec::new();
        for stored in hooks {
            match stored.doc.compile() {
                Ok(hook) => index.insert(Arc::new(LiveHook { id: stored.id, hook })),
                Err(e) => broken.push((stored.id, e)),
            }
        }
        let (version, _) = watch::channel(0);
        (Self { index: RwLock::new(index), version }, broken)
    }

    /// Replaces every hook (a resync with the store).
    pub fn replace_all(&self, hooks: Vec<StoredHook>) {
        let (fresh, broken) = HookIndex::new(hooks);
        for (id, error) in broken {
            tracing::error!(hook = %id, %error, "stored hook does not compile; it is left out");
        }
        *self.index.write().expect("hook index lock") = fresh.index.into_inner().expect("fresh index lock");
        self.version.send_modify(|v| *v += 1);
    }

    /// Brings one hook in line with the store: changed, or gone.
    pub fn refresh(&self, id: &str, stored: Option<StoredHook>) {
        match stored.map(|h| h.doc.compile().map(|c| (h.id, c))) {
            Some(Ok((id, hook))) => self.upsert(&id, hook),
            Some(Err(error)) => {
                tracing::error!(hook = %id, %error, "stored hook does not compile; it is left out");
                self.remove(id);
            }
            None => self.remove(id),
        }
    }

    /// Adds or replaces a hook.
    pub fn upsert(&self, id: &str, hook: CompiledHook) {
        {
            let mut index = self.index.write().expect("hook index lock");
            index.remove(id);
            index.insert(Arc::new(LiveHook { id: id.to_owned(), hook }));
        }
        self.version.send_modify(|v| *v += 1);
    }

    pub fn remove(&self, id: &str) {
        self.index.write().expect("hook index lock").remove(id);
        self.version.send_modify(|v| *v += 1);
    }

    pub fn get(&self, id: &str) -> Option<Arc<LiveHook>> {
        self.index.read().expect("hook index lock").by_id.get(id).cloned()
    }

    /// The enabled hooks listening to this domain and event name, before their filters.
    pub fn hooks(&self, key: &RouteKey) -> Vec<Arc<LiveHook>> {
        let index = self.index.read().expect("hook index lock");
        index
            .by_key
            .get(key.domain.as_ref())
            .and_then(|events| events.get(key.name.as_ref()))
            .cloned()
            .unwrap_or_default()
    }

    /// The event names enabled hooks listen to, across all domains.
    pub fn event_names(&self) -> BTreeSet<String> {
        let index = self.index.read().expect("hook index lock");
        index.by_key.values().flat_map(|events| events.keys().cloned()).collect()
    }

    /// Notified on every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }
}

/// What the deliveries of an event are rendered from.
enum Form<'a> {
    /// The JSON text as it came, for hooks that send it whole.
    Text(&'a JsonEvent),
    Parsed(Cow<'a, Event>),
}

/// What an accept call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Accepted {
    pub events: usize,
    pub deliveries: usize,
}

/// Matches events, renders deliveries, and queues them durably.
pub struct Router {
    pub index: Arc<HookIndex>,
    store: Arc<dyn Store>,
    /// Wakes the delivery workers when new work is queued.
    wake: Arc<Notify>,
    hot: HotPath,
}

/// The short way to the dispatcher: deliveries it has room for are written already leased to
/// this node and handed over in memory, so they are not read back from the store. The rest
/// wait in the store for a lease.
pub struct HotPath {
    pub deliveries: mpsc::Sender<LeasedDelivery>,
    /// This node's name in leases.
    pub owner: String,
    pub lease: Duration,
}

impl Router {
    pub fn new(index: Arc<HookIndex>, store: Arc<dyn Store>, wake: Arc<Notify>, hot: HotPath) -> Self {
        Self { index, store, wake, hot }
    }

    /// Wakes the delivery workers (after work was queued outside [`Router::accept`]).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Appends the deliveries `item` causes to `out`; returns how many hooks it matched, or
    /// `None` when it can match none (no domain or event name, or unreadable). With `once`,
    /// the deliveries carry the event's identity so the store keeps them only the first time
    /// it sees it.
    ///
    /// JSON text is parsed only when a hook needs more than the whole of it: most events
    /// concern no hook, and a hook without filters, `fields` or templates sends the text as
    /// it came.
    fn route(&self, item: &Incoming, now_ms: i64, once: bool, out: &mut Vec<NewDelivery>) -> Option<usize> {
        let headers = item.headers();
        let key = headers.route_key()?;
        let mut hooks = self.index.hooks(&key);
        if hooks.is_empty() {
            return Some(0);
        }
        let form = match item {
            Incoming::Json(json) if hooks.iter().all(|h| h.hook.sends_whole_event()) => Form::Text(json),
            _ => match item.event() {
                Ok(event) => Form::Parsed(event),
                Err(error) => {
                    tracing::warn!(%error, "an event could not be parsed; it is dropped");
                    return None;
                }
            },
        };
        if let Form::Parsed(event) = &form {
            hooks.retain(|h| h.hook.failed_filter(event).is_none());
        }
        if hooks.is_empty() {
            return Some(0);
        }
        let sequence = || headers.text("Event-Sequence").and_then(|s| s.parse::<i64>().ok());
        let event_key = once.then(|| Some((headers.text("Core-UUID")?.into_owned(), sequence()?))).flatten();
        for live in &hooks {
            let id = uuid::Uuid::now_v7().to_string();
            let order_key = live.hook.ordered.then(|| headers.text("Unique-ID").map(Cow::into_owned)).flatten();
            let request = match &form {
                Form::Text(text) => live.hook.render_json(text, &key.name, &id),
                Form::Parsed(event) => match live.hook.render_checked(event, &key.name, &id) {
                    Ok(request) => request,
                    Err((_, problem)) => {
                        telemetry::unsendable();
                        tracing::warn!(hook = %live.id, %problem, "a delivery is not queued");
                        continue;
                    }
                },
            };
            // Headers that use the auth pre-request's answer are rendered at send time, from
            // this copy of the event.
            let event = live.hook.auth.is_some().then(|| match item {
                Incoming::Json(json) => json.text().to_owned(),
                Incoming::Event(event) => serde_json::to_string(&event.0).expect("JSON serializes"),
            });
            out.push(NewDelivery {
                request,
                event,
                order_seq: order_key.as_ref().and_then(|_| sequence()),
                order_key,
                event_key: event_key.clone(),
                id,
                hook_id: live.id.clone(),
                domain: key.domain.clone().into_owned(),
                event_name: key.name.clone().into_owned(),
                created_at_ms: now_ms,
                lease_until_ms: None,
            });
        }
        Some(hooks.len())
    }

    /// Routes `events` and commits their deliveries in one transaction; returns once they are
    /// durable, so the caller may acknowledge its source. With `once` (events of an event
    /// socket that other nodes may read too), an event already taken is not queued again.
    pub async fn accept(&self, events: &[Incoming], once: bool) -> Result<Accepted, StoreError> {
        let now = crate::auth::now_ms();
        let mut deliveries = Vec::new();
        let (mut matched, mut dropped) = (0, 0);
        for event in events {
            match self.route(event, now, once, &mut deliveries) {
                None => dropped += 1,
                Some(0) => {}
                Some(_) => matched += 1,
            }
        }
        // Counted once committed: a source whose commit failed sends the same events again.
        let counted = || telemetry::events_accepted(events.len(), matched, dropped);
        if deliveries.is_empty() {
            counted();
            return Ok(Accepted { events: events.len(), deliveries: 0 });
        }
        // Room in the dispatcher, taken before the commit so what is written leased is sent.
        // Ordered deliveries always go through the queue, which keeps their order.
        let lease_until = now + self.hot.lease.as_millis() as i64;
        let mut room = Vec::new();
        for d in deliveries.iter_mut().filter(|d| d.order_key.is_none()) {
            let Ok(permit) = self.hot.deliveries.try_reserve() else { break };
            d.lease_until_ms = Some(lease_until);
            room.push(permit);
        }
        let skipped = self.store.enqueue(&deliveries, &self.hot.owner).await?;
        counted();
        deliveries.retain(|d| !skipped.contains(&d.id));
        let queued = deliveries.len();
        let mut room = room.into_iter();
        for d in deliveries {
            if d.lease_until_ms.is_none() {
                self.wake.notify_one();
            } else if let Some(permit) = room.next() {
                permit.send(d.into());
            }
        }
        Ok(Accepted { events: events.len(), deliveries: queued })
    }
}
