//! Configuration: embedded defaults, then the TOML file, then `SWITCHHOOK_*` variables, then
//! command-line flags. Every bad setting is reported at once, by key.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

use crate::event::routing;
use crate::hook::Limits;
use crate::sources::{amqp, esl};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:10022";
pub const DEFAULT_DATA_DIR: &str = "./switchhook-data";
pub const DEFAULT_MAX_RETRIES: u32 = 100;
pub const DEFAULT_MAX_HOOKS_PER_DOMAIN: usize = 10_000;
pub const DEFAULT_EXCHANGE: &str = "TAP.Events";
pub const DEFAULT_QUEUE: &str = "switchhook.events";

/// The config file as written. Every key is optional; unknown keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<Setting>,
    pub data_dir: Option<Setting>,
    pub database_url: Option<String>,
    pub log: Option<Setting>,
    pub max_retries: Option<Setting>,
    pub max_hooks_per_domain: Option<Setting>,
    #[serde(default)]
    pub http: HttpFile,
    #[serde(default)]
    pub delivery: DeliveryFile,
    #[serde(default)]
    pub amqp: AmqpFile,
    #[serde(default)]
    pub esl: EslFile,
}

/// The `[esl]` table: FreeSWITCH event sockets to read from.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EslFile {
    #[serde(default)]
    pub servers: Vec<EslServerFile>,
    /// A duration such as `15s`.
    pub shutdown_grace: Option<Setting>,
}

/// One `[[esl.servers]]` entry; both keys have FreeSWITCH's defaults.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EslServerFile {
    pub address: Option<String>,
    pub password: Option<String>,
}

/// The `[amqp]` table: the RabbitMQ source (mod_amqp).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpFile {
    pub url: Option<Setting>,
    pub queue: Option<Setting>,
    pub prefetch: Option<Setting>,
    pub exchanges: Option<Vec<ExchangeFile>>,
}

/// One `[[amqp.exchanges]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeFile {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub format_fields: Option<String>,
}

/// The `[http]` table: the API server's limits on its clients.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpFile {
    pub header_timeout: Option<Setting>,
    pub body_timeout: Option<Setting>,
    pub max_connections: Option<Setting>,
}

/// What the API server allows its clients.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// How long a client has to send a request's head, counted from the end of the previous
    /// request on a kept-alive connection, so idle connections close after it too.
    pub header_timeout: Duration,
    /// How long a client has to send a request's body.
    pub body_timeout: Duration,
    /// Client connections open at once; further clients wait in the listen backlog.
    pub max_connections: usize,
}

/// The `[delivery]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryFile {
    pub concurrency: Option<Setting>,
    pub per_hook_concurrency: Option<Setting>,
    pub per_domain_concurrency: Option<Setting>,
    /// A duration such as `5m`.
    pub lease: Option<Setting>,
    /// A duration such as `7d`.
    pub retention: Option<Setting>,
    pub node_id: Option<Setting>,
    pub block_private_networks: Option<Setting>,
}

/// How deliveries are sent and kept.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// Attempts in flight at once, over all hooks.
    pub concurrency: usize,
    /// Attempts in flight at once for one hook.
    pub per_hook_concurrency: usize,
    /// Attempts in flight at once for the hooks of one domain, so one tenant's slow receivers
    /// cannot take every slot from the others.
    pub per_domain_concurrency: usize,
    /// How long a lease on a delivery holds unless renewed; attempts in flight renew theirs,
    /// so this is how long the deliveries of a node that died wait for another node.
    pub lease: Duration,
    /// How long delivered and failed deliveries stay in the log.
    pub retention: Duration,
    /// This node's name in leases; default: generated once into `<data dir>/node.id`.
    pub node_id: Option<String>,
    /// Webhooks and auth pre-requests go to public addresses only (`delivery::destination`).
    pub block_private_networks: bool,
}

/// Values given on the command line or through their `SWITCHHOOK_*` variables (clap reads
/// both, flag first).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub listen: Option<String>,
    /// `--data-dir` only (clap refuses it empty): `SWITCHHOOK_DATA_DIR` is read as a setting.
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    /// `password@host:port`, comma-separated.
    pub esl: Option<String>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub database_url: String,
    /// `SWITCHHOOK_TOKEN_SECRET`; when unset the store keeps a generated one.
    pub token_secret: Option<String>,
    /// A tracing filter (`info`, `switchhook=debug`, ...).
    pub log: String,
    pub limits: Limits,
    /// The most hooks one domain may have; the API refuses a create past it.
    pub max_hooks_per_domain: usize,
    pub http: HttpConfig,
    pub delivery: DeliveryConfig,
    /// The RabbitMQ source; off without a URL.
    pub amqp: Option<amqp::Settings>,
    /// FreeSWITCH event sockets; none means the ESL source is off.
    pub esl: Vec<esl::Server>,
    /// How long shutdown waits for the store to take ESL events already read (ESL cannot send
    /// them again), counted from the shutdown or from the last commit that went through after
    /// it; what is left then is counted lost.
    pub esl_shutdown_grace: Duration,
}

