//! The service under test: `switchhook serve` as a child process on a temporary store, so its
//! memory is measured apart from the load driver and the receiver.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::json;
use tokio::process::{Child, Command};

use super::{Options, domain};
use crate::auth::{Claims, Role, TokenKeys, now_ms};

pub struct Service {
    child: Child,
    pub base: String,
    pub token: String,
    pub http: reqwest::Client,
    _dir: tempfile::TempDir,
}

/// The nodes under test: one, or several sharing a PostgreSQL database of the run's own.
pub struct Cluster {
    pub nodes: Vec<Service>,
    pg: Option<(String, String)>,
}

impl Cluster {
    pub async fn start(options: &Options, args: &[String], config: &str) -> anyhow::Result<Cluster> {
        let secret: String = (0..32).map(|_| format!("{:02x}", rand::random::<u8>())).collect();
        let pg = match &options.database_url {
            Some(admin) => Some((admin.clone(), fresh_database(admin).await?)),
            None if options.nodes > 1 => bail!("--nodes needs a PostgreSQL --database-url to share"),
            None => None,
        };
        let url = pg.as_ref().map(|(_, (url, _))| url.as_str());
        let mut nodes = Vec::new();
        for _ in 0..options.nodes {
            nodes.push(Service::start(options, args, config, url, &secret).await?);
        }
        Ok(Cluster { nodes, pg: pg.map(|(admin, (_, name))| (admin, name)) })
    }

    /// Events the nodes have read and committed (the metric counts an event once the store
    /// has taken it): with an event socket every node reads every event, so the slowest node
    /// counts; from a shared queue each message goes to one node, so they add up.
    pub async fn events_received(&self, each_reads_all: bool) -> u64 {
        let mut counts = Vec::new();
        for node in &self.nodes {
            counts.push(node.events_received().await);
        }
        if each_reads_all { counts.into_iter().min().unwrap_or(0) } else { counts.into_iter().sum() }
    }

    /// CPU time all nodes used so far, user and system, in seconds.
    pub fn cpu_s(&self) -> f64 {
        self.nodes.iter().map(Service::cpu_s).sum()
    }

    /// The largest peak RSS of any node, in MB.
    pub fn peak_rss_mb(&self) -> f64 {
        self.nodes.iter().map(Service::peak_rss_mb).fold(0.0, f64::max)
    }

    pub async fn stop(self) {
        for node in self.nodes {
            node.stop().await;
        }
        if let Some((admin, name)) = &self.pg {
            drop_database(admin, name).await;
        }
    }
}

