//! Configuration: embedded defaults, then the TOML file, then `SWITCHHOOK_*` variables, then
//! command-line flags. Every bad setting is reported at once, by key.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::hook::Limits;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:10022";
pub const DEFAULT_DATA_DIR: &str = "./switchhook-data";
pub const DEFAULT_MAX_RETRIES: u32 = 100;

/// The config file as written. Every key is optional; unknown keys are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub log: Option<String>,
    pub max_retries: Option<u32>,
}

/// Values given on the command line or through their `SWITCHHOOK_*` variables (clap reads
/// both, flag first).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub database_url: Option<String>,
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
        Self::build(file, overrides, |key| std::env::var(key).ok())
    }

    /// Layers `file`, the variables `env` returns, and `overrides` over the defaults.
    pub fn build(
        file: FileConfig,
        overrides: &Overrides,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut problems = Vec::new();
        let mut problem = |key: &str, text: String| {
            problems.push(Problem {
                key: key.into(),
                problem: text,
            })
        };

        let listen_raw = overrides
            .listen
            .clone()
            .or(file.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.into());
        let listen = listen_raw.parse::<SocketAddr>().unwrap_or_else(|_| {
            problem(
                "listen",
                format!("{listen_raw:?} is not an address like 127.0.0.1:10022"),
            );
            SocketAddr::from(([127, 0, 0, 1], 10022))
        });

        let data_dir = overrides
            .data_dir
            .clone()
            .or(file.data_dir)
            .unwrap_or_else(|| DEFAULT_DATA_DIR.into());
        if data_dir.as_os_str().is_empty() {
            problem("data_dir", "must not be empty".into());
        }

        let database_url = overrides
            .database_url
            .clone()
            .or(file.database_url)
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| sqlite_url(&data_dir.join("switchhook.db")));
        if !["sqlite:", "postgres://", "postgresql://"]
            .iter()
            .any(|p| database_url.starts_with(p))
        {
            problem(
                "database_url",
                format!(
                    "{:?} must start with sqlite:, postgres:// or postgresql://",
                    redact_url(&database_url)
                ),
            );
        }

        let max_retries = match env("SWITCHHOOK_MAX_RETRIES") {
            Some(v) => v.parse::<u32>().unwrap_or_else(|_| {
                problem(
                    "max_retries",
                    format!("SWITCHHOOK_MAX_RETRIES={v:?} is not a whole number"),
                );
                DEFAULT_MAX_RETRIES
            }),
            None => file.max_retries.unwrap_or(DEFAULT_MAX_RETRIES),
        };

        let log = env("SWITCHHOOK_LOG").or(file.log).unwrap_or_else(|| "info".into());
        if tracing_subscriber::EnvFilter::try_new(&log).is_err() {
            problem(
                "log",
                format!("{log:?} is not a log filter like \"info\" or \"switchhook=debug\""),
            );
        }

        let token_secret = env("SWITCHHOOK_TOKEN_SECRET");
        if token_secret.as_deref() == Some("") {
            problem("token_secret", "SWITCHHOOK_TOKEN_SECRET is set but empty".into());
        }

        if !problems.is_empty() {
            return Err(ConfigError(problems));
        }
        Ok(Config {
            listen,
            data_dir,
            database_url,
            token_secret,
            log,
            limits: Limits { max_retries },
        })
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let fail = |problem: String| {
        ConfigError(vec![Problem {
            key: "config".into(),
            problem,
        }])
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| fail(format!("{}: {}", path.display(), e.to_string().trim_end())))
}

/// The SQLite URL of a file path.
pub fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}", path.display())
}

/// A URL with any password replaced by `***`, for logs and errors.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => raw.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(file: &str, overrides: Overrides, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let file: FileConfig = toml::from_str(file).unwrap();
        Config::build(file, &overrides, |k| {
            env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn defaults_put_sqlite_in_the_data_dir() {
        let c = build("", Overrides::default(), &[]).unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.database_url, "sqlite://./switchhook-data/switchhook.db");
        assert_eq!(c.limits.max_retries, 100);
        assert_eq!(c.token_secret, None);
    }

    #[test]
    fn overrides_beat_the_file_and_env_beats_the_file() {
        let file = "listen = \"0.0.0.0:1\"\ndata_dir = \"/f\"\nmax_retries = 5\nlog = \"debug\"";
        let o = Overrides {
            listen: Some("127.0.0.1:2".into()),
            ..Default::default()
        };
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
        assert!(
            err.to_string().contains("listen: \"nowhere\" is not an address"),
            "{err}"
        );
    }

    #[test]
    fn unknown_file_keys_are_rejected() {
        let err = toml::from_str::<FileConfig>("lsiten = \"x\"").unwrap_err();
        assert!(err.to_string().contains("unknown field `lsiten`"), "{err}");
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(redact_url("postgres://u:pw@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact_url("sqlite://x.db"), "sqlite://x.db");
    }
}