impl fmt::Display for Config {
    /// A loggable summary: no secrets, and the database URL without its password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "listen={} data_dir={} database={}",
            self.listen,
            self.data_dir.display(),
            redact_url(&self.database_url)
        )
    }
}

/// One bad setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub problem: String,
}

/// Every bad setting found, one per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration:{}", .0.iter().map(|p| format!("\n  {}: {}", p.key, p.problem)).collect::<String>())]
pub struct ConfigError(pub Vec<Problem>);

impl Config {
    /// Builds the configuration from the file `overrides.config` names (if any), the
    /// environment, and the overrides.
    pub fn load(overrides: &Overrides) -> Result<Config, ConfigError> {
        let file = match &overrides.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        // A variable that is not UTF-8 would read as unset, and its default be used in silence
        // (another data folder: a fresh store and root token).
        let garbled = std::cell::RefCell::new(Vec::new());
        let built = Self::build(file, overrides, |key| match std::env::var(key) {
            Ok(value) => Some(value),
            Err(std::env::VarError::NotPresent) => None,
            Err(std::env::VarError::NotUnicode(_)) => {
                garbled.borrow_mut().push(Problem { key: key.to_owned(), problem: "is not valid UTF-8".into() });
                None
            }
        });
        match (built, garbled.into_inner()) {
            (built, garbled) if garbled.is_empty() => built,
            (Ok(_), garbled) => Err(ConfigError(garbled)),
            (Err(ConfigError(more)), garbled) => Err(ConfigError([garbled, more].concat())),
        }
    }

    /// Layers `file`, the variables `env` returns, and `overrides` over the defaults.
    pub fn build(
        file: FileConfig,
        overrides: &Overrides,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut l = Layers { env: &env, problems: Vec::new() };

        let listen_raw = overrides.listen.clone().or(file.listen.map(|s| s.0)).unwrap_or_else(|| DEFAULT_LISTEN.into());
        let listen = listen_raw.parse::<SocketAddr>().unwrap_or_else(|_| {
            l.problem("listen", format!("{listen_raw:?} is not an address like 127.0.0.1:10022"));
            SocketAddr::from(([127, 0, 0, 1], 10022))
        });

        let data_dir = match &overrides.data_dir {
            Some(dir) => dir.clone(),
            None => l.get("data_dir", file.data_dir, DEFAULT_DATA_DIR.into(), |s| match s {
                "" => Err("must not be empty".into()),
                dir => Ok(PathBuf::from(dir)),
            }),
        };

        let database_url = overrides
            .database_url
            .clone()
            .or(file.database_url)
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| sqlite_url(&data_dir.join("switchhook.db")));
        if !["sqlite:", "postgres://", "postgresql://"].iter().any(|p| database_url.starts_with(p)) {
            let shown = redact_url(&database_url);
            l.problem("database_url", format!("{shown:?} must start with sqlite:, postgres:// or postgresql://"));
        }

        let max_retries = l.get("max_retries", file.max_retries, DEFAULT_MAX_RETRIES, number);
        let max_hooks_per_domain =
            l.get("max_hooks_per_domain", file.max_hooks_per_domain, DEFAULT_MAX_HOOKS_PER_DOMAIN, positive);
        let log = l.get("log", file.log, "info".to_owned(), log_filter);
        let token_secret = env("SWITCHHOOK_TOKEN_SECRET");
        if token_secret.as_deref() == Some("") {
            l.problem("token_secret", "SWITCHHOOK_TOKEN_SECRET is set but empty".into());
        }

        let h = file.http;
        let http = HttpConfig {
            header_timeout: l.get("http.header_timeout", h.header_timeout, Duration::from_secs(30), at_least(1)),
            body_timeout: l.get("http.body_timeout", h.body_timeout, Duration::from_secs(60), at_least(1)),
            max_connections: l.get("http.max_connections", h.max_connections, 1024, |s| {
                positive(s).and_then(|n| if n > 1_000_000 { Err("must be at most 1000000".into()) } else { Ok(n) })
            }),
        };

