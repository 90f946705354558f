//! The HTTP API: Webitel Hooks API v2 routes, health, and the envelope on every answer.

mod deliveries;
mod error;
mod events;
mod extract;
mod hooks;
pub mod server;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderName, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower::Layer;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, Cors, CorsLayer};
use tower_http::normalize_path::{NormalizePath, NormalizePathLayer};

pub use error::ApiError;

use crate::auth::TokenKeys;
use crate::hook::Limits;
use crate::router::Router as EventRouter;
use crate::sources::Health;
use crate::store::Store;

/// Largest request body the hook routes accept.
pub const BODY_LIMIT: usize = 1 << 20;

/// What every handler can reach.
#[derive(Clone)]
pub struct ApiState {
    pub store: Arc<dyn Store>,
    pub keys: Arc<TokenKeys>,
    pub limits: Limits,
    /// The most hooks one domain may have (`max_hooks_per_domain`).
    pub max_hooks_per_domain: usize,
    /// `delivery.block_private_networks`: hooks may not name private addresses.
    pub block_private_networks: bool,
    /// How long a client has to send a request's body.
    pub body_timeout: std::time::Duration,
    /// Hook changes go to its index; ingested events go through it.
    pub router: Arc<EventRouter>,
    /// Source connection states, for `/health`.
    pub health: Health,
    /// Held while a hook is written and its index entry updated, so concurrent edits of one
    /// hook leave the index as the store has it.
    pub hook_writes: Arc<tokio::sync::Mutex<()>>,
    /// Ingest requests parsing, routing and committing their events at once (their bodies
    /// are read before, each within the body limit and `http.max_connections`): as many as the
    /// store takes writers, and one more getting ready. Each holds its events and their
    /// rendered requests (several times its body), so more in flight only adds memory while
    /// they queue for the writer.
    pub ingest: Arc<tokio::sync::Semaphore>,
}

/// The API as a service: CORS outermost, so every answer carries it and a preflight is
/// answered before routing and auth; then trailing slashes trimmed, so `/api/v2/hooks/` works.
pub fn service(state: ApiState) -> Cors<NormalizePath<Router>> {
    let router = Router::new()
        .route("/api/v2/hooks", get(hooks::list).post(hooks::create))
        .route("/api/v2/hooks/{id}", get(hooks::item).put(hooks::update).delete(hooks::delete))
        .route("/api/v2/hooks/{id}/test", post(hooks::test))
        .route("/api/v2/hooks/{id}/deliveries", get(deliveries::list))
        .route("/api/v2/deliveries/{id}/retry", post(deliveries::retry))
        .route("/api/v2/events", post(events::ingest).layer(DefaultBodyLimit::max(events::BODY_LIMIT)))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        // Express, which the original ran on, had no 405: a route without the method is unknown.
        .method_not_allowed_fallback(not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal error").into_response()
        }))
        .with_state(state);
    cors().layer(NormalizePathLayer::trim_trailing_slash().layer(router))
}

/// What the original's CORS middleware allowed (its `PATH` read as `PATCH`, plus `Authorization`
/// for bearer tokens), for browser admin clients on another origin. Any `OPTIONS` is taken as a
/// preflight and answered 200 without a token, as the original did.
fn cors() -> CorsLayer {
    CorsLayer::new()
        .allow_origin(AllowOrigin::mirror_request())
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE, Method::OPTIONS])
        .allow_headers([
            header::CONTENT_TYPE,
            header::ACCEPT,
            HeaderName::from_static("x-access-token"),
            HeaderName::from_static("x-key"),
            header::AUTHORIZATION,
        ])
}

async fn health(State(state): State<ApiState>) -> Response {
    match state.store.ping().await {
        Ok(()) => error::ok(serde_json::json!({"store": state.store.backend(), "sources": state.health.snapshot()})),
        Err(e) => {
            tracing::warn!(error = %e, "health check: store unreachable");
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "Store unavailable").into_response()
        }
    }
}

async fn metrics() -> Response {
    let content_type = [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")];
    (content_type, crate::telemetry::render()).into_response()
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("{} not found.", uri.path()))
}
