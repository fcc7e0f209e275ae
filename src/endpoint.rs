//! The small HTTP endpoint: `/metrics` (text exposition), `/healthz` (the
//! process is alive) and `/readyz` (roles started and NATS connected); and
//! `proprio health`, which asks it, for containers that have no curl.

use crate::metrics::Metrics;
use anyhow::{Context as _, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What /readyz answers from: set once the roles run.
#[derive(Default)]
pub struct Readiness {
    client: Mutex<Option<async_nats::Client>>,
}

impl Readiness {
    /// The roles are running on `client`'s connection.
    pub fn set_ready(&self, client: async_nats::Client) {
        if let Ok(mut c) = self.client.lock() {
            *c = Some(client);
        }
    }

    pub fn set_not_ready(&self) {
        if let Ok(mut c) = self.client.lock() {
            *c = None;
        }
    }

    /// Ok when ready, else why not.
    pub fn readiness(&self) -> std::result::Result<(), String> {
        let c = self.client.lock().map_err(|_| "poisoned".to_string())?;
        match c.as_ref().map(|c| c.connection_state()) {
            None => Err("roles not started".into()),
            Some(async_nats::connection::State::Connected) => Ok(()),
            Some(s) => Err(format!("NATS connection {s:?}")),
        }
    }
}

/// The running endpoint; stops when dropped.
pub struct Server {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves /metrics, /healthz and /readyz on `addr` (port 0: any free one;
/// see [`Server::addr`]). Failing to listen is a start-up error.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
) -> Result<Server> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("metrics.addr {addr}: cannot listen"))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "metrics: serving /metrics /healthz /readyz");
    let task = tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!("metrics: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (metrics, readiness) = (metrics.clone(), readiness.clone());
            tokio::spawn(async move {
                let io = hyper_util::rt::TokioIo::new(stream);
                let handle = move |req| {
                    let (m, r) = (metrics.clone(), readiness.clone());
                    async move { handle(req, &m, &r).await }
                };
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(io, hyper::service::service_fn(handle))
                    .await;
            });
        }
    });
    Ok(Server { addr, task })
}

async fn handle<B>(
    req: Request<B>,
    metrics: &Metrics,
    readiness: &Readiness,
) -> std::result::Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let reply = |code: StatusCode, ctype: &str, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = code;
        if let Ok(v) = ctype.parse() {
            r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
        }
        r
    };
    let text = "text/plain; charset=utf-8";
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(reply(
            StatusCode::METHOD_NOT_ALLOWED,
            text,
            "GET only\n".into(),
        ));
    }
    Ok(match req.uri().path() {
        "/metrics" => reply(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(),
        ),
        "/healthz" => reply(StatusCode::OK, text, "ok\n".into()),
        "/readyz" => match readiness.readiness() {
            Ok(()) => reply(StatusCode::OK, text, "ready\n".into()),
            Err(why) => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                text,
                format!("not ready: {why}\n"),
            ),
        },
        _ => reply(
            StatusCode::NOT_FOUND,
            text,
            "not found (try /metrics, /healthz, /readyz)\n".into(),
        ),
    })
}

/// A plain HTTP GET of `path` on `addr`; Ok with the body on a 2xx. For
/// container health checks (`proprio health`), where no curl is installed.
pub fn probe(addr: &str, path: &str, timeout: Duration) -> Result<String> {
    use std::io::{Read, Write};
    use std::net::ToSocketAddrs;
    let sa = addr
        .to_socket_addrs()
        .with_context(|| format!("{addr}: not an address"))?
        .next()
        .with_context(|| format!("{addr}: no address"))?;
    let mut s = std::net::TcpStream::connect_timeout(&sa, timeout)
        .with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).context("reading the answer")?;
    let (head, body) = buf.split_once("\r\n\r\n").unwrap_or((&buf, ""));
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status.starts_with('2') {
        Ok(body.to_string())
    } else {
        anyhow::bail!("{path}: HTTP {status}: {}", body.trim())
    }
}

/// `proprio health`: exits non-zero unless /readyz (or `path`) answers 2xx.
#[derive(clap::Args, Debug, Clone)]
pub struct HealthArgs {
    /// Where the metrics endpoint listens.
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub addr: String,
    /// Which endpoint to ask.
    #[arg(long, default_value = "/readyz")]
    pub path: String,
}

pub fn health_command(a: &HealthArgs) -> Result<()> {
    let body = probe(&a.addr, &a.path, Duration::from_secs(3))?;
    print!("{body}");
    Ok(())
}
