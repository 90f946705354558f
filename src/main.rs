//! The `switchhook` command: serve, token, migrate.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand};
use switchhook::app::{self, Services};
use switchhook::auth::{Role, now_ms};
use switchhook::config::{Config, Overrides};
use switchhook::simulate::receiver;
use switchhook::store::Revocation;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "switchhook", version, about = "FreeSWITCH events to reliable webhooks")]
struct Cli {
    /// TOML config file.
    #[arg(long, global = true, env = "SWITCHHOOK_CONFIG")]
    config: Option<PathBuf>,
    /// Data folder (created if missing); holds the SQLite store and root.token. Default:
    /// SWITCHHOOK_DATA_DIR, else the config file's, else ./switchhook-data.
    // The variable is read with the other settings, so an empty one is refused by its name.
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Store: sqlite:<path> or postgres://... Default: SQLite in the data folder.
    // `--help` names the variable but not its value, which holds the database password.
    #[arg(long, global = true, env = "SWITCHHOOK_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service.
    Serve {
        /// Address to listen on. Default: the config file's `listen`, else 127.0.0.1:10022.
        #[arg(long, env = "SWITCHHOOK_LISTEN")]
        listen: Option<String>,
        /// FreeSWITCH event sockets to read, comma-separated `[password@]host:port` (the
        /// password is ClueCon when left out).
        // `--help` names the variable but not its value, which holds the passwords.
        #[arg(long, env = "SWITCHHOOK_ESL", hide_env_values = true)]
        esl: Option<String>,
    },
    /// Issue, list and revoke access tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Apply store migrations and exit (serve applies them too).
    Migrate,
    /// A fake FreeSWITCH: realistic call flows over an event socket, or to RabbitMQ.
    Simulate(SimulateArgs),
    /// The end-to-end load test: the service on a temporary store, a receiver, events through
    /// a source; prints throughput, latency, memory and a same-run baseline.
    Bench(BenchArgs),
    /// A webhook receiver that prints what it gets.
    Receive {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: std::net::SocketAddr,
        /// Status code to answer.
        #[arg(long, default_value_t = 200)]
        status: u16,
    },
}

#[derive(Args)]
struct BenchArgs {
    /// Events to push.
    #[arg(long, default_value_t = 100_000)]
    events: u64,
    /// Hooks (one per domain; each event matches exactly one). 0: none match.
    #[arg(long, default_value_t = 1)]
    hooks: usize,
    /// Where events enter: HTTP ingest, the simulated event socket, or RabbitMQ.
    #[arg(long, value_enum, default_value = "http")]
    source: switchhook::bench::Source,
    /// Offered load in events/s (default: as fast as possible).
    #[arg(long)]
    rate: Option<f64>,
    /// RabbitMQ for --source amqp.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    amqp_url: String,
    /// Also write the figures as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Events per ingest request (HTTP source).
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// Ingest requests in flight (HTTP source).
    #[arg(long, default_value_t = 8)]
    senders: usize,
    /// Delivery concurrency of the service, and of the baseline client.
    #[arg(long, default_value_t = 128)]
    concurrency: usize,
    /// Hooks point at a closed port: measures the service holding a backlog.
    #[arg(long)]
    receiver_down: bool,
    /// Nodes sharing one PostgreSQL database (needs --database-url postgres://…).
    #[arg(long, default_value_t = 1)]
    nodes: usize,
}

#[derive(Args)]
struct SimulateArgs {
    /// Event socket address to serve.
    #[arg(long, default_value = "127.0.0.1:8021")]
    listen: std::net::SocketAddr,
    /// Event socket password.
    #[arg(long, default_value = "ClueCon")]
    password: String,
    /// Publish like mod_amqp to this broker (amqp://…) instead of serving an event socket.
    #[arg(long)]
    amqp: Option<String>,
    /// Exchange to publish to (with --amqp).
    #[arg(long, default_value = "TAP.Events")]
    exchange: String,
    /// mod_amqp format_fields for routing keys (with --amqp).
    #[arg(long, default_value = switchhook::event::routing::DEFAULT_FORMAT)]
    format_fields: String,
    /// Calls per second (0: as fast as possible).
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// Domains the calls are spread over: domain-1.example.com …
    #[arg(long, default_value_t = 3)]
    domains: usize,
    /// Stop after this many calls.
    #[arg(long)]
    calls: Option<u64>,
    /// Seed: the same seed sends the same events.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print a new token on stdout.
    Create(CreateToken),
    /// List issued tokens.
    List,
    /// Revoke a token by id, or given whole (one signed elsewhere with this secret).
    Revoke {
        /// The token's id, as `token list` shows it (the `id` claim), or the token itself;
        /// `-` reads either from standard input (out of `ps` and the shell's history).
        #[arg(value_name = "ID|TOKEN|-")]
        token: String,
    },
}

