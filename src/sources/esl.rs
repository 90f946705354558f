//! FreeSWITCH event socket (ESL, inbound mode): connects, authenticates, subscribes to exactly
//! the events enabled hooks need, and commits what it reads in batches. ESL has no
//! acknowledgements, so nothing read is dropped while the service runs: when the store is
//! slow, the reader waits. FreeSWITCH does not wait in turn: it queues up to 100,000 events
//! for the connection, then drops them. At shutdown, events the store has not taken within the
//! grace are given up, logged and counted lost.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{CONNECTING, Health, Reconnect};
use crate::event::esl::{EslError, Frame, MAX_FRAME, Parser, RawEvent};
use crate::event::{FREESWITCH_EVENTS, Incoming};
use crate::router::Router;
use crate::telemetry;

/// A commit takes the events of queued reads while it holds fewer than this many.
const BATCH: usize = 1024;
/// Reads waiting for the committer, at most: 2 MB of events with 64 KB reads.
const READS_QUEUED: usize = 32;
/// Time allowed for connecting and for each command's reply during setup.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection that brings nothing for this long is probed with [`PROBE`].
const IDLE: Duration = Duration::from_secs(60);
/// How long the probe's answer (or any other bytes) may take before the connection is
/// taken for dead.
const PROBE_WAIT: Duration = Duration::from_secs(10);
/// An API call every FreeSWITCH answers (`api/response`, the output of `fs_cli -x status`),
/// cheap, and with no effect on the subscription.
const PROBE: &str = "api status";

/// One FreeSWITCH to read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// `host:port`
    pub addr: String,
    pub password: String,
}

impl Server {
    /// Parses `password@host:port` (a bare `host:port` takes the default password).
    pub fn parse(spec: &str) -> Result<Server, String> {
        let (password, addr) = match spec.rsplit_once('@') {
            Some((p, a)) => (p.to_owned(), a),
            None => (DEFAULT_PASSWORD.to_owned(), spec),
        };
        // The entry is not quoted: written the wrong way round, or without its address, what
        // stands where the address should is the password.
        let bad = || "address is not [password@]host:port with a port number".to_owned();
        let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(bad());
        }
        // The password goes in `auth <password>`: a line break would end that command and send
        // the rest to FreeSWITCH as commands of their own.
        if password.contains(['\r', '\n']) {
            return Err("password has a line break, which would end FreeSWITCH's auth command".into());
        }
        Ok(Server { addr: addr.to_owned(), password })
    }

    fn name(&self) -> String {
        format!("esl {}", self.addr)
    }
}

