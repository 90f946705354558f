//! SQLite, the embedded default: one file in the data folder, WAL journal.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions as _, Sqlite};

use super::sql::{Dialect, SqlStore};
use super::{HookChange, Result};

impl Dialect for Sqlite {
    const BACKEND: &'static str = "sqlite";
    const MIGRATIONS: &'static [(&'static str, &'static str)] = &[
        ("init", include_str!("migrations/0001_init.sql")),
        ("deliveries", include_str!("migrations/0002_deliveries.sql")),
        ("compressed bodies", include_str!("migrations/0003_compressed_bodies.sql")),
    ];
    const WRITERS: usize = 1;
    // SQLite writes each page twice (to the WAL, then at a checkpoint). An 8.8 KB request
    // spills into an overflow page; compressed (about 3.6 KB) it fits in part of one: 40 % fewer
    // bytes written (BENCHMARKS.md, change 22).
    const COMPRESS_BODIES: bool = true;
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

/// How long a writer waits before trying the lock again, after `tries` tries; `None` once it
/// has waited 5 s (a little more, as sleeps overrun). SQLite's own busy timeout sleeps 1, 2,
/// 5 … 100 ms, so a writer often slept on long after the lock was free, and the cores idled
/// (BENCHMARKS.md, change 21).
fn lock_wait(tries: u32) -> Option<Duration> {
    (tries < 5_000).then(|| Duration::from_micros((50 * (u64::from(tries) + 1)).min(1_000)))
}

extern "C" fn busy(_: *mut std::ffi::c_void, tries: std::ffi::c_int) -> std::ffi::c_int {
    match lock_wait(u32::try_from(tries).unwrap_or(u32::MAX)) {
        Some(wait) => {
            std::thread::sleep(wait);
            1
        }
        None => 0,
    }
}

/// The database file a `sqlite:` URL names.
pub fn file(url: &str) -> Option<std::path::PathBuf> {
    SqliteConnectOptions::from_str(url).ok().map(|o| o.get_filename().to_owned())
}

pub async fn open(url: &str) -> Result<SqlStore<Sqlite>> {
    let options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // WAL + NORMAL is durable against process crashes; only a power loss can lose the
        // last transactions.
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        // The default checkpoint interval (1000 pages) is kept on purpose: a larger WAL grows
        // the mmapped -shm index, and growing it on a full disk is a SIGBUS, not an error.
        .pragma("temp_store", "memory")
        // A request of a few KB fits in one 8 KiB page instead of spilling into an overflow
        // page: about 8 % more webhooks/s (BENCHMARKS.md). Only a new database takes it.
        .page_size(8192)
        .log_slow_statements(log::LevelFilter::Debug, super::sql::SLOW);
    let file = options.get_filename().to_owned();
    let pool = SqlitePoolOptions::new()
        // Replaces the busy timeout sqlx sets on each new connection.
        .after_connect(|conn, _| {
            Box::pin(async move {
                let mut handle = conn.lock_handle().await?;
                // SAFETY: a valid, locked handle; `busy` keeps no state and cannot panic.
                let code = unsafe {
                    libsqlite3_sys::sqlite3_busy_handler(
                        handle.as_raw_handle().as_ptr(),
                        Some(busy),
                        std::ptr::null_mut(),
                    )
                };
                match code {
                    libsqlite3_sys::SQLITE_OK => Ok(()),
                    code => Err(sqlx::Error::Protocol(format!("cannot set SQLite's busy handler: error {code}"))),
                }
            })
        })
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await?;
    let store = SqlStore { pool };
    store.migrate().await?;
    if !(url.contains(":memory:") || url.contains("mode=memory")) {
        owner_only(&file);
    }
    Ok(store)
}

/// Makes the database and its WAL files readable by their owner only: they hold the token
/// secret (anyone who reads it can sign a root token) and every domain's hooks and events.
/// SQLite creates WAL files later with the database file's mode. A file this process may not
/// change (another owner's) is left as it is, with a warning, rather than stopping the start.
fn owner_only(db: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    for suffix in ["", "-wal", "-shm"] {
        let mut path = db.as_os_str().to_owned();
        path.push(suffix);
        match std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!(path = ?path, error = %e, "cannot make the database readable by its owner only");
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn a_waiting_writer_retries_at_least_every_millisecond_for_five_seconds() {
        let waits: Vec<Duration> = (0..).map_while(lock_wait).collect();
        assert!(waits.iter().all(|w| *w <= Duration::from_millis(1)));
        let total: Duration = waits.iter().sum();
        assert!(total > Duration::from_millis(4_900) && total < Duration::from_millis(5_100), "{total:?}");
    }

    #[tokio::test]
    async fn the_database_files_are_readable_by_their_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.db");
        let _store = open(&format!("sqlite://{}", db.display())).await.unwrap();
        for name in ["t.db", "t.db-wal", "t.db-shm"] {
            let mode = std::fs::metadata(dir.path().join(name)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{name}: {mode:o}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_writer_waits_for_the_lock_and_takes_it_as_soon_as_it_is_free() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&format!("sqlite://{}", dir.path().join("t.db").display())).await.unwrap();
        // Two connections open beforehand, so the waiter tries the lock at once.
        let (a, b) = (store.pool.acquire().await.unwrap(), store.pool.acquire().await.unwrap());
        drop((a, b));
        let mut holder = store.pool.begin().await.unwrap();
        sqlx::query("INSERT INTO meta (key, value) VALUES ('a', '1')").execute(&mut *holder).await.unwrap();
        let pool = store.pool.clone();
        let waiter = tokio::spawn(async move {
            sqlx::query("INSERT INTO meta (key, value) VALUES ('b', '2')").execute(&pool).await.map(|_| Instant::now())
        });
        // SQLite's own handler would be in a 100 ms sleep (328 to 428 ms, then 428 to 528 ms).
        tokio::time::sleep(Duration::from_millis(430)).await;
        assert!(!waiter.is_finished(), "the second writer waits while the first holds the lock");
        let freed = Instant::now();
        holder.commit().await.unwrap();
        let took = waiter.await.unwrap().expect("the second writer gets the lock").duration_since(freed);
        assert!(took < Duration::from_millis(75), "took the lock {took:?} after it was freed");
    }
}
