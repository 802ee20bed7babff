//! Starting and stopping the sim: one listener on loopback serving the identity platform (`/{tenant}/...`),
//! Graph (`/v1.0/...`) and the control API (`/_sim/...`), over http or https.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum_server::Handle;
use tokio::task::JoinHandle;

use crate::state::{SharedSim, Sim, SimConfig};
use crate::world::World;

#[derive(Debug, Clone)]
pub struct SimOptions {
    pub addr: SocketAddr,
    pub world: World,
    /// Serve https with a generated CA; `DIR/ca.pem` is written for clients to trust.
    pub tls_dir: Option<PathBuf>,
    pub auto_approve: bool,
    pub access_token_lifetime: Duration,
}

impl SimOptions {
    pub fn new(world: World) -> SimOptions {
        SimOptions {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            world,
            tls_dir: None,
            auto_approve: false,
            access_token_lifetime: SimConfig::default().access_token_lifetime,
        }
    }
}

/// A running sim. Dropping it stops the server.
#[derive(Debug)]
pub struct SimServer {
    sim: SharedSim,
    base_url: String,
    handle: Handle<SocketAddr>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

/// The whole application: identity, Graph and control routes over one shared state.
pub fn app(sim: SharedSim) -> Router {
    Router::new()
        .merge(crate::identity::router())
        .merge(crate::graph::router(sim.clone()))
        .merge(crate::control::router())
        .with_state(sim)
}

/// Rewrites runs of `/` in the path to one, keeping the query.
fn collapse_slashes<B>(mut req: axum::http::Request<B>) -> axum::http::Request<B> {
    let path = req.uri().path();
    if !path.contains("//") {
        return req;
    }
    let mut collapsed = String::with_capacity(path.len());
    for c in path.chars() {
        if !(c == '/' && collapsed.ends_with('/')) {
            collapsed.push(c);
        }
    }
    if let Some(query) = req.uri().query() {
        collapsed.push('?');
        collapsed.push_str(query);
    }
    let mut parts = req.uri().clone().into_parts();
    if let Ok(pq) = collapsed.parse() {
        parts.path_and_query = Some(pq);
        if let Ok(uri) = axum::http::Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
    req
}

impl SimServer {
    pub async fn start(options: SimOptions) -> anyhow::Result<SimServer> {
        let config = SimConfig {
            auto_approve: options.auto_approve,
            access_token_lifetime: options.access_token_lifetime,
        };
        let sim = Arc::new(Sim::new(&options.world, config)?);
        let listener = std::net::TcpListener::bind(options.addr)
            .with_context(|| format!("binding {}", options.addr))?;
        listener.set_nonblocking(true)?;
        let local = listener.local_addr()?;
        let scheme = if options.tls_dir.is_some() {
            "https"
        } else {
            "http"
        };
        let base_url = format!("{scheme}://{local}");
        sim.set_base_url(base_url.clone());
        let handle = Handle::new();
        // Slashes are collapsed before routing: Microsoft's own Graph SDK sends
        // `/v1.0//me/...` (httpx keeps the base URL's trailing slash and the SDK's
        // URL template adds one), and Graph serves it.
        let service = axum::ServiceExt::into_make_service(tower::Layer::layer(
            &tower::util::MapRequestLayer::new(collapse_slashes),
            app(sim.clone()),
        ));
        let task = match &options.tls_dir {
            Some(dir) => {
                let cert = crate::tls::generate(dir)?;
                let tls = axum_server::tls_rustls::RustlsConfig::from_config(
                    crate::tls::server_config(&cert)?,
                );
                let server = axum_server::from_tcp_rustls(listener, tls)?.handle(handle.clone());
                tokio::spawn(server.serve(service))
            }
            None => {
                let server = axum_server::from_tcp(listener)?.handle(handle.clone());
                tokio::spawn(server.serve(service))
            }
        };
        Ok(SimServer {
            sim,
            base_url,
            handle,
            task: Some(task),
        })
    }

    /// `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        self.base_url.clone()
    }

    pub fn sim(&self) -> SharedSim {
        self.sim.clone()
    }

    /// Stops accepting, lets in-flight requests finish (up to a second), and waits for the server task.
    pub async fn shutdown(mut self) {
        self.handle.graceful_shutdown(Some(Duration::from_secs(1)));
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Waits until the server stops (for the binary).
    pub async fn wait(mut self) -> anyhow::Result<()> {
        if let Some(task) = self.task.take() {
            task.await??;
        }
        Ok(())
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        self.handle.shutdown();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
