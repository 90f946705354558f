//! The load side of the benchmark: the receiver, the three ways of pushing events in, and the
//! same-run baseline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use amqprs::BasicProperties;
use amqprs::channel::{
    BasicPublishArguments, Channel, ExchangeDeclareArguments, ExchangeDeleteArguments, QueueDeleteArguments,
};
use amqprs::connection::Connection;
use anyhow::{Context as _, bail};
use axum::http::StatusCode;
use serde_json::json;
use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::service::{Cluster, esl_arg};
use super::{Clock, Events, Options, Source, seq_of, show_progress};
use crate::event::{Event, routing};
use crate::hook::{HookDoc, Limits};
use crate::simulate::{receiver, server};
use crate::sources::amqp::connection_args;

/// The receiver every webhook (and the baseline) goes to.
pub struct Receiver {
    pub addr: SocketAddr,
    baseline: Arc<AtomicU64>,
    _stop: tokio_util::sync::DropGuard,
}

impl Receiver {
    pub async fn start(clock: Arc<Clock>) -> anyhow::Result<Receiver> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let baseline = Arc::new(AtomicU64::new(0));
        let count = baseline.clone();
        let on_request: receiver::Callback = Arc::new(move |r: receiver::Request| {
            let seq = seq_of(&r.body);
            if r.uri.path() == "/baseline" {
                count.fetch_add(u64::from(seq.is_some()), Ordering::Relaxed);
            } else if let Some(seq) = seq {
                clock.arrive(seq);
            }
        });
        let stop = CancellationToken::new();
        tokio::spawn(receiver::serve(listener, StatusCode::OK, on_request, stop.clone()));
        Ok(Receiver { addr, baseline, _stop: stop.drop_guard() })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Requests/s a plain keep-alive HTTP client gets from this receiver with `concurrency`
    /// requests in flight, posting the bodies the service would.
    pub async fn baseline(&self, events: &Events, n: u64, concurrency: usize) -> anyhow::Result<f64> {
        let doc = json!({"event": "CHANNEL_ANSWER", "action": {"type": "web", "method": "POST", "url": self.url("/baseline")}});
        let hook = HookDoc::from_body(&doc, "bench", Limits { max_retries: 0 })?.compile()?;
        let bodies: Arc<Vec<String>> = Arc::new(
            (0..n.min(2000))
                .map(|seq| hook.render(&events.get(seq), "CHANNEL_ANSWER", &uuid::Uuid::new_v4().to_string()).body)
                .collect(),
        );
        let client = reqwest::Client::builder().pool_max_idle_per_host(concurrency).build()?;
        let next = Arc::new(AtomicU64::new(0));
        let url = self.url("/baseline");
        let started = Instant::now();
        let workers: Vec<JoinHandle<anyhow::Result<()>>> = (0..concurrency)
            .map(|_| {
                let (client, next, bodies, url) = (client.clone(), next.clone(), bodies.clone(), url.clone());
                tokio::spawn(async move {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            return Ok(());
                        }
                        let body = bodies[(i % bodies.len() as u64) as usize].clone();
                        let r = client.post(&url).header("content-type", "application/json").body(body).send().await?;
                        r.bytes().await?;
                    }
                })
            })
            .collect();
        for w in workers {
            w.await??;
        }
        let secs = started.elapsed().as_secs_f64();
        let got = self.baseline.load(Ordering::Relaxed);
        if got < n {
            bail!("the baseline receiver counted {got} of {n} requests");
        }
        Ok(n as f64 / secs)
    }
}

/// Where events enter the service.
pub enum Input {
    Http,
    Esl { events: broadcast::Sender<Arc<server::Outgoing>>, subscribed: watch::Receiver<usize>, addr: SocketAddr },
    Amqp { conn: Connection, channel: Channel, exchange: String, queue: String },
}

