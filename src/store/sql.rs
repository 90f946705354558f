//! The store over any sqlx database: one implementation, SQL written in the subset SQLite and
//! PostgreSQL share (`$n` parameters, `ON CONFLICT`, `RETURNING`).

use std::time::{Duration, Instant};

use async_trait::async_trait;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{
    AssertSqlSafe, ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Row, SqlSafeStr, Type,
};

use super::{
    AttemptRecord, AttemptView, DeliveryView, Full, HookChange, LeasedDelivery, NewDelivery, Result, RetryOutcome,
    Revocation, Status, Store, StoreError, StoredHook, TokenRecord,
};
use crate::auth::Role;
use crate::hook::payload::Request;

/// Rows per multi-row statement: far below both backends' bind-parameter limits.
const CHUNK: usize = 500;

/// A store operation that takes longer than this is logged at warn, in one line.
pub(super) const SLOW: Duration = Duration::from_secs(1);

/// Logs its operation when dropped, if it took longer than [`SLOW`]: what it did, on how many
/// rows, and how long it took. sqlx's own slow-statement warning is lowered to debug (both
/// backends' connect options), as it logs the whole statement: for a multi-row one, tens of KB
/// of placeholders in every line while the disk is slow.
struct Timed {
    operation: &'static str,
    rows: usize,
    started: Instant,
}

impl Timed {
    fn start(operation: &'static str, rows: usize) -> Timed {
        Timed { operation, rows, started: Instant::now() }
    }
}

impl Drop for Timed {
    fn drop(&mut self) {
        let took = self.started.elapsed();
        if took > SLOW {
            let took_ms = took.as_millis() as u64;
            tracing::warn!(operation = self.operation, rows = self.rows, took_ms, "a store operation was slow");
        }
    }
}

/// The lease statement: due, unleased rows, oldest first, of hooks that are not disabled and not
/// among the `hooks` full hooks (`$5…`), of domains not among the `domains` full ones (after
/// them); a row of an ordered hook only when no earlier event of its call is still pending and
/// none of its call is in flight (leased). "Earlier" is a total order, so no two rows can each
/// wait for the other: by `Event-Sequence` where both rows have one, rows with one before rows
/// without, and otherwise by id (a UUIDv7, so in the order the events came). `lock` is the
/// backend's row-locking clause for the inner SELECT.
fn lease_sql(lock: &str, hooks: usize, domains: usize) -> String {
    let not_in = |column: &str, first: usize, n: usize| {
        if n == 0 {
            return String::new();
        }
        let params: Vec<String> = (first..first + n).map(|i| format!("${i}")).collect();
        format!(" AND {column} NOT IN ({})", params.join(", "))
    };
    let not_in = not_in("hook_id", 5, hooks) + &not_in("domain", 5 + hooks, domains);
    format!(
        "UPDATE deliveries SET lease_until = $1, lease_owner = $2 WHERE id IN (\
         SELECT id FROM deliveries d WHERE status = 'pending' AND next_at <= $3 \
         AND (lease_until IS NULL OR lease_until < $3){not_in} \
         AND NOT EXISTS (SELECT 1 FROM hooks h WHERE h.id = d.hook_id AND NOT h.enabled) \
         AND (order_key IS NULL OR NOT EXISTS (SELECT 1 FROM deliveries p WHERE p.hook_id = d.hook_id \
         AND p.order_key = d.order_key AND p.status = 'pending' \
         AND (p.order_seq < d.order_seq OR (p.order_seq IS NOT NULL AND d.order_seq IS NULL) \
         OR ((p.order_seq = d.order_seq OR (p.order_seq IS NULL AND d.order_seq IS NULL)) AND p.id < d.id) \
         OR (p.id <> d.id AND p.lease_until >= $3)))) \
         ORDER BY next_at LIMIT $4 {lock}) \
         RETURNING id, hook_id, attempts, retry_from, next_at"
    )
}

/// The ids of deliveries whose event (by `event_key`) another reader already took. The
/// identities are recorded in the caller's transaction, so of two nodes committing the same
/// event, exactly one queues its deliveries.
async fn already_seen<DB>(tx: &mut sqlx::Transaction<'static, DB>, deliveries: &[NewDelivery]) -> Result<Vec<String>>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> String: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
    for<'a> i64: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    let mut keys: Vec<&(String, i64)> = deliveries.iter().filter_map(|d| d.event_key.as_ref()).collect();
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    keys.sort();
    keys.dedup();
    let now = crate::auth::now_ms();
    let mut new = std::collections::HashSet::new();
    for chunk in keys.chunks(CHUNK) {
        let mut insert = sqlx::QueryBuilder::<DB>::new("INSERT INTO seen_events (core_uuid, sequence, seen_at) ");
        insert.push_values(chunk, |mut row, (core, seq)| {
            row.push_bind(key(core)).push_bind(*seq).push_bind(now);
        });
        insert.push(" ON CONFLICT (core_uuid, sequence) DO NOTHING RETURNING core_uuid, sequence");
        for row in insert.build().persistent(false).fetch_all(&mut **tx).await? {
            new.insert((row.try_get::<String, _>(0)?, row.try_get::<i64, _>(1)?));
        }
    }
    Ok(deliveries
        .iter()
        .filter(|d| d.event_key.as_ref().is_some_and(|(core, seq)| !new.contains(&(key(core), *seq))))
        .map(|d| d.id.clone())
        .collect())
}

/// Adds attempts to the delivery log; one already there (a record written twice) is kept.
async fn insert_attempts<'a, DB>(
    tx: &mut sqlx::Transaction<'static, DB>,
    attempts: impl Iterator<Item = &'a AttemptRecord>,
) -> Result<()>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'b> String: Encode<'b, DB> + Type<DB>,
    for<'b> Option<String>: Encode<'b, DB> + Type<DB>,
    for<'b> i64: Encode<'b, DB> + Type<DB>,
    for<'b> Option<i64>: Encode<'b, DB> + Type<DB>,
{
    let attempts: Vec<&AttemptRecord> = attempts.collect();
    for chunk in attempts.chunks(CHUNK) {
        let mut insert = sqlx::QueryBuilder::<DB>::new(
            "INSERT INTO attempts (delivery_id, n, at, status_code, duration_ms, error, response) ",
        );
        insert.push_values(chunk, |mut row, a| {
            row.push_bind(a.delivery_id.clone())
                .push_bind(i64::from(a.n))
                .push_bind(a.at_ms)
                .push_bind(a.status_code.map(i64::from))
                .push_bind(i64::from(a.duration_ms))
                .push_bind(a.error.as_deref().map(clean))
                .push_bind(a.response.as_deref().map(clean));
        });
        insert.push(" ON CONFLICT (delivery_id, n) DO NOTHING");
        insert.build().persistent(false).execute(&mut **tx).await?;
    }
    Ok(())
}

