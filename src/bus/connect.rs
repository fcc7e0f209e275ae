//! Connecting: the [`BusConfig`] a process builds from its configuration
//! and hands to [`Bus::connect`], failing fast and clearly (refused
//! credentials, TLS, no server), and the server's permission violations
//! turned into errors that say where the permissions live.

use super::security::{is_tls_error, redact_url, split_url_credentials, NatsSecurity};
use super::Bus;
use crate::contract::DEFAULT_ROOT;
use anyhow::{anyhow, bail, Result};
use async_nats::jetstream;
use std::time::Duration;

pub const DEFAULT_URL: &str = "nats://127.0.0.1:4222";

/// Where the bus is and how the roles' resources are laid out on it.
#[derive(Debug, Clone, PartialEq)]
pub struct BusConfig {
    pub url: String,
    /// Telemetry subject root (`<root>.flux.>` ...).
    pub root: String,
    /// How long a first connection may take before start-up fails.
    pub connect_timeout: Duration,
    /// Replicas for the streams/buckets `ensure` creates (1 on a single server).
    pub replicas: usize,
    /// Credentials and TLS (none by default).
    pub security: NatsSecurity,
}

impl Default for BusConfig {
    /// The built-in settings; a configured process builds its own from its
    /// configuration (`Config::bus_config`) and passes it to whoever connects.
    fn default() -> Self {
        BusConfig {
            url: default_url(),
            root: DEFAULT_ROOT.to_string(),
            connect_timeout: Duration::from_secs(3),
            replicas: 1,
            security: NatsSecurity::default(),
        }
    }
}

/// The message a permission violation reported by the server gets: what
/// was refused and where the permissions live.
pub fn permission_error(server_message: &str) -> anyhow::Error {
    anyhow!(
        "NATS refused a permission proprio needs: {server_message}. \
         proprio's NATS user must be allowed its streams, buckets and subjects \
         (see the proprio user in deploy/nats.conf)"
    )
}

impl BusConfig {
    pub fn with_url(url: impl Into<String>) -> BusConfig {
        BusConfig {
            url: url.into(),
            ..BusConfig::default()
        }
    }
}

/// A bare client for `url` with the built-in settings (credentials in the
/// URL honoured), failing fast and clearly like [`Bus::connect`]: for tools
/// that only publish, like `proprio simulate`.
pub async fn connect_client(url: &str) -> Result<async_nats::Client> {
    let cfg = BusConfig {
        url: url.to_string(),
        ..BusConfig::default()
    };
    Ok(Bus::connect(&cfg).await?.client().clone())
}

/// NATS_URL, then the local default: what every command uses without `--nats`.
/// `nats.url` as the servers to try: one URL, or a comma-separated list of
/// a cluster's servers (async-nats parses a string as one address only).
fn server_list(urls: &str) -> Result<Vec<async_nats::ServerAddr>> {
    let list: Vec<&str> = urls
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect();
    anyhow::ensure!(
        !list.is_empty(),
        "nats.url is empty: give one server URL or a comma-separated list"
    );
    list.iter()
        .map(|u| {
            u.parse::<async_nats::ServerAddr>()
                .map_err(|e| anyhow!("nats.url: {:?} is not a server URL: {e}", redact_url(u)))
        })
        .collect()
}

fn default_url() -> String {
    std::env::var("NATS_URL")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_URL.to_string())
}

/// A root must be one or more plain subject tokens, and must not overlap
/// proprio's own subjects (the telemetry stream would swallow them).
fn check_root(root: &str) -> Result<()> {
    let bad_token = root
        .split('.')
        .any(|t| t.is_empty() || t.contains(['*', '>', ' ', '\t', '\r', '\n']));
    if root.is_empty() || bad_token {
        bail!("telemetry root {root:?} is not a plain subject prefix (like \"os\")");
    }
    if root == "proprio" || root.starts_with("proprio.") || root.starts_with('$') {
        bail!("telemetry root {root:?} would overlap proprio's or the server's own subjects");
    }
    Ok(())
}