pub const DEFAULT_ADDR: &str = "127.0.0.1:8021";
pub const DEFAULT_PASSWORD: &str = "ClueCon";
/// `esl.shutdown_grace` unless set.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    #[error("connection lost: {0}")]
    Io(#[from] std::io::Error),
    #[error("authentication failed: FreeSWITCH refused the password")]
    BadPassword,
    #[error("FreeSWITCH did not answer in time")]
    Timeout,
    #[error("FreeSWITCH answered {0:?} to {1:?}")]
    Refused(String, String),
    #[error("bad data from FreeSWITCH: {0}")]
    Protocol(#[from] EslError),
    #[error("FreeSWITCH closed the connection")]
    Closed,
    /// Nothing came for [`IDLE`], then nothing in answer to [`PROBE`] either: the peer is gone
    /// without a FIN or RST reaching us (a host that died, a NAT or load balancer that dropped
    /// the idle flow).
    #[error("FreeSWITCH stopped answering: nothing came for {}s, not even the answer to `{PROBE}`", .0.as_secs())]
    Silent(Duration),
    /// `text/disconnect-notice`: FreeSWITCH sends nothing after it but may leave the socket
    /// open (or a proxy may), so the session ends here rather than waiting for the close.
    #[error("FreeSWITCH disconnected: {0}")]
    Disconnected(String),
    #[error("FreeSWITCH refused the connection (its event socket ACL does not allow this address)")]
    Rejected,
    /// The committer task ended while the session ran (it panicked): the session starts again
    /// with a new one.
    #[error("the committer stopped; {0} events read were lost")]
    CommitterStopped(usize),
}

pub struct EslSource {
    pub server: Server,
    pub router: Arc<Router>,
    pub health: Health,
    /// How long shutdown waits for the store to take events already read, counted from the
    /// shutdown or from the last commit that went through after it.
    pub shutdown_grace: Duration,
}

impl EslSource {
    /// Reads until `shutdown`, reconnecting with backoff (capped at 30 s).
    pub async fn run(self, shutdown: CancellationToken) {
        let name = self.server.name();
        self.health.down(&name, CONNECTING.into());
        let mut reconnect = Reconnect::default();
        loop {
            let began = Instant::now();
            let wait = match self.session(&shutdown).await {
                Ok(()) => return,
                Err((e, subscribed)) => {
                    let wait = reconnect.wait(subscribed, began.elapsed());
                    tracing::error!(
                        server = %self.server.addr, error = %e, detail = ?e, "ESL source: reconnecting in {}s", wait.as_secs()
                    );
                    self.health.down(&name, e.to_string());
                    wait
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = shutdown.cancelled() => return,
            }
        }
    }

    /// One connection, until shutdown (`Ok`) or an error, which comes with whether the session
    /// got as far as subscribing.
    async fn session(&self, shutdown: &CancellationToken) -> Result<(), (SessionError, bool)> {
        let mut started = false;
        self.connected(shutdown, &mut started).await.map_err(|e| (e, started))
    }

    async fn connected(&self, shutdown: &CancellationToken, started: &mut bool) -> Result<(), SessionError> {
        let stream = tokio::time::timeout(SETUP_TIMEOUT, TcpStream::connect(&self.server.addr))
            .await
            .map_err(|_| SessionError::Timeout)?
            .map_err(SessionError::Connect)?;
        stream.set_nodelay(true)?;
        let (mut reader, mut writer) = stream.into_split();
        let mut conn = Conn::new(64 * 1024);

        // auth/request, then our password.
        match conn.setup_frame(&mut reader).await? {
            Frame::AuthRequest => {}
            other => return Err(SessionError::Refused(format!("{other:?}"), "connect".into())),
        }
        send(&mut writer, &format!("auth {}", self.server.password)).await?;
        match conn.setup_frame(&mut reader).await? {
            Frame::CommandReply { reply } if reply.starts_with("+OK") => {}
            Frame::CommandReply { .. } => return Err(SessionError::BadPassword),
            other => return Err(SessionError::Refused(format!("{other:?}"), "auth".into())),
        }

        let mut hooks_changed = self.router.index.subscribe();
        self.send_subscription(&mut writer, &mut conn).await?;
        *started = true;
        self.health.up(&self.server.name());
        tracing::info!(server = %self.server.addr, events = conn.subscribed.len(), "ESL source subscribed");

        // Committing runs beside reading. What is read while a commit runs goes into the next
        // one, up to BATCH events: one transaction for many reads. The channel is bounded, so
        // a slow store makes the reader wait rather than drop what it read; only at shutdown
        // are events the store has not taken within the grace given up (and counted lost).
        let (batches, mut inbox) = mpsc::channel::<Vec<Incoming>>(READS_QUEUED);
        let router = self.router.clone();
        let give_up = GiveUp::new(shutdown.clone(), self.shutdown_grace);
        let committer = tokio::spawn(async move {
            while let Some(read) = inbox.recv().await {
                commit(&router, &group(read, &mut inbox), &give_up).await;
            }
        });
        let committer = tokio_util::task::AbortOnDropHandle::new(committer);

        let result =
            self.read_events(&mut reader, &mut writer, &mut conn, &mut hooks_changed, &batches, shutdown).await;
        // Whatever was read is committed, or at shutdown given up after the grace and counted
        // lost, before the session ends.
        drop(batches);
        if let Err(e) = committer.await {
            tracing::error!(server = %self.server.addr, error = %e, "ESL source: the committer failed");
        }
        result
    }

    /// Reads events and hands them to the committer until shutdown (`Ok`) or an error. Shutdown
    /// is checked first, so that nothing is read after it: what is read then could only be
    /// given up. A read waiting for the committer to take it (a slow store, a full queue) is
    /// handed over first; the committer takes it within the shutdown grace, whether it commits
    /// it or gives it up.
    async fn read_events(
        &self,
        reader: &mut (impl AsyncRead + Unpin),
        writer: &mut (impl AsyncWrite + Unpin),
        conn: &mut Conn,
        hooks_changed: &mut watch::Receiver<u64>,
        batches: &mpsc::Sender<Vec<Incoming>>,
        shutdown: &CancellationToken,
    ) -> Result<(), SessionError> {
        // Events that came in the same reads as the setup replies are already buffered.
        let mut early = Vec::new();
        let framed = conn.frames(&mut early, &self.server.addr);
        hand_over(batches, early).await?;
        framed?;
        // One wait for the shutdown, not a new one each time round.
        let cancelled = shutdown.cancelled();
        tokio::pin!(cancelled);
        // A peer that is gone without a FIN or RST reaching us would leave the read waiting
        // for good: a connection quiet for `idle` is probed, and dropped when the probe brings
        // nothing either. The timer is moved on lazily: a busy connection wakes it once per
        // `idle`, not once per read.
        let mut heard = Instant::now();
        let mut probed = false;
        let quiet = tokio::time::sleep(conn.idle);
        tokio::pin!(quiet);
        loop {
            tokio::select! {
                biased;
                () = &mut cancelled => {
                    let _ = send(writer, "exit").await;
                    return Ok(());
                }
                // Before reads, which a busy server always has ready.
                Ok(()) = hooks_changed.changed() => self.send_subscription(writer, conn).await?,
                read = reader.read(&mut conn.buf) => {
                    let n = read?;
                    if n == 0 {
                        return Err(SessionError::Closed);
                    }
                    heard = Instant::now();
                    probed = false;
                    conn.parser.push(&conn.buf[..n]);
                    // The events before a bad frame are committed all the same.
                    let mut events = Vec::new();
                    let framed = conn.frames(&mut events, &self.server.addr);
                    hand_over(batches, events).await?;
                    framed?;
                }
                // Last: bytes already waiting are read first, however long a slow store kept
                // the reader from them.
                () = &mut quiet => {
                    let now = Instant::now();
                    if heard + conn.idle > now {
                        quiet.as_mut().reset(heard + conn.idle);
                    } else if probed {
                        return Err(SessionError::Silent(now - heard));
                    } else {
                        tokio::time::timeout(conn.probe_wait, send(writer, PROBE))
                            .await
                            .map_err(|_| SessionError::Silent(now - heard))??;
                        probed = true;
                        quiet.as_mut().reset(now + conn.probe_wait);
                    }
                }
            }
        }
    }

    /// Brings the subscription to the events enabled hooks need: `event json` for new ones,
    /// `nixevent` for ones no hook needs any more. Replies are checked as they arrive.
    async fn send_subscription(
        &self,
        writer: &mut (impl AsyncWrite + Unpin),
        conn: &mut Conn,
    ) -> Result<(), SessionError> {
        let wanted = subscription_keys(&self.router.index.event_names());
        let subscribed = std::mem::replace(&mut conn.subscribed, wanted.clone());
        let added: Vec<&String> = wanted.difference(&subscribed).collect();
        let removed: Vec<&String> = subscribed.difference(&wanted).collect();
        if !added.is_empty() || !removed.is_empty() {
            tracing::info!(server = %self.server.addr, ?added, ?removed, "ESL subscription changed");
        }
        if let Some(list) = event_list(&added) {
            conn.command(writer, &format!("event json {list}")).await?;
        }
        if let Some(list) = event_list(&removed) {
            conn.command(writer, &format!("nixevent {list}")).await?;
        }
        Ok(())
    }
}

/// What hook events ask of FreeSWITCH, one key a subscription: `CUSTOM->sub` for a custom
/// subclass, else the event name alone. FreeSWITCH gives only `CUSTOM` events a subclass, so
/// `CHANNEL_ANSWER->x` (an event only HTTP ingest brings) needs `CHANNEL_ANSWER`, as the
/// `CHANNEL_ANSWER` hook does: diffing these keys rather than hook events keeps the removal
/// of one from nixing what the other still needs.
fn subscription_keys(hook_events: &BTreeSet<String>) -> BTreeSet<String> {
    hook_events
        .iter()
        .map(|event| match event.split_once("->") {
            Some((name, _)) if name != "CUSTOM" => name.to_owned(),
            _ => event.clone(),
        })
        .collect()
}

/// `CHANNEL_ANSWER CHANNEL_HANGUP CUSTOM callcenter::info engine::dialer_member_end`: plain
/// names first, then `CUSTOM` and the subclasses (FreeSWITCH reads every word after `CUSTOM`
/// as a subclass, so a hook on bare `CUSTOM` must not put it among the names). Names
/// FreeSWITCH does not know (events only HTTP ingest brings) are left out.
fn event_list(hook_events: &[&String]) -> Option<String> {
    let mut names: Vec<&str> = Vec::new();
    let mut subclasses: Vec<&str> = Vec::new();
    let mut custom = false;
    // Hooks stored before a name check existed are checked again: a name must never become
    // a command.
    for event in hook_events.iter().filter(|e| crate::event::check_event_syntax(e).is_ok()) {
        let name = match event.split_once("->") {
            Some(("CUSTOM", sub)) => {
                subclasses.push(sub);
                continue;
            }
            Some((name, _)) => name,
            None => event.as_str(),
        };
        if name == "CUSTOM" {
            custom = true;
        } else if FREESWITCH_EVENTS.contains(&name) {
            names.push(name);
        }
    }
    names.sort_unstable();
    names.dedup();
    if custom || !subclasses.is_empty() {
        names.push("CUSTOM");
        names.extend(subclasses);
    }
    (!names.is_empty()).then(|| names.join(" "))
}

/// The read side of a connection, with the commands waiting for their replies.
struct Conn {
    parser: Parser,
    buf: Vec<u8>,
    /// Commands sent whose `command/reply` has not come yet, oldest first.
    pending: VecDeque<String>,
    /// The events subscribed to on this connection.
    subscribed: BTreeSet<String>,
    /// [`IDLE`] and [`PROBE_WAIT`], shorter in tests.
    idle: Duration,
    probe_wait: Duration,
}

impl Conn {
    /// A new connection's, reading up to `buf` bytes at a time.
    fn new(buf: usize) -> Conn {
        Conn {
            parser: Parser::new(),
            buf: vec![0; buf],
            pending: VecDeque::new(),
            subscribed: BTreeSet::new(),
            idle: IDLE,
            probe_wait: PROBE_WAIT,
        }
    }

    async fn command(&mut self, writer: &mut (impl AsyncWrite + Unpin), command: &str) -> Result<(), SessionError> {
        send(writer, command).await?;
        self.pending.push_back(command.to_owned());
        Ok(())
    }

    /// Takes every whole frame buffered: events into `events`, replies to their commands. Stops
    /// at a frame that ends the session, with the events before it already in `events`.
    fn frames(&mut self, events: &mut Vec<Incoming>, server: &str) -> Result<(), SessionError> {
        while let Some(frame) = self.parser.next_frame()? {
            match frame {
                Frame::Event(raw) => events.extend(incoming(raw)),
                Frame::CommandReply { reply } => self.replied(reply),
                // A lingering socket still gets the events of its call; this one controls none,
                // but reading on is what linger asks for.
                Frame::DisconnectNotice { linger: true, .. } => tracing::info!(%server, "FreeSWITCH lingers"),
                // mod_event_socket sends the notice as the listener ends: nothing follows it.
                Frame::DisconnectNotice { body, linger: false } => return Err(disconnected(&body)),
                frame if is_rejection(&frame) => return Err(SessionError::Rejected),
                Frame::Oversized { content_type, size } => {
                    telemetry::source_rejected("esl");
                    let limit_mib = MAX_FRAME >> 20;
                    tracing::warn!(%server, %content_type, size, "ESL source: skipped a frame over the {limit_mib} MiB limit");
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Matches a reply to its command. A refused subscription is logged, not fatal: dropping
    /// the connection would lose the events of every other hook meanwhile.
    fn replied(&mut self, reply: String) {
        let command = self.pending.pop_front().unwrap_or_default();
        if reply.starts_with("-ERR") {
            tracing::warn!(%command, %reply, "FreeSWITCH refused a subscription command");
        }
    }

    /// The next frame during setup, with a timeout.
    async fn setup_frame(&mut self, reader: &mut (impl AsyncRead + Unpin)) -> Result<Frame, SessionError> {
        tokio::time::timeout(SETUP_TIMEOUT, async {
            loop {
                match self.parser.next_frame()? {
                    // FreeSWITCH's ACL refusal comes instead of the greeting.
                    Some(frame) if is_rejection(&frame) => return Err(SessionError::Rejected),
                    // One that is shutting down says goodbye instead of the greeting or reply.
                    Some(Frame::DisconnectNotice { body, linger: false }) => return Err(disconnected(&body)),
                    Some(frame) => return Ok(frame),
                    None => {}
                }
                let n = reader.read(&mut self.buf).await?;
                if n == 0 {
                    return Err(SessionError::Closed);
                }
                self.parser.push(&self.buf[..n]);
            }
        })
        .await
        .map_err(|_| SessionError::Timeout)?
    }
}

/// The end a `text/disconnect-notice` puts to the session, named by its body's first line.
fn disconnected(body: &str) -> SessionError {
    SessionError::Disconnected(body.lines().next().unwrap_or_default().to_owned())
}

/// FreeSWITCH's answer to an address its event socket ACL does not allow.
fn is_rejection(frame: &Frame) -> bool {
    matches!(frame, Frame::Other { content_type } if content_type == "text/rude-rejection")
}

/// The event for the router, or `None` when its body does not parse. A bad body costs only
/// its own event; it is logged and counted.
fn incoming(raw: RawEvent) -> Option<Incoming> {
    raw.into_incoming()
        .inspect_err(|e| {
            telemetry::source_rejected("esl");
            tracing::warn!(error = %e, "ESL source: skipped an event it could not read");
        })
        .ok()
}

/// Gives a read's events to the committer; if it is gone, they are counted lost.
async fn hand_over(batches: &mpsc::Sender<Vec<Incoming>>, events: Vec<Incoming>) -> Result<(), SessionError> {
    if events.is_empty() {
        return Ok(());
    }
    batches.send(events).await.map_err(|mpsc::error::SendError(events)| {
        telemetry::events_lost("esl", events.len());
        SessionError::CommitterStopped(events.len())
    })
}

async fn send(writer: &mut (impl AsyncWrite + Unpin), command: &str) -> std::io::Result<()> {
    writer.write_all(format!("{command}\n\n").as_bytes()).await
}

/// The next commit: the events of `first`, then those of the reads queued behind it, in order,
/// until the group holds BATCH events or more. Reads queued after that wait for the next one.
fn group(first: Vec<Incoming>, inbox: &mut mpsc::Receiver<Vec<Incoming>>) -> Vec<Incoming> {
    let mut events = first;
    while events.len() < BATCH {
        let Ok(read) = inbox.try_recv() else { break };
        events.extend(read);
    }
    events
}

/// What became of the events handed to [`commit`].
#[derive(Debug, PartialEq, Eq)]
enum Committed {
    Yes,
    /// Given up at shutdown: the store did not take them within the grace period.
    Lost,
}

/// When shutdown stops waiting for the store: `grace` after the later of the shutdown and the
/// last commit that went through during it. A store that is slow but keeps committing drains
/// the queue, however long that takes; one that stalls releases shutdown `grace` after its last
/// commit, and the events queued behind the stalled commit are given up with it rather than
/// each after a grace period of its own.
struct GiveUp {
    shutdown: CancellationToken,
    grace: Duration,
    /// Set when a commit first sees the shutdown; moved on by each commit that goes through.
    at: std::sync::Mutex<Option<tokio::time::Instant>>,
}

impl GiveUp {
    fn new(shutdown: CancellationToken, grace: Duration) -> Self {
        Self { shutdown, grace, at: std::sync::Mutex::new(None) }
    }

    async fn reached(&self) {
        self.shutdown.cancelled().await;
        let at = *self.at.lock().expect("give-up lock").get_or_insert_with(|| tokio::time::Instant::now() + self.grace);
        tokio::time::sleep_until(at).await;
    }

    /// A commit went through: during shutdown, the store has `grace` from now for the next.
    fn progressed(&self) {
        if self.shutdown.is_cancelled() {
            *self.at.lock().expect("give-up lock") = Some(tokio::time::Instant::now() + self.grace);
        }
    }
}

/// Commits events, retrying until the store takes them: ESL cannot resend what was read. Only
/// at shutdown does it give up, when `give_up` is reached, and counts what that loses. A commit
/// still under way then is given up too, so that a store that hangs rather than fails (a lock,
/// a connection that stopped answering) cannot hold shutdown for good: its transaction is
/// rolled back (or, dropped as it committed, may have gone through; counted lost all the same).
async fn commit(router: &Router, events: &[Incoming], give_up: &GiveUp) -> Committed {
    let retried = async {
        let mut wait = Duration::from_millis(100);
        while let Err(e) = router.accept(events, true).await {
            tracing::warn!(error = %e, events = events.len(), "ESL source: cannot commit events; retrying");
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(5));
        }
    };
    tokio::select! {
        // Checked first: events committed as the grace runs out are not counted lost.
        biased;
        () = retried => {
            give_up.progressed();
            Committed::Yes
        }
        () = give_up.reached() => {
            telemetry::events_lost("esl", events.len());
            tracing::error!(
                events = events.len(),
                "ESL source: shutting down with events that could not be committed; they are lost"
            );
            Committed::Lost
        }
    }
}

#[cfg(test)]
mod tests;
