//! Persistence: the one [`Store`] trait and its SQLite and PostgreSQL implementations.
//!
//! SQL lives only under this folder. Both backends share [`sql::SqlStore`]; what differs
//! between them (connection setup, migrations) sits in `sqlite.rs` and `postgres.rs`.

mod postgres;
mod sql;
mod sqlite;

pub use sql::{compress, decompress};

use std::sync::Arc;

use async_trait::async_trait;

use crate::auth::Role;
use crate::hook::HookDoc;
use crate::hook::payload::Request;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database URL {0:?} is neither sqlite: nor postgres://")]
    BadUrl(String),
    /// The database cannot be reached (connection refused, pool timeout, I/O).
    #[error("store unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    #[error("migration failed")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database was migrated by a newer switchhook, whose schema this one cannot use.
    #[error(
        "the database's schema is version {found}, newer than this switchhook knows ({known}): \
         a newer switchhook migrated it; run that version, or point this one at another database"
    )]
    SchemaTooNew { found: i64, known: i64 },
    #[error("stored hook {id} is unreadable: {source}")]
    CorruptHook {
        id: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("stored token {id} has unknown role {role:?}")]
    CorruptToken { id: String, role: String },
    #[error("stored delivery {id} is unreadable: {problem}")]
    CorruptDelivery { id: String, problem: String },
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        use sqlx::Error as E;
        let lost = |e: &E| match e {
            E::Io(_) | E::Tls(_) | E::PoolTimedOut | E::PoolClosed | E::WorkerCrashed | E::Protocol(_) => true,
            // PostgreSQL going away: connection exceptions (08…), shutdown, cannot connect now.
            E::Database(db) => {
                db.code().is_some_and(|c| c.starts_with("08") || matches!(c.as_ref(), "57P01" | "57P02" | "57P03"))
            }
            _ => false,
        };
        if lost(&e) { StoreError::Unavailable(e) } else { StoreError::Database(e) }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// An issued access token, kept so it can be listed and revoked. The token text itself is
/// never stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: String,
    pub role: Role,
    pub domain: Option<String>,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pending,
    Delivered,
    Failed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Delivered => "delivered",
            Status::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        match s {
            "pending" => Some(Status::Pending),
            "delivered" => Some(Status::Delivered),
            "failed" => Some(Status::Failed),
            _ => None,
        }
    }
}

/// A delivery as the router queues it: one per (event, matching hook).
#[derive(Debug, Clone, PartialEq)]
pub struct NewDelivery {
    /// Also the body's `id` and the `webhook-id`: it never changes across retries.
    pub id: String,
    pub hook_id: String,
    pub domain: String,
    pub event_name: String,
    /// `Unique-ID`, for ordered hooks.
    pub order_key: Option<String>,
    /// The event's place in its call (`Event-Sequence`), for ordered hooks.
    pub order_seq: Option<i64>,
    /// The event's identity (`Core-UUID`, `Event-Sequence`) when it must be delivered once even
    /// if several nodes read it (ESL high availability).
    pub event_key: Option<(String, i64)>,
    pub created_at_ms: i64,
    pub request: Request,
    /// The event as JSON, kept only when the headers must be rendered at send time.
    pub event: Option<String>,
    /// Set when the accepting node sends it straight away: the row is written leased to it.
    pub lease_until_ms: Option<i64>,
}

impl From<NewDelivery> for LeasedDelivery {
    fn from(d: NewDelivery) -> Self {
        LeasedDelivery {
            id: d.id,
            hook_id: d.hook_id,
            attempts: 0,
            retry_from: 0,
            next_at_ms: d.created_at_ms,
            lease_until_ms: d.lease_until_ms.unwrap_or(i64::MIN),
            request: d.request,
            event: d.event,
        }
    }
}

/// A delivery a worker holds a lease on.
#[derive(Debug, Clone, PartialEq)]
pub struct LeasedDelivery {
    pub id: String,
    pub hook_id: String,
    /// Attempts made so far.
    pub attempts: u32,
    /// Attempts made before the last manual retry.
    pub retry_from: u32,
    pub next_at_ms: i64,
    /// When the lease runs out unless it is renewed.
    pub lease_until_ms: i64,
    pub request: Request,
    pub event: Option<String>,
}