#[derive(Args)]
struct CreateToken {
    /// A root token: every domain, each request names one with ?domain=.
    #[arg(long, conflicts_with_all = ["domain", "role"])]
    root: bool,
    /// The token's domain.
    #[arg(long, required_unless_present = "root", value_parser = domain_name)]
    domain: Option<String>,
    /// admin (every hook permission in the domain) or user (none).
    #[arg(long, required_unless_present = "root", value_parser = ["admin", "user"])]
    role: Option<String>,
    /// Lifetime, e.g. 30d, 12h, 1y.
    #[arg(long, default_value = "30d", value_parser = ttl)]
    ttl: Duration,
}

/// A lifetime above zero: a token of zero is expired when it is printed.
fn ttl(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d.is_zero() => Err("must be more than 0, e.g. 30d".into()),
        Ok(d) => Ok(d),
        Err(e) => Err(format!("{e}; expected a duration like 30d, 12h or 1y")),
    }
}

/// A domain as requests and events can name it: what the API takes as root's `?domain=`.
fn domain_name(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > 255 || s.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("must be a domain name: not empty, no spaces or control characters, at most 255 bytes".into());
    }
    Ok(s.to_owned())
}

fn main() -> ExitCode {
    match start() {
        Ok(()) => ExitCode::SUCCESS,
        // The status a shell shows for a process that SIGPIPE ended (128 + 13).
        Err(e) if e.is::<OutputClosed>() => ExitCode::from(141),
        Err(e) => {
            eprintln!("{}", report(&e));
            ExitCode::FAILURE
        }
    }
}

/// Standard output's reader went away (`token list | head -1`): the command ends quietly, as
/// SIGPIPE ends other tools, which Rust programs ignore.
#[derive(Debug, thiserror::Error)]
#[error("standard output was closed")]
struct OutputClosed;

/// Writes a command's output; `println!` would panic when its reader has gone.
fn say(text: std::fmt::Arguments) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_fmt(text).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(OutputClosed.into()),
        written => written.context("cannot write to standard output"),
    }
}

/// The error and its causes as anyhow's `{:?}` writes them, without the stack trace it adds
/// when `RUST_BACKTRACE` is set: the frames of `main` tell an operator nothing.
fn report(e: &anyhow::Error) -> String {
    let mut out = format!("Error: {e}");
    let causes: Vec<String> = e.chain().skip(1).map(ToString::to_string).collect();
    if let [cause] = causes.as_slice() {
        out.push_str(&format!("\n\nCaused by:\n    {cause}"));
    } else if !causes.is_empty() {
        out.push_str("\n\nCaused by:");
        for (i, cause) in causes.iter().enumerate() {
            out.push_str(&format!("\n    {i}: {cause}"));
        }
    }
    out
}

fn start() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let (listen, esl) = match &cli.command {
        Command::Serve { listen, esl } => (listen.clone(), esl.clone()),
        _ => (None, None),
    };
    // `bench --database-url postgres://…` names a server to run on, not the store of this command.
    let explicit_database = cli.database_url.clone();
    let overrides =
        Overrides { config: cli.config, listen, data_dir: cli.data_dir, database_url: cli.database_url, esl };
    let config = Config::load(&overrides)?;
    let log = match cli.command {
        Command::Serve { .. } => config.log.as_str(),
        Command::Simulate(_) | Command::Receive { .. } => "info",
        _ => "warn",
    };
    // A line that cannot be written (the log's reader went away) is dropped: reporting it would
    // panic the task that logged. Colours only for a terminal, not in files or pipes.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(log))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .log_internal_errors(false)
        .init();
    app::install_crypto_provider();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(cli.command, config, explicit_database))
}

async fn run(command: Command, config: Config, explicit_database: Option<String>) -> anyhow::Result<()> {
    match command {
        Command::Serve { .. } => {
            let listener = tokio::net::TcpListener::bind(config.listen)
                .await
                .with_context(|| format!("cannot listen on {}", config.listen))?;
            let shutdown = CancellationToken::new();
            tokio::spawn(on_signal(shutdown.clone()));
            app::serve(config, listener, shutdown).await
        }
        Command::Migrate => {
            Services::open(&config).await?;
            eprintln!("migrations applied");
            Ok(())
        }
        Command::Token(cmd) => {
            // Run from the wrong folder, a token command would quietly work on a store of its own.
            if let Some(file) = switchhook::store::missing_sqlite_file(&config.database_url) {
                eprintln!(
                    "note: there was no store at {}; this starts a new, empty one. serve sees the tokens of the \
                     store it uses: run this from serve's folder, or give its --data-dir or --database-url",
                    file.display()
                );
            }
            token(cmd, &Services::open(&config).await?).await
        }
        Command::Simulate(args) => simulate(args).await,
        Command::Receive { listen, status } => receive(listen, status).await,
        Command::Bench(args) => {
            let options = switchhook::bench::Options {
                events: args.events,
                hooks: args.hooks,
                source: args.source,
                rate: args.rate,
                database_url: explicit_database.filter(|u| !u.starts_with("sqlite:")),
                amqp_url: args.amqp_url,
                json: args.json,
                batch: args.batch.max(1),
                senders: args.senders.max(1),
                concurrency: args.concurrency.max(1),
                receiver_down: args.receiver_down,
                nodes: args.nodes.max(1),
            };
            let report = switchhook::bench::run(options).await?;
            say(format_args!("{report}"))
        }
    }
}

