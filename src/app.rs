//! Wiring: opens the store, derives the token keys, issues tokens, and runs the API until the
//! shutdown token fires.

use std::io::Write as _;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use tokio::sync::Notify;

use crate::api::{self, ApiState};
use crate::auth::{Claims, Role, TokenError, TokenKeys, now_ms};
use crate::config::Config;
use crate::delivery::{self, worker, worker::Dispatcher};
use crate::router::{HookIndex, HotPath, Router};
use crate::sources::Health;
use crate::sources::amqp::AmqpSource;
use crate::sources::esl::EslSource;
use crate::store::{self, HookChange, Store, TokenRecord};
use crate::telemetry;

/// Lifetime of the root token made on first start.
pub const ROOT_TOKEN_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// Deliveries handed to the dispatcher in memory, already leased, per attempt it may have in
/// flight. New deliveries past them wait in the store, and are leased and read back from it.
/// Measured (BENCHMARKS.md, change 20): 2 gave 7,796 webhooks/s, 8 gave 9,207 and 32 gave 8,626
/// with peak RSS near 100 MB.
const HOT_PER_ATTEMPT: usize = 8;

/// The store and token keys every command works with.
pub struct Services {
    pub store: Arc<dyn Store>,
    pub keys: Arc<TokenKeys>,
}

impl Services {
    /// Creates the data folder, opens and migrates the store, and settles the token secret:
    /// `SWITCHHOOK_TOKEN_SECRET`, else the one kept in the store (generated on first use).
    pub async fn open(config: &Config) -> anyhow::Result<Self> {
        // Owner only when this creates it: it holds root.token and, by default, the store.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&config.data_dir)
            .with_context(|| format!("cannot create data folder {}", config.data_dir.display()))?;
        let store = store::open(&config.database_url)
            .await
            .with_context(|| format!("cannot open store {}", crate::config::redact_url(&config.database_url)))?;
        let secret = match &config.token_secret {
            Some(secret) => secret.clone(),
            None => {
                let candidate: String = rand::random::<[u8; 32]>().iter().map(|b| format!("{b:02x}")).collect();
                store.token_secret(&candidate).await.context("cannot read the token secret")?
            }
        };
        let keys = TokenKeys::new(secret.as_bytes()).context("the token secret is empty")?;
        Ok(Self { store, keys: Arc::new(keys) })
    }

    /// Issues a token and records it so it can be listed and revoked.
    pub async fn issue_token(
        &self,
        role: Role,
        domain: Option<String>,
        ttl: Duration,
    ) -> anyhow::Result<(TokenRecord, String)> {
        let now = now_ms();
        let record = TokenRecord {
            id: uuid::Uuid::new_v4().to_string(),
            role,
            domain: if role == Role::Root { None } else { domain },
            created_at_ms: now,
            expires_at_ms: now.saturating_add(ttl.as_millis().min(i64::MAX as u128) as i64),
            revoked_at_ms: None,
        };
        self.store.insert_token(&record).await.context("cannot record the token")?;
        let claims = Claims::new(record.id.clone(), record.expires_at_ms, role, record.domain.clone());
        Ok((record, self.keys.sign(&claims)))
    }

    /// Revokes a token given by its id, or given whole. A token signed elsewhere with this
    /// secret (the Webitel engine's) has no record, so its id alone is "no token" (a mistyped
    /// id must not pass as revoked); given whole, its signature is checked and a record of it
    /// is made, revoked. Returns the token's id and what became of it.
    pub async fn revoke_token(&self, given: &str, now: i64) -> anyhow::Result<(String, store::Revocation)> {
        if given.split('.').count() != 3 {
            return Ok((given.to_owned(), self.store.revoke_token(given, now).await?));
        }
        // Any expiry: an expired token may be revoked too.
        let claims = self.keys.verify(given, i64::MIN).map_err(|_| {
            anyhow::anyhow!(
                "this token is not signed with this service's secret, so serve refuses it already \
                 (unless serve runs with another SWITCHHOOK_TOKEN_SECRET: give this command the same)"
            )
        })?;
        let principal = claims.principal().map_err(|_| {
            anyhow::anyhow!("this token's claims (t, r, d, id) make it one this service refuses already")
        })?;
        let id = principal.token_id;
        let done = match self.store.revoke_token(&id, now).await? {
            store::Revocation::NotFound => {
                let record = TokenRecord {
                    id: id.clone(),
                    role: principal.role,
                    domain: principal.domain,
                    created_at_ms: now,
                    expires_at_ms: claims.exp,
                    revoked_at_ms: Some(now),
                };
                self.store.insert_token(&record).await.context("cannot record the revocation")?;
                store::Revocation::Revoked
            }
            done => done,
        };
        Ok((id, done))
    }