/// Fails deliveries whose stored request cannot be read, each with its `error`. Only rows
/// still pending and leased to `owner`: an attempt whose lease ran out may have delivered one
/// meanwhile (and deleted its request), and that outcome stands.
async fn fail_unreadable<DB>(pool: &Pool<DB>, owner: &str, attempts: &[AttemptRecord]) -> Result<()>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> String: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
    for<'a> Option<String>: Encode<'a, DB> + Type<DB>,
    for<'a> i64: Encode<'a, DB> + Type<DB>,
    for<'a> Option<i64>: Encode<'a, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    let now = crate::auth::now_ms();
    let mut tx = pool.begin().await?;
    let mut update = sqlx::QueryBuilder::<DB>::new(
        "UPDATE deliveries SET status = 'failed', attempts = attempts + 1, lease_until = NULL, lease_owner = NULL, \
         next_at = ",
    );
    update.push_bind(now).push(", updated_at = ").push_bind(now);
    update.push(" WHERE status = 'pending' AND lease_owner = ").push_bind(owner.to_owned()).push(" AND id IN (");
    push_ids(&mut update, attempts.iter().map(|a| a.delivery_id.as_str()));
    update.push(" RETURNING id");
    let failed: std::collections::HashSet<String> = update
        .build()
        .persistent(false)
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<std::result::Result<_, _>>()?;
    insert_attempts::<DB>(&mut tx, attempts.iter().filter(|a| failed.contains(&a.delivery_id))).await?;
    tx.commit().await?;
    Ok(())
}

/// Runs `sql`, which ends in `IN (`, over `ids`.
async fn delete_ids<'i, DB>(
    tx: &mut sqlx::Transaction<'static, DB>,
    sql: &str,
    ids: impl Iterator<Item = &'i str>,
) -> Result<()>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> String: Encode<'a, DB> + Type<DB>,
{
    let mut delete = sqlx::QueryBuilder::<DB>::new(sql);
    push_ids(&mut delete, ids);
    delete.build().persistent(false).execute(&mut **tx).await?;
    Ok(())
}

/// Ends a statement written up to `IN (` with `ids`, each bound, and the closing parenthesis.
fn push_ids<'i, DB>(query: &mut sqlx::QueryBuilder<DB>, ids: impl IntoIterator<Item = &'i str>)
where
    DB: Dialect,
    for<'a> String: Encode<'a, DB> + Type<DB>,
{
    let mut list = query.separated(", ");
    for id in ids {
        list.push_bind(id.to_owned());
    }
    query.push(")");
}

/// Text as both backends can store it: PostgreSQL refuses NUL in TEXT, and response bodies,
/// error texts and event headers can carry one.
fn clean(text: &str) -> String {
    text.replace('\0', "\u{fffd}")
}

/// The longest event header kept as it is in an indexed column (a call's `Unique-ID`, an event
/// socket's `Core-UUID`); FreeSWITCH's are 36 bytes.
const MAX_KEY: usize = 256;

/// An event header as an indexed column holds it: [`clean`], or past [`MAX_KEY`] bytes its
/// SHA-256, which keeps equal keys equal. Publishers over HTTP and RabbitMQ may send any text,
/// and PostgreSQL refuses an index entry over about 2.7 KB: one such key failed every commit of
/// its batch, and a RabbitMQ source retried that batch for ever.
fn key(text: &str) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    if text.len() <= MAX_KEY {
        return clean(text);
    }
    format!("sha256:{}", base64::engine::general_purpose::STANDARD_NO_PAD.encode(sha2::Sha256::digest(text)))
}

/// What differs between backends, beyond the SQL they share.
pub trait Dialect: Database + sqlx::database::HasStatementCache {
    const BACKEND: &'static str;
    /// Migration scripts, in order; each backend has its own copy of the schema.
    const MIGRATIONS: &'static [(&'static str, &'static str)];
    /// See [`Store::writers`].
    const WRITERS: usize;
    /// Whether the service compresses request bodies itself (into `body_lz4`, see [`compress`])
    /// instead of storing their text in `body`.
    const COMPRESS_BODIES: bool;
    /// Row-locking clause of the lease query's inner SELECT (see [`lease_sql`]).
    const LEASE_LOCK: &'static str;
    /// Rows a statement touched; each backend's result type reports it its own way.
    fn rows_affected(result: &Self::QueryResult) -> u64;
    /// Tells other nodes a hook changed (`$1` = its id), where the backend can.
    const NOTIFY_HOOK: Option<&'static str>;
    /// Hook changes other nodes report (see [`Store::hook_changes`]).
    fn hook_changes(pool: &Pool<Self>) -> Option<tokio::sync::mpsc::Receiver<HookChange>>;
}

pub struct SqlStore<DB: Database> {
    pub(super) pool: Pool<DB>,
}

impl<DB> SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> String: Encode<'a, DB> + Type<DB>,
{
    /// Tells the other nodes that hook `id` changed. A failure only delays them (they resync
    /// when their listening connection comes back), so it is logged, not returned.
    async fn notify_hook(&self, id: &str) {
        if let Some(sql) = DB::NOTIFY_HOOK {
            if let Err(e) = sqlx::query(sql).bind(id.to_owned()).execute(&self.pool).await {
                tracing::warn!(error = %e, hook = %id, "cannot tell other nodes about a hook change");
            }
        }
    }
}