/// A local port nothing listens on (for `--receiver-down`).
pub fn closed_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Service {
    /// Starts `serve` on `database_url` (a node's own SQLite file when `None`), with `args`
    /// (source settings), `config` (a TOML file's text) and the token `secret`.
    pub async fn start(
        options: &Options,
        args: &[String],
        config: &str,
        database_url: Option<&str>,
        secret: &str,
    ) -> anyhow::Result<Service> {
        let dir = tempfile::tempdir()?;
        let port = closed_port()?;
        let database_url = match database_url {
            Some(url) => url.to_owned(),
            None => crate::config::sqlite_url(&dir.path().join("bench.db")),
        };
        let config_path = dir.path().join("bench.toml");
        std::fs::write(&config_path, config)?;
        // SWITCHHOOK_BENCH_WRAP runs the service under a profiler, e.g. "valgrind --tool=massif".
        let wrap = std::env::var("SWITCHHOOK_BENCH_WRAP").unwrap_or_default();
        let mut words: Vec<String> = wrap.split_whitespace().map(str::to_owned).collect();
        words.push(std::env::current_exe()?.to_string_lossy().into_owned());
        let mut command = Command::new(&words[0]);
        command
            .args(&words[1..])
            .arg("serve")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--database-url", &database_url])
            .arg("--config")
            .arg(&config_path)
            .args(args)
            .env("SWITCHHOOK_TOKEN_SECRET", secret)
            .env("SWITCHHOOK_LOG", "warn")
            .env("SWITCHHOOK_DELIVERY_CONCURRENCY", options.concurrency.to_string())
            .env("SWITCHHOOK_DELIVERY_PER_HOOK_CONCURRENCY", options.concurrency.to_string())
            .kill_on_drop(true);
        let child = command.spawn().context("cannot start the service")?;
        let keys = TokenKeys::new(secret.as_bytes()).expect("the secret is not empty");
        let token = keys.sign(&Claims::new("bench".into(), now_ms() + 86_400_000, Role::Root, None));
        let http = reqwest::Client::builder().pool_max_idle_per_host(64).build()?;
        let service = Service { child, base: format!("http://127.0.0.1:{port}"), token, http, _dir: dir };
        service.wait_healthy().await?;
        Ok(service)
    }

    async fn wait_healthy(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(r) = self.http.get(format!("{}/health", self.base)).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("the service did not become healthy")
    }

    /// One hook per domain `bench-<i>`, on CHANNEL_ANSWER, posting to `url`. With no hooks, a
    /// decoy in a domain no event has, so sources still subscribe.
    pub async fn create_hooks(&self, n: usize, url: &str, receiver_down: bool) -> anyhow::Result<()> {
        let retry = if receiver_down { json!({"retries": 100, "delay": 3600}) } else { json!({}) };
        let domains: Vec<String> =
            if n == 0 { vec!["bench-decoy.example.com".into()] } else { (0..n).map(domain).collect() };
        for domain in domains {
            let mut hook = json!({"event": "CHANNEL_ANSWER", "action": {"type": "web", "method": "POST", "url": url}});
            hook.as_object_mut().unwrap().extend(retry.as_object().unwrap().clone());
            let r = self
                .http
                .post(format!("{}/api/v2/hooks?domain={domain}", self.base))
                .header("X-Access-Token", &self.token)
                .json(&hook)
                .send()
                .await?;
            if !r.status().is_success() {
                bail!("cannot create a hook: {}", r.text().await?);
            }
        }
        Ok(())
    }

    /// `switchhook_events_received_total` from `/metrics`.
    pub async fn events_received(&self) -> u64 {
        let Ok(r) = self.http.get(format!("{}/metrics", self.base)).send().await else {
            return 0;
        };
        let text = r.text().await.unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix("switchhook_events_received_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    }

    /// CPU time the service used so far, user and system, in seconds (`/proc/<pid>/stat`,
    /// in the kernel's fixed 100 ticks a second).
    pub fn cpu_s(&self) -> f64 {
        let Some(pid) = self.child.id() else {
            return 0.0;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return 0.0;
        };
        // Fields after the command name, which is in parentheses: utime and stime are the
        // 12th and 13th of them.
        let fields: Vec<&str> = stat.rsplit_once(')').map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
        let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        (ticks(11) + ticks(12)) / 100.0
    }

    /// The service's peak resident memory so far (VmHWM), in MB.
    pub fn peak_rss_mb(&self) -> f64 {
        let Some(pid) = self.child.id() else {
            return 0.0;
        };
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmHWM:").map(|v| v.trim().trim_end_matches("kB").trim().to_owned()))
            })
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }

    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        }
        if tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
    }
}

/// A database of the run's own on the server `admin_url` names.
async fn fresh_database(admin_url: &str) -> anyhow::Result<(String, String)> {
    use sqlx::Connection as _;
    let name = format!("switchhook_bench_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(admin_url).await.context("cannot reach PostgreSQL")?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut conn).await?;
    let mut url = url::Url::parse(admin_url)?;
    url.set_path(&format!("/{name}"));
    Ok((url.to_string(), name))
}

async fn drop_database(admin_url: &str, name: &str) {
    use sqlx::Connection as _;
    if let Ok(mut conn) = sqlx::PgConnection::connect(admin_url).await {
        let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
            .execute(&mut conn)
            .await;
    }
}

/// The address a bound listener got (for the simulator's event socket).
pub fn esl_arg(addr: SocketAddr) -> Vec<String> {
    vec!["--esl".into(), format!("ClueCon@{addr}")]
}
