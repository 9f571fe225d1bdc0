//! The running service: binds its listener, builds state and router, starts the background
//! tasks, and serves until a shutdown future resolves.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use tokio::{net::TcpListener, task::JoinHandle};
use tower_sessions::session_store::ExpiredDeletion;

use crate::{
    config::{Config, StoreKind},
    http::{self, AppState},
    http_client::HttpClient,
    provider::{self, Connection},
    session::{AnyStore, MemoryStore},
};

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot build the HTTP client: {0}")]
    HttpClient(#[from] reqwest::Error),
}

/// How often expired sessions are deleted from the store.
const EXPIRED_SESSION_SWEEP: Duration = Duration::from_secs(60);

pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    state: AppState,
    /// The memory store's handle when `session.store = "memory"` (benchmarks fill it).
    memory_store: Option<Arc<MemoryStore>>,
    /// Background tasks (connection retries, store sweeping); aborted when the application
    /// stops, so nothing outlives it (tests start many in one process).
    tasks: Vec<JoinHandle<()>>,
}

impl Application {
    /// Binds `config.listen` (port 0 picks a free port) and starts fetching every
    /// connection's metadata in the background: an unreachable IdP never stops startup.
    pub async fn build(config: Config) -> Result<Application, StartError> {
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| StartError::Bind {
                    addr: config.listen,
                    source,
                })?;
        Self::with_listener(config, listener)
    }

    /// Like [`Application::build`] on a listener the caller bound: tests bind port 0 first so
    /// the public URL (and with it the redirect URI) can name the real port.
    pub fn with_listener(config: Config, listener: TcpListener) -> Result<Application, StartError> {
        let http = HttpClient::new(&config.http)?;
        let connections: Vec<Arc<Connection>> = config
            .connections
            .iter()
            .map(|c| Arc::new(Connection::new(c.clone(), config.keys.refetch_cooldown)))
            .collect();

        let mut tasks = Vec::new();
        for conn in &connections {
            tasks.push(tokio::spawn(provider::maintain(
                conn.clone(),
                http.clone(),
                config.keys.refresh_interval,
            )));
        }
        let (store, memory_store) = match config.session.store {
            StoreKind::Memory => {
                let (store, memory) = AnyStore::memory();
                let handle = memory.clone();
                tasks.push(tokio::spawn(async move {
                    let mut tick = tokio::time::interval(EXPIRED_SESSION_SWEEP);
                    loop {
                        tick.tick().await;
                        if let Err(e) = memory.delete_expired().await {
                            tracing::warn!(error = %e, "deleting expired sessions failed");
                        }
                    }
                }));
                (store, Some(handle))
            }
        };

        let state = AppState {
            config: Arc::new(config),
            connections: Arc::new(connections),
            http,
        };
        let router = http::router(state.clone(), store);
        Ok(Application {
            listener,
            router,
            state,
            memory_store,
            tasks,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| self.state.config.listen)
    }

    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The in-memory session store, when that is the configured store.
    pub fn memory_store(&self) -> Option<Arc<MemoryStore>> {
        self.memory_store.clone()
    }

    /// Serves until `shutdown` resolves, then lets in-flight requests finish.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let Application {
            listener,
            router,
            tasks,
            ..
        } = self;
        let _abort_on_exit = AbortOnDrop(tasks);
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await
    }
}

struct AbortOnDrop(Vec<JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}
