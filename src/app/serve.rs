//! The accept loop both listeners share (issue #12 item 2): HTTP/1 through hyper with a
//! deadline for a request's headers, at most `server.max_connections` connections at once, the
//! peer address for `ConnectInfo`, and a graceful stop bounded by `shutdown_grace`.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use axum::Router;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, sync::Semaphore, task::JoinSet};
use tower_service::Service;

use crate::config::ServerSettings;

/// Serves `router` on `listener` until `shutdown` resolves; then stops accepting, lets the
/// requests in flight finish for up to `grace`, and closes whatever is left.
///
/// HTTP/1 only, as `axum::serve` without axum's `http2` feature served before: hyper-util's
/// `auto` builder would add cleartext HTTP/2, whose streams the header-read timeout below does
/// not bound.
pub(super) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: &ServerSettings,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let mut http1 = hyper::server::conn::http1::Builder::new();
    // hyper starts this deadline whenever it waits for a request head: on a new connection,
    // and again each time a keep-alive connection goes idle after a response (`State::idle`
    // sets `notify_read` when a header-read timeout is set; `Conn::poll_read_head` starts the
    // timer; hyper-1.12.0/src/proto/h1/conn.rs). So it bounds both a client that sends its
    // headers slowly and an idle keep-alive connection waiting for its next request.
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    // Owns every connection's task: dropping it at the end aborts the ones still running
    // after the grace period.
    let mut connections = JoinSet::new();
    // Each connection's service carries its peer address as `ConnectInfo<SocketAddr>` (the
    // rate limiter and `/admin/traces` read it).
    let mut make_service = router.into_make_service_with_connect_info::<SocketAddr>();
    let mut shutdown = std::pin::pin!(shutdown);

    loop {
        // A permit before `accept`: at the cap, new connections are not taken from the
        // kernel; they wait in the listen backlog (clients see a slow connect, not a reset)
        // until a connection here closes.
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_closed) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
        };
        // Finished connections leave the set here, so it holds about the open ones.
        while connections.try_join_next().is_some() {}
        // axum's make-service is always ready (its `poll_ready` is `Ready(Ok(()))`) and
        // cannot fail: the error type is `Infallible`.
        let service = match make_service.call(peer).await {
            Ok(service) => service,
            Err(infallible) => match infallible {},
        };
        let connection = graceful
            .watch(http1.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service)));
        connections.spawn(async move {
            if let Err(e) = connection.await {
                // A header-read timeout, an idle keep-alive connection closed, a client gone:
                // routine, and one line per connection in a flood, so debug only.
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }

    // Stop accepting: connections not yet taken from the backlog are refused.
    drop(listener);
    // Idle connections close now; each busy one after its response.
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(grace = ?grace, "in-flight requests did not finish in time; stopping anyway");
    }
}

/// As `axum::serve` does (axum-0.8.9/src/serve/listener.rs, `handle_accept_error`): a
/// connection that failed before it was taken is the client's business; anything else (out of
/// file descriptors, EMFILE) is logged and retried after a second instead of spinning.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accepting a connection failed; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
