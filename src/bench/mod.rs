//! `switchhook bench`: the end-to-end load test. It starts the service as a child process on a
//! temporary store, runs a receiver, creates hooks, pushes events through a source (HTTP
//! ingest, the simulated event socket, or RabbitMQ), waits for every webhook, and reports
//! throughput, latency, the service's peak memory, and a same-run baseline: the receiver
//! driven directly by a plain HTTP client.

mod drive;
mod service;

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;
use serde_json::{Value, json};

use crate::event::Event;
use crate::simulate::calls::Switch;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Http,
    Esl,
    Amqp,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub events: u64,
    pub hooks: usize,
    pub source: Source,
    /// Offered load in events/s; as fast as possible when `None`.
    pub rate: Option<f64>,
    pub database_url: Option<String>,
    pub amqp_url: String,
    pub json: Option<PathBuf>,
    /// Events per ingest request (HTTP source).
    pub batch: usize,
    /// Ingest requests in flight (HTTP source).
    pub senders: usize,
    /// The service's delivery concurrency, and the baseline client's.
    pub concurrency: usize,
    /// Point the hooks at a closed port: measures the service holding a backlog.
    pub receiver_down: bool,
    /// Nodes sharing the store (PostgreSQL only).
    pub nodes: usize,
}

/// The figures a run produces; also the `--json` file.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub events: u64,
    pub deliveries: u64,
    pub events_per_s: f64,
    pub webhooks_per_s: f64,
    pub baseline_per_s: f64,
    pub ratio_to_baseline: f64,
    pub latency_ms: Latency,
    pub peak_rss_mb: f64,
    /// Service CPU time (all nodes) per event, from start to the last webhook: the figure the
    /// machine's noise moves least.
    pub service_cpu_us_per_event: f64,
    pub source: Source,
    pub store: String,
    pub nodes: usize,
    pub offered_rate: Option<f64>,
    pub elapsed_s: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let l = &self.latency_ms;
        writeln!(
            f,
            "source {:?}, store {}, {} events, {} webhooks",
            self.source, self.store, self.events, self.deliveries
        )?;
        if let Some(rate) = self.offered_rate {
            writeln!(f, "offered load      {rate:.0} events/s")?;
        }
        writeln!(f, "accepted          {:.0} events/s", self.events_per_s)?;
        writeln!(f, "delivered         {:.0} webhooks/s", self.webhooks_per_s)?;
        writeln!(
            f,
            "baseline          {:.0} requests/s (plain HTTP client to the same receiver)",
            self.baseline_per_s
        )?;
        writeln!(f, "ratio to baseline {:.2}", self.ratio_to_baseline)?;
        writeln!(f, "latency (ms)      p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}", l.p50, l.p90, l.p99, l.max)?;
        writeln!(
            f,
            "peak service RSS  {:.1} MB{}",
            self.peak_rss_mb,
            if self.nodes > 1 { " (largest node)" } else { "" }
        )?;
        writeln!(f, "service CPU       {:.0} µs per event", self.service_cpu_us_per_event)
    }
}

/// Times of one run, in nanoseconds since its start, per event sequence number (0: not yet).
pub(crate) struct Clock {
    start: Instant,
    pub accepted: Vec<AtomicU64>,
    pub arrived: Vec<AtomicU64>,
    pub arrivals: AtomicU64,
}

impl Clock {
    fn new(n: u64) -> Arc<Self> {
        let slots = |_| (0..n).map(|_| AtomicU64::new(0)).collect();
        Arc::new(Clock { start: Instant::now(), accepted: slots(()), arrived: slots(()), arrivals: AtomicU64::new(0) })
    }

    pub fn now(&self) -> u64 {
        self.start.elapsed().as_nanos().max(1) as u64
    }

    pub fn accept(&self, seq: u64) {
        if let Some(slot) = self.accepted.get(seq as usize) {
            slot.store(self.now(), Ordering::Relaxed);
        }
    }

