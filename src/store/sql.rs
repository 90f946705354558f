//! The store over any sqlx database: one implementation, SQL written in the subset SQLite and
//! PostgreSQL share (`$n` parameters, `ON CONFLICT`, `RETURNING`).

use async_trait::async_trait;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Row, SqlSafeStr, Type};

use super::{Result, Store, StoreError, StoredHook, TokenRecord};
use crate::auth::Role;

/// What differs between backends, beyond the SQL they share.
pub trait Dialect: Database {
    const BACKEND: &'static str;
    /// Migration scripts, in order; each backend has its own copy of the schema.
    const MIGRATIONS: &'static [(&'static str, &'static str)];
    /// Rows a statement touched; each backend's result type reports it its own way.
    fn rows_affected(result: &Self::QueryResult) -> u64;
}

pub struct SqlStore<DB: Database> {
    pub(super) pool: Pool<DB>,
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
                Migration::new(
                    i as i64 + 1,
                    (*name).into(),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect();
        Migrator::with_migrations(migrations).run(&self.pool).await?;
        Ok(())
    }
}

fn role_of(id: &str, role: String) -> Result<Role> {
    Role::parse(&role).ok_or_else(|| StoreError::CorruptToken {
        id: id.to_owned(),
        role,
    })
}

fn hook_of(id: String, doc: &str) -> Result<StoredHook> {
    match serde_json::from_str(doc) {
        Ok(doc) => Ok(StoredHook { id, doc }),
        Err(source) => Err(StoreError::CorruptHook { id, source }),
    }
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
    usize: ColumnIndex<DB::Row>,
{
    fn backend(&self) -> &'static str {
        DB::BACKEND
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
        let row = sqlx::query("SELECT value FROM meta WHERE key = 'token_secret'")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get(0)?)
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

    async fn revoke_token(&self, id: &str, now_ms: i64) -> Result<bool> {
        let done = sqlx::query("UPDATE tokens SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1")
            .bind(id.to_owned())
            .bind(now_ms)
            .execute(&self.pool)
            .await?;
        Ok(DB::rows_affected(&done) > 0)
    }

    async fn token_revoked(&self, id: &str) -> Result<bool> {
        let row = sqlx::query("SELECT revoked_at FROM tokens WHERE id = $1")
            .bind(id.to_owned())
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(row) => row.try_get::<Option<i64>, _>(0)?.is_some(),
            None => false,
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
        rows.into_iter()
            .map(|row| hook_of(row.try_get(0)?, &row.try_get::<String, _>(1)?))
            .collect()
    }

    async fn hook(&self, domain: &str, id: &str) -> Result<Option<StoredHook>> {
        let row = sqlx::query("SELECT id, doc FROM hooks WHERE domain = $1 AND id = $2")
            .bind(domain.to_owned())
            .bind(id.to_owned())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|row| hook_of(row.try_get(0)?, &row.try_get::<String, _>(1)?))
            .transpose()
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
        Ok(DB::rows_affected(&done) > 0)
    }

    async fn delete_hook(&self, domain: &str, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM hooks WHERE id = $1 AND domain = $2")
            .bind(id.to_owned())
            .bind(domain.to_owned())
            .execute(&self.pool)
            .await?;
        Ok(DB::rows_affected(&done) > 0)
    }

    async fn all_hooks(&self) -> Result<Vec<StoredHook>> {
        let rows = sqlx::query("SELECT id, doc FROM hooks ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter()
            .map(|row| hook_of(row.try_get(0)?, &row.try_get::<String, _>(1)?))
            .collect()
    }
}