impl Input {
    pub async fn prepare(options: &Options) -> anyhow::Result<Input> {
        Ok(match options.source {
            Source::Http => Input::Http,
            Source::Esl => {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                let addr = listener.local_addr()?;
                let (events, _) = broadcast::channel(1 << 16);
                let (subscribed_tx, subscribed) = watch::channel(0);
                let stats = Arc::new(server::Stats::default());
                let shutdown = CancellationToken::new();
                tokio::spawn(server::serve(listener, "ClueCon".into(), events.clone(), subscribed_tx, stats, shutdown));
                Input::Esl { events, subscribed, addr }
            }
            Source::Amqp => {
                let conn = Connection::open(&connection_args(&options.amqp_url).map_err(anyhow::Error::msg)?)
                    .await
                    .context("cannot reach RabbitMQ")?;
                let channel = conn.open_channel(None).await?;
                let tag = uuid::Uuid::new_v4().simple().to_string();
                let exchange = format!("switchhook.bench.{}", &tag[..8]);
                channel
                    .exchange_declare(ExchangeDeclareArguments::new(&exchange, "topic").durable(true).finish())
                    .await?;
                Input::Amqp { conn, channel, queue: format!("{exchange}.q"), exchange }
            }
        })
    }

    /// Arguments for `serve`.
    pub fn args(&self) -> Vec<String> {
        match self {
            Input::Esl { addr, .. } => esl_arg(*addr),
            _ => Vec::new(),
        }
    }

    /// The config file for `serve`.
    pub fn config(&self, options: &Options) -> String {
        match self {
            Input::Amqp { exchange, queue, .. } => format!(
                "[amqp]\nurl = {:?}\nqueue = {queue:?}\nprefetch = 2000\n[[amqp.exchanges]]\nname = {exchange:?}\n",
                options.amqp_url
            ),
            _ => String::new(),
        }
    }

