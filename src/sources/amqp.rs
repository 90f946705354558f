//! RabbitMQ source: consumes FreeSWITCH mod_amqp events (and the contact-center engine's own)
//! from a durable queue bound with one key per hook event, and acknowledges a message only
//! after its deliveries are committed.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use amqprs::callbacks::ChannelCallback;
use amqprs::channel::{
    BasicAckArguments, BasicConsumeArguments, BasicQosArguments, BasicRejectArguments, Channel,
    ExchangeDeclareArguments, QueueBindArguments, QueueDeclareArguments, QueueUnbindArguments,
};
use amqprs::connection::{Connection, OpenConnectionArguments};
use amqprs::{Ack, BasicProperties, Cancel, CloseChannel, Nack, Return};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{CONNECTING, Health, Reconnect};
use crate::event::{Incoming, routing};
use crate::router::Router;
use crate::store::Store;
use crate::telemetry;

/// Messages committed together, at most.
const BATCH: usize = 512;
const NAME: &str = "amqp";
/// Bytes of a rejected message's body that are logged.
const LOGGED_BODY: usize = 200;

/// One exchange to consume from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    pub name: String,
    /// Exchange type, declared if the exchange does not exist yet (`topic`).
    pub kind: String,
    /// How publishers build routing keys on this exchange (mod_amqp `format_fields`). Bindings
    /// match the event name in any word, so this only decides whether they can select by name
    /// at all and by subclass too (see [`routing::binding_key`]).
    pub format_fields: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub url: String,
    /// The durable queue all nodes consume from.
    pub queue: String,
    /// Unacknowledged messages the broker may send ahead.
    pub prefetch: u16,
    pub exchanges: Vec<Exchange>,
}

#[derive(Debug, thiserror::Error)]
enum AmqpError {
    #[error("{context}: {source}")]
    Broker {
        context: &'static str,
        #[source]
        source: amqprs::error::Error,
    },
    #[error("the broker closed the connection")]
    Closed,
    #[error("the broker cancelled the consumer (its queue was deleted, or the node holding it went down)")]
    Cancelled,
    #[error("the broker closed the channel: {0}")]
    ChannelClosed(String),
    /// A channel operation the broker answered by closing the channel: amqprs reports only that
    /// the channel closed, the channel's callback the broker's reason
    /// (`406: PRECONDITION_FAILED - inequivalent arg ...`).
    #[error("{context}: the broker refused: {reason}")]
    Refused { context: &'static str, reason: String },
    #[error("{0}")]
    Url(String),
    /// The peer hung up during the handshake: RabbitMQ refuses a login so, without a reason, to a
    /// client that does not ask for one (amqprs does not). A proxy with no broker behind it, or a
    /// port that is not AMQP, can do the same.
    #[error(
        "cannot connect: {0} (the connection was closed during the AMQP handshake, as RabbitMQ does when it \
         refuses the user name or password of amqp.url)"
    )]
    LoginClosed(#[source] amqprs::error::Error),
}