        let d = file.delivery;
        let concurrency = l.get("delivery.concurrency", d.concurrency, 256, positive);
        let delivery = DeliveryConfig {
            concurrency,
            per_hook_concurrency: l.get("delivery.per_hook_concurrency", d.per_hook_concurrency, 128, positive),
            // No cap of its own unless set: a domain at its cap has the deliveries handed over in
            // memory given back to the store and leased again, which cost a single-tenant run a
            // third of its webhooks/s at three quarters (BENCHMARKS.md, round six).
            per_domain_concurrency: l.get(
                "delivery.per_domain_concurrency",
                d.per_domain_concurrency,
                concurrency,
                positive,
            ),
            lease: l.get("delivery.lease", d.lease, Duration::from_secs(60), at_least(5)),
            // Zero would prune each delivery as it finishes, log and all.
            retention: l.get("delivery.retention", d.retention, Duration::from_secs(7 * 86_400), at_least(1)),
            // Leases are held by name: an empty name is one every node so configured shares.
            node_id: l.get("delivery.node_id", d.node_id, None, |s| match s.trim() {
                "" => Err("must not be empty".into()),
                id => Ok(Some(id.to_owned())),
            }),
            block_private_networks: l.get("delivery.block_private_networks", d.block_private_networks, false, |s| {
                match s.trim() {
                    "true" => Ok(true),
                    "false" => Ok(false),
                    other => Err(format!("{other:?} is not true or false")),
                }
            }),
        };

        let amqp = l.amqp(file.amqp);
        let esl_shutdown_grace =
            l.get("esl.shutdown_grace", file.esl.shutdown_grace, esl::DEFAULT_SHUTDOWN_GRACE, at_least(1));
        let esl = match &overrides.esl {
            Some(list) => list
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .enumerate()
                .filter_map(|(i, spec)| {
                    esl::Server::parse(spec).map_err(|e| l.problem("esl", format!("entry {}: {e}", i + 1))).ok()
                })
                .collect(),
            None => file
                .esl
                .servers
                .into_iter()
                .enumerate()
                .filter_map(|(i, s)| {
                    let address = s.address.unwrap_or_else(|| esl::DEFAULT_ADDR.into());
                    let password = s.password.unwrap_or_else(|| esl::DEFAULT_PASSWORD.into());
                    let parsed = esl::Server::parse(&format!("{password}@{address}"));
                    parsed.map_err(|e| l.problem("esl.servers", format!("entry {}: {e}", i + 1))).ok()
                })
                .collect(),
        };

        if !l.problems.is_empty() {
            return Err(ConfigError(l.problems));
        }
        Ok(Config {
            listen,
            data_dir,
            database_url,
            token_secret,
            log,
            limits: Limits { max_retries },
            max_hooks_per_domain,
            http,
            delivery,
            amqp,
            esl,
            esl_shutdown_grace,
        })
    }
}

/// Reads a setting from its environment variable, else the file, else the default, and
/// collects what is wrong instead of stopping at the first problem.
struct Layers<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
    problems: Vec<Problem>,
}

impl Layers<'_> {
    fn problem(&mut self, key: &str, problem: String) {
        self.problems.push(Problem { key: key.into(), problem });
    }

    fn amqp(&mut self, file: AmqpFile) -> Option<amqp::Settings> {
        let url = self.get("amqp.url", file.url, String::new(), |s| match s {
            "" => Ok(String::new()),
            _ => amqp::parse_uri(s).map(|_| s.to_owned()).map_err(|e| format!("{:?}: {e}", redact_url(s))),
        });
        let exchanges = file
            .exchanges
            .unwrap_or_else(|| vec![ExchangeFile { name: DEFAULT_EXCHANGE.into(), kind: None, format_fields: None }]);
        let exchanges = exchanges
            .into_iter()
            .map(|e| {
                let format = e.format_fields.unwrap_or_else(|| routing::DEFAULT_FORMAT.into());
                if e.name.is_empty() || format.trim().is_empty() {
                    self.problem("amqp.exchanges", "each exchange needs a name and non-empty format_fields".into());
                }
                if e.name.len() > routing::MAX_KEY_BYTES {
                    self.problem("amqp.exchanges", format!("exchange name {:?} is over 255 bytes", e.name));
                }
                let kind = e.kind.unwrap_or_else(|| "topic".into());
                amqp::Exchange { name: e.name, kind, format_fields: routing::fields(&format) }
            })
            .collect();
        let queue = self.get("amqp.queue", file.queue, DEFAULT_QUEUE.to_owned(), |s| match s.len() {
            0 => Err("must not be empty".into()),
            n if n > routing::MAX_KEY_BYTES => Err("must be at most 255 bytes".into()),
            _ => Ok(s.to_owned()),
        });
        let prefetch = self.get("amqp.prefetch", file.prefetch, 500, |s| {
            number::<u64>(s)
                .and_then(|n| u16::try_from(n).ok().filter(|n| *n > 0).ok_or("must be from 1 to 65535".into()))
        });
        (!url.is_empty()).then_some(amqp::Settings { url, queue, prefetch, exchanges })
    }

    /// `key` `a.b_c` is read from `SWITCHHOOK_A_B_C`. A file value is checked by the same
    /// `parse` as the variable, through its text form.
    fn get<T: Clone>(
        &mut self,
        key: &str,
        file: Option<Setting>,
        default: T,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> T {
        let var = format!("SWITCHHOOK_{}", key.replace('.', "_").to_ascii_uppercase());
        let (raw, from) = match ((self.env)(&var), file) {
            (Some(v), _) => (v, var),
            (None, Some(f)) => (f.0, "the config file".to_owned()),
            (None, None) => return default,
        };
        parse(&raw).unwrap_or_else(|problem| {
            self.problem(key, format!("{problem} (from {from})"));
            default
        })
    }
}

