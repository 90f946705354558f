//! A fake FreeSWITCH event socket (inbound mode): `auth`, `event json|plain …`, `nixevent`,
//! `noevents`, `exit` and `api status`, and the simulated events each client subscribed to.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

use super::wire;
use crate::event::{Event, FREESWITCH_EVENTS};

/// An event on its way to the clients, encoded at most once per format.
pub struct Outgoing {
    pub event: Event,
    name: String,
    subclass: Option<String>,
    plain: OnceLock<Vec<u8>>,
    json: OnceLock<Vec<u8>>,
}

impl Outgoing {
    pub fn new(event: Event) -> Arc<Self> {
        let text = |h: &str| event.text(h).map(|v| v.into_owned());
        let (name, subclass) = (text("Event-Name").unwrap_or_default(), text("Event-Subclass"));
        Arc::new(Outgoing { event, name, subclass, plain: OnceLock::new(), json: OnceLock::new() })
    }

    /// An event already encoded (JSON, and the body of its plain form), for load generators
    /// that should not spend their time encoding. `name` is its Event-Name (no subclass).
    pub fn encoded(name: &str, json: Vec<u8>, plain_body: &[u8]) -> Arc<Self> {
        let out = Outgoing {
            event: Event::default(),
            name: name.to_owned(),
            subclass: None,
            plain: OnceLock::new(),
            json: OnceLock::new(),
        };
        let _ = out.json.set(wire::frame("json", &json));
        let _ = out.plain.set(wire::frame("plain", plain_body));
        Arc::new(out)
    }

    fn frame(&self, format: Format) -> &[u8] {
        match format {
            Format::Plain => self.plain.get_or_init(|| wire::event_plain(&self.event)),
            Format::Json => self.json.get_or_init(|| wire::event_json(&self.event)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Plain,
    Json,
}

/// What one client asked for, kept as mod_event_socket keeps it: event names (`CUSTOM` among
/// them once named) and the custom subclasses named after `CUSTOM`.
#[derive(Debug, Default)]
struct Subscription {
    format: Option<Format>,
    all: bool,
    names: HashSet<String>,
    subclasses: HashSet<String>,
}

impl Subscription {
    /// `event <format> <names>`: every word after `CUSTOM` is a subclass.
    fn add(&mut self, words: &[&str]) {
        let mut custom = false;
        for &word in words {
            match word {
                "ALL" => self.all = true,
                "CUSTOM" => {
                    custom = true;
                    self.names.insert(word.to_owned());
                }
                sub if custom => {
                    self.subclasses.insert(sub.to_owned());
                }
                name => {
                    self.names.insert(name.to_owned());
                }
            }
        }
    }

    /// `nixevent <names>`: `CUSTOM` itself stays, as in mod_event_socket (only the subclasses
    /// after it go).
    fn remove(&mut self, words: &[&str]) {
        let mut custom = false;
        for &word in words {
            match word {
                "ALL" => *self = Subscription { format: self.format, ..Default::default() },
                "CUSTOM" => custom = true,
                sub if custom => {
                    self.subclasses.remove(sub);
                }
                name => {
                    self.names.remove(name);
                }
            }
        }
    }

    /// mod_event_socket's `event_handler`: a custom event with a subclass goes out only when
    /// that subclass was named; bare `CUSTOM` brings the custom events without one.
    fn wants(&self, e: &Outgoing) -> Option<Format> {
        let format = self.format?;
        let wanted = self.all
            || self.names.contains(&e.name)
                && match &e.subclass {
                    Some(sub) if e.name == "CUSTOM" => self.subclasses.contains(sub),
                    _ => true,
                };
        wanted.then_some(format)
    }
}

/// Counters the summary reports.
#[derive(Debug, Default)]
pub struct Stats {
    pub clients: AtomicUsize,
    pub frames: AtomicU64,
    /// Events a client fell too far behind to receive (FreeSWITCH drops them too).
    pub dropped: AtomicU64,
}

/// Serves clients on `listener` until `shutdown`. `subscribed` counts clients that
/// subscribed to something, so the generator can wait for the first one.
pub async fn serve(
    listener: TcpListener,
    password: String,
    events: broadcast::Sender<Arc<Outgoing>>,
    subscribed: watch::Sender<usize>,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept a client");
                    continue;
                }
            },
            () = shutdown.cancelled() => return,
        };
        let client = Client {
            password: password.clone(),
            events: events.subscribe(),
            subscribed: subscribed.clone(),
            stats: stats.clone(),
            shutdown: shutdown.clone(),
        };
        tokio::spawn(async move {
            if let Err(e) = client.run(stream).await {
                tracing::debug!(error = %e, "client connection ended");
            }
        });
    }
}

