//! The lifecycle the HTTP fakes (`llm::fake`, `vector::pinecone::fake`) share: a poem
//! server on 127.0.0.1 and a free port that stops on `shutdown` or when dropped.

use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use poem::Endpoint;
use poem::listener::TcpAcceptor;

/// A running fake server.
#[derive(Debug)]
pub(crate) struct LocalServer {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// Locks a fake's state; a panicking test thread must not make every later request
/// fail too.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl LocalServer {
    /// Binds 127.0.0.1:0 and serves the endpoint `app` builds from the bound address
    /// (a fake may need its own URL); `what` names it in a failure log.
    pub(crate) async fn start<E>(
        what: &'static str,
        app: impl FnOnce(SocketAddr) -> E,
    ) -> std::io::Result<Self>
    where
        E: Endpoint + 'static,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let acceptor = TcpAcceptor::from_tokio(listener)?;
        let app = app(addr);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            // A zero timeout drops open (keep-alive) connections at once on shutdown, so
            // clients see the server gone rather than a lingering connection.
            let server = poem::Server::new_with_acceptor(acceptor).run_with_graceful_shutdown(
                app,
                async move {
                    let _ = stopped.await;
                },
                Some(Duration::ZERO),
            );
            if let Err(e) = server.await {
                tracing::error!(error = %e, server = what, "a fake server stopped");
            }
        });
        Ok(Self {
            addr,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The bound address.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the server and waits until it has.
    pub(crate) async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