async fn receive(listen: std::net::SocketAddr, status: u16) -> anyhow::Result<()> {
    use std::io::Write as _;
    let status = axum::http::StatusCode::from_u16(status).context("--status must be an HTTP status code")?;
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    eprintln!("receiving webhooks on http://{listen}/ (answering {status})");
    let shutdown = CancellationToken::new();
    tokio::spawn(on_signal(shutdown.clone()));
    let print = std::sync::Arc::new(|r: receiver::Request| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", receiver::describe(&r));
        let _ = out.flush();
    });
    receiver::serve(listener, status, print, shutdown).await?;
    Ok(())
}

async fn simulate(args: SimulateArgs) -> anyhow::Result<()> {
    let options = switchhook::simulate::run::Options {
        listen: args.listen,
        password: args.password,
        amqp: args.amqp,
        exchange: args.exchange,
        format_fields: args.format_fields,
        rate: args.rate,
        domains: args.domains,
        calls: args.calls,
        seed: args.seed,
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(on_signal(shutdown.clone()));
    let summary = switchhook::simulate::run::run(options, shutdown.clone(), None).await?;
    shutdown.cancel();
    // Let the event socket say goodbye to its clients.
    tokio::time::sleep(Duration::from_millis(100)).await;
    say(format_args!("{summary}"))
}

async fn token(cmd: TokenCommand, services: &Services) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::Create(args) => {
            let role = match args.role.as_deref() {
                _ if args.root => Role::Root,
                Some(r) => Role::parse(r).context("role must be admin or user")?,
                None => bail!("--role is required"),
            };
            let (record, token) = services.issue_token(role, args.domain, args.ttl).await?;
            eprintln!("token {} expires {}", record.id, time(record.expires_at_ms));
            if let Err(e) = say(format_args!("{token}\n")) {
                // It is stored and active, but no one has it.
                eprintln!("token {} was issued but not written; revoke it: switchhook token revoke {0}", record.id);
                return Err(e);
            }
        }
        TokenCommand::List => {
            let now = now_ms();
            say(format_args!("{:<36}  {:<5}  {:<24}  {:<20}  STATUS\n", "ID", "ROLE", "DOMAIN", "EXPIRES"))?;
            for t in services.store.tokens().await? {
                let status = match t.revoked_at_ms {
                    Some(_) => "revoked",
                    None if t.expires_at_ms <= now => "expired",
                    None => "active",
                };
                let domain = t.domain.as_deref().unwrap_or("*");
                let (id, role, expires) = (&t.id, t.role.as_str(), time(t.expires_at_ms));
                say(format_args!("{id:<36}  {role:<5}  {domain:<24}  {expires:<20}  {status}\n"))?;
            }
        }
        // Revoked is what was asked, so a token revoked before is no error; its time stays.
        TokenCommand::Revoke { token } => match services.revoke_token(&given(token)?, now_ms()).await? {
            (id, Revocation::Revoked) => eprintln!("token {id} revoked"),
            (id, Revocation::AlreadyRevoked { at_ms }) => {
                eprintln!("token {id} was already revoked at {}", time(at_ms))
            }
            (id, Revocation::NotFound) => bail!("no token with id {id}"),
        },
    }
    Ok(())
}

/// A command's argument as given, or its first line of standard input for `-`.
fn given(arg: String) -> anyhow::Result<String> {
    if arg != "-" {
        return Ok(arg);
    }
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).context("cannot read standard input")?;
    Ok(line.trim().to_owned())
}

/// `ms` as an RFC 3339 time. RFC 3339 has four-digit years, so a later time (a token made with
/// `--ttl 1000000y`) is written as the last second it can name, rather than not at all.
fn time(ms: i64) -> String {
    const LAST_MS: u64 = 253_402_300_799_000; // 9999-12-31T23:59:59Z
    let t = UNIX_EPOCH + Duration::from_millis((ms.max(0) as u64).min(LAST_MS));
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Cancels `shutdown` on SIGINT or SIGTERM. A second one exits at once, as a crash would: what
/// the store has taken is kept, what was read and not yet committed is not.
async fn on_signal(shutdown: CancellationToken) {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler can be installed");
    // The exit status a shell gives a process the signal ended: 128 + its number.
    let mut signal = async || -> i32 {
        #[cfg(unix)]
        tokio::select! {
            _ = tokio::signal::ctrl_c() => 130,
            _ = term.recv() => 143,
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            130
        }
    };
    signal().await;
    shutdown.cancel();
    tracing::info!("shutting down (a second Ctrl-C or SIGTERM stops at once)");
    let status = signal().await;
    tracing::warn!("a second signal: stopping at once, without waiting for work in flight");
    std::process::exit(status);
}