    /// Records an arrival; only the first of an event counts.
    pub fn arrive(&self, seq: u64) {
        if let Some(slot) = self.arrived.get(seq as usize) {
            if slot.compare_exchange(0, self.now(), Ordering::Relaxed, Ordering::Relaxed).is_ok() {
                self.arrivals.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Events for the run: realistic CHANNEL_ANSWERs, each with a sequence number (`bench_seq`),
/// its own Unique-ID, and the domain of hook `seq % hooks`. They are encoded once, with
/// fixed-width placeholders that each event's numbers are written over, so the load generator
/// spends its time sending, not encoding.
pub(crate) struct Events {
    json: Vec<Template>,
    plain: Vec<Template>,
    hooks: usize,
}

/// Placeholders: URL-safe, so the plain (URL-encoded) form keeps them as they are.
const SEQ_MARK: &str = "QQQQQQQQQQ";
const HOOK_MARK: &str = "ZZZZZ";

/// An encoded event and where its placeholders are.
struct Template {
    bytes: Vec<u8>,
    seq_at: Vec<usize>,
    hook_at: Vec<usize>,
}

impl Template {
    fn new(bytes: Vec<u8>) -> Self {
        let find = |mark: &str| memchr::memmem::find_iter(&bytes, mark.as_bytes()).collect();
        Template { seq_at: find(SEQ_MARK), hook_at: find(HOOK_MARK), bytes }
    }

    fn render(&self, seq: u64, hook: usize) -> Vec<u8> {
        let mut out = self.bytes.clone();
        let (seq, hook) = (format!("{seq:010}"), format!("{hook:05}"));
        for &at in &self.seq_at {
            out[at..at + SEQ_MARK.len()].copy_from_slice(seq.as_bytes());
        }
        for &at in &self.hook_at {
            out[at..at + HOOK_MARK.len()].copy_from_slice(hook.as_bytes());
        }
        out
    }
}

impl Events {
    fn new(hooks: usize) -> Self {
        let domain =
            if hooks == 0 { "bench-nomatch.example.com".to_owned() } else { format!("bench-{HOOK_MARK}.example.com") };
        let events: Vec<Event> = Switch::new(11, vec!["bench.example.com".into()])
            .calls(100)
            .into_iter()
            .filter(|e| e.get("Event-Name") == Some(&json!("CHANNEL_ANSWER")))
            .map(|mut e| {
                let headers = &mut e.0;
                headers.insert("Unique-ID".into(), Value::String(format!("bench-{SEQ_MARK}")));
                headers.insert("variable_domain_name".into(), Value::String(domain.clone()));
                headers.insert("Channel-Presence-ID".into(), Value::String(format!("1000@{domain}")));
                headers.insert("bench_seq".into(), Value::String(SEQ_MARK.into()));
                // Each event its own identity: two readers of one switch deliver an event once.
                headers.insert("Event-Sequence".into(), Value::String(SEQ_MARK.into()));
                e
            })
            .collect();
        Events {
            json: events.iter().map(|e| Template::new(serde_json::to_vec(&e.0).expect("events serialize"))).collect(),
            plain: events.iter().map(|e| Template::new(crate::simulate::wire::plain_body(e).into_bytes())).collect(),
            hooks,
        }
    }

    fn pick(&self, seq: u64) -> (usize, usize) {
        (seq as usize % self.json.len(), if self.hooks == 0 { 0 } else { seq as usize % self.hooks })
    }

    /// Event `seq` as JSON.
    pub fn json(&self, seq: u64) -> Vec<u8> {
        let (t, hook) = self.pick(seq);
        self.json[t].render(seq, hook)
    }

    /// Event `seq` in the body form of a `text/event-plain` frame.
    pub fn plain(&self, seq: u64) -> Vec<u8> {
        let (t, hook) = self.pick(seq);
        self.plain[t].render(seq, hook)
    }

    /// Event `seq`, parsed.
    pub fn get(&self, seq: u64) -> Event {
        Event::from_json(&self.json(seq)).expect("a template is a JSON object")
    }
}

fn domain(hook: usize) -> String {
    format!("bench-{hook:05}.example.com")
}

/// The sequence number in a body: the value after the last `"bench_seq":"` (the header is
/// the event's last, so searching from the end is short).
pub(crate) fn seq_of(body: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"bench_seq\":\"";
    let at = memchr::memmem::rfind(body, KEY)? + KEY.len();
    let digits = &body[at..];
    let end = digits.iter().position(|b| !b.is_ascii_digit())?;
    std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
}

/// Runs the benchmark and returns (and optionally writes) its report.
pub async fn run(options: Options) -> anyhow::Result<Report> {
    let progress = std::io::stderr().is_terminal();
    let clock = Clock::new(options.events);
    let receiver = drive::Receiver::start(clock.clone()).await?;
    let input = Arc::new(drive::Input::prepare(&options).await?);
    let cluster = service::Cluster::start(&options, &input.args(), &input.config(&options)).await?;
    let result = measure(&options, &cluster, &receiver, input.clone(), clock.clone(), progress).await;
    let peak_rss_mb = cluster.peak_rss_mb();
    let cpu_s = cluster.cpu_s();
    cluster.stop().await;
    input.cleanup().await;
    let (accepted, done) = result?;

    let baseline = if options.receiver_down {
        0.0
    } else {
        eprintln!("baseline: the same receiver driven directly, {} requests in flight…", options.concurrency);
        receiver.baseline(&Events::new(options.hooks), options.events.min(50_000), options.concurrency).await?
    };
    let expected = expected(&options);
    let webhooks_per_s = if expected > 0 { expected as f64 / done.as_secs_f64() } else { 0.0 };
    let report = Report {
        events: options.events,
        deliveries: clock.arrivals.load(Ordering::Relaxed),
        events_per_s: options.events as f64 / accepted.as_secs_f64().max(1e-9),
        webhooks_per_s,
        baseline_per_s: baseline,
        ratio_to_baseline: if baseline > 0.0 { webhooks_per_s / baseline } else { 0.0 },
        latency_ms: latency(&clock),
        peak_rss_mb,
        service_cpu_us_per_event: cpu_s * 1e6 / options.events.max(1) as f64,
        source: options.source,
        store: if options.database_url.is_some() { "postgres".into() } else { "sqlite".into() },
        nodes: options.nodes,
        offered_rate: options.rate,
        elapsed_s: done.as_secs_f64(),
    };
    if let Some(path) = &options.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(report)
}

/// Webhooks the receiver should get: one per event, unless no hook matches or none can arrive.
fn expected(options: &Options) -> u64 {
    if options.hooks == 0 || options.receiver_down { 0 } else { options.events }
}

/// Creates the hooks, pushes the events, and waits: returns the times until every event was
/// accepted and until every webhook arrived.
async fn measure(
    options: &Options,
    cluster: &service::Cluster,
    receiver: &drive::Receiver,
    input: Arc<drive::Input>,
    clock: Arc<Clock>,
    progress: bool,
) -> anyhow::Result<(Duration, Duration)> {
    let url = if options.receiver_down {
        format!("http://127.0.0.1:{}/h", service::closed_port()?)
    } else {
        receiver.url("/h")
    };
    cluster.nodes[0].create_hooks(options.hooks, &url, options.receiver_down).await?;
    let events = Arc::new(Events::new(options.hooks));
    eprintln!("pushing {} events through {:?} ({} hooks)…", options.events, options.source, options.hooks);
    let started = Instant::now();
    let pusher = input.push(options, cluster, events, clock.clone()).await?;
    let accepted = pusher.finished(cluster, options.events, progress, started).await?;
    let expected = expected(options);
    let done = if expected > 0 { drive::wait_arrivals(&clock, expected, progress, started).await? } else { accepted };
    if progress {
        eprintln!();
    }
    Ok((accepted, done))
}

/// Push-to-arrival percentiles (the event sent to the source, to its webhook at the
/// receiver) over the events that have both.
fn latency(clock: &Clock) -> Latency {
    let mut ms: Vec<f64> = clock
        .accepted
        .iter()
        .zip(&clock.arrived)
        .filter_map(|(a, b)| {
            let (a, b) = (a.load(Ordering::Relaxed), b.load(Ordering::Relaxed));
            (a > 0 && b > 0).then(|| b.saturating_sub(a) as f64 / 1e6)
        })
        .collect();
    if ms.is_empty() {
        return Latency::default();
    }
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    Latency { p50: at(0.50), p90: at(0.90), p99: at(0.99), max: at(1.0) }
}

/// A progress line on a terminal.
pub(crate) fn show_progress(label: &str, done: u64, total: u64, started: Instant) {
    let secs = started.elapsed().as_secs_f64();
    eprint!("\r{label:<10} {done:>9}/{total:<9} {:>8.0}/s  {secs:6.1}s", done as f64 / secs.max(1e-9));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_sequence_number_from_the_end() {
        let body = br#"{"id":"x","data":{"a":"\"bench_seq\":\"9\"","bench_seq":"1234"}}"#;
        assert_eq!(seq_of(body), Some(1234));
        assert_eq!(seq_of(b"{}"), None);
    }

    #[test]
    fn events_carry_their_sequence_and_hook_domain() {
        let events = Events::new(3);
        let e = events.get(4);
        assert_eq!(e.domain().as_deref(), Some("bench-00001.example.com"));
        assert_eq!(e.text("Unique-ID").as_deref(), Some("bench-0000000004"));
        assert_eq!(seq_of(&events.json(4)), Some(4));
        let plain = String::from_utf8(events.plain(4)).unwrap();
        assert!(
            plain.contains("Unique-ID: bench-0000000004\n")
                && plain.contains("variable_domain_name: bench-00001.example.com\n"),
            "{plain}"
        );
        assert_eq!(Events::new(0).get(1).domain().as_deref(), Some("bench-nomatch.example.com"));
    }

    #[test]
    fn percentiles_come_from_accepted_and_arrived_events() {
        let clock = Clock::new(4);
        for (i, (a, b)) in
            [(1_000_000, 2_000_000), (1_000_000, 5_000_000), (0, 9), (3_000_000, 4_000_000)].iter().enumerate()
        {
            clock.accepted[i].store(*a, Ordering::Relaxed);
            clock.arrived[i].store(*b, Ordering::Relaxed);
        }
        let l = latency(&clock);
        assert_eq!((l.p50, l.max), (1.0, 4.0));
    }
}
