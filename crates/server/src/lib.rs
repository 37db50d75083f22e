//! The ragvault HTTP service.
//!
//! Architecture invariant: this is the only crate that knows HTTP (axum). Handlers parse a request into
//! domain types, call a crate, and map the crate's error to a status and a stable code in `error.rs`.

pub mod config;
mod error;
mod extract;
mod middleware;
mod routes;
mod state;
pub mod telemetry;

pub use config::{ConfigError, Settings};
pub use routes::app;
pub use state::AppState;

use ragvault_credentials::{CredentialsError, KeySource, LocalKeyring};
use ragvault_gateway::AccessControl;
use ragvault_store::{PoolSettings, Store, StoreError};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("key source: {0}")]
    Credentials(#[from] CredentialsError),
    #[error("database: {0}")]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("server failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// Opens the key source named by the configuration.
pub fn open_key_source(settings: &Settings) -> Result<KeySource, ServerError> {
    Ok(KeySource::Local(LocalKeyring::open_or_create(
        &settings.master_key_file(),
    )?))
}

/// Builds the database pool (lazily connected).
pub fn open_store(settings: &Settings) -> Result<Store, ServerError> {
    Ok(Store::connect_lazy(
        &settings.database.url,
        &PoolSettings {
            max_connections: settings.database.max_connections,
            acquire_timeout: settings.acquire_timeout(),
        },
    )?)
}

/// A configured service bound to its socket, ready to run.
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    state: AppState,
}

impl Application {
    /// Opens the key source, connects to Postgres, applies migrations and binds the listener.
    pub async fn build(settings: Settings) -> Result<Application, ServerError> {
        let key_source = open_key_source(&settings)?;
        let store = open_store(&settings)?;
        store.migrate().await?;
        let access = AccessControl::new(store.clone(), key_source.api_key_hasher());
        let listener =
            TcpListener::bind(settings.listen)
                .await
                .map_err(|source| ServerError::Bind {
                    addr: settings.listen,
                    source,
                })?;
        let state = AppState {
            settings: Arc::new(settings),
            store,
            key_source: Arc::new(key_source),
            access,
        };
        Ok(Application {
            listener,
            router: app(state.clone()),
            state,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| self.state.settings.listen)
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` completes, then stops accepting connections and lets in-flight requests
    /// finish, for at most `http.shutdown_grace_secs`.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let grace = self.state.settings.shutdown_grace();
        let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
        let signal = async move {
            shutdown.await;
            tracing::info!(
                grace_secs = grace.as_secs(),
                "shutting down: finishing in-flight requests"
            );
            let _ = started_tx.send(());
        };
        let server = axum::serve(self.listener, self.router).with_graceful_shutdown(signal);
        let server = tokio::spawn(async move { server.await });
        tokio::pin!(server);
        tokio::select! {
            result = &mut server => return finish(result),
            _ = started_rx => {}
        }
        let result = match tokio::time::timeout(grace, &mut server).await {
            Ok(result) => finish(result),
            Err(_) => {
                tracing::warn!("grace period over: dropping the remaining connections");
                server.abort();
                Ok(())
            }
        };
        self.state.store.close().await;
        tracing::info!("stopped");
        result
    }
}

fn finish(joined: Result<std::io::Result<()>, tokio::task::JoinError>) -> Result<(), ServerError> {
    match joined {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(ServerError::Serve(e)),
        Err(e) => Err(ServerError::Serve(std::io::Error::other(e.to_string()))),
    }
}

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
