//! Event sources: they read events from FreeSWITCH (event socket, RabbitMQ) and hand them to
//! the router. They never touch delivery or the API.

pub mod amqp;
pub mod esl;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::auth::now_ms;

/// The wait before a source reconnects: 1 s, doubling up to 30 s. It starts again at 1 s after
/// a session that worked (subscribed, consumed) for at least as long as the wait it would now
/// take, so a server that refuses us during setup, or drops us as soon as we begin, is retried
/// ever more slowly, and one that ran for a while is retried after 1 s.
#[derive(Debug)]
pub struct Reconnect {
    next: Duration,
}

impl Default for Reconnect {
    fn default() -> Self {
        Reconnect { next: Self::FIRST }
    }
}

impl Reconnect {
    const FIRST: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(30);

    /// The wait after a session that ended in an error: `worked` whether it got as far as
    /// reading events, `lasted` how long it ran.
    pub fn wait(&mut self, worked: bool, lasted: Duration) -> Duration {
        if worked && lasted >= self.next {
            self.next = Self::FIRST;
        }
        let wait = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        wait
    }
}

/// A source's error in `/health` from its start until its first connection ends one way or
/// the other, so that a source that hangs connecting is not missing from it.
pub const CONNECTING: &str = "connecting";

/// A source's connection state, as `/health` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceState {
    pub connected: bool,
    /// Why it is not connected (a wrong password, a refused connection...).
    pub error: Option<String>,
    /// When the state last changed, epoch ms.
    pub since: i64,
}

/// The states of all sources, shared with the API.
#[derive(Debug, Clone, Default)]
pub struct Health(Arc<Mutex<BTreeMap<String, SourceState>>>);

impl Health {
    pub fn up(&self, source: &str) {
        self.set(source, SourceState { connected: true, error: None, since: now_ms() });
    }

    pub fn down(&self, source: &str, error: String) {
        self.set(source, SourceState { connected: false, error: Some(error), since: now_ms() });
    }

    fn set(&self, source: &str, state: SourceState) {
        let mut states = self.0.lock().expect("health lock");
        if states.get(source).map(|s| (s.connected, &s.error)) != Some((state.connected, &state.error)) {
            crate::telemetry::source_connected(source, state.connected);
            states.insert(source.to_owned(), state);
        }
    }

    pub fn snapshot(&self) -> BTreeMap<String, SourceState> {
        self.0.lock().expect("health lock").clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reconnect_wait_grows_until_a_session_outlasts_it() {
        let secs = Duration::from_secs;
        let mut r = Reconnect::default();
        // Refused during setup, then dropped as soon as it began: 1, 2, 4 s...
        assert_eq!([r.wait(false, secs(5)), r.wait(true, secs(0)), r.wait(true, secs(1))], [secs(1), secs(2), secs(4)]);
        // ...up to 30 s.
        let capped: Vec<Duration> = (0..4).map(|_| r.wait(false, secs(0))).collect();
        assert_eq!(capped, [secs(8), secs(16), secs(30), secs(30)]);
        // A session that worked for less than the next wait does not reset it; one that worked
        // as long does.
        assert_eq!(r.wait(true, secs(29)), secs(30));
        assert_eq!(r.wait(true, secs(30)), secs(1));
        assert_eq!(r.wait(true, secs(2)), secs(1));
    }
}
