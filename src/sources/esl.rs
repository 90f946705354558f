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
use tokio_util::sync::CancellationToken;

use super::Health;
use crate::event::esl::{EslError, Frame, Parser, RawEvent};
use crate::event::{FREESWITCH_EVENTS, Incoming};
use crate::router::Router;
use crate::telemetry;

/// A commit takes the events of queued reads while it holds fewer than this many.
const BATCH: usize = 1024;
/// Reads waiting for the committer, at most: 2 MB of events with 64 KB reads.
const READS_QUEUED: usize = 32;
/// Longest wait between reconnect attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Time allowed for connecting and for each command's reply during setup.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

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
        let (host, port) = addr.rsplit_once(':').ok_or_else(|| format!("{addr:?} is not host:port"))?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(format!("{addr:?} is not host:port"));
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
        let mut backoff = Duration::from_secs(1);
        loop {
            match self.session(&shutdown).await {
                Ok(()) => return,
                Err((e, started)) => {
                    // Only a session that got as far as subscribing resets the backoff: a
                    // server that refuses, rejects or drops us during setup is retried ever
                    // more slowly.
                    if started {
                        backoff = Duration::from_secs(1);
                    }
                    tracing::error!(server = %self.server.addr, error = %e, "ESL source: reconnecting in {}s", backoff.as_secs());
                    self.health.down(&name, e.to_string());
                }
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = shutdown.cancelled() => return,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
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
                    conn.parser.push(&conn.buf[..n]);
                    // The events before a bad frame are committed all the same.
                    let mut events = Vec::new();
                    let framed = conn.frames(&mut events, &self.server.addr);
                    hand_over(batches, events).await?;
                    framed?;
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
        let wanted = self.router.index.event_names();
        let subscribed = std::mem::replace(&mut conn.subscribed, wanted.clone());
        let added: Vec<&String> = wanted.difference(&subscribed).collect();
        let removed: Vec<&String> = subscribed.difference(&wanted).collect();
        tracing::debug!(?added, ?removed, "ESL subscription change");
        if let Some(list) = event_list(&added) {
            conn.command(writer, &format!("event json {list}")).await?;
        }
        if let Some(list) = event_list(&removed) {
            conn.command(writer, &format!("nixevent {list}")).await?;
        }
        Ok(())
    }
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
}