/// A single value in the config file, kept as its text: a value of the wrong type (`lease = 30`,
/// `concurrency = "many"`) or out of range (`max_connections = -1`) is then reported by key with
/// every other problem, by the same parser as its environment variable, instead of stopping
/// the file's parsing at the first one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting(pub String);

impl<'de> Deserialize<'de> for Setting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match toml::Value::deserialize(d)? {
            toml::Value::String(s) => Ok(Setting(s)),
            toml::Value::Integer(n) => Ok(Setting(n.to_string())),
            toml::Value::Float(f) => Ok(Setting(f.to_string())),
            toml::Value::Boolean(b) => Ok(Setting(b.to_string())),
            other => Err(serde::de::Error::custom(format!("expected a single value, found {}", other.type_str()))),
        }
    }
}

/// A tracing filter. A bare word is a level or a `switchhook` module: any other reads as a
/// module's name, and `verbose` would silence every log line.
fn log_filter(s: &str) -> Result<String, String> {
    let refused =
        || format!("{s:?} is not a level (trace, debug, info, warn, error, off) or a filter like \"switchhook=debug\"");
    let word = s.trim();
    let bare = !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    let level = ["trace", "debug", "info", "warn", "error", "off"].iter().any(|l| word.eq_ignore_ascii_case(l));
    if bare && !level && word != "switchhook" {
        return Err(refused());
    }
    tracing_subscriber::EnvFilter::try_new(s).map(|_| s.to_owned()).map_err(|_| refused())
}

fn number<T: FromStr>(s: &str) -> Result<T, String> {
    s.trim().parse().map_err(|_| format!("{s:?} is not a whole number"))
}

fn positive(s: &str) -> Result<usize, String> {
    number::<usize>(s).and_then(|n| if n == 0 { Err("must be at least 1".into()) } else { Ok(n) })
}

/// A duration of at least `secs` seconds.
fn at_least(secs: u64) -> impl Fn(&str) -> Result<Duration, String> {
    move |s| {
        duration(s)
            .and_then(|d| if d < Duration::from_secs(secs) { Err(format!("must be at least {secs}s")) } else { Ok(d) })
    }
}

/// A duration like `30s`, `5m`, `7d`.
pub fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|_| format!("{s:?} is not a duration like 30s, 5m or 7d"))
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let fail = |problem: String| ConfigError(vec![Problem { key: "config".into(), problem }]);
    let text = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| {
        // Where and what, but not toml's own text: it quotes the line, which may hold a password.
        let at = e.span().map_or_else(String::new, |span| {
            let before = text.get(..span.start).unwrap_or_default();
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().unwrap_or_default().chars().count() + 1;
            format!("line {line}, column {column}: ")
        });
        fail(format!("{}: {at}{}", path.display(), e.message().trim_end()))
    })
}

/// The SQLite URL of a file path.
pub fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}

/// A URL with whatever may be a password replaced by `***`, for logs and errors: the user
/// part's password, and the value of every query parameter named like a secret (PostgreSQL
/// URLs accept `password` and libpq's `sslpassword`).
///
/// It works on the text, not on a parsed URL: a URL the parser refuses (a port past 65535) must
/// be hidden too, and the parser reads some passwords as a port (`u:1234/x@h`). The password is
/// everything from the first `:` after `scheme://` to the last `@` after it, so a query value
/// with an `@` in it can widen what is hidden, never narrow it.
pub fn redact_url(raw: &str) -> String {
    let start = raw.find("://").map_or(0, |i| i + 3);
    let rest = &raw[start..];
    let mut hidden = Vec::new();
    if let Some(at) = rest.rfind('@')
        && let Some(colon) = rest[..at].find(':')
    {
        hidden.push(start + colon + 1..start + at);
    }
    // Every `?` or `&` may start a parameter, whatever the parser would make of the text.
    for (i, _) in rest.match_indices(['?', '&']) {
        let pair = &rest[i + 1..];
        let pair = &pair[..pair.find('&').unwrap_or(pair.len())];
        if let Some((key, value)) = pair.split_once('=')
            && secret(key)
            && !value.is_empty()
        {
            let from = start + i + 1 + key.len() + 1;
            hidden.push(from..from + value.len());
        }
    }
    hidden.sort_by_key(|r| r.start);
    let mut out = String::with_capacity(raw.len());
    let mut copied = 0;
    for range in hidden {
        if range.start >= copied {
            out.push_str(&raw[copied..range.start]);
            out.push_str("***");
        }
        copied = copied.max(range.end);
    }
    out.push_str(&raw[copied..]);
    out
}