impl<DB> SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    <DB as Database>::Connection: sqlx::migrate::Migrate,
{
    /// Applies the backend's migrations that are not applied yet.
    pub async fn migrate(&self) -> Result<()> {
        let migrations = DB::MIGRATIONS
            .iter()
            .enumerate()
            .map(|(i, (name, sql))| {
                Migration::new(i as i64 + 1, (*name).into(), MigrationType::Simple, sql.into_sql_str(), false)
            })
            .collect();
        match Migrator::with_migrations(migrations).run(&self.pool).await {
            Ok(()) => Ok(()),
            // An applied migration this build does not have: a newer build's.
            Err(sqlx::migrate::MigrateError::VersionMissing(found)) => {
                Err(StoreError::SchemaTooNew { found, known: DB::MIGRATIONS.len() as i64 })
            }
            Err(e) => Err(e.into()),
        }
    }
}

fn role_of(id: &str, role: String) -> Result<Role> {
    Role::parse(&role).ok_or_else(|| StoreError::CorruptToken { id: id.to_owned(), role })
}

fn hook_of(id: String, doc: &str) -> Result<StoredHook> {
    match serde_json::from_str(doc) {
        Ok(doc) => Ok(StoredHook { id, doc }),
        Err(source) => Err(StoreError::CorruptHook { id, source }),
    }
}

fn corrupt(id: &str, problem: impl ToString) -> StoreError {
    StoreError::CorruptDelivery { id: id.to_owned(), problem: problem.to_string() }
}

