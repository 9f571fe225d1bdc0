//! The running service: binds its listener, builds state and router, starts the background
//! tasks, and serves until a shutdown future resolves.

mod serve;

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use tokio::{net::TcpListener, task::JoinHandle};

use crate::{
    clock::Clock,
    config::Config,
    http::{self, AppState},
    metrics::Metrics,
    oidc::http_client::HttpClient,
    rotation::Reloader,
    session::store::{MemoryStore, OpenStore, STARTUP_WAIT, SessionRecords, StoreError},
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
    /// Connections created through setup links whose secrets cannot be opened (no or another
    /// `ENTRANCE_DATA_KEY`): refused at startup, with the fix.
    #[error("{0}")]
    Stored(String),
}

pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    state: AppState,
    /// Background tasks (connection retries, store sweeping); aborted when the application
    /// stops, so nothing outlives it (tests start many in one process).
    tasks: Vec<JoinHandle<()>>,
    /// Closed once serving stops, so a new `Application` can open the same SQLite file.
    store: OpenStore,
    /// The live connections and their maintainers; reloads the configuration on request.
    reloader: Arc<Reloader>,
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
        Self::with_clock(config, listener, Clock::new()).await
    }

    /// Like [`Application::with_listener`], keeping entrance's own times — a session's
    /// absolute lifetime, the idle-refresh step, a pending login's age — by `clock`, which a
    /// test moves forward instead of sleeping ([`Clock::advance`]).
    pub async fn with_clock(
        config: Config,
        listener: TcpListener,
        clock: Clock,
    ) -> Result<Application, StartError> {
        let http = HttpClient::new(&config.http)?;
        let metrics = Arc::new(Metrics::new(&config));
        // Opened first: an unusable SQLite path stops startup before anything is spawned.
        let store = OpenStore::open(&config.session, &metrics).await?;
        // Serve once the store answers: Redis connects in the background, and requests in
        // its first few hundred milliseconds failed with 503. Bounded: a store that is down
        // at startup is reported by /readyz, and service starts when it is back.
        store.store.wait_until_answering(STARTUP_WAIT).await;
        // Connections created through setup links (issue 17): read before anything is bound or
        // spawned, applied once the connections are built, then polled. A store that does not
        // answer yet is polled like any other time; stored connections whose secrets cannot
        // be opened (no or another ENTRANCE_DATA_KEY) stop startup, with the fix.
        let stored = match crate::rotation::load_stored(&store.store, config.data_key.as_ref())
            .await
        {
            Ok(loaded) => Some(loaded),
            Err(crate::rotation::StoredError::Store(e)) => {
                tracing::warn!(error = %e, "could not read the connections created through setup links yet; polling");
                None
            }
            Err(e) => return Err(StartError::Stored(e.to_string())),
        };
        let admin_listener = match config.admin_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| StartError::Bind { addr, source })?,
            ),
            None => None,
        };

        let mut tasks = Vec::new();
        let reloader = Reloader::start(&config, http.clone(), metrics.clone());
        let seen = match stored {
            Some((version, stored)) => {
                if !stored.is_empty() {
                    reloader.set_stored(stored);
                }
                Some(version)
            }
            None => None,
        };
        tasks.push(tokio::spawn(crate::rotation::poll_stored(
            reloader.clone(),
            store.store.clone(),
            config.data_key.clone(),
            seen,
        )));
        tasks.push(reloader.spawn_expiry_warnings());
        tasks.extend(store.spawn_sweeper());

        let traces = Arc::new(crate::traces::Traces::new(
            config.traces_per_connection,
            config.connections.iter().map(|c| c.id.as_str()),
        ));
        let cache_entries = config.session.cache_entries;
        let state = AppState::new(crate::http::Shared {
            traces,
            config: Arc::new(config),
            connections: reloader.connections(),
            http,
            store: store.store.clone(),
            metrics,
            clock,
            graph_tokens: Default::default(),
            users: Arc::new(crate::session::ParsedUsers::new(cache_entries)),
        });
        let limiter = state
            .config
            .rate_limit
            .as_ref()
            .map(http::limits::LoginLimiter::new);
        if let Some(limiter) = limiter.clone() {
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(60));
                loop {
                    tick.tick().await;
                    limiter.forget_idle();
                }
            }));
        }
        let setup_limiter = http::limits::LoginLimiter::setup(state.config.rate_limit.as_ref());
        {
            let limiter = setup_limiter.clone();
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(60));
                loop {
                    tick.tick().await;
                    limiter.forget_idle();
                }
            }));
        }
        let router = http::router(state.clone(), limiter, setup_limiter);
        if let Some(admin) = admin_listener {
            let admin_router = http::admin_router(state.clone());
            tracing::info!(address = ?admin.local_addr().ok(), "admin listener (metrics, readiness, traces)");
            // The same limits as the public listener, with connections of its own: a flood
            // there does not lock out the scraper and the readiness probe. Stopped by
            // `AbortOnDrop` with the other tasks.
            let limits = state.config.server.clone();
            tasks.push(tokio::spawn(async move {
                serve::serve(
                    admin,
                    admin_router,
                    &limits,
                    std::future::pending(),
                    Duration::ZERO,
                )
                .await;
            }));
        }
        Ok(Application {
            listener,
            router,
            state,
            tasks,
            store,
            reloader,
        })
    }

    /// Makes SIGHUP reload the configuration from `path` (the file the service was started
    /// with): connections and secrets change without dropping sessions or logins in flight.
    /// The handler is installed before this returns, so a SIGHUP right after startup reloads
    /// instead of killing the process (SIGHUP's default action).
    pub fn reload_on_sighup(&mut self, path: std::path::PathBuf) -> std::io::Result<()> {
        self.reloader.set_source(path);
        #[cfg(unix)]
        {
            let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
            let reloader = self.reloader.clone();
            self.tasks.push(tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    // Reading the files blocks; off the request threads. The outcome is
                    // logged by `reload`; an invalid file keeps the running configuration.
                    let r = reloader.clone();
                    let _ = tokio::task::spawn_blocking(move || r.reload()).await;
                }
            }));
        }
        Ok(())
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| self.state.config.listen)
    }

    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    /// The in-memory session store, when that is the configured store (the benchmark fills
    /// it directly).
    pub fn memory_store(&self) -> Option<Arc<MemoryStore>> {
        self.store.memory()
    }

    /// The session store as the service uses it, whatever the backend: tests read records
    /// (expiry, content) through it and play a concurrent request against it.
    pub fn session_records(&self) -> SessionRecords {
        SessionRecords::new(self.store.store.clone())
    }

    /// Applies a configuration to the running service as a SIGHUP reload does (connections
    /// and secrets; other settings need a restart).
    pub fn reload_handle(&self) -> ReloadHandle {
        ReloadHandle(self.reloader.clone())
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
            state,
            store,
            reloader,
        } = self;
        let abort_on_exit = AbortOnDrop(tasks);
        // Graceful shutdown stops accepting and lets in-flight requests finish, but only for
        // `shutdown_grace`: a request stuck on a slow IdP must not hold a deploy forever.
        serve::serve(
            listener,
            router,
            &state.config.server,
            shutdown,
            state.config.shutdown_grace,
        )
        .await;
        drop(abort_on_exit);
        reloader.stop();
        // Flushes and closes the store (SQLite's pool), so a new Application can open it.
        store.close().await;
        Ok(())
    }
}

/// Reloads a running [`Application`]'s connections from a configuration.
#[derive(Clone)]
pub struct ReloadHandle(Arc<Reloader>);

impl ReloadHandle {
    /// Swaps in `config`'s connections, as a SIGHUP reload of a valid file does.
    pub fn apply(&self, config: Config) {
        let summary = self.0.apply(config);
        tracing::info!(
            kept = ?summary.kept,
            refetching = ?summary.refetching,
            removed = ?summary.removed,
            "configuration applied"
        );
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