impl Conn {
    /// A new connection's, reading up to `buf` bytes at a time.
    fn new(buf: usize) -> Conn {
        Conn { parser: Parser::new(), buf: vec![0; buf], pending: VecDeque::new(), subscribed: BTreeSet::new() }
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
                Frame::DisconnectNotice { body, linger: false } => {
                    return Err(SessionError::Disconnected(body.lines().next().unwrap_or_default().to_owned()));
                }
                frame if is_rejection(&frame) => return Err(SessionError::Rejected),
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
mod tests {
    use super::*;

    #[test]
    fn servers_parse_with_and_without_password() {
        assert_eq!(Server::parse("secret@fs1:8021"), Ok(Server { addr: "fs1:8021".into(), password: "secret".into() }));
        assert_eq!(Server::parse("10.0.0.1:8021").unwrap().password, "ClueCon");
        assert_eq!(Server::parse("p@ss@fs:1").unwrap().password, "p@ss");
        assert!(Server::parse("fs1").is_err());
        assert!(Server::parse("pw@:8021").is_err());
        assert!(Server::parse("pw@fs:port").is_err());
    }

    /// Reads of `sizes` events each, numbered 1, 2, … by `Event-Sequence`.
    fn reads(sizes: &[usize]) -> Vec<Vec<Incoming>> {
        let mut seq = 0;
        sizes
            .iter()
            .map(|&n| {
                (0..n)
                    .map(|_| {
                        seq += 1;
                        Incoming::from_text(format!("{{\"Event-Name\":\"X\",\"Event-Sequence\":\"{seq}\"}}")).unwrap()
                    })
                    .collect()
            })
            .collect()
    }

    fn sequences(events: &[Incoming]) -> Vec<usize> {
        events.iter().map(|e| e.headers().text("Event-Sequence").unwrap().parse().unwrap()).collect()
    }

    #[tokio::test]
    async fn a_commit_takes_every_read_queued_in_order_up_to_a_batch() {
        let (tx, mut inbox) = mpsc::channel(READS_QUEUED);
        // Reads of 7 events, as a 64 KB read of 8.7 KB events gives, queued behind the first.
        for read in reads(&[7; 20]) {
            tx.send(read).await.unwrap();
        }
        let first = inbox.recv().await.unwrap();
        assert_eq!(sequences(&group(first, &mut inbox)), (1..=140).collect::<Vec<_>>());
        assert!(inbox.try_recv().is_err(), "nothing is left behind");

        // A group stops at BATCH events: the next read waits for the next commit.
        for read in reads(&[600, 600, 5]) {
            tx.send(read).await.unwrap();
        }
        let first = inbox.recv().await.unwrap();
        assert_eq!(sequences(&group(first, &mut inbox)), (1..=1200).collect::<Vec<_>>());
        let next = inbox.recv().await.unwrap();
        assert_eq!(sequences(&group(next, &mut inbox)), (1201..=1205).collect::<Vec<_>>());

        // Nothing queued: the read is committed alone, at once.
        let lone = reads(&[3]).pop().unwrap();
        assert_eq!(group(lone, &mut inbox).len(), 3);
    }

    /// A router whose one hook matches `event(n)`, on an SQLite store in `dir`.
    async fn router_on(dir: &std::path::Path) -> (Router, String) {
        let url = format!("sqlite://{}", dir.join("t.db").display());
        let store = crate::store::open(&url).await.unwrap();
        let body = serde_json::json!({"event": "CHANNEL_ANSWER", "action": {"type": "web", "method": "POST", "url": "http://127.0.0.1:9/"}});
        let doc = crate::hook::HookDoc::from_body(&body, "d.com", crate::hook::Limits { max_retries: 0 }).unwrap();
        let (index, broken) = crate::router::HookIndex::new(vec![crate::store::StoredHook { id: "a".repeat(24), doc }]);
        assert!(broken.is_empty());
        let (deliveries, _) = mpsc::channel(1);
        let hot = crate::router::HotPath { deliveries, owner: "n".into(), lease: Duration::from_secs(30) };
        (Router::new(Arc::new(index), store, Default::default(), hot), url)
    }

    fn event(n: usize) -> Incoming {
        let text = format!(
            r#"{{"Event-Name":"CHANNEL_ANSWER","variable_domain_name":"d.com","Core-UUID":"c","Event-Sequence":"{n}"}}"#
        );
        Incoming::from_text(text).unwrap()
    }

    async fn sql(url: &str, statement: &'static str) {
        use sqlx::Connection as _;
        let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::query(statement).execute(&mut conn).await.unwrap();
    }

    /// Commits `events` in the background with `grace`, on a router in `dir` whose store
    /// refuses them until `deliveries_away` is renamed back; returns the task and the store URL.
    async fn refused_commit(
        dir: &std::path::Path,
        events: Vec<Incoming>,
        shutdown: &CancellationToken,
        grace: Duration,
    ) -> (tokio::task::JoinHandle<Committed>, String) {
        let (router, url) = router_on(dir).await;
        sql(&url, "ALTER TABLE deliveries RENAME TO deliveries_away").await;
        let give_up = GiveUp::new(shutdown.clone(), grace);
        (tokio::spawn(async move { commit(&router, &events, &give_up).await }), url)
    }

    #[tokio::test]
    async fn a_commit_retries_until_the_store_takes_the_events() {
        let dir = tempfile::tempdir().unwrap();
        let shutdown = CancellationToken::new();
        let (committing, url) = refused_commit(dir.path(), vec![event(1), event(2)], &shutdown, Duration::ZERO).await;
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert!(!committing.is_finished(), "events read are never given up before shutdown");
        sql(&url, "ALTER TABLE deliveries_away RENAME TO deliveries").await;
        let done = tokio::time::timeout(Duration::from_secs(5), committing).await;
        assert_eq!(done.expect("commits once the store is back").unwrap(), Committed::Yes);
        let count: i64 = {
            use sqlx::Connection as _;
            let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::query_scalar("SELECT count(*) FROM deliveries").fetch_one(&mut conn).await.unwrap()
        };
        assert_eq!(count, 2);
    }

    #[tokio::test]
    async fn at_shutdown_a_commit_gives_up_after_the_grace_period() {
        let dir = tempfile::tempdir().unwrap();
        let shutdown = CancellationToken::new();
        let grace = Duration::from_secs(2);
        let (committing, _) = refused_commit(dir.path(), vec![event(1)], &shutdown, grace).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        shutdown.cancel();
        let cancelled = tokio::time::Instant::now();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!committing.is_finished(), "still trying within the grace period");
        let done = tokio::time::timeout(Duration::from_secs(5), committing).await;
        assert_eq!(done.expect("gives up after the grace period").unwrap(), Committed::Lost);
        assert!(cancelled.elapsed() >= grace);
    }

    /// A store that is slow but keeps committing drains its queue at shutdown: each commit
    /// that goes through gives the next one a grace period of its own, however long the whole
    /// queue takes.
    #[tokio::test]
    async fn at_shutdown_a_slow_store_that_keeps_committing_gets_every_queued_group() {
        use sqlx::Connection as _;
        let dir = tempfile::tempdir().unwrap();
        let shutdown = CancellationToken::new();
        let grace = Duration::from_millis(1500);
        let (router, url) = router_on(dir.path()).await;
        let give_up = GiveUp::new(shutdown.clone(), grace);
        shutdown.cancel();
        let cancelled = tokio::time::Instant::now();
        // Each commit waits 900 ms for a write lock another connection holds: three of them
        // take longer than the grace, and each comes well within a grace of the one before.
        for n in 1..=3 {
            let mut locker = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::query("BEGIN IMMEDIATE").execute(&mut locker).await.unwrap();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(900)).await;
                sqlx::query("COMMIT").execute(&mut locker).await.unwrap();
            });
            assert_eq!(commit(&router, &[event(n)], &give_up).await, Committed::Yes, "group {n}");
        }
        assert!(cancelled.elapsed() > grace, "the groups took {:?}", cancelled.elapsed());
    }

    /// The grace runs from the last commit that went through: the events queued behind a
    /// commit that was given up are given up at once, not after a grace period of their own
    /// each.
    #[tokio::test]
    async fn commits_after_the_grace_ran_out_give_up_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let shutdown = CancellationToken::new();
        let grace = Duration::from_millis(700);
        let (router, url) = router_on(dir.path()).await;
        sql(&url, "ALTER TABLE deliveries RENAME TO deliveries_away").await;
        let give_up = GiveUp::new(shutdown.clone(), grace);
        shutdown.cancel();
        let cancelled = tokio::time::Instant::now();
        assert_eq!(commit(&router, &[event(1)], &give_up).await, Committed::Lost);
        assert!(cancelled.elapsed() >= grace);
        let next = tokio::time::Instant::now();
        assert_eq!(commit(&router, &[event(2)], &give_up).await, Committed::Lost);
        assert!(next.elapsed() < grace / 2, "the second commit waited {:?}", next.elapsed());
    }

    /// `n` CHANNEL_ANSWER frames as FreeSWITCH writes them, each the same length.
    fn answer_frames(n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for i in 0..n {
            let body = format!(r#"{{"Event-Name":"CHANNEL_ANSWER","Core-UUID":"c","Event-Sequence":"{:04}"}}"#, i + 1);
            out.extend(format!("Content-Length: {}\nContent-Type: text/event-json\n\n{body}", body.len()).bytes());
        }
        out
    }

    fn source_on(router: Router) -> EslSource {
        let server = Server::parse("fs:8021").unwrap();
        EslSource {
            server,
            router: Arc::new(router),
            health: Health::default(),
            shutdown_grace: Duration::from_secs(1),
        }
    }

    /// Once shutdown has come, the reader reads nothing more, however much FreeSWITCH has sent:
    /// what it read then could only be given up. It says `exit` instead. (Unless told
    /// otherwise, `select!` picks at random among the ready branches: 20 tries.)
    #[tokio::test]
    async fn after_shutdown_nothing_more_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let source = source_on(router_on(dir.path()).await.0);
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        for _ in 0..20 {
            let (client, mut switch) = tokio::io::duplex(64 * 1024);
            switch.write_all(&answer_frames(10)).await.unwrap();
            let (mut reader, mut writer) = tokio::io::split(client);
            let mut hooks_changed = source.router.index.subscribe();
            let (batches, mut inbox) = mpsc::channel(READS_QUEUED);
            let mut conn = Conn::new(64 * 1024);
            let read = source.read_events(&mut reader, &mut writer, &mut conn, &mut hooks_changed, &batches, &shutdown);
            read.await.unwrap();
            assert!(inbox.try_recv().is_err(), "read after shutdown");
            let mut said = [0; 6];
            switch.read_exact(&mut said).await.unwrap();
            assert_eq!(&said, b"exit\n\n");
        }
    }

    /// A committer that stopped (it panicked) ends the session with an error, so that it starts
    /// again with a new one, rather than as a shutdown that would end the source for good.
    #[tokio::test]
    async fn a_committer_that_stopped_ends_the_session_with_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let source = source_on(router_on(dir.path()).await.0);
        let (client, mut switch) = tokio::io::duplex(64 * 1024);
        switch.write_all(&answer_frames(3)).await.unwrap();
        let (mut reader, mut writer) = tokio::io::split(client);
        let mut hooks_changed = source.router.index.subscribe();
        let (batches, inbox) = mpsc::channel(READS_QUEUED);
        drop(inbox);
        let mut conn = Conn::new(64 * 1024);
        let shutdown = CancellationToken::new();
        let read = source.read_events(&mut reader, &mut writer, &mut conn, &mut hooks_changed, &batches, &shutdown);
        let err = tokio::time::timeout(Duration::from_secs(5), read).await.expect("the session ends").unwrap_err();
        assert!(matches!(err, SessionError::CommitterStopped(n) if n > 0), "{err}");
    }

    /// A reader waiting for the committer to take its read (a slow store, a full queue) when
    /// shutdown comes hands that read over, then reads no more. (20 tries, as above.)
    #[tokio::test]
    async fn at_shutdown_a_reader_waiting_for_the_committer_hands_its_read_over_and_reads_no_more() {
        let dir = tempfile::tempdir().unwrap();
        let source = source_on(router_on(dir.path()).await.0);
        let frame = answer_frames(1).len();
        for _ in 0..20 {
            let shutdown = CancellationToken::new();
            let (client, mut switch) = tokio::io::duplex(64 * 1024);
            switch.write_all(&answer_frames(10)).await.unwrap();
            let (mut reader, mut writer) = tokio::io::split(client);
            let mut hooks_changed = source.router.index.subscribe();
            // The queue is full: the first read waits for the committer.
            let (batches, mut inbox) = mpsc::channel(1);
            batches.send(Vec::new()).await.unwrap();
            // One frame a read.
            let mut conn = Conn::new(frame);
            let read = source.read_events(&mut reader, &mut writer, &mut conn, &mut hooks_changed, &batches, &shutdown);
            let committer = async {
                tokio::time::sleep(Duration::from_millis(50)).await;
                shutdown.cancel();
                assert_eq!(inbox.recv().await.map(|r| r.len()), Some(0));
            };
            let (read, ()) = tokio::join!(tokio::time::timeout(Duration::from_secs(2), read), committer);
            read.expect("the reader stopped at shutdown").unwrap();
            assert_eq!(sequences(&inbox.try_recv().expect("the read handed over")), [1]);
            assert!(inbox.try_recv().is_err(), "read after shutdown");
        }
    }

    #[test]
    fn event_lists_put_custom_subclasses_last() {
        let events: Vec<String> =
            ["CUSTOM->callcenter::info", "CHANNEL_ANSWER", "CUSTOM->engine::dialer_member_end", "CHANNEL_CREATE"]
                .map(String::from)
                .into();
        let refs: Vec<&String> = events.iter().collect();
        assert_eq!(
            event_list(&refs).as_deref(),
            Some("CHANNEL_ANSWER CHANNEL_CREATE CUSTOM callcenter::info engine::dialer_member_end")
        );
        assert_eq!(event_list(&[]), None);
    }

    #[test]
    fn a_hook_on_bare_custom_does_not_turn_later_names_into_subclasses() {
        let events: Vec<String> =
            ["DTMF", "CUSTOM", "CUSTOM->a::b", "HEARTBEAT", "CHANNEL_ANSWER"].map(String::from).into();
        let refs: Vec<&String> = events.iter().collect();
        assert_eq!(event_list(&refs).as_deref(), Some("CHANNEL_ANSWER DTMF HEARTBEAT CUSTOM a::b"));
        let bare = [String::from("CUSTOM"), String::from("DTMF"), String::from("CUSTOM->mod_event_socket::reload")];
        assert_eq!(event_list(&bare.iter().collect::<Vec<_>>()).as_deref(), Some("DTMF CUSTOM"));
    }
}
