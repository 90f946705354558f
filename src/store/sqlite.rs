//! SQLite, the embedded default: one file in the data folder, WAL journal.

use std::str::FromStr;
use std::time::Duration;

use sqlx::Sqlite;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::sql::{Dialect, SqlStore};
use super::{HookChange, Result};

impl Dialect for Sqlite {
    const BACKEND: &'static str = "sqlite";
    const MIGRATIONS: &'static [(&'static str, &'static str)] = &[
        ("init", include_str!("migrations/0001_init.sql")),
        ("deliveries", include_str!("migrations/0002_deliveries.sql")),
    ];
    const WRITERS: usize = 1;
    const LEASE_LOCK: &'static str = "";

    fn rows_affected(result: &Self::QueryResult) -> u64 {
        result.rows_affected()
    }

    /// One SQLite file is one node: nobody else changes its hooks.
    const NOTIFY_HOOK: Option<&'static str> = None;

    fn hook_changes(_: &sqlx::Pool<Self>) -> Option<tokio::sync::mpsc::Receiver<HookChange>> {
        None
    }
}

pub async fn open(url: &str) -> Result<SqlStore<Sqlite>> {
    let options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // WAL + NORMAL is durable against process crashes; only a power loss can lose the
        // last transactions.
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(5))
        .foreign_keys(true)
        // The default checkpoint interval (1000 pages) is kept on purpose: a larger WAL grows
        // the mmapped -shm index, and growing it on a full disk is a SIGBUS, not an error.
        .pragma("temp_store", "memory")
        // A request of a few KB fits in one 8 KiB page instead of spilling into an overflow
        // page: about 8 % more webhooks/s (BENCHMARKS.md). Only a new database takes it.
        .page_size(8192);
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await?;
    let store = SqlStore { pool };
    store.migrate().await?;
    Ok(store)
}
