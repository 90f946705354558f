//! `POST /api/v2/events`: HTTP ingest, the first event source. Answers only once the events'
//! deliveries are committed.

use axum::extract::State;
use axum::response::Response;
use serde_json::{Value, json};

use super::ApiState;
use super::error::{ApiError, ok};
use super::extract::{Body, Caller};
use crate::auth::Perm;
use crate::event::Event;

/// Largest ingest body.
pub const BODY_LIMIT: usize = 10 << 20;

pub async fn ingest(State(state): State<ApiState>, caller: Caller, body: Body) -> Result<Response, ApiError> {
    // Injecting events creates deliveries: it takes the create permission. A domain token
    // may only inject events of its own domain.
    let own_domain = caller.own_domain(Perm::Create)?;
    let events = events_of(body.json()?)?;
    if let Some(domain) = own_domain {
        if events.iter().any(|e| e.domain().as_deref() != Some(domain)) {
            return Err(ApiError::forbidden());
        }
    }
    let accepted = state.router.accept(&events, false).await?;
    Ok(ok(json!({"accepted": accepted.events, "deliveries": accepted.deliveries})))
}

/// One event object, or an array of them.
fn events_of(body: Value) -> Result<Vec<Event>, ApiError> {
    let items = match body {
        Value::Object(map) => return Ok(vec![Event::new(map)]),
        Value::Array(items) => items,
        _ => {
            return Err(ApiError::bad_request("Bad request: body must be an event object or an array of them"));
        }
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::Object(map) => Ok(Event::new(map)),
            _ => Err(ApiError::bad_request(format!("Bad request: event {i} is not a JSON object"))),
        })
        .collect()
}
