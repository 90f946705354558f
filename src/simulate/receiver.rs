//! A webhook receiver for demos and benchmarks: answers every request with a fixed status and
//! hands each one to a callback.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Request {
    pub at: Instant,
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
}

pub type Callback = Arc<dyn Fn(Request) + Send + Sync>;

/// Serves on `listener` until `shutdown`, answering `status` to everything.
pub async fn serve(
    listener: TcpListener,
    status: StatusCode,
    on_request: Callback,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = axum::Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
        let on_request = on_request.clone();
        async move {
            on_request(Request { at: Instant::now(), method, uri, headers, body });
            status
        }
    });
    axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await
}

/// One line per request for a terminal: method, target, and the body (cut at 400 bytes).
pub fn describe(r: &Request) -> String {
    let body = String::from_utf8_lossy(&r.body[..r.body.len().min(400)]).replace('\n', "\\n");
    let more = if r.body.len() > 400 { format!("… ({} bytes)", r.body.len()) } else { String::new() };
    format!("{} {} {body}{more}", r.method, r.uri)
}