trait Context<T> {
    fn context(self, context: &'static str) -> Result<T, AmqpError>;
}

impl<T> Context<T> for Result<T, amqprs::error::Error> {
    fn context(self, context: &'static str) -> Result<T, AmqpError> {
        self.map_err(|source| AmqpError::Broker { context, source })
    }
}

pub struct AmqpSource {
    pub settings: Settings,
    pub router: Arc<Router>,
    pub store: Arc<dyn Store>,
    pub health: Health,
}

impl AmqpSource {
    /// Consumes until `shutdown`, reconnecting with backoff (capped at 30 s) when the broker
    /// goes away.
    pub async fn run(self, shutdown: CancellationToken) {
        self.health.down(NAME, CONNECTING.into());
        let mut reconnect = Reconnect::default();
        loop {
            let mut consumed = false;
            let started = tokio::time::Instant::now();
            let wait = match self.session(&shutdown, &mut consumed).await {
                Ok(()) => return,
                Err(e) => {
                    let wait = reconnect.wait(consumed, started.elapsed());
                    tracing::error!(error = %e, "RabbitMQ source: reconnecting in {}s", wait.as_secs());
                    self.health.down(NAME, e.to_string());
                    wait
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    /// One connection, until shutdown (`Ok`) or an error; `consumed` is set once it consumes.
    async fn session(&self, shutdown: &CancellationToken, consumed: &mut bool) -> Result<(), AmqpError> {
        let args = connection_args(&self.settings.url).map_err(AmqpError::Url)?;
        let conn = Connection::open(&args).await.map_err(connect_error)?;
        for exchange in &self.settings.exchanges {
            Declared::Exchange(exchange).ensure(&conn).await?;
        }
        Declared::Queue(&self.settings.queue).ensure(&conn).await?;
        let (channel, mut ended) = watched_channel(&conn).await?;
        let result = self.consume(&conn, &channel, &mut ended, shutdown, consumed).await;
        result.map_err(|e| with_reason(e, &mut ended))
    }

    /// Consumes on `channel` until shutdown or an error; `ended` says when the broker closed
    /// the channel or cancelled the consumer.
    async fn consume(
        &self,
        conn: &Connection,
        channel: &Channel,
        ended: &mut mpsc::UnboundedReceiver<AmqpError>,
        shutdown: &CancellationToken,
        consumed: &mut bool,
    ) -> Result<(), AmqpError> {
        channel
            .basic_qos(BasicQosArguments::new(0, self.settings.prefetch, false))
            .await
            .context("cannot set prefetch")?;
        let mut hooks_changed = self.router.index.subscribe();
        self.rebind(channel, true).await?;
        let consume = BasicConsumeArguments::new(&self.settings.queue, "").manual_ack(true).finish();
        let (_tag, mut inbox) = channel.basic_consume_rx(consume).await.context("cannot consume")?;
        *consumed = true;
        self.health.up(NAME);
        tracing::info!(queue = %self.settings.queue, "RabbitMQ source consuming");
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            tokio::select! {
                n = inbox.recv_many(&mut batch, BATCH) => {
                    if n == 0 {
                        // amqprs drops the consumer after the callback saw why.
                        return Err(ended.try_recv().unwrap_or(AmqpError::Closed));
                    }
                    if !self.handle(channel, &mut batch, shutdown).await? {
                        return Ok(());
                    }
                }
                changed = hooks_changed.changed() => {
                    if changed.is_ok() {
                        self.rebind(channel, false).await?;
                    }
                }
                Some(e) = ended.recv() => return Err(e),
                _ = conn.listen_network_io_failure() => return Err(AmqpError::Closed),
                () = shutdown.cancelled() => {
                    // Unacknowledged messages go back to the queue when the connection closes.
                    let _ = conn.clone().close().await;
                    return Ok(());
                }
            }
        }
    }

    /// Commits a batch of messages, then acknowledges it. Bodies that are not JSON objects are
    /// rejected (not requeued). Returns false when shutdown interrupted the commit.
    async fn handle(
        &self,
        channel: &Channel,
        batch: &mut Vec<amqprs::channel::ConsumerMessage>,
        shutdown: &CancellationToken,
    ) -> Result<bool, AmqpError> {
        let mut events = Vec::with_capacity(batch.len());
        let mut last_tag = None;
        for message in batch.drain(..) {
            let Some(tag) = message.deliver.as_ref().map(|d| d.delivery_tag()) else {
                continue;
            };
            match Incoming::from_body(message.content.unwrap_or_default()) {
                Ok(event) => {
                    events.push(event);
                    last_tag = Some(tag);
                }
                Err((e, body)) => {
                    telemetry::source_rejected(NAME);
                    let deliver = message.deliver.as_ref();
                    tracing::warn!(
                        error = %e,
                        exchange = deliver.map_or("", |d| d.exchange().as_str()),
                        routing_key = deliver.map_or("", |d| d.routing_key().as_str()),
                        body = ?String::from_utf8_lossy(&body[..body.len().min(LOGGED_BODY)]),
                        "RabbitMQ source: rejected a message (not requeued)"
                    );
                    channel.basic_reject(BasicRejectArguments::new(tag, false)).await.context("cannot reject")?;
                }
            }
        }
        let Some(last_tag) = last_tag else {
            return Ok(true);
        };
        let mut wait = Duration::from_millis(100);
        while let Err(e) = self.router.accept(&events, false).await {
            tracing::warn!(error = %e, "RabbitMQ source: cannot commit events; holding them unacknowledged");
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = shutdown.cancelled() => return Ok(false),
            }
            wait = (wait * 2).min(Duration::from_secs(5));
        }
        channel.basic_ack(BasicAckArguments::new(last_tag, true)).await.context("cannot acknowledge")?;
        Ok(true)
    }

    /// Binds the queue to exactly the keys enabled hooks need, on every exchange, and unbinds
    /// the rest. The bound set is kept in the store, so keys of hooks deleted while this node
    /// was down are removed too. At the start of a session (`all`) every wanted key is bound,
    /// not only those missing from the recorded set: the queue may be new (deleted, broker data
    /// lost, another broker), and binding is idempotent.
    async fn rebind(&self, channel: &Channel, all: bool) -> Result<(), AmqpError> {
        let (wanted, unbindable) = wanted_bindings(&self.settings.exchanges, &self.router.index.event_names());
        for (event, exchange) in unbindable {
            tracing::error!(
                %event, %exchange,
                "RabbitMQ source: cannot bind this hook event, its binding key is over 255 bytes; edit the hook"
            );
        }
        let meta_key = format!("amqp_bindings:{}", self.settings.queue);
        let stored = self.store.meta(&meta_key).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the recorded AMQP bindings");
            None
        });
        let bound: Bindings = stored.and_then(|s| serde_json::from_str(&s).ok()).unwrap_or_default();
        let to_bind: Vec<_> = if all { wanted.iter().collect() } else { wanted.difference(&bound).collect() };
        for (exchange, key) in to_bind {
            let args = QueueBindArguments::new(&self.settings.queue, exchange, key);
            channel.queue_bind(args).await.context("cannot bind the queue")?;
            tracing::info!(%exchange, %key, "bound");
        }
        // A recorded key too long to have been bound is not on the broker (amqprs would panic on it).
        for (exchange, key) in bound.difference(&wanted).filter(|(_, key)| key.len() <= routing::MAX_KEY_BYTES) {
            let args = QueueUnbindArguments::new(&self.settings.queue, exchange, key);
            channel.queue_unbind(args).await.context("cannot unbind the queue")?;
            tracing::info!(%exchange, %key, "unbound");
        }
        if wanted != bound {
            let text = serde_json::to_string(&wanted).expect("pairs of strings serialize");
            if let Err(e) = self.store.set_meta(&meta_key, &text).await {
                tracing::warn!(error = %e, "cannot record the AMQP bindings");
            }
        }
        Ok(())
    }
}

/// (exchange, binding key) pairs.
type Bindings = BTreeSet<(String, String)>;

/// The bindings hooks on `names` need on `exchanges`, and apart, as (hook event, exchange), those
/// whose key is over AMQP's 255 bytes: amqprs panics on such a key, and only hooks stored before
/// the API refused long names can have one.
fn wanted_bindings(exchanges: &[Exchange], names: &BTreeSet<String>) -> (Bindings, Vec<(String, String)>) {
    let mut wanted = Bindings::new();
    let mut unbindable = Vec::new();
    for exchange in exchanges {
        for name in names {
            let keys = routing::binding_keys(name, &exchange.format_fields);
            // The first key, encoded, is the longest.
            if keys[0].len() > routing::MAX_KEY_BYTES {
                unbindable.push((name.clone(), exchange.name.clone()));
            } else {
                wanted.extend(keys.into_iter().map(|key| (exchange.name.clone(), key)));
            }
        }
    }
    (wanted, unbindable)
}

/// Ends the session when the broker cancels the consumer (the queue was deleted, or the node
/// holding it went down) or closes the channel: the consumer is dead then, and only a new
/// session redeclares and rebinds the queue.
struct EndSession(mpsc::UnboundedSender<AmqpError>);

#[async_trait::async_trait]
impl ChannelCallback for EndSession {
    async fn close(&mut self, _: &Channel, close: CloseChannel) -> Result<(), amqprs::error::Error> {
        let _ = self.0.send(AmqpError::ChannelClosed(close.to_string()));
        Ok(())
    }

