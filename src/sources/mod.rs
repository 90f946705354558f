//! Event sources: they read events from FreeSWITCH (event socket, RabbitMQ) and hand them to
//! the router. They never touch delivery or the API.

pub mod amqp;
pub mod esl;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::auth::now_ms;

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
            states.insert(source.to_owned(), state);
        }
    }

    pub fn snapshot(&self) -> BTreeMap<String, SourceState> {
        self.0.lock().expect("health lock").clone()
    }
}
