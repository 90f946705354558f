//! The HTTP/1.1 server under the API, with the limits a service open to a network needs
//! (`[http]` settings): a client slow to send a request's head, or to take a response, is cut
//! off (a body has a timeout of its own, in the body extractor), and the connections open at
//! once are capped, so clients that connect and then stall cannot use up the process's files.

use std::convert::Infallible;
use std::io::ErrorKind;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_io_timeout::TimeoutStream;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::config::HttpConfig;

/// How long shutdown waits for requests in progress.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Serves `api` on `listener` until `shutdown`, then lets the requests in progress finish for a
/// while, and drops the connections still open after that.
pub async fn serve<S>(listener: TcpListener, api: S, limits: &HttpConfig, shutdown: CancellationToken)
where
    S: tower::Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut connections = JoinSet::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    // Header names go out as the original's Node server wrote them (`Content-Type`): scripts
    // match them as text.
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout).title_case_headers(true);
    loop {
        while connections.try_join_next().is_some() {}
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = shutdown.cancelled() => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // The client gave up before its connection was taken: nothing to do.
                Err(e) if matches!(
                    e.kind(),
                    ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset | ErrorKind::ConnectionRefused
                ) => continue,
                Err(e) => {
                    // Out of files, say: wait for some to close rather than spin.
                    tracing::warn!(error = %e, "cannot accept a connection; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        // A response the client stops reading must not hold the connection for ever either.
        let mut stream = TimeoutStream::new(stream);
        stream.set_write_timeout(Some(limits.body_timeout));
        let api = api.clone();
        let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            api.clone().oneshot(req.map(axum::body::Body::new))
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(Box::pin(stream)), service));
        connections.spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "client connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await.is_err() {
        tracing::warn!(connections = connections.len(), "dropping HTTP connections still busy after 30 s");
    }
    connections.shutdown().await;
}
