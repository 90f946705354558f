//! Persistence: the one [`Store`] trait and its SQLite and PostgreSQL implementations.
//!
//! SQL lives only under this folder. Both backends share [`sql::SqlStore`]; what differs
//! between them (connection setup, migrations) sits in `sqlite.rs` and `postgres.rs`.

mod postgres;
mod sql;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;

use crate::auth::Role;
use crate::hook::HookDoc;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database URL {0:?} is neither sqlite: nor postgres://")]
    BadUrl(String),
    /// The database cannot be reached (connection refused, pool timeout, I/O).
    #[error("store unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored hook {id} is unreadable: {source}")]
    CorruptHook {
        id: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("stored token {id} has unknown role {role:?}")]
    CorruptToken { id: String, role: String },
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        use sqlx::Error as E;
        match e {
            E::Io(_) | E::Tls(_) | E::PoolTimedOut | E::PoolClosed | E::WorkerCrashed => StoreError::Unavailable(e),
            other => StoreError::Database(other),
        }
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

/// A hook as stored: its id and validated document.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredHook {
    pub id: String,
    pub doc: HookDoc,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `"sqlite"` or `"postgres"`.
    fn backend(&self) -> &'static str;

    /// Succeeds when the database answers.
    async fn ping(&self) -> Result<()>;

    /// The token secret kept in the store: `candidate` is stored if none is yet, and the
    /// stored one is returned (so concurrent first starts agree).
    async fn token_secret(&self, candidate: &str) -> Result<String>;

    async fn insert_token(&self, token: &TokenRecord) -> Result<()>;
    async fn tokens(&self) -> Result<Vec<TokenRecord>>;
    /// Marks a token revoked; false when no such token exists.
    async fn revoke_token(&self, id: &str, now_ms: i64) -> Result<bool>;
    async fn token_revoked(&self, id: &str) -> Result<bool>;

    /// One page of a domain's hooks, in creation order.
    async fn hooks(&self, domain: &str, limit: u32, offset: u64) -> Result<Vec<StoredHook>>;
    async fn hook(&self, domain: &str, id: &str) -> Result<Option<StoredHook>>;
    async fn insert_hook(&self, hook: &StoredHook, now_ms: i64) -> Result<()>;
    /// Replaces the document of the hook with this id in its domain; false when not found.
    async fn update_hook(&self, hook: &StoredHook, now_ms: i64) -> Result<bool>;
    async fn delete_hook(&self, domain: &str, id: &str) -> Result<bool>;
    /// Every hook of every domain, for the in-memory index.
    async fn all_hooks(&self) -> Result<Vec<StoredHook>>;
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