/// One attempt's result and the delivery's state after it.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRecord {
    pub delivery_id: String,
    /// 1 for the first attempt.
    pub n: u32,
    pub at_ms: i64,
    pub status_code: Option<u16>,
    pub duration_ms: u32,
    pub error: Option<String>,
    /// The start of the response body.
    pub response: Option<String>,
    pub status: Status,
    pub next_at_ms: i64,
    /// Whether the attempt uses up one of the hook's retries. One that shutdown cut short does
    /// not: it is in the log, and the delivery is sent again after the restart with the
    /// retries it had.
    pub counted: bool,
}

/// A delivery as the delivery log shows it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryView {
    pub id: String,
    pub hook_id: String,
    pub event: String,
    #[serde(serialize_with = "status_str")]
    pub status: Status,
    pub attempts: u32,
    pub next_attempt_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    pub log: Vec<AttemptView>,
}

fn status_str<S: serde::Serializer>(s: &Status, ser: S) -> std::result::Result<S::Ok, S::Error> {
    ser.serialize_str(s.as_str())
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AttemptView {
    pub at: i64,
    pub status_code: Option<u16>,
    pub duration_ms: u32,
    pub error: Option<String>,
    pub response: Option<String>,
}

/// A change to the hooks, as another node reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookChange {
    /// This hook was created, changed or deleted.
    Hook(String),
    /// Changes may have been missed (the listening connection was lost): reload them all.
    Resync,
}

/// What a manual retry found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryOutcome {
    Queued,
    NotFound,
    /// Only failed deliveries can be retried.
    NotFailed(Status),
    /// A delivery of a deleted hook has nowhere to go.
    HookDeleted,
}

/// What revoking a token found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revocation {
    Revoked,
    /// Revoked before, at this time (epoch ms), which stays.
    AlreadyRevoked {
        at_ms: i64,
    },
    NotFound,
}

/// A hook as stored: its id and validated document.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredHook {
    pub id: String,
    pub doc: HookDoc,
}