impl Bus {
    /// Connects once: an unreachable or refusing server is a start-up error
    /// within `connect_timeout`, not a silent retry loop. Once connected,
    /// losing the server is async-nats's to handle (it reconnects forever).
    pub async fn connect(cfg: &BusConfig) -> Result<Bus> {
        check_root(&cfg.root)?;
        let (denied_tx, denied) = tokio::sync::watch::channel(None::<String>);
        let denied_tx = std::sync::Arc::new(denied_tx);
        let opts = async_nats::ConnectOptions::new()
            .name("proprio")
            .connection_timeout(cfg.connect_timeout)
            .event_callback(move |ev| {
                let denied_tx = denied_tx.clone();
                async move {
                    match ev {
                        async_nats::Event::Connected => tracing::info!("nats: connected"),
                        async_nats::Event::Disconnected => tracing::warn!("nats: disconnected"),
                        // Our own orderly close (drain, shutdown): nothing is wrong.
                        async_nats::Event::Draining | async_nats::Event::Closed => {
                            tracing::info!("nats: {ev}")
                        }
                        async_nats::Event::ServerError(async_nats::ServerError::Other(m))
                            if m.to_lowercase().contains("permissions violation") =>
                        {
                            tracing::error!("nats: {m}");
                            denied_tx.send_if_modified(|d| {
                                d.is_none() && {
                                    *d = Some(m.clone());
                                    true
                                }
                            });
                        }
                        other => tracing::warn!("nats: {other}"),
                    }
                }
            });
        // Credentials in the URL (nats://user:pass@host, nats://token@host)
        // count when nothing else is configured; they never reach a message.
        let (url, from_url) = split_url_credentials(&cfg.url);
        let mut security = cfg.security.clone();
        if let Some((user, pass)) = from_url.filter(|_| !security.has_method()) {
            match pass {
                Some(p) => (security.user, security.password) = (Some(user), Some(p)),
                None => security.token = Some(user),
            }
        }
        let opts = security.apply(opts).await?;
        // The connector itself may retry for a while; the timeout is what
        // the operator was promised.
        let budget = cfg.connect_timeout + Duration::from_millis(500);
        let servers = server_list(&url)?;
        let client = match tokio::time::timeout(budget, opts.connect(servers.as_slice())).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => match e.kind() {
                async_nats::ConnectErrorKind::AuthorizationViolation
                | async_nats::ConnectErrorKind::Authentication => bail!(
                    "cannot connect to NATS at {}: the server refused proprio's credentials ({e}): {}",
                    url,
                    security.hint()
                ),
                _ if is_tls_error(&e) => bail!(
                    "cannot connect to NATS at {}: TLS failed: {e:#} (check nats.tls_ca, nats.tls_cert, nats.tls_key and the server's certificate)",
                    url
                ),
                _ => bail!(
                    "cannot connect to NATS at {}: {e} (is nats-server running? set --nats or NATS_URL)",
                    url
                ),
            },
            Err(_) => bail!(
                "cannot connect to NATS at {}: no answer within {:?} (is nats-server running? set --nats or NATS_URL)",
                url,
                cfg.connect_timeout
            ),
        };
        let js = jetstream::new(client.clone());
        Ok(Bus {
            client,
            js,
            root: cfg.root.clone(),
            replicas: cfg.replicas.max(1),
            denied,
        })
    }

    /// The first permission violation the server reported on this
    /// connection, if any.
    pub fn permission_denied(&self) -> Option<String> {
        self.denied.borrow().clone()
    }

    /// Resolves with the server's message once it reports a permission
    /// violation (never, otherwise).
    pub async fn denied(&self) -> String {
        let mut rx = self.denied.clone();
        let got = rx.wait_for(|d| d.is_some()).await.map(|d| d.clone());
        match got {
            Ok(d) => d.unwrap_or_default(),
            Err(_) => std::future::pending().await,
        }
    }

    /// Runs `f`, failing at once with a clear error if the server reports a
    /// permission violation meanwhile (a refused request would otherwise
    /// only time out).
    pub async fn guarded<T>(&self, f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        tokio::select! {
            r = f => match (r, self.permission_denied()) {
                (Err(_), Some(m)) => Err(permission_error(&m)),
                (r, _) => r,
            },
            m = self.denied() => Err(permission_error(&m)),
        }
    }
}
