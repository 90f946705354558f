//! `switchhook simulate`: a fake FreeSWITCH that emits realistic call flows at a given rate,
//! over its own event socket or, like mod_amqp, to a RabbitMQ exchange.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use amqprs::BasicProperties;
use amqprs::channel::{BasicPublishArguments, Channel, ExchangeDeclareArguments};
use amqprs::connection::Connection;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use super::calls::{Switch, domain_names};
use super::server::{self, Outgoing, Stats};
use crate::event::{Event, routing};
use crate::sources::amqp::connection_args;

/// What to simulate, and where to send it.
#[derive(Debug, Clone)]
pub struct Options {
    pub listen: SocketAddr,
    pub password: String,
    /// Publish to RabbitMQ instead of serving an event socket.
    pub amqp: Option<String>,
    pub exchange: String,
    pub format_fields: String,
    /// Calls per second; 0 means as fast as possible.
    pub rate: f64,
    pub domains: usize,
    /// Stop after this many calls.
    pub calls: Option<u64>,
    pub seed: u64,
}

/// What was sent: events by (hook event name, domain).
#[derive(Debug, Default)]
pub struct Summary {
    pub calls: u64,
    pub events: BTreeMap<(String, String), u64>,
    pub elapsed: Duration,
    pub clients: usize,
    pub frames: u64,
    pub dropped: u64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let total: u64 = self.events.values().sum();
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        writeln!(f, "sent {} calls, {total} events in {secs:.1} s ({:.0} events/s)", self.calls, total as f64 / secs)?;
        if self.frames > 0 || self.clients > 0 {
            writeln!(f, "event socket: {} frames written, {} dropped for slow clients", self.frames, self.dropped)?;
        }
        for ((event, domain), n) in &self.events {
            writeln!(f, "{event:<36} {domain:<28} {n}")?;
        }
        Ok(())
    }
}

/// Where events go.
enum Sink {
    Socket { events: broadcast::Sender<Arc<Outgoing>>, stats: Arc<Stats> },
    Amqp { _conn: Connection, channel: Channel, exchange: String, fields: Vec<String> },
}

impl Sink {
    async fn send(&self, event: Event) -> anyhow::Result<()> {
        match self {
            Sink::Socket { events, .. } => {
                // No receiver (no client) is fine: FreeSWITCH does not keep events either.
                let _ = events.send(Outgoing::new(event));
            }
            Sink::Amqp { channel, exchange, fields, .. } => {
                let key = routing::routing_key(&event, fields);
                let body = serde_json::to_vec(&event.0)?;
                let props = BasicProperties::default().with_content_type("text/json").finish();
                channel.basic_publish(props, body, BasicPublishArguments::new(exchange, &key)).await?;
            }
        }
        Ok(())
    }
}

/// Runs the simulation until `--calls` are sent or `shutdown`; returns what was sent.
/// `ready` receives the bound address once clients can connect.
pub async fn run(
    options: Options,
    shutdown: CancellationToken,
    ready: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
) -> anyhow::Result<Summary> {
    let (sink, mut subscribed) = match &options.amqp {
        Some(url) => {
            let conn = Connection::open(&connection_args(url).map_err(anyhow::Error::msg)?).await?;
            let channel = conn.open_channel(None).await?;
            let declare = ExchangeDeclareArguments::new(&options.exchange, "topic").durable(true).finish();
            channel.exchange_declare(declare).await?;
            let fields = routing::fields(&options.format_fields);
            tracing::info!(exchange = %options.exchange, "publishing to RabbitMQ");
            let (_, rx) = watch::channel(1);
            (Sink::Amqp { _conn: conn, channel, exchange: options.exchange.clone(), fields }, rx)
        }
        None => {
            let listener = tokio::net::TcpListener::bind(options.listen).await?;
            let addr = listener.local_addr()?;
            let (events, _) = broadcast::channel(1 << 16);
            let (subscribed_tx, subscribed_rx) = watch::channel(0);
            let stats = Arc::new(Stats::default());
            let password = options.password.clone();
            tokio::spawn(server::serve(
                listener,
                password,
                events.clone(),
                subscribed_tx,
                stats.clone(),
                shutdown.clone(),
            ));
            tracing::info!(%addr, "event socket listening; waiting for a client to subscribe");
            if let Some(ready) = ready {
                let _ = ready.send(addr);
            }
            (Sink::Socket { events, stats }, subscribed_rx)
        }
    };
    tokio::select! {
        r = subscribed.wait_for(|n| *n > 0) => { r?; }
        () = shutdown.cancelled() => return Ok(Summary::default()),
    }

    let mut switch = Switch::new(options.seed, domain_names(options.domains.max(1)));
    let mut summary = Summary::default();
    let started = Instant::now();
    let tick = Duration::from_millis(20);
    let mut ticker = tokio::time::interval(tick);
    let mut owed = 0.0;
    while options.calls.is_none_or(|max| summary.calls < max) && !shutdown.is_cancelled() {
        let batch = if options.rate > 0.0 {
            ticker.tick().await;
            owed += options.rate * tick.as_secs_f64();
            let n = owed.floor();
            owed -= n;
            n as u64
        } else {
            100
        };
        let batch = options.calls.map_or(batch, |max| batch.min(max - summary.calls));
        let mut events = switch.calls(batch as usize);
        for n in summary.calls..summary.calls + batch {
            // Every tenth call also goes through the contact center.
            if n % 10 == 9 {
                events.extend(switch.callcenter_info());
                events.push(switch.dialer_member_end());
            }
        }
        summary.calls += batch;
        for event in events {
            let name = event.hook_event_name().unwrap_or_default().into_owned();
            let domain = event.domain().unwrap_or_default().into_owned();
            *summary.events.entry((name, domain)).or_default() += 1;
            sink.send(event).await?;
        }
        if options.rate <= 0.0 {
            tokio::task::yield_now().await;
        }
    }
    summary.elapsed = started.elapsed();
    if let Sink::Socket { events, stats } = &sink {
        // Let clients take what was sent before the socket closes.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !events.is_empty() && Instant::now() < deadline && !shutdown.is_cancelled() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        summary.clients = stats.clients.load(Ordering::Relaxed);
        summary.frames = stats.frames.load(Ordering::Relaxed);
        summary.dropped = stats.dropped.load(Ordering::Relaxed);
    }
    Ok(summary)
}