/// Hooks and domains with as many attempts in flight as they may have: a few, whatever the
/// number of hooks (at most the concurrency over the per-hook or per-domain limit).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Full {
    pub hooks: Vec<String>,
    pub domains: Vec<String>,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `"sqlite"` or `"postgres"`.
    fn backend(&self) -> &'static str;

    /// Write transactions worth running side by side: 1 where the database takes one writer
    /// at a time.
    fn writers(&self) -> usize;

    /// Succeeds when the database answers.
    async fn ping(&self) -> Result<()>;

    /// The token secret kept in the store: `candidate` is stored if none is yet, and the
    /// stored one is returned (so concurrent first starts agree).
    async fn token_secret(&self, candidate: &str) -> Result<String>;

    /// A setting the service keeps for itself.
    async fn meta(&self, key: &str) -> Result<Option<String>>;
    async fn set_meta(&self, key: &str, value: &str) -> Result<()>;

    async fn insert_token(&self, token: &TokenRecord) -> Result<()>;
    async fn tokens(&self) -> Result<Vec<TokenRecord>>;
    /// Marks a token revoked at `now_ms`, unless it already is.
    async fn revoke_token(&self, id: &str, now_ms: i64) -> Result<Revocation>;
    /// When the token was revoked (epoch ms); `None` when it is not, or no such token exists.
    async fn token_revoked_at(&self, id: &str) -> Result<Option<i64>>;

    /// One page of a domain's hooks, in creation order.
    async fn hooks(&self, domain: &str, limit: u32, offset: u64) -> Result<Vec<StoredHook>>;
    async fn hook(&self, domain: &str, id: &str) -> Result<Option<StoredHook>>;
    /// How many hooks a domain has, enabled or not.
    async fn count_hooks(&self, domain: &str) -> Result<usize>;
    async fn insert_hook(&self, hook: &StoredHook, now_ms: i64) -> Result<()>;
    /// Replaces the document of the hook with this id in its domain; false when not found.
    async fn update_hook(&self, hook: &StoredHook, now_ms: i64) -> Result<bool>;
    async fn delete_hook(&self, domain: &str, id: &str) -> Result<bool>;
    /// Every hook of every domain, for the in-memory index.
    async fn all_hooks(&self) -> Result<Vec<StoredHook>>;
    /// A hook by id, whatever its domain (for the index, never for the API).
    async fn hook_by_id(&self, id: &str) -> Result<Option<StoredHook>>;
    /// Hook changes other nodes make, where the store can tell (PostgreSQL LISTEN/NOTIFY).
    fn hook_changes(&self) -> Option<tokio::sync::mpsc::Receiver<HookChange>>;

    /// Queues deliveries, all or none, in one transaction. Rows with `lease_until_ms` are
    /// written leased to `owner`. Deliveries whose `event_key` was already seen are left out;
    /// their ids are returned.
    async fn enqueue(&self, deliveries: &[NewDelivery], owner: &str) -> Result<Vec<String>>;
    /// Leases up to `limit` due deliveries to `owner` until `lease_until_ms`, oldest due first,
    /// leaving out disabled hooks and the hooks and domains in `full` (those already at their
    /// concurrency limit).
    async fn lease(
        &self,
        owner: &str,
        now_ms: i64,
        lease_until_ms: i64,
        limit: u32,
        full: &Full,
    ) -> Result<Vec<LeasedDelivery>>;
    /// Gives leased deliveries back unattempted, to be leased again.
    async fn release(&self, owner: &str, ids: &[String]) -> Result<()>;
    /// Extends the leases `owner` holds on `ids` (the deliveries it is sending or recording) to
    /// `lease_until_ms`. Only those: a lease left behind (a give-back or a lookup the store
    /// failed) runs out, and its delivery is leased again.
    async fn renew_leases(&self, owner: &str, ids: &[String], lease_until_ms: i64) -> Result<u64>;
    /// Records attempts, and the new state of their deliveries still leased to `owner`, in one
    /// transaction. A delivery another node leased meanwhile (this node's lease ran out) keeps
    /// the state that node gives it; the attempt is logged all the same, unless it is one that
    /// shutdown interrupted (not [`AttemptRecord::counted`]).
    async fn record(&self, owner: &str, attempts: &[AttemptRecord]) -> Result<()>;
    /// Drops the leases `owner` holds (a restarted node's in-flight rows), so they are sent again.
    async fn release_leases(&self, owner: &str) -> Result<u64>;
    /// The earliest time an unleased pending delivery of an enabled hook is due.
    async fn next_due(&self) -> Result<Option<i64>>;
    async fn pending_count(&self) -> Result<u64>;
    /// One page of a hook's deliveries, newest first, with their attempts.
    async fn deliveries(
        &self,
        domain: &str,
        hook_id: &str,
        status: Option<Status>,
        limit: u32,
        offset: u64,
    ) -> Result<Vec<DeliveryView>>;
    /// Queues a failed delivery of `domain` again, due at `now_ms`, with a fresh retry budget.
    async fn retry_delivery(&self, domain: &str, id: &str, now_ms: i64) -> Result<RetryOutcome>;
    /// Deletes delivered and failed deliveries last changed before `before_ms`, and event
    /// identities seen before `seen_before_ms`.
    async fn prune(&self, before_ms: i64, seen_before_ms: i64) -> Result<u64>;
}

/// The SQLite file a `sqlite:` URL names, when it does not exist yet: opening it creates it.
/// An in-memory database has no file.
pub fn missing_sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    (url.starts_with("sqlite:") && !in_memory).then(|| sqlite::file(url)).flatten().filter(|file| !file.exists())
}

/// Opens (and migrates) the store a URL names: `sqlite:<path>` or `postgres://…`.
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::open(url).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(postgres::open(url).await?))
    } else {
        Err(StoreError::BadUrl(url.to_owned()))
    }
}