    async fn cancel(&mut self, _: &Channel, _: Cancel) -> Result<(), amqprs::error::Error> {
        let _ = self.0.send(AmqpError::Cancelled);
        Ok(())
    }

    async fn flow(&mut self, _: &Channel, active: bool) -> Result<bool, amqprs::error::Error> {
        Ok(active)
    }

    // This channel never publishes.
    async fn publish_ack(&mut self, _: &Channel, _: Ack) {}

    async fn publish_nack(&mut self, _: &Channel, _: Nack) {}

    async fn publish_return(&mut self, _: &Channel, _: Return, _: BasicProperties, _: Vec<u8>) {}
}

/// The parts of an AMQP URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uri {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub vhost: String,
}

/// Parses `amqp://user:pass@host:port/vhost`: the parts percent-decoded (`%2f` is `/`), no
/// path meaning vhost `/`, no credentials meaning guest.
pub fn parse_uri(uri: &str) -> Result<Uri, String> {
    let url = url::Url::parse(uri).map_err(|e| format!("not a URL: {e}"))?;
    if url.scheme() != "amqp" {
        return Err(format!("scheme {}:// is not supported; use amqp://", url.scheme()));
    }
    let host = url.host_str().filter(|h| !h.is_empty()).ok_or("the URL has no host")?;
    Ok(Uri {
        host: host.to_owned(),
        port: url.port().unwrap_or(5672),
        user: match url.username() {
            "" => "guest".to_owned(),
            u => percent_decode(u),
        },
        password: url.password().map_or_else(|| "guest".to_owned(), percent_decode),
        vhost: match url.path().strip_prefix('/').unwrap_or_default() {
            "" => "/".to_owned(),
            v => percent_decode(v),
        },
    })
}