    /// Whether the store has a root token that is neither revoked nor expired.
    async fn has_root_token(&self) -> anyhow::Result<bool> {
        let now = now_ms();
        let tokens = self.store.tokens().await?;
        Ok(tokens.iter().any(|t| t.role == Role::Root && t.revoked_at_ms.is_none() && t.expires_at_ms > now))
    }

    /// On a first start (no usable root token recorded), issues one into `<data dir>/root.token`.
    async fn write_root_token(&self, config: &Config) -> anyhow::Result<()> {
        let (record, token) = self.issue_token(Role::Root, None, ROOT_TOKEN_TTL).await?;
        let path = root_token_path(config);
        if let Err(e) = write_private(&path, &token) {
            // Nobody has this token: left active, it would keep the next start from writing one.
            if let Err(revoking) = self.store.revoke_token(&record.id, now_ms()).await {
                tracing::error!(error = %revoking, id = %record.id, "cannot revoke the root token that was not written");
            }
            return Err(e).with_context(|| format!("cannot write {}", path.display()));
        }
        tracing::info!(path = %path.display(), "issued a root token; it is in this file");
        Ok(())
    }

    /// Warns when `root.token` is there but the token secret in use refuses it: no new one is
    /// written while the store has an active root token, so nothing else would tell.
    fn check_root_token_file(&self, config: &Config) {
        let path = root_token_path(config);
        let Ok(token) = std::fs::read_to_string(&path) else {
            return;
        };
        if self.keys.verify(token.trim(), now_ms()) == Err(TokenError::Invalid) {
            tracing::warn!(
                path = %path.display(),
                "root.token was not signed with the token secret in use (SWITCHHOOK_TOKEN_SECRET set, changed \
                 or unset since it was written), so every request with it is refused; \
                 `switchhook token create --root` prints a root token that works"
            );
        }
    }
}

pub fn root_token_path(config: &Config) -> PathBuf {
    config.data_dir.join("root.token")
}

/// Writes a file only its owner can read, whole or not at all: the text goes to a file beside
/// it that then takes its name, so a stop halfway (a second Ctrl-C) leaves no empty file.
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let write = || {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&partial)?;
        #[cfg(unix)]
        std::fs::set_permissions(&partial, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        writeln!(file, "{text}")?;
        file.sync_all()?;
        std::fs::rename(&partial, path)
    };
    let written = write();
    if written.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    written
}