/// A query parameter whose value is a secret.
fn secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["password", "passwd", "secret", "token"].iter().any(|word| key.contains(word))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(file: &str, overrides: Overrides, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let file: FileConfig = toml::from_str(file).unwrap();
        Config::build(file, &overrides, |k| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string()))
    }

    /// Settings that must be refused, with `said` in the message.
    fn assert_refused(file: &str, env: &[(&str, &str)], said: &str) {
        let err = build(file, Overrides::default(), env).unwrap_err().to_string();
        assert!(err.contains(said), "{said:?} not in {err}");
    }

    #[test]
    fn defaults_put_sqlite_in_the_data_dir() {
        let c = build("", Overrides::default(), &[]).unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.database_url, "sqlite://./switchhook-data/switchhook.db");
        assert_eq!(c.limits.max_retries, 100);
        assert_eq!(c.token_secret, None);
        let d = &c.delivery;
        assert_eq!((d.concurrency, d.per_hook_concurrency, d.per_domain_concurrency), (256, 128, 256));
        // The per-domain cap follows a concurrency that was set, unless it is set too.
        let c = build("[delivery]\nconcurrency = 40", Overrides::default(), &[]).unwrap();
        assert_eq!(c.delivery.per_domain_concurrency, 40);
        let env = [("SWITCHHOOK_DELIVERY_PER_DOMAIN_CONCURRENCY", "7")];
        assert_eq!(build("", Overrides::default(), &env).unwrap().delivery.per_domain_concurrency, 7);
    }

    #[test]
    fn http_limits_have_defaults_and_are_checked() {
        let h = build("", Overrides::default(), &[]).unwrap().http;
        assert_eq!(
            (h.header_timeout, h.body_timeout, h.max_connections),
            (Duration::from_secs(30), Duration::from_secs(60), 1024)
        );
        let file = "[http]\nheader_timeout = \"5s\"\nmax_connections = 10";
        let h = build(file, Overrides::default(), &[("SWITCHHOOK_HTTP_BODY_TIMEOUT", "2m")]).unwrap().http;
        assert_eq!(
            (h.header_timeout, h.body_timeout, h.max_connections),
            (Duration::from_secs(5), Duration::from_secs(120), 10)
        );
        let file = "[http]\nheader_timeout = \"10ms\"\nbody_timeout = \"soon\"\nmax_connections = 0";
        let err = build(file, Overrides::default(), &[]).unwrap_err().to_string();
        for problem in ["http.header_timeout", "must be at least 1s", "http.body_timeout", "http.max_connections"] {
            assert!(err.contains(problem), "{problem} in {err}");
        }
        let err = build("[http]\nmax_connections = 1000001", Overrides::default(), &[]).unwrap_err().to_string();
        assert!(err.contains("must be at most 1000000"), "{err}");
    }

    #[test]
    fn overrides_beat_the_file_and_env_beats_the_file() {
        let file = "listen = \"0.0.0.0:1\"\ndata_dir = \"/f\"\nmax_retries = 5\nlog = \"debug\"";
        let o = Overrides { listen: Some("127.0.0.1:2".into()), ..Default::default() };
        let c = build(file, o, &[("SWITCHHOOK_MAX_RETRIES", "7")]).unwrap();
        assert_eq!(c.listen.port(), 2);
        assert_eq!(c.data_dir, PathBuf::from("/f"));
        assert_eq!(c.database_url, "sqlite:///f/switchhook.db");
        assert_eq!(c.limits.max_retries, 7);
        assert_eq!(c.log, "debug");
    }

    #[test]
    fn reports_every_bad_key_at_once() {
        let file = "listen = \"nowhere\"\ndatabase_url = \"mysql://x\"";
        let err = build(file, Overrides::default(), &[("SWITCHHOOK_MAX_RETRIES", "-1")]).unwrap_err();
        let keys: Vec<_> = err.0.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["listen", "database_url", "max_retries"]);
        assert!(err.to_string().contains("listen: \"nowhere\" is not an address"), "{err}");
    }

    /// A file value of the wrong type or range is reported by its key, with every other bad
    /// value, as an environment variable's is (the ops audit got one TOML parse error, at the
    /// first bad line, naming no key).
    #[test]
    fn bad_file_values_are_reported_by_key_all_at_once() {
        let file = "max_retries = \"ten\"\nlisten = 10022\n[http]\nmax_connections = -1\n\
                    [delivery]\nconcurrency = \"many\"\nlease = 30\n[amqp]\nurl = \"amqp://h\"\nprefetch = 70000\n";
        let err = build(file, Overrides::default(), &[]).unwrap_err();
        let keys: Vec<_> = err.0.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "listen",
                "max_retries",
                "http.max_connections",
                "delivery.concurrency",
                "delivery.lease",
                "amqp.prefetch"
            ]
        );
        let text = err.to_string();
        assert!(text.contains("max_retries: \"ten\" is not a whole number (from the config file)"), "{text}");
        assert!(text.contains("delivery.lease: \"30\" is not a duration like 30s, 5m or 7d"), "{text}");
        assert!(text.contains("amqp.prefetch: must be from 1 to 65535"), "{text}");
        // Numbers written as numbers still work, and a table where a value belongs is refused.
        let c = build("max_retries = 5\n[delivery]\nconcurrency = 8\nlease = \"10s\"", Overrides::default(), &[]);
        assert_eq!(c.map(|c| (c.limits.max_retries, c.delivery.concurrency)).unwrap(), (5, 8));
        assert!(toml::from_str::<FileConfig>("log = {a = 1}").is_err());
    }

    /// A file TOML cannot read is reported by line, column and what is wrong, without the
    /// line itself: toml's own message quotes it, and the line may hold a password (a
    /// `database_url` missing its closing quote put the database password in the service's
    /// log and on the operator's terminal).
    #[test]
    fn an_unreadable_file_is_reported_without_its_text() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            ("database_url = \"postgres://u:S3CRET@h/db\n", "line 1, column 41: invalid basic string"),
            ("database_url = postgres://u:S3CRET@h/db\n", "line 1, column 16: string values must be quoted"),
            ("listen = \"127.0.0.1:1\"\n[[esl.servers]]\npassword = [\"S3CRET\"]\n", "line 3, column 12: invalid type"),
            ("[amqp]\nurl = \"amqp://u:S3CRET@h\"\nurl = \"amqp://u:S3CRET@h\"\n", "line 3, column 1: duplicate key"),
        ];
        for (text, said) in cases {
            let path = dir.path().join("switchhook.toml");
            std::fs::write(&path, text).unwrap();
            let err = read_file(&path).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains(said), "{said:?} not in {err}");
            assert!(err.contains("switchhook.toml"), "{err}");
            assert!(!err.contains("S3CRET"), "{text:?}: {err}");
        }
    }

    /// An empty node id would be shared by every node given one (the ops audit started with
    /// `SWITCHHOOK_DELIVERY_NODE_ID=""`).
    #[test]
    fn an_empty_node_id_is_refused() {
        assert_refused(
            "",
            &[("SWITCHHOOK_DELIVERY_NODE_ID", "")],
            "delivery.node_id: must not be empty (from SWITCHHOOK_DELIVERY_NODE_ID)",
        );
        assert_refused("[delivery]\nnode_id = \" \"", &[], "delivery.node_id: must not be empty");
        let c = build("[delivery]\nnode_id = \"n1\"", Overrides::default(), &[]).unwrap();
        assert_eq!(c.delivery.node_id.as_deref(), Some("n1"));
    }

    /// An empty data folder is refused naming where it came from, as every other setting (the
    /// ops audit's `SWITCHHOOK_DATA_DIR=""` got clap's message about `--data-dir`).
    #[test]
    fn an_empty_data_dir_is_refused_by_key_and_source() {
        assert_refused("", &[("SWITCHHOOK_DATA_DIR", "")], "data_dir: must not be empty (from SWITCHHOOK_DATA_DIR)");
        assert_refused("data_dir = \"\"", &[], "data_dir: must not be empty (from the config file)");
        // The variable beats the file, and the flag beats both.
        let c = build("data_dir = \"/f\"", Overrides::default(), &[("SWITCHHOOK_DATA_DIR", "/e")]).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/e"));
        let o = Overrides { data_dir: Some("/o".into()), ..Default::default() };
        assert_eq!(build("", o, &[("SWITCHHOOK_DATA_DIR", "")]).unwrap().data_dir, PathBuf::from("/o"));
    }

    /// A retention of zero prunes every finished delivery at once, log and all (the ops audit
    /// set `delivery.retention = "0s"`); like the other durations, it is at least 1s.
    #[test]
    fn a_zero_retention_is_refused() {
        assert_refused(
            "[delivery]\nretention = \"0s\"",
            &[],
            "delivery.retention: must be at least 1s (from the config file)",
        );
        assert_refused(
            "",
            &[("SWITCHHOOK_DELIVERY_RETENTION", "0")],
            "delivery.retention: must be at least 1s (from SWITCHHOOK_DELIVERY_RETENTION)",
        );
        let c = build("[delivery]\nretention = \"1h\"", Overrides::default(), &[]).unwrap();
        assert_eq!(c.delivery.retention, Duration::from_secs(3600));
    }

    #[test]
    fn a_bare_word_log_filter_must_be_a_level() {
        for good in ["info", "DEBUG", "switchhook", "switchhook=debug,sqlx=warn", "warn,switchhook::sources=trace"] {
            assert_eq!(build("", Overrides::default(), &[("SWITCHHOOK_LOG", good)]).unwrap().log, good);
        }
        let said = "log: \"verbose\" is not a level (trace, debug, info, warn, error, off) or a filter like";
        assert_refused("", &[("SWITCHHOOK_LOG", "verbose")], said);
        assert_refused("log = \"info=[\"", &[], "log: \"info=[\" is not a level");
    }

    #[test]
    fn block_private_networks_is_off_unless_set_true() {
        assert!(!build("", Overrides::default(), &[]).unwrap().delivery.block_private_networks);
        let c = build("[delivery]\nblock_private_networks = true", Overrides::default(), &[]).unwrap();
        assert!(c.delivery.block_private_networks);
        let yes = [("SWITCHHOOK_DELIVERY_BLOCK_PRIVATE_NETWORKS", "yes")];
        assert_refused("", &yes, "delivery.block_private_networks: \"yes\" is not true or false");
    }

    #[test]
    fn max_hooks_per_domain_is_at_least_one() {
        assert_eq!(build("", Overrides::default(), &[]).unwrap().max_hooks_per_domain, 10_000);
        let c = build("max_hooks_per_domain = 50", Overrides::default(), &[]).unwrap();
        assert_eq!(c.max_hooks_per_domain, 50);
        let zero = [("SWITCHHOOK_MAX_HOOKS_PER_DOMAIN", "0")];
        assert_refused("", &zero, "max_hooks_per_domain: must be at least 1 (from SWITCHHOOK_MAX_HOOKS_PER_DOMAIN)");
    }

    #[test]
    fn unknown_file_keys_are_rejected() {
        let err = toml::from_str::<FileConfig>("lsiten = \"x\"").unwrap_err();
        assert!(err.to_string().contains("unknown field `lsiten`"), "{err}");
    }

    #[test]
    fn amqp_is_off_without_a_url_and_takes_exchanges_from_the_file() {
        assert!(build("", Overrides::default(), &[]).unwrap().amqp.is_none());
        let c = build("", Overrides::default(), &[("SWITCHHOOK_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")])
            .unwrap();
        let a = c.amqp.unwrap();
        assert_eq!((a.queue.as_str(), a.prefetch, a.exchanges.len()), ("switchhook.events", 500, 1));
        assert_eq!(a.exchanges[0].name, "TAP.Events");
        assert_eq!(a.exchanges[0].format_fields, routing::fields(routing::DEFAULT_FORMAT));
        let file = "[amqp]\nurl = \"amqp://h\"\nprefetch = 10\n[[amqp.exchanges]]\nname = \"engine\"\nformat_fields = \"A,Event-Name\"\n";
        let a = build(file, Overrides::default(), &[]).unwrap().amqp.unwrap();
        assert_eq!(
            (a.prefetch, a.exchanges[0].name.as_str(), a.exchanges[0].format_fields.clone()),
            (10, "engine", vec!["A".to_owned(), "Event-Name".to_owned()])
        );
        let err = build("[amqp]\nurl = \"http://x\"\nprefetch = 0", Overrides::default(), &[]).unwrap_err();
        assert_eq!(err.0.iter().map(|p| p.key.as_str()).collect::<Vec<_>>(), ["amqp.url", "amqp.prefetch"]);
        // AMQP names are short strings; amqprs panics on a longer one.
        let long = "q".repeat(256);
        let file = format!("[amqp]\nurl = \"amqp://h\"\nqueue = \"{long}\"\n[[amqp.exchanges]]\nname = \"{long}\"\n");
        let err = build(&file, Overrides::default(), &[]).unwrap_err();
        assert_eq!(err.0.iter().map(|p| p.key.as_str()).collect::<Vec<_>>(), ["amqp.exchanges", "amqp.queue"]);
    }

    #[test]
    fn esl_servers_come_from_the_flag_or_the_file() {
        assert!(build("", Overrides::default(), &[]).unwrap().esl.is_empty());
        let o = Overrides { esl: Some("pw@fs1:8021, fs2:8022".into()), ..Default::default() };
        let c = build("[[esl.servers]]\naddress = \"ignored:1\"", o, &[]).unwrap();
        let got: Vec<(String, String)> = c.esl.into_iter().map(|s| (s.addr, s.password)).collect();
        assert_eq!(got, [("fs1:8021".into(), "pw".into()), ("fs2:8022".into(), "ClueCon".into())]);
        let c =
            build("[[esl.servers]]\n[[esl.servers]]\naddress = \"fs9:9\"\npassword = \"x\"", Overrides::default(), &[])
                .unwrap();
        let got: Vec<(String, String)> = c.esl.into_iter().map(|s| (s.addr, s.password)).collect();
        assert_eq!(got, [("127.0.0.1:8021".into(), "ClueCon".into()), ("fs9:9".into(), "x".into())]);
        let err = build("", Overrides { esl: Some("nope".into()), ..Default::default() }, &[]).unwrap_err();
        assert_eq!(err.0[0].key, "esl");
        // An entry without its address, or the wrong way round, is its password: never quoted.
        for list in ["fs1:8021, S3CRET", "fs1:8021,fs2:8021@S3CRET"] {
            let err = build("", Overrides { esl: Some(list.into()), ..Default::default() }, &[]).unwrap_err();
            assert_eq!(err.0[0].problem, "entry 2: address is not [password@]host:port with a port number", "{list}");
        }
        let file = "[[esl.servers]]\n[[esl.servers]]\naddress = \"S3CRET\"";
        let err = build(file, Overrides::default(), &[]).unwrap_err();
        assert_eq!(err.0[0].key, "esl.servers");
        assert_eq!(err.0[0].problem, "entry 2: address is not [password@]host:port with a port number");
        // A line break would end the `auth` command and send the rest as commands of their own.
        let file = "[[esl.servers]]\naddress = \"fs1:8021\"\npassword = \"S3CRET\\n\\nevent json ALL\"";
        let err = build(file, Overrides::default(), &[]).unwrap_err();
        assert_eq!(err.0[0].problem, "entry 1: password has a line break, which would end FreeSWITCH's auth command");
        let err =
            build("", Overrides { esl: Some("S3\rCRET@fs1:8021".into()), ..Default::default() }, &[]).unwrap_err();
        assert_eq!(err.0[0].problem, "entry 1: password has a line break, which would end FreeSWITCH's auth command");
    }

    #[test]
    fn the_esl_shutdown_grace_is_a_duration_of_at_least_a_second() {
        let grace =
            |file: &str, env: &[(&str, &str)]| build(file, Overrides::default(), env).map(|c| c.esl_shutdown_grace);
        assert_eq!(grace("", &[]), Ok(Duration::from_secs(15)));
        assert_eq!(grace("[esl]\nshutdown_grace = \"1m\"", &[]), Ok(Duration::from_secs(60)));
        assert_eq!(grace("", &[("SWITCHHOOK_ESL_SHUTDOWN_GRACE", "2s")]), Ok(Duration::from_secs(2)));
        let err = grace("[esl]\nshutdown_grace = \"0s\"", &[]).unwrap_err();
        assert_eq!(
            err.0,
            [Problem {
                key: "esl.shutdown_grace".into(),
                problem: "must be at least 1s (from the config file)".into()
            }]
        );
    }

    #[test]
    fn redacts_passwords() {
        let cases = [
            ("postgres://u:pw@h/db", "postgres://u:***@h/db"),
            ("sqlite://x.db", "sqlite://x.db"),
            ("postgres://u@h/db?password=QPASS&sslmode=off", "postgres://u@h/db?password=***&sslmode=off"),
            ("postgres://u:pw@h/db?PASSWORD=x", "postgres://u:***@h/db?PASSWORD=***"),
            (
                "postgres://u@h/db?sslkey=k.pem&sslpassword=x&sslmode=require",
                "postgres://u@h/db?sslkey=k.pem&sslpassword=***&sslmode=require",
            ),
            ("amqp://guest:guest@127.0.0.1:5672/%2f", "amqp://guest:***@127.0.0.1:5672/%2f"),
            ("postgres://u:p%40ss@h/db", "postgres://u:***@h/db"),
            ("not a url", "not a url"),
            // Text the URL parser refuses.
            ("postgres://u:pw@h:99999/db", "postgres://u:***@h:99999/db"),
            ("postgres://u:p/w@h/db", "postgres://u:***@h/db"),
            ("amqp://u:p@w@[::1/%2f", "amqp://u:***@[::1/%2f"),
            ("postgres://u@[h/db?a=1&Password=x", "postgres://u@[h/db?a=1&Password=***"),
            // An `@` in a query value, before or after a secret one (review finding 2).
            ("postgres://u@h:99999/db?password=p@ssw0rd", "postgres://u@h:***"),
            ("postgres://u:pw@h:99999/db?sslpassword=a@b&password=c", "postgres://u:***&password=***"),
            // Passwords the parser reads as a port (review finding 4).
            ("postgres://u:1234/abc@h/db", "postgres://u:***@h/db"),
            ("postgres://u:12?x@h/db", "postgres://u:***@h/db"),
        ];
        for (raw, redacted) in cases {
            assert_eq!(redact_url(raw), redacted, "{raw}");
        }
    }

    /// Whatever the text, redaction never panics and never shows a password it was given.
    #[test]
    fn redaction_never_panics_or_shows_the_password() {
        let parts = ["é", ":", "@", "?", "&", "=", "/", "#", "%", "[", "password", "u", "h", "1"];
        let mut seed = 7u64;
        for _ in 0..20_000 {
            let mut text = String::from("postgres://");
            for _ in 0..(seed % 12) {
                seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                text.push_str(parts[(seed >> 33) as usize % parts.len()]);
            }
            let _ = redact_url(&text);
            let with_secret = format!("{text}u:S3CRET@h/db?password=S3CRET&{text}");
            assert!(!redact_url(&with_secret).contains("S3CRET"), "{with_secret}");
        }
    }
}