/// Connection settings for an AMQP URI (see [`parse_uri`]).
pub fn connection_args(uri: &str) -> Result<OpenConnectionArguments, String> {
    let u = parse_uri(uri)?;
    let mut args = OpenConnectionArguments::new(&u.host, u.port, &u.user, &u.password);
    args.virtual_host(&u.vhost).heartbeat(30);
    Ok(args)
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// What a session makes sure exists before it consumes.
enum Declared<'a> {
    /// Declared only if it does not exist, so an exchange FreeSWITCH declared with its own
    /// flags is never redeclared (which the broker would refuse).
    Exchange(&'a Exchange),
    /// Declared (durable, no arguments) only if it does not exist: the broker refuses to
    /// redeclare a queue with other arguments (PRECONDITION_FAILED), so one the operator made
    /// beforehand, a quorum queue or one with a length limit, is used as it is.
    Queue(&'a str),
}

impl Declared<'_> {
    async fn declare(&self, channel: &Channel, passive: bool) -> Result<(), amqprs::error::Error> {
        match self {
            Declared::Exchange(e) => {
                let args = ExchangeDeclareArguments::new(&e.name, &e.kind).passive(passive).durable(true).finish();
                channel.exchange_declare(args).await
            }
            Declared::Queue(queue) => {
                let args = QueueDeclareArguments::new(queue).passive(passive).durable(true).finish();
                channel.queue_declare(args).await.map(drop)
            }
        }
    }

    /// Declares it when a passive declare says it is missing, with the broker's reason when
    /// it refuses.
    async fn ensure(&self, conn: &Connection) -> Result<(), AmqpError> {
        let probe = conn.open_channel(None).await.context("cannot open a channel")?;
        if self.declare(&probe, true).await.is_ok() {
            let _ = probe.close().await;
            return Ok(());
        }
        // A failed passive declare closed the probe channel.
        let (channel, mut ended) = watched_channel(conn).await?;
        let context = match self {
            Declared::Exchange(_) => "cannot declare the exchange",
            Declared::Queue(_) => "cannot declare the queue",
        };
        self.declare(&channel, false).await.context(context).map_err(|e| with_reason(e, &mut ended))?;
        let _ = channel.close().await;
        Ok(())
    }
}

/// Why a connection did not open. A broker that refuses it (an unknown vhost, a user without
/// access to it) sends `connection.close` with a reason, which amqprs passes on only inside the
/// frame's Debug text; the reason is taken from there.
fn connect_error(e: amqprs::error::Error) -> AmqpError {
    use amqprs::error::Error;
    match &e {
        Error::NetworkError(m)
            if ["reset by peer", "peer shutdown", "connection interrupted"].iter().any(|c| m.contains(c)) =>
        {
            AmqpError::LoginClosed(e)
        }
        Error::ConnectionOpenError(m) => match close_reason(m) {
            Some(reason) => AmqpError::Refused { context: "cannot connect", reason },
            None => AmqpError::Broker { context: "cannot connect", source: e },
        },
        _ => AmqpError::Broker { context: "cannot connect", source: e },
    }
}

/// `530: NOT_ALLOWED - vhost x not found` from amqprs's Debug text of a `connection.close`
/// (`… reply_code: 530, reply_text: ShortStr(34, "NOT_ALLOWED - vhost x not found"), class_id …`).
fn close_reason(debug: &str) -> Option<String> {
    let code = debug.split_once("reply_code: ")?.1;
    let code = &code[..code.find(|c: char| !c.is_ascii_digit())?];
    let text = debug.split_once("reply_text: ShortStr(")?.1.split_once('"')?.1;
    let text = text.rsplit_once("\"), class_id")?.0;
    Some(format!("{code}: {}", text.replace("\\\"", "\"")))
}

/// A channel, and what ends its use: the broker closing it (with its reason) or cancelling its
/// consumer.
async fn watched_channel(conn: &Connection) -> Result<(Channel, mpsc::UnboundedReceiver<AmqpError>), AmqpError> {
    let channel = conn.open_channel(None).await.context("cannot open a channel")?;
    let (ended_tx, ended) = mpsc::unbounded_channel();
    channel.register_callback(EndSession(ended_tx)).await.context("cannot watch the channel")?;
    Ok((channel, ended))
}

/// `e` with the broker's reason when the broker closed the channel under the operation. amqprs
/// runs the channel's close callback before it fails the pending operation, so the reason is
/// already there.
fn with_reason(e: AmqpError, ended: &mut mpsc::UnboundedReceiver<AmqpError>) -> AmqpError {
    match (e, ended.try_recv()) {
        (AmqpError::Broker { context, .. }, Ok(AmqpError::ChannelClosed(reason))) => {
            AmqpError::Refused { context, reason }
        }
        (e, _) => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_connection_is_told_by_the_brokers_reason() {
        let debug = "failed to open connection, reason: Close(MethodHeader { class_id: 10, method_id: 50 }, Close { \
                     reply_code: 530, reply_text: ShortStr(40, \"NOT_ALLOWED - vhost \\\"a\\\" not found\"), \
                     class_id: 10, method_id: 40 })";
        let e = connect_error(amqprs::error::Error::ConnectionOpenError(debug.into()));
        assert_eq!(e.to_string(), "cannot connect: the broker refused: 530: NOT_ALLOWED - vhost \"a\" not found");
        let other = connect_error(amqprs::error::Error::ConnectionOpenError("no frame".into()));
        assert_eq!(other.to_string(), "cannot connect: AMQP connection open error: no frame");
    }

    #[test]
    fn uris_decode_the_vhost_and_default_to_guest() {
        let u = parse_uri("amqp://guest:guest@127.0.0.1:5672/%2f").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.vhost.as_str()), ("127.0.0.1", 5672, "/"));
        let u = parse_uri("amqp://u%40x:p%2Fw+@h:5673/my%2Fvhost").unwrap();
        let want =
            Uri { host: "h".into(), port: 5673, user: "u@x".into(), password: "p/w+".into(), vhost: "my/vhost".into() };
        assert_eq!(u, want);
        let u = parse_uri("amqp://h").unwrap();
        assert_eq!((u.user.as_str(), u.password.as_str(), u.vhost.as_str()), ("guest", "guest", "/"));
        assert_eq!(parse_uri("amqps://h").unwrap_err(), "scheme amqps:// is not supported; use amqp://");
        assert!(parse_uri("nonsense").is_err());
    }

    #[test]
    fn binding_keys_over_255_bytes_are_left_out_with_their_hook_event() {
        let exchanges = [Exchange {
            name: "TAP.Events".into(),
            kind: "topic".into(),
            format_fields: routing::fields(routing::DEFAULT_FORMAT),
        }];
        let long = format!("CUSTOM->{}", "x:".repeat(70));
        let names = BTreeSet::from(["CHANNEL_ANSWER".to_owned(), long.clone()]);
        let (wanted, unbindable) = wanted_bindings(&exchanges, &names);
        assert_eq!(wanted, Bindings::from([("TAP.Events".into(), "#.CHANNEL_ANSWER.#".into())]));
        assert_eq!(unbindable, [(long, "TAP.Events".to_owned())]);
    }
}