/// Runs the service on `listener` until `shutdown` is cancelled.
pub async fn serve(config: Config, listener: TcpListener, shutdown: CancellationToken) -> anyhow::Result<()> {
    open_files_for(&config);
    // Start-up can wait on the store as long as another session holds a lock (a migration on
    // another node, a locked table): a shutdown meanwhile stops it, as nothing has started yet.
    // Issuing and writing the root token is not cut short by it, so it is not issued unwritten.
    let Some(services) = unless_shut_down(&shutdown, Services::open(&config)).await.transpose()? else {
        return Ok(());
    };
    match unless_shut_down(&shutdown, services.has_root_token()).await.transpose()? {
        Some(true) => services.check_root_token_file(&config),
        Some(false) => services.write_root_token(&config).await?,
        None => return Ok(()),
    }
    telemetry::init();
    let store = services.store.clone();

    let Some(hooks) = unless_shut_down(&shutdown, store.all_hooks()).await else {
        return Ok(());
    };
    let (index, broken) = HookIndex::new(hooks.context("cannot load hooks")?);
    for (id, error) in broken {
        tracing::error!(hook = %id, %error, "stored hook does not compile; it is left out");
    }
    let index = Arc::new(index);
    let wake = Arc::new(Notify::new());
    let d = &config.delivery;
    let owner = match &d.node_id {
        Some(id) => id.clone(),
        None => node_id(&config.data_dir)?,
    };
    let (hot, handed_over) = tokio::sync::mpsc::channel(d.concurrency * HOT_PER_ATTEMPT);
    let hot = HotPath { deliveries: hot, owner: owner.clone(), lease: d.lease };
    let router = Arc::new(Router::new(index.clone(), store.clone(), wake.clone(), hot));

    let addr = listener.local_addr()?;
    let settings = worker::Settings {
        concurrency: d.concurrency,
        per_hook: d.per_hook_concurrency,
        per_domain: d.per_domain_concurrency,
        lease: d.lease,
        owner,
        batch: 256,
        poll: Duration::from_secs(1),
        public_only: d.block_private_networks,
    };
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(Dispatcher::new(store.clone(), index, wake, settings).run(handed_over, shutdown.clone()));
    tasks.spawn(delivery::maintain(store.clone(), d.retention, shutdown.clone()));
    if let Some(changes) = store.hook_changes() {
        tasks.spawn(follow_hooks(store.clone(), router.index.clone(), changes, shutdown.clone()));
    }

    let health = Health::default();
    if let Some(settings) = config.amqp.clone() {
        let source = AmqpSource { settings, router: router.clone(), store: store.clone(), health: health.clone() };
        tasks.spawn(source.run(shutdown.clone()));
    }
    for server in &config.esl {
        let source = EslSource {
            server: server.clone(),
            router: router.clone(),
            health: health.clone(),
            shutdown_grace: config.esl_shutdown_grace,
        };
        tasks.spawn(source.run(shutdown.clone()));
    }

    let hook_writes = Default::default();
    let ingest = Arc::new(tokio::sync::Semaphore::new(store.writers() + 1));
    let state = ApiState {
        store,
        keys: services.keys.clone(),
        limits: config.limits,
        max_hooks_per_domain: config.max_hooks_per_domain,
        block_private_networks: d.block_private_networks,
        body_timeout: config.http.body_timeout,
        router,
        health,
        hook_writes,
        ingest,
    };
    let api = api::service(state);
    tracing::info!(%addr, %config, "switchhook is serving");
    api::server::serve(listener, api, &config.http, shutdown.clone()).await;
    shutdown.cancel();
    while tasks.join_next().await.is_some() {}
    tracing::info!("switchhook stopped");
    Ok(())
}

/// `work`'s output, or `None` when `shutdown` comes first.
async fn unless_shut_down<T>(shutdown: &CancellationToken, work: impl Future<Output = T>) -> Option<T> {
    tokio::select! {
        out = work => Some(out),
        () = shutdown.cancelled() => None,
    }
}

/// Raises the open-file limit to what the system allows (1024 by default on many), since every
/// client connection and every connection to a receiver is a file, and warns when the
/// configured connections could still run out of them.
fn open_files_for(config: &Config) {
    // Files besides client connections: receivers (in flight, and as many kept idle), the
    // store's pool and files, sources.
    let others = 2 * config.delivery.concurrency as u64 + 256;
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < config.http.max_connections as u64 + others => tracing::warn!(
            limit,
            max_connections = config.http.max_connections,
            concurrency = config.delivery.concurrency,
            "the open-file limit is low for http.max_connections and delivery.concurrency; \
             lower them or raise the limit (ulimit -n, LimitNOFILE=)"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read or raise the open-file limit"),
    }
}

/// Applies hook changes other nodes made (through the store's notifications) to this node's
/// index, so a hook edited anywhere takes effect everywhere.
async fn follow_hooks(
    store: Arc<dyn Store>,
    index: Arc<HookIndex>,
    mut changes: tokio::sync::mpsc::Receiver<HookChange>,
    shutdown: CancellationToken,
) {
    loop {
        let change = tokio::select! {
            c = changes.recv() => match c { Some(c) => c, None => return },
            () = shutdown.cancelled() => return,
        };
        let applied = match change {
            HookChange::Hook(id) => store.hook_by_id(&id).await.map(|stored| index.refresh(&id, stored)),
            HookChange::Resync => store.all_hooks().await.map(|hooks| index.replace_all(hooks)),
        };
        if let Err(e) = applied {
            tracing::warn!(error = %e, "cannot apply a hook change from another node");
        }
    }
}

/// This node's name in delivery leases, kept in `<data dir>/node.id` so it survives restarts
/// (a restart then takes back the deliveries it was sending) and differs between nodes.
fn node_id(data_dir: &std::path::Path) -> anyhow::Result<String> {
    let path = data_dir.join("node.id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        if !id.trim().is_empty() {
            return Ok(id.trim().to_owned());
        }
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "switchhook".to_owned());
    let id = format!("{host}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    std::fs::write(&path, format!("{id}\n")).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(id)
}

/// Makes ring the process's TLS crypto provider (reqwest and sqlx are built without one, to
/// keep a single provider in the build). Safe to call more than once.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
