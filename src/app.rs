//! The running service: binds its listener, builds state and router, starts the background
//! tasks, and serves until a shutdown future resolves.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use tokio::{net::TcpListener, task::JoinHandle};

use crate::{
    config::Config,
    http::{self, AppState},
    http_client::HttpClient,
    provider::{self, Connection},
    store::{OpenStore, StoreError},
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
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Microsoft's guidance: at most one on-demand key refresh per 5 minutes.
const KEY_REFETCH_COOLDOWN: Duration = Duration::from_secs(300);

pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    state: AppState,
    /// Background tasks (connection retries, store sweeping); aborted when the application
    /// stops, so nothing outlives it (tests start many in one process).
    tasks: Vec<JoinHandle<()>>,
    /// Closed once serving stops, so a new `Application` can open the same SQLite file.
    store: OpenStore,
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
        Self::with_listener(config, listener).await
    }

    /// Like [`Application::build`] on a listener the caller bound: tests bind port 0 first so
    /// the public URL (and with it the redirect URI) can name the real port.
    pub async fn with_listener(
        config: Config,
        listener: TcpListener,
    ) -> Result<Application, StartError> {
        let http = HttpClient::new(&config.http)?;
        // Opened first: an unusable SQLite path stops startup before anything is spawned.
        let store = OpenStore::open(&config.session).await?;
        let connections: Vec<Arc<Connection>> = config
            .connections
            .iter()
            .map(|c| Arc::new(Connection::new(c.clone(), KEY_REFETCH_COOLDOWN)))
            .collect();

        let mut tasks = Vec::new();
        for conn in &connections {
            tasks.push(tokio::spawn(provider::keep_ready(
                conn.clone(),
                http.clone(),
            )));
        }
        tasks.extend(store.spawn_sweeper());

        let state = AppState {
            config: Arc::new(config),
            connections: Arc::new(connections),
            http,
            store: store.store.clone(),
        };
        let router = http::router(state.clone());
        Ok(Application {
            listener,
            router,
            state,
            tasks,
            store,
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

    /// Serves until `shutdown` resolves, lets in-flight requests finish, then stops the
    /// background tasks and closes the session store.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let Application {
            listener,
            router,
            tasks,
            store,
            ..
        } = self;
        let abort_on_exit = AbortOnDrop(tasks);
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await;
        drop(abort_on_exit);
        store.close().await;
        served
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