fn count(n: i64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// A request body as stored on SQLite: one lz4 block, its length first (little-endian u32).
/// Public for the benchmarks.
#[doc(hidden)]
pub fn compress(body: &str) -> Vec<u8> {
    lz4_flex::compress_prepend_size(body.as_bytes())
}

/// The text of a body from [`compress`]. A damaged one is a corrupt delivery (named by `id`),
/// never a panic or a huge allocation.
#[doc(hidden)]
pub fn decompress(id: &str, packed: &[u8]) -> Result<String> {
    let (size, block) = packed.split_first_chunk::<4>().ok_or_else(|| corrupt(id, "its body is truncated"))?;
    let size = u32::from_le_bytes(*size) as usize;
    // lz4 expands at most 255 times: a larger size is corrupt, not worth allocating.
    if size > block.len().saturating_mul(255) {
        return Err(corrupt(id, format!("its body claims {size} bytes from {} compressed", block.len())));
    }
    let bytes = lz4_flex::decompress(block, size).map_err(|e| corrupt(id, format!("its body: {e}")))?;
    if bytes.len() != size {
        return Err(corrupt(id, format!("its body claims {size} bytes and holds {}", bytes.len())));
    }
    String::from_utf8(bytes).map_err(|e| corrupt(id, format!("its body: {e}")))
}

/// The body of a stored request: `body_lz4` if the row has one, else `body` (PostgreSQL, and
/// SQLite rows written before requests were compressed).
fn body_of(id: &str, body: String, body_lz4: Option<Vec<u8>>) -> Result<String> {
    body_lz4.map_or(Ok(body), |packed| decompress(id, &packed))
}

fn request_of(id: &str, method: &str, url: String, headers: &str, body: String) -> Result<Request> {
    Ok(Request {
        method: method.parse().map_err(|_| corrupt(id, format!("method {method:?}")))?,
        url,
        headers: serde_json::from_str(headers).map_err(|e| corrupt(id, e))?,
        body,
    })
}

fn doc_text(hook: &StoredHook) -> String {
    serde_json::to_string(&hook.doc).expect("a hook serializes")
}

#[async_trait]
impl<DB> Store for SqlStore<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> String: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
    for<'a> Option<String>: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
    for<'a> i64: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
    for<'a> Option<i64>: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
    for<'a> bool: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
    for<'a> Option<Vec<u8>>: Encode<'a, DB> + Decode<'a, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    fn backend(&self) -> &'static str {
        DB::BACKEND
    }

    fn writers(&self) -> usize {
        DB::WRITERS
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn token_secret(&self, candidate: &str) -> Result<String> {
        sqlx::query("INSERT INTO meta (key, value) VALUES ('token_secret', $1) ON CONFLICT (key) DO NOTHING")
            .bind(candidate.to_owned())
            .execute(&self.pool)
            .await?;
        let row = sqlx::query("SELECT value FROM meta WHERE key = 'token_secret'").fetch_one(&self.pool).await?;
        Ok(row.try_get(0)?)
    }

    async fn meta(&self, key: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT value FROM meta WHERE key = $1")
            .bind(key.to_owned())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    async fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = $2")
            .bind(key.to_owned())
            .bind(value.to_owned())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn insert_token(&self, t: &TokenRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO tokens (id, role, domain, created_at, expires_at, revoked_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(t.id.clone())
        .bind(t.role.as_str().to_owned())
        .bind(t.domain.clone())
        .bind(t.created_at_ms)
        .bind(t.expires_at_ms)
        .bind(t.revoked_at_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn tokens(&self) -> Result<Vec<TokenRecord>> {
        let rows = sqlx::query(
            "SELECT id, role, domain, created_at, expires_at, revoked_at FROM tokens ORDER BY created_at, id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                let id: String = row.try_get(0)?;
                Ok(TokenRecord {
                    role: role_of(&id, row.try_get(1)?)?,
                    domain: row.try_get(2)?,
                    created_at_ms: row.try_get(3)?,
                    expires_at_ms: row.try_get(4)?,
                    revoked_at_ms: row.try_get(5)?,
                    id,
                })
            })
            .collect()
    }

    async fn revoke_token(&self, id: &str, now_ms: i64) -> Result<Revocation> {
        let done = sqlx::query("UPDATE tokens SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
            .bind(id.to_owned())
            .bind(now_ms)
            .execute(&self.pool)
            .await?;
        if DB::rows_affected(&done) > 0 {
            return Ok(Revocation::Revoked);
        }
        // Tokens are never un-revoked or deleted: one the update passed over was revoked before.
        Ok(match self.token_revoked_at(id).await? {
            Some(at_ms) => Revocation::AlreadyRevoked { at_ms },
            None => Revocation::NotFound,
        })
    }

    async fn token_revoked_at(&self, id: &str) -> Result<Option<i64>> {
        let row = sqlx::query("SELECT revoked_at FROM tokens WHERE id = $1")
            .bind(id.to_owned())
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(row) => row.try_get::<Option<i64>, _>(0)?,
            None => None,
        })
    }

    async fn hooks(&self, domain: &str, limit: u32, offset: u64) -> Result<Vec<StoredHook>> {
        let rows =
            sqlx::query("SELECT id, doc FROM hooks WHERE domain = $1 ORDER BY created_at, id LIMIT $2 OFFSET $3")
                .bind(domain.to_owned())
                .bind(i64::from(limit))
                .bind(i64::try_from(offset).unwrap_or(i64::MAX))
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter().map(|row| hook_of(row.try_get(0)?, &row.try_get::<String, _>(1)?)).collect()
    }

    async fn hook(&self, domain: &str, id: &str) -> Result<Option<StoredHook>> {
        let row = sqlx::query("SELECT id, doc FROM hooks WHERE domain = $1 AND id = $2")
            .bind(domain.to_owned())
            .bind(id.to_owned())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| hook_of(row.try_get(0)?, &row.try_get::<String, _>(1)?)).transpose()
    }

    async fn count_hooks(&self, domain: &str) -> Result<usize> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM hooks WHERE domain = $1")
            .bind(domain.to_owned())
            .fetch_one(&self.pool)
            .await?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    async fn insert_hook(&self, hook: &StoredHook, now_ms: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO hooks (id, domain, event, enabled, doc, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $6)",
        )
        .bind(hook.id.clone())
        .bind(hook.doc.domain.clone())
        .bind(hook.doc.event.clone())
        .bind(hook.doc.enable)
        .bind(doc_text(hook))
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        self.notify_hook(&hook.id).await;
        Ok(())
    }

    async fn update_hook(&self, hook: &StoredHook, now_ms: i64) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE hooks SET event = $3, enabled = $4, doc = $5, updated_at = $6 \
             WHERE id = $1 AND domain = $2",
        )
        .bind(hook.id.clone())
        .bind(hook.doc.domain.clone())
        .bind(hook.doc.event.clone())
        .bind(hook.doc.enable)
        .bind(doc_text(hook))
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        self.notify_hook(&hook.id).await;
        Ok(DB::rows_affected(&done) > 0)
    }

    async fn delete_hook(&self, domain: &str, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM hooks WHERE id = $1 AND domain = $2")
            .bind(id.to_owned())
            .bind(domain.to_owned())
            .execute(&self.pool)
            .await?;
        self.notify_hook(id).await;
        Ok(DB::rows_affected(&done) > 0)
    }

    async fn hook_by_id(&self, id: &str) -> Result<Option<StoredHook>> {
        let row = sqlx::query("SELECT id, doc FROM hooks WHERE id = $1")
            .bind(id.to_owned())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| hook_of(row.try_get(0)?, &row.try_get::<String, _>(1)?)).transpose()
    }

    fn hook_changes(&self) -> Option<tokio::sync::mpsc::Receiver<HookChange>> {
        DB::hook_changes(&self.pool)
    }

    async fn all_hooks(&self) -> Result<Vec<StoredHook>> {
        let rows = sqlx::query("SELECT id, doc FROM hooks ORDER BY created_at, id").fetch_all(&self.pool).await?;
        rows.into_iter().map(|row| hook_of(row.try_get(0)?, &row.try_get::<String, _>(1)?)).collect()
    }

    async fn enqueue(&self, deliveries: &[NewDelivery], owner: &str) -> Result<Vec<String>> {
        let _timed = Timed::start("store new deliveries", deliveries.len());
        let mut tx = self.pool.begin().await?;
        let skipped = already_seen::<DB>(&mut tx, deliveries).await?;
        let fresh: Vec<&NewDelivery> = deliveries.iter().filter(|d| !skipped.contains(&d.id)).collect();
        for chunk in fresh.chunks(CHUNK) {
            let mut insert = sqlx::QueryBuilder::<DB>::new(
                "INSERT INTO deliveries (id, hook_id, domain, event_name, order_key, order_seq, status, next_at, \
                 created_at, updated_at, lease_until, lease_owner) ",
            );
            insert.push_values(chunk, |mut row, d| {
                row.push_bind(d.id.clone())
                    .push_bind(d.hook_id.clone())
                    .push_bind(d.domain.clone())
                    .push_bind(d.event_name.clone())
                    .push_bind(d.order_key.as_deref().map(key))
                    .push_bind(d.order_seq)
                    .push_bind(Status::Pending.as_str().to_owned())
                    .push_bind(d.created_at_ms)
                    .push_bind(d.created_at_ms)
                    .push_bind(d.created_at_ms)
                    .push_bind(d.lease_until_ms)
                    .push_bind(d.lease_until_ms.map(|_| owner.to_owned()));
            });
            insert.build().persistent(false).execute(&mut *tx).await?;
            let mut payloads = sqlx::QueryBuilder::<DB>::new(
                "INSERT INTO delivery_payloads (id, method, url, headers, body, body_lz4, event) ",
            );
            payloads.push_values(chunk, |mut row, d| {
                let headers = serde_json::to_string(&d.request.headers).expect("headers serialize");
                let (body, body_lz4) = if DB::COMPRESS_BODIES {
                    (String::new(), Some(compress(&d.request.body)))
                } else {
                    (d.request.body.clone(), None)
                };
                row.push_bind(d.id.clone())
                    .push_bind(d.request.method.as_str().to_owned())
                    .push_bind(d.request.url.clone())
                    .push_bind(headers)
                    .push_bind(body)
                    .push_bind(body_lz4)
                    .push_bind(d.event.clone());
            });
            payloads.build().persistent(false).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(skipped)
    }

    async fn lease(
        &self,
        owner: &str,
        now_ms: i64,
        lease_until_ms: i64,
        limit: u32,
        full: &Full,
    ) -> Result<Vec<LeasedDelivery>> {
        // `rows` is the most this lease may take.
        let _timed = Timed::start("lease deliveries", limit as usize);
        let sql = lease_sql(DB::LEASE_LOCK, full.hooks.len(), full.domains.len());
        let mut query = sqlx::query(AssertSqlSafe(sql))
            .bind(lease_until_ms)
            .bind(owner.to_owned())
            .bind(now_ms)
            .bind(i64::from(limit));
        for value in full.hooks.iter().chain(&full.domains) {
            query = query.bind(value.clone());
        }
        let rows = query.fetch_all(&self.pool).await?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let mut states = Vec::with_capacity(rows.len());
        for row in rows {
            let id: String = row.try_get(0)?;
            states.push((
                id,
                row.try_get::<String, _>(1)?,
                count(row.try_get(2)?),
                count(row.try_get(3)?),
                row.try_get::<i64, _>(4)?,
            ));
        }
        let mut select = sqlx::QueryBuilder::<DB>::new(
            "SELECT id, method, url, headers, body, body_lz4, event FROM delivery_payloads WHERE id IN (",
        );
        push_ids(&mut select, states.iter().map(|(id, ..)| id.as_str()));
        let read = |id: &str, row: &DB::Row| -> Result<(Request, Option<String>)> {
            let body = body_of(id, row.try_get(4)?, row.try_get(5)?)?;
            let request =
                request_of(id, &row.try_get::<String, _>(1)?, row.try_get(2)?, &row.try_get::<String, _>(3)?, body)?;
            Ok((request, row.try_get(6)?))
        };
        let mut payloads = std::collections::HashMap::new();
        for row in select.build().persistent(false).fetch_all(&self.pool).await? {
            let id: String = row.try_get(0)?;
            let payload = read(&id, &row);
            payloads.insert(id, payload);
        }
        // A request that cannot be read fails its delivery at once. Left leased, it would come
        // back first in every lease and hold up the rows leased with it.
        let now = crate::auth::now_ms();
        let mut leased = Vec::with_capacity(states.len());
        let mut unreadable = Vec::new();
        for (id, hook_id, attempts, retry_from, next_at_ms) in states {
            match payloads.remove(&id).unwrap_or_else(|| Err(corrupt(&id, "its request is missing"))) {
                Ok((request, event)) => leased.push(LeasedDelivery {
                    id,
                    hook_id,
                    attempts,
                    retry_from,
                    next_at_ms,
                    lease_until_ms,
                    request,
                    event,
                }),
                Err(e) => {
                    tracing::warn!(
                        delivery = %id,
                        error = %e,
                        "a stored request is unreadable; its delivery fails unless it was sent meanwhile"
                    );
                    unreadable.push(AttemptRecord {
                        delivery_id: id,
                        n: attempts.saturating_add(1),
                        at_ms: now,
                        status_code: None,
                        duration_ms: 0,
                        error: Some(e.to_string()),
                        response: None,
                        status: Status::Failed,
                        next_at_ms: now,
                        counted: true,
                    });
                }
            }
        }
        if !unreadable.is_empty() {
            // The readable rows are leased already: they go out whatever happens here.
            if let Err(e) = fail_unreadable::<DB>(&self.pool, owner, &unreadable).await {
                tracing::warn!(error = %e, "cannot fail deliveries with unreadable requests; a later lease will");
            }
        }
        leased.sort_by_key(|d| d.next_at_ms);
        Ok(leased)
    }

    async fn record(&self, owner: &str, attempts: &[AttemptRecord]) -> Result<()> {
        let _timed = Timed::start("record attempts", attempts.len());
        let mut tx = self.pool.begin().await?;
        // An interrupted attempt of a delivery another node has leased since is left out of the
        // log: that node's own attempt has the same number. Only a batch with interrupted
        // attempts (at shutdown) asks which deliveries are still this node's: returning the
        // rows costs every other batch about 2 % more instructions.
        let interrupted = attempts.iter().any(|a| !a.counted);
        let mut ours = std::collections::HashSet::new();
        for chunk in attempts.chunks(CHUNK) {
            let mut update =
                sqlx::QueryBuilder::<DB>::new("WITH v (id, status, attempts, next_at, updated_at, uncounted) AS (");
            update.push_values(chunk, |mut row, a| {
                row.push_bind(a.delivery_id.clone())
                    .push_bind(a.status.as_str().to_owned())
                    .push_bind(i64::from(a.n))
                    .push_bind(a.next_at_ms)
                    .push_bind(a.at_ms)
                    .push_bind(i64::from(!a.counted));
            });
            // An attempt that is not counted moves the start of the retry budget with it.
            update.push(
                ") UPDATE deliveries SET status = v.status, attempts = v.attempts, next_at = v.next_at, \
                 updated_at = v.updated_at, retry_from = retry_from + v.uncounted, lease_until = NULL, \
                 lease_owner = NULL FROM v \
                 WHERE deliveries.id = v.id AND deliveries.lease_owner = ",
            );
            update.push_bind(owner.to_owned());
            if interrupted {
                update.push(" RETURNING deliveries.id");
                for row in update.build().persistent(false).fetch_all(&mut *tx).await? {
                    ours.insert(row.try_get::<String, _>(0)?);
                }
            } else {
                update.build().persistent(false).execute(&mut *tx).await?;
            }
        }
        insert_attempts::<DB>(&mut tx, attempts.iter().filter(|a| a.counted || ours.contains(&a.delivery_id))).await?;
        // A delivered request is not needed again (only failed ones can be retried by hand);
        // one whose delivery another node holds now may be.
        let delivered: Vec<&AttemptRecord> = attempts.iter().filter(|a| a.status == Status::Delivered).collect();
        for chunk in delivered.chunks(CHUNK) {
            let ids = chunk.iter().map(|a| a.delivery_id.as_str());
            let sql = "DELETE FROM delivery_payloads WHERE EXISTS (SELECT 1 FROM deliveries d \
                       WHERE d.id = delivery_payloads.id AND d.status = 'delivered') AND id IN (";
            delete_ids::<DB>(&mut tx, sql, ids).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn release(&self, owner: &str, ids: &[String]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let _timed = Timed::start("release leases", ids.len());
        let mut update = sqlx::QueryBuilder::<DB>::new(
            "UPDATE deliveries SET lease_until = NULL, lease_owner = NULL WHERE lease_owner = ",
        );
        update.push_bind(owner.to_owned()).push(" AND id IN (");
        push_ids(&mut update, ids.iter().map(String::as_str));
        update.build().persistent(false).execute(&self.pool).await?;
        Ok(())
    }

    async fn renew_leases(&self, owner: &str, ids: &[String], lease_until_ms: i64) -> Result<u64> {
        let _timed = Timed::start("renew leases", ids.len());
        let mut renewed = 0;
        // Bind parameters are limited (32,766 on SQLite); concurrency is not.
        for ids in ids.chunks(1000) {
            let mut update = sqlx::QueryBuilder::<DB>::new("UPDATE deliveries SET lease_until = ");
            update.push_bind(lease_until_ms).push(" WHERE status = 'pending' AND lease_owner = ");
            update.push_bind(owner.to_owned()).push(" AND id IN (");
            push_ids(&mut update, ids.iter().map(String::as_str));
            renewed += DB::rows_affected(&update.build().persistent(false).execute(&self.pool).await?);
        }
        Ok(renewed)
    }

    async fn release_leases(&self, owner: &str) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE deliveries SET lease_until = NULL, lease_owner = NULL WHERE lease_owner = $1 AND status = 'pending'",
        )
        .bind(owner.to_owned())
        .execute(&self.pool)
        .await?;
        Ok(DB::rows_affected(&done))
    }

    async fn next_due(&self) -> Result<Option<i64>> {
        // A disabled hook's deliveries wait for it to be enabled, not for their time. Read in
        // `deliveries_due` order, it stops at the first row that qualifies; it walks over the
        // leased rows and a disabled hook's backlog due before it.
        let row = sqlx::query(
            "SELECT next_at FROM deliveries d WHERE status = 'pending' AND lease_until IS NULL \
             AND NOT EXISTS (SELECT 1 FROM hooks h WHERE h.id = d.hook_id AND NOT h.enabled) \
             ORDER BY next_at LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|row| row.try_get(0)).transpose()?)
    }

    async fn pending_count(&self) -> Result<u64> {
        let row = sqlx::query("SELECT COUNT(*) FROM deliveries WHERE status = 'pending'").fetch_one(&self.pool).await?;
        Ok(row.try_get::<i64, _>(0)?.max(0) as u64)
    }

    async fn deliveries(
        &self,
        domain: &str,
        hook_id: &str,
        status: Option<Status>,
        limit: u32,
        offset: u64,
    ) -> Result<Vec<DeliveryView>> {
        let rows = sqlx::query(
            "SELECT id, hook_id, event_name, status, attempts, next_at, created_at, updated_at FROM deliveries \
             WHERE domain = $1 AND hook_id = $2 AND (CAST($3 AS TEXT) IS NULL OR status = $3) \
             ORDER BY created_at DESC, id DESC LIMIT $4 OFFSET $5",
        )
        .bind(domain.to_owned())
        .bind(hook_id.to_owned())
        .bind(status.map(|s| s.as_str().to_owned()))
        .bind(i64::from(limit))
        .bind(i64::try_from(offset).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        let mut views = rows
            .into_iter()
            .map(|row| {
                let id: String = row.try_get(0)?;
                let status_text: String = row.try_get(3)?;
                let status =
                    Status::parse(&status_text).ok_or_else(|| corrupt(&id, format!("status {status_text:?}")))?;
                Ok(DeliveryView {
                    hook_id: row.try_get(1)?,
                    event: row.try_get(2)?,
                    status,
                    attempts: count(row.try_get(4)?),
                    next_attempt_at: (status == Status::Pending).then(|| row.try_get(5)).transpose()?,
                    created_at: row.try_get(6)?,
                    updated_at: row.try_get(7)?,
                    log: Vec::new(),
                    id,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if views.is_empty() {
            return Ok(views);
        }
        // A page may hold more deliveries than a statement takes parameters (`limit` is any
        // whole number), so their attempts are read a chunk of ids at a time.
        let place: std::collections::HashMap<String, usize> =
            views.iter().enumerate().map(|(i, v)| (v.id.clone(), i)).collect();
        for chunk in views.iter().map(|v| v.id.clone()).collect::<Vec<_>>().chunks(CHUNK) {
            let mut select = sqlx::QueryBuilder::<DB>::new(
                "SELECT delivery_id, at, status_code, duration_ms, error, response FROM attempts WHERE delivery_id IN (",
            );
            push_ids(&mut select, chunk.iter().map(String::as_str));
            select.push(" ORDER BY delivery_id, n");
            for row in select.build().persistent(false).fetch_all(&self.pool).await? {
                let id: String = row.try_get(0)?;
                let attempt = AttemptView {
                    at: row.try_get(1)?,
                    status_code: row.try_get::<Option<i64>, _>(2)?.and_then(|c| u16::try_from(c).ok()),
                    duration_ms: count(row.try_get(3)?),
                    error: row.try_get(4)?,
                    response: row.try_get(5)?,
                };
                if let Some(&i) = place.get(&id) {
                    views[i].log.push(attempt);
                }
            }
        }
        Ok(views)
    }

    async fn retry_delivery(&self, domain: &str, id: &str, now_ms: i64) -> Result<RetryOutcome> {
        let done = sqlx::query(
            "UPDATE deliveries SET status = 'pending', next_at = $3, updated_at = $3, retry_from = attempts, \
             lease_until = NULL, lease_owner = NULL WHERE id = $1 AND domain = $2 AND status = 'failed' \
             AND EXISTS (SELECT 1 FROM hooks h WHERE h.id = deliveries.hook_id AND h.domain = $2)",
        )
        .bind(id.to_owned())
        .bind(domain.to_owned())
        .bind(now_ms)
        .execute(&self.pool)
        .await?;
        if DB::rows_affected(&done) > 0 {
            return Ok(RetryOutcome::Queued);
        }
        let row = sqlx::query(
            "SELECT status, (SELECT COUNT(*) FROM hooks h WHERE h.id = d.hook_id AND h.domain = $2) \
             FROM deliveries d WHERE id = $1 AND domain = $2",
        )
        .bind(id.to_owned())
        .bind(domain.to_owned())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(RetryOutcome::NotFound) };
        let (status, hooks): (String, i64) = (row.try_get(0)?, row.try_get(1)?);
        Ok(match Status::parse(&status).ok_or_else(|| corrupt(id, format!("status {status:?}")))? {
            Status::Failed if hooks == 0 => RetryOutcome::HookDeleted,
            status => RetryOutcome::NotFailed(status),
        })
    }

    /// Deletes finished deliveries with their attempts and requests, a chunk per transaction.
    /// The rows of a delivery are deleted here, not by foreign keys: PostgreSQL has none (see
    /// its migration `postgres_0004`); on SQLite the cascade has already done it.
    async fn prune(&self, before_ms: i64, seen_before_ms: i64) -> Result<u64> {
        let mut pruned = 0;
        loop {
            let mut tx = self.pool.begin().await?;
            // The condition is repeated outside the subquery: PostgreSQL checks that one again
            // on a row another transaction changed meanwhile, so a failed delivery retried by
            // hand since the subquery read it stays.
            let ids: Vec<String> = sqlx::query_scalar(
                "DELETE FROM deliveries WHERE status <> 'pending' AND updated_at < $1 AND id IN (\
                 SELECT id FROM deliveries WHERE status <> 'pending' AND updated_at < $1 LIMIT $2) RETURNING id",
            )
            .bind(before_ms)
            .bind(CHUNK as i64)
            .fetch_all(&mut *tx)
            .await?;
            if !ids.is_empty() {
                for table in
                    ["DELETE FROM attempts WHERE delivery_id IN (", "DELETE FROM delivery_payloads WHERE id IN ("]
                {
                    delete_ids::<DB>(&mut tx, table, ids.iter().map(String::as_str)).await?;
                }
            }
            tx.commit().await?;
            pruned += ids.len() as u64;
            if ids.len() < CHUNK {
                break;
            }
        }
        sqlx::query("DELETE FROM seen_events WHERE seen_at < $1").bind(seen_before_ms).execute(&self.pool).await?;
        Ok(pruned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(id: &str, leased: bool) -> NewDelivery {
        NewDelivery {
            id: id.into(),
            hook_id: "h".into(),
            domain: "d".into(),
            event_name: "CHANNEL_ANSWER".into(),
            order_key: None,
            order_seq: None,
            event_key: None,
            created_at_ms: 1,
            request: Request { method: http::Method::POST, url: "http://x".into(), headers: vec![], body: "{}".into() },
            event: None,
            lease_until_ms: leased.then_some(i64::MAX),
        }
    }

    /// A store on a fresh SQLite file, and the folder that holds it (removed when dropped).
    async fn sqlite_store() -> (tempfile::TempDir, SqlStore<sqlx::Sqlite>) {
        let dir = tempfile::tempdir().unwrap();
        let store =
            super::super::sqlite::open(&format!("sqlite://{}", dir.path().join("t.db").display())).await.unwrap();
        (dir, store)
    }

    fn failure(id: &str) -> AttemptRecord {
        AttemptRecord {
            delivery_id: id.into(),
            n: 1,
            at_ms: 2,
            status_code: None,
            duration_ms: 0,
            error: Some("unreadable".into()),
            response: None,
            status: Status::Failed,
            next_at_ms: 2,
            counted: true,
        }
    }

    #[tokio::test]
    async fn only_pending_rows_leased_to_the_caller_fail_as_unreadable() {
        let (_dir, store) = sqlite_store().await;
        store.enqueue(&[delivery("mine", true), delivery("delivered", true)], "me").await.unwrap();
        store.enqueue(&[delivery("theirs", true)], "other").await.unwrap();
        // Delivered by an attempt whose lease ran out before its outcome was written.
        store
            .record("me", &[AttemptRecord { status: Status::Delivered, error: None, ..failure("delivered") }])
            .await
            .unwrap();

        fail_unreadable(&store.pool, "me", &[failure("mine"), failure("delivered"), failure("theirs")]).await.unwrap();
        let rows: Vec<(String, String, i64)> =
            sqlx::query_as("SELECT id, status, attempts FROM deliveries ORDER BY id")
                .fetch_all(&store.pool)
                .await
                .unwrap();
        let expected = [("delivered", "delivered", 1), ("mine", "failed", 1), ("theirs", "pending", 0)];
        assert_eq!(rows, expected.map(|(id, status, n)| (id.to_owned(), status.to_owned(), n)));
        let logged: Vec<(String, Option<String>)> =
            sqlx::query_as("SELECT delivery_id, error FROM attempts ORDER BY delivery_id")
                .fetch_all(&store.pool)
                .await
                .unwrap();
        assert_eq!(logged, [("delivered".to_owned(), None), ("mine".to_owned(), Some("unreadable".to_owned()))]);
    }

    /// A node whose lease ran out (another node leased the delivery since) and that is then
    /// shut down records its attempt as interrupted: that attempt is left out of the log, where
    /// it would take the number of the other node's real attempt.
    #[tokio::test]
    async fn an_interrupted_attempt_of_a_delivery_another_node_leased_is_left_out_of_the_log() {
        let (_dir, store) = sqlite_store().await;
        store.enqueue(&[delivery("x", true)], "other").await.unwrap();
        let cut = AttemptRecord {
            status: Status::Pending,
            error: Some("interrupted".into()),
            counted: false,
            ..failure("x")
        };
        store.record("me", &[cut]).await.unwrap();
        let delivered =
            AttemptRecord { status: Status::Delivered, status_code: Some(200), error: None, ..failure("x") };
        store.record("other", &[delivered]).await.unwrap();
        let row: (String, i64, i64) =
            sqlx::query_as("SELECT status, attempts, retry_from FROM deliveries WHERE id = 'x'")
                .fetch_one(&store.pool)
                .await
                .unwrap();
        assert_eq!(row, ("delivered".to_owned(), 1, 0));
        let logged: Vec<(i64, Option<i64>, Option<String>)> =
            sqlx::query_as("SELECT n, status_code, error FROM attempts WHERE delivery_id = 'x'")
                .fetch_all(&store.pool)
                .await
                .unwrap();
        assert_eq!(logged, [(1, Some(200), None)]);
    }

    #[tokio::test]
    async fn the_lease_leaves_out_disabled_hooks_and_full_hooks_and_domains() {
        let (_dir, store) = sqlite_store().await;
        for (id, domain, enable) in [("on1", "d1", true), ("off", "d1", false), ("on2", "d2", true)] {
            let body = serde_json::json!({"event": "CHANNEL_ANSWER", "enable": enable,
                "action": {"type": "web", "method": "POST", "url": "http://x/"}});
            let doc = crate::hook::HookDoc::from_body(&body, domain, crate::hook::Limits { max_retries: 0 }).unwrap();
            store.insert_hook(&StoredHook { id: id.into(), doc }, 1).await.unwrap();
        }
        // "gone" has no hook row: it is leased, and its attempt finds the hook deleted.
        let rows: Vec<NewDelivery> = [("on1", "d1"), ("off", "d1"), ("on2", "d2"), ("gone", "d3")]
            .map(|(hook, domain)| NewDelivery { hook_id: hook.into(), domain: domain.into(), ..delivery(hook, false) })
            .into();
        store.enqueue(&rows, "me").await.unwrap();
        let lease = |full: Full| {
            let store = &store;
            async move {
                let mut ids: Vec<String> =
                    store.lease("me", 10, 20, 100, &full).await.unwrap().into_iter().map(|d| d.id).collect();
                store.release("me", &ids).await.unwrap();
                ids.sort();
                ids
            }
        };
        assert_eq!(lease(Full::default()).await, ["gone", "on1", "on2"]);
        assert_eq!(lease(Full { hooks: vec!["on1".into()], domains: vec![] }).await, ["gone", "on2"]);
        assert_eq!(lease(Full { hooks: vec![], domains: vec!["d2".into(), "d3".into()] }).await, ["on1"]);

        // Nor is a disabled hook's backlog due: the dispatcher would wake for it and lease nothing.
        let later = NewDelivery { hook_id: "on1".into(), created_at_ms: 5, ..delivery("later", false) };
        let early = NewDelivery { hook_id: "off".into(), created_at_ms: 0, ..delivery("early", false) };
        store.enqueue(&[later, early], "me").await.unwrap();
        sqlx::query("DELETE FROM deliveries WHERE created_at = 1").execute(&store.pool).await.unwrap();
        assert_eq!(store.next_due().await.unwrap(), Some(5));
    }

    #[tokio::test]
    async fn a_record_changes_only_deliveries_still_leased_to_its_node() {
        let (_dir, store) = sqlite_store().await;
        store.enqueue(&[delivery("mine", true)], "me").await.unwrap();
        // Leased by another node after this node's lease ran out.
        store.enqueue(&[delivery("taken", true)], "other").await.unwrap();
        let delivered = |id| AttemptRecord { status: Status::Delivered, error: None, ..failure(id) };
        store.record("me", &[delivered("mine"), delivered("taken")]).await.unwrap();
        let rows: Vec<(String, String, Option<String>)> =
            sqlx::query_as("SELECT id, status, lease_owner FROM deliveries ORDER BY id")
                .fetch_all(&store.pool)
                .await
                .unwrap();
        let expected = [("mine", "delivered", None), ("taken", "pending", Some("other"))];
        assert_eq!(rows, expected.map(|(id, status, owner)| (id.into(), status.into(), owner.map(String::from))));
        let logged: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM attempts").fetch_one(&store.pool).await.unwrap();
        assert_eq!(logged, 2, "both attempts are in the log");
        let payloads: Vec<String> =
            sqlx::query_scalar("SELECT id FROM delivery_payloads").fetch_all(&store.pool).await.unwrap();
        assert_eq!(payloads, ["taken"], "the other node may still need its request");
    }

    #[tokio::test]
    async fn renewal_extends_only_the_named_leases_of_their_owner() {
        let (_dir, store) = sqlite_store().await;
        store.enqueue(&[delivery("sending", true), delivery("left", true)], "me").await.unwrap();
        store.enqueue(&[delivery("theirs", true)], "other").await.unwrap();
        let ids = ["sending", "left", "theirs"].map(String::from);
        assert_eq!(store.renew_leases("me", &ids, 50).await.unwrap(), 2);
        assert_eq!(store.renew_leases("me", &ids[..1], 100).await.unwrap(), 1);
        let leases: Vec<(String, Option<i64>)> =
            sqlx::query_as("SELECT id, lease_until FROM deliveries ORDER BY id").fetch_all(&store.pool).await.unwrap();
        let expected = [("left", 50), ("sending", 100), ("theirs", i64::MAX)];
        assert_eq!(leases, expected.map(|(id, until)| (id.to_owned(), Some(until))));
        // The one left behind runs out and can be leased again.
        let again: Vec<String> =
            store.lease("me", 60, 200, 10, &Full::default()).await.unwrap().into_iter().map(|d| d.id).collect();
        assert_eq!(again, ["left"]);
    }

    #[test]
    fn compressed_bodies_read_back_as_written() {
        for body in ["", "{}", "{\"data\":\"Zoë 电话 📞\"}", &"CHANNEL_ANSWER ".repeat(600)] {
            assert_eq!(body_of("d", String::new(), Some(compress(body))).unwrap(), body);
        }
        assert_eq!(body_of("d", "as text".into(), None).unwrap(), "as text");
    }

    #[test]
    fn a_damaged_compressed_body_is_a_corrupt_delivery_not_a_crash() {
        let packed = compress(&"x".repeat(10_000));
        let mut huge = packed.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut short = packed.clone();
        short[..4].copy_from_slice(&10u32.to_le_bytes());
        let mut long = packed.clone();
        long[..4].copy_from_slice(&10_001u32.to_le_bytes());
        let not_utf8 = lz4_flex::compress_prepend_size(&[b'a', 0xff, 0xfe]);
        let cases = [
            (vec![1, 2], "truncated"),
            (huge, "claims 4294967295 bytes"),
            (short, "its body"),
            (long, "claims 10001 bytes and holds 10000"),
            (packed[..packed.len() / 2].to_vec(), "its body"),
            (not_utf8, "utf-8"),
        ];
        for (bytes, problem) in cases {
            match body_of("d-1", String::new(), Some(bytes)) {
                Err(StoreError::CorruptDelivery { id, problem: p }) => {
                    assert_eq!(id, "d-1");
                    assert!(p.contains(problem), "{p:?} should mention {problem:?}");
                }
                other => panic!("expected a corrupt delivery for {problem}, got {other:?}"),
            }
        }
    }
}