struct Client {
    password: String,
    events: broadcast::Receiver<Arc<Outgoing>>,
    subscribed: watch::Sender<usize>,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
}

impl Client {
    async fn run(mut self, stream: TcpStream) -> std::io::Result<()> {
        stream.set_nodelay(true)?;
        let (mut reader, writer) = stream.into_split();
        let mut writer = BufWriter::with_capacity(256 * 1024, writer);
        writer.write_all(wire::AUTH_REQUEST).await?;
        writer.flush().await?;
        self.stats.clients.fetch_add(1, Ordering::Relaxed);
        let mut authed = false;
        let mut sub = Subscription::default();
        let mut counted = false;
        let mut input = Vec::new();
        let mut buf = vec![0u8; 8192];
        let result = loop {
            tokio::select! {
                read = reader.read(&mut buf) => {
                    let n = read?;
                    if n == 0 {
                        break Ok(());
                    }
                    input.extend_from_slice(&buf[..n]);
                    let mut hang_up = false;
                    while let Some(end) = find(&input, b"\n\n") {
                        let command = String::from_utf8_lossy(&input[..end]).trim().to_owned();
                        input.drain(..end + 2);
                        match self.answer(&command, &mut authed, &mut sub) {
                            Answer::Reply(frame) => writer.write_all(&frame).await?,
                            Answer::Close(frames) => {
                                for frame in frames {
                                    writer.write_all(&frame).await?;
                                }
                                hang_up = true;
                                break;
                            }
                        }
                        if sub.format.is_some() && !counted {
                            counted = true;
                            self.subscribed.send_modify(|n| *n += 1);
                        }
                    }
                    writer.flush().await?;
                    // A client that never ends a command is garbage, not FreeSWITCH's problem.
                    if hang_up || input.len() > 64 * 1024 {
                        break Ok(());
                    }
                }
                event = self.events.recv(), if authed => match event {
                    Ok(e) => {
                        if let Some(format) = sub.wants(&e) {
                            writer.write_all(e.frame(format)).await?;
                            self.stats.frames.fetch_add(1, Ordering::Relaxed);
                        }
                        if self.events.is_empty() {
                            writer.flush().await?;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        self.stats.dropped.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        writer.write_all(&wire::disconnect_notice(wire::GOODBYE)).await?;
                        writer.flush().await?;
                        break Ok(());
                    }
                },
                () = self.shutdown.cancelled() => {
                    writer.write_all(&wire::disconnect_notice(wire::GOODBYE)).await?;
                    writer.flush().await?;
                    break Ok(());
                }
            }
        };
        if counted {
            self.subscribed.send_modify(|n| *n -= 1);
        }
        self.stats.clients.fetch_sub(1, Ordering::Relaxed);
        result
    }

    fn answer(&self, command: &str, authed: &mut bool, sub: &mut Subscription) -> Answer {
        let words: Vec<&str> = command.split_whitespace().collect();
        // Never the password of an `auth` command.
        tracing::debug!(command = %words.first().unwrap_or(&""), "simulate: command");
        let reply = |text: &str| Answer::Reply(wire::command_reply(text));
        match (words.as_slice(), *authed) {
            (["auth", password], false) if *password == self.password => {
                *authed = true;
                reply(wire::REPLY_ACCEPTED)
            }
            (["auth", ..], false) => {
                Answer::Close(vec![wire::command_reply(wire::REPLY_INVALID), wire::disconnect_notice(wire::GOODBYE)])
            }
            (_, false) => reply("-ERR invalid"),
            (["event", format, names @ ..], true) => {
                let format = match *format {
                    "json" => Format::Json,
                    "plain" => Format::Plain,
                    other => return reply(&format!("-ERR unsupported event format {other}")),
                };
                if !has_keyword(names) {
                    return reply("-ERR no keywords supplied");
                }
                sub.format = Some(format);
                sub.add(names);
                reply(&wire::event_listener_enabled(if format == Format::Json { "json" } else { "plain" }))
            }
            (["nixevent", names @ ..], true) => {
                if !has_keyword(names) {
                    return reply("-ERR no keywords supplied");
                }
                sub.remove(names);
                reply("+OK events nixed")
            }
            (["noevents"], true) => {
                *sub = Subscription::default();
                reply("+OK no longer listening for events")
            }
            (["exit"], true) => {
                Answer::Close(vec![wire::command_reply("+OK bye"), wire::disconnect_notice(wire::GOODBYE)])
            }
            (["api", "status"], true) => Answer::Reply(wire::api_response(STATUS)),
            (["api", cmd, ..], true) => Answer::Reply(wire::api_response(&format!("-ERR {cmd} Command not found!\n"))),
            _ => reply("-ERR command not found"),
        }
    }
}

enum Answer {
    Reply(Vec<u8>),
    /// Send these, then hang up.
    Close(Vec<Vec<u8>>),
}

const STATUS: &str = "UP 0 years, 0 days, 0 hours, 0 minutes, 1 second, 0 milliseconds, 0 microseconds\n\
FreeSWITCH (Version 1.10.12-release 64bit) is ready (switchhook simulate)\n\
0 session(s) since startup\n0 session(s) - peak 0, last 5min 0\n0 session(s) per Sec out of max 30, peak 0, last 5min 0\n\
1000 session(s) max\nmin idle cpu 0.00/99.00\nCurrent Stack Size/Max 240K/8192K\n";

/// Whether a word list names anything FreeSWITCH knows (it refuses the command otherwise).
fn has_keyword(words: &[&str]) -> bool {
    words.iter().any(|w| *w == "ALL" || FREESWITCH_EVENTS.contains(w))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn outgoing(v: serde_json::Value) -> Arc<Outgoing> {
        Outgoing::new(Event(v.as_object().unwrap().clone()))
    }

    #[test]
    fn subscriptions_follow_event_nixevent_and_custom_subclasses() {
        let answer = outgoing(json!({"Event-Name": "CHANNEL_ANSWER"}));
        let cc = outgoing(json!({"Event-Name": "CUSTOM", "Event-Subclass": "callcenter::info"}));
        let member = outgoing(json!({"Event-Name": "CUSTOM", "Event-Subclass": "engine::dialer_member_end"}));
        let mut sub = Subscription::default();
        assert_eq!(sub.wants(&answer), None, "nothing before an event command");
        sub.format = Some(Format::Json);
        sub.add(&["CHANNEL_ANSWER", "CUSTOM", "callcenter::info"]);
        assert_eq!(sub.wants(&answer), Some(Format::Json));
        assert_eq!(sub.wants(&cc), Some(Format::Json));
        assert_eq!(sub.wants(&member), None);
        sub.remove(&["CUSTOM", "callcenter::info"]);
        assert_eq!(sub.wants(&cc), None);
        // mod_event_socket's event_handler: a custom event with a subclass goes out only when
        // that subclass was named; bare `CUSTOM` brings the custom events without one, and
        // `nixevent CUSTOM` does not stop those.
        let bare = outgoing(json!({"Event-Name": "CUSTOM"}));
        assert_eq!(sub.wants(&bare), Some(Format::Json));
        sub.add(&["CUSTOM"]);
        assert_eq!(sub.wants(&member), None);
        assert_eq!(sub.wants(&bare), Some(Format::Json));
        sub.add(&["ALL"]);
        assert!(sub.wants(&outgoing(json!({"Event-Name": "HEARTBEAT"}))).is_some());
    }
}