    /// Pushes every event, at `options.rate` or as fast as the service takes them.
    pub async fn push(
        self: Arc<Self>,
        options: &Options,
        cluster: &Cluster,
        events: Arc<Events>,
        clock: Arc<Clock>,
    ) -> anyhow::Result<Pusher> {
        if let Input::Esl { subscribed, .. } = &*self {
            let mut subscribed = subscribed.clone();
            tokio::time::timeout(Duration::from_secs(30), subscribed.wait_for(|n| *n > 0))
                .await
                .context("the service never subscribed on the event socket")??;
        }
        if let Input::Amqp { .. } = &*self {
            // Give the service a moment to bind its queue before publishing.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let n = options.events;
        let batch = match options.rate {
            Some(rate) => ((rate / 100.0).ceil() as usize).clamp(1, options.batch),
            None => options.batch,
        } as u64;
        let (batches, inbox) = mpsc::channel::<(u64, u64)>(options.senders * 2);
        let accepted = Arc::new(AtomicU64::new(0));
        let rate = options.rate;
        let producer = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_millis(10));
            let mut owed = 0.0;
            let mut seq = 0;
            while seq < n {
                let take = match rate {
                    Some(rate) => {
                        ticker.tick().await;
                        owed += rate / 100.0;
                        let k = owed.floor() as u64;
                        owed -= k as f64;
                        k
                    }
                    None => batch,
                };
                let mut left = take.min(n - seq);
                while left > 0 {
                    let k = left.min(batch);
                    if batches.send((seq, k)).await.is_err() {
                        return;
                    }
                    seq += k;
                    left -= k;
                }
            }
        });
        let inbox = Arc::new(tokio::sync::Mutex::new(inbox));
        let senders = match &*self {
            Input::Http => options.senders,
            _ => 1,
        };
        let workers = (0..senders)
            .map(|w| {
                let (input, inbox, events, clock, accepted) =
                    (self.clone(), inbox.clone(), events.clone(), clock.clone(), accepted.clone());
                // Senders spread over the nodes.
                let node = &cluster.nodes[w % cluster.nodes.len()];
                let (http, url, token) =
                    (node.http.clone(), format!("{}/api/v2/events", node.base), node.token.clone());
                tokio::spawn(async move {
                    loop {
                        let Some((first, k)) = inbox.lock().await.recv().await else {
                            return Ok::<_, anyhow::Error>(());
                        };
                        input.send(first, k, &events, &clock, &http, &url, &token).await?;
                        accepted.fetch_add(k, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        Ok(Pusher { producer, workers, accepted, input: self })
    }

    #[allow(clippy::too_many_arguments)]
    async fn send(
        &self,
        first: u64,
        k: u64,
        events: &Events,
        clock: &Clock,
        http: &reqwest::Client,
        url: &str,
        token: &str,
    ) -> anyhow::Result<()> {
        match self {
            Input::Http => {
                let mut body = Vec::with_capacity(k as usize * 6000);
                body.push(b'[');
                for seq in first..first + k {
                    if seq > first {
                        body.push(b',');
                    }
                    body.extend_from_slice(&events.json(seq));
                }
                body.push(b']');
                // Latency counts from the request, not its answer: a webhook can arrive before
                // the answer does.
                for seq in first..first + k {
                    clock.accept(seq);
                }
                let r = http.post(url).header("X-Access-Token", token).body(body).send().await?;
                if !r.status().is_success() {
                    bail!("ingest answered {}: {}", r.status(), r.text().await?);
                }
            }
            Input::Esl { events: out, .. } => {
                for seq in first..first + k {
                    // Keep the socket's queue short, as a switch that sends no faster than
                    // its client reads.
                    while out.len() > 20_000 {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    let (json, plain) = (events.json(seq), events.plain(seq));
                    let _ = out.send(server::Outgoing::encoded("CHANNEL_ANSWER", json, &plain));
                    clock.accept(seq);
                }
            }
            Input::Amqp { channel, exchange, .. } => {
                let fields = routing::fields(routing::DEFAULT_FORMAT);
                for seq in first..first + k {
                    let body = events.json(seq);
                    let key = routing::routing_key(&Event::from_json(&body)?, &fields);
                    let props = BasicProperties::default().with_content_type("text/json").finish();
                    channel.basic_publish(props, body, BasicPublishArguments::new(exchange, &key)).await?;
                    clock.accept(seq);
                }
            }
        }
        Ok(())
    }

    pub async fn cleanup(&self) {
        if let Input::Amqp { conn, channel, exchange, queue } = self {
            let _ = channel.queue_delete(QueueDeleteArguments::new(queue)).await;
            let _ = channel.exchange_delete(ExchangeDeleteArguments::new(exchange)).await;
            let _ = conn.clone().close().await;
        }
    }
}

pub struct Pusher {
    producer: JoinHandle<()>,
    workers: Vec<JoinHandle<anyhow::Result<()>>>,
    accepted: Arc<AtomicU64>,
    pub input: Arc<Input>,
}

impl Pusher {
    /// Waits until every event is accepted: ingest answered (HTTP), or the service counted it
    /// in (ESL, RabbitMQ: neither acknowledges to the sender). Returns the time it took.
    pub async fn finished(
        self,
        cluster: &Cluster,
        n: u64,
        progress: bool,
        started: Instant,
    ) -> anyhow::Result<Duration> {
        // Looked at as often as the arrivals are, so the end of a run is timed to within 20 ms.
        // Every 250 ms, a run whose webhooks kept pace with ingest was timed up to 250 ms
        // late: its figures came in steps (4,999, 5,263, 5,555 webhooks/s for 50k events).
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        let mut workers = self.workers;
        while !workers.iter().all(JoinHandle::is_finished) {
            tick.tick().await;
            if progress {
                show_progress("accepted", self.accepted.load(Ordering::Relaxed), n, started);
            }
        }
        self.producer.await?;
        for w in workers.drain(..) {
            w.await??;
        }
        if !matches!(*self.input, Input::Http) {
            let deadline = Instant::now() + Duration::from_secs(600);
            loop {
                let got = cluster.events_received(matches!(*self.input, Input::Esl { .. })).await;
                if progress {
                    show_progress("read", got, n, started);
                }
                if got >= n {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("the service read {got} of {n} events");
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(started.elapsed())
    }
}

/// Waits until `expected` webhooks arrived; returns the time since `started`.
pub async fn wait_arrivals(clock: &Clock, expected: u64, progress: bool, started: Instant) -> anyhow::Result<Duration> {
    let mut last = (0, Instant::now());
    loop {
        let got = clock.arrivals.load(Ordering::Relaxed);
        if got >= expected {
            return Ok(started.elapsed());
        }
        if got != last.0 {
            last = (got, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(60) {
            bail!("stalled: {got} of {expected} webhooks arrived");
        }
        if progress {
            show_progress("delivered", got, expected, started);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
