//! NATS plumbing every role stands on: the names of the contract in one place,
//! connecting, creating the streams/buckets the roles need, and the few
//! publish/consume patterns they share.
//!
//! Everything between roles goes through here, so the guarantees live here
//! too: a JetStream publish is only "done" when the server has acknowledged
//! it, a durable consumer acknowledges explicitly and gives up after a bounded
//! number of deliveries, and nothing read from the wire can panic.

use anyhow::{anyhow, bail, Context as _, Result};
use async_nats::jetstream::{
    self,
    consumer::{self, pull, AckPolicy, DeliverPolicy},
    context::GetStreamErrorKind,
    kv,
    message::PublishMessage as Publish,
    object_store,
    stream::{self, StorageType},
};
use async_nats::{HeaderMap, HeaderValue};
use bytes::Bytes;
use futures::StreamExt;
use std::time::Duration;
use tokio::io::AsyncReadExt;

// ---- names: the contract (proto/README.md) ----

/// Telemetry root when none is configured: `os.flux.<source>.<event>`, ...
pub const DEFAULT_ROOT: &str = "os";
pub const DEFAULT_URL: &str = "nats://127.0.0.1:4222";

pub const STREAM_TELEMETRY: &str = "PROPRIO_TELEMETRY";
pub const STREAM_CURRICULUM: &str = "PROPRIO_CURRICULUM";
pub const STREAM_ALERTS: &str = "PROPRIO_ALERTS";
pub const STREAM_DLQ: &str = "PROPRIO_DLQ";

pub const BUCKET_STATE: &str = "proprio-state";
pub const BUCKET_MODELS: &str = "proprio-models";

pub const KEY_DIGEST: &str = "digest";
pub const KEY_DIGEST_JSON: &str = "digest.json";
pub const KEY_MODEL: &str = "model";
pub const KEY_TRAINER_LOCK: &str = "trainer.lock";
pub const KEY_MUTE_PREFIX: &str = "mute.";

pub const CONSUMER_HARVESTER: &str = "proprio-harvester";
pub const CONSUMER_SCORER: &str = "proprio-scorer";

pub const SUBJECT_ALERT_PREFIX: &str = "proprio.alert";
pub const SUBJECT_ALERTS_ALL: &str = "proprio.alert.>";
/// Where roles publish an alert: the alerts stream stores it (deduplicated
/// by its id) and only then republishes it on `proprio.alert.<source>`, so a
/// subscriber sees an alert once even when a redelivered event or a second
/// replica raises it again. The stream's messages carry these subjects.
pub const SUBJECT_RAISE_PREFIX: &str = "proprio.raise";
pub const SUBJECT_RAISE_ALL: &str = "proprio.raise.>";
pub const SUBJECT_DIGEST: &str = "proprio.digest";
pub const SUBJECT_TICK_TRAIN: &str = "proprio.tick.train";
pub const SUBJECT_DLQ_PREFIX: &str = "proprio.dlq";
pub const SUBJECT_DLQ_ALL: &str = "proprio.dlq.>";
pub const SUBJECT_MODEL_PUBLISHED: &str = "proprio.model.published";
pub const SUBJECT_CURRICULUM_PREFIX: &str = "proprio.curriculum";
pub const SUBJECT_CURRICULUM_ALL: &str = "proprio.curriculum.>";

/// Headers of a dead-lettered message (its payload is the original bytes).
pub const HEADER_REASON: &str = "Proprio-Reason";
pub const HEADER_DETAIL: &str = "Proprio-Detail";
pub const HEADER_SUBJECT: &str = "Proprio-Subject";
/// Set when a dead letter's payload was cut: the original length in bytes.
pub const HEADER_TRUNCATED: &str = "Proprio-Truncated";
/// Most payload bytes kept in a dead letter.
pub const DLQ_MAX_PAYLOAD: usize = 256 * 1024;
/// JetStream's dedup header: a second publish with the same id inside the
/// stream's duplicate window is acknowledged but not stored.
pub const HEADER_MSG_ID: &str = "Nats-Msg-Id";

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

pub fn alert_subject(source: &str) -> String {
    format!(
        "{SUBJECT_ALERT_PREFIX}.{}",
        crate::event::subject_token(source)
    )
}

pub fn dlq_subject(reason: &str) -> String {
    format!(
        "{SUBJECT_DLQ_PREFIX}.{}",
        crate::event::subject_token(reason)
    )
}

pub fn curriculum_subject(c: crate::curriculum::Curriculum) -> String {
    format!("{SUBJECT_CURRICULUM_PREFIX}.{}", c.as_str())
}

/// KV keys allow only `[-/_=.a-zA-Z0-9]`; anything else in a source name is
/// replaced so that every source can be muted, at the cost of two exotic
/// names sharing a mute.
pub fn mute_key(source: &str) -> String {
    let safe: String = source
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '=' | '/') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{KEY_MUTE_PREFIX}{safe}")
}

/// Unix milliseconds of a JetStream timestamp (the server's receive time).
pub fn datetime_ms(t: &async_nats::jetstream::message::Info<'_>) -> i64 {
    (t.published.unix_timestamp_nanos() / 1_000_000) as i64
}

// ---- configuration ----

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
    /// The process's configured settings when [`install_defaults`] was
    /// called (the binary does, from its configuration), the built-in ones
    /// otherwise.
    fn default() -> Self {
        if let Some(c) = INSTALLED.read().ok().and_then(|c| c.clone()) {
            return c;
        }
        BusConfig {
            url: default_url(),
            root: DEFAULT_ROOT.to_string(),
            connect_timeout: Duration::from_secs(3),
            replicas: 1,
            security: NatsSecurity::default(),
        }
    }
}

static INSTALLED: std::sync::RwLock<Option<BusConfig>> = std::sync::RwLock::new(None);

/// Makes `cfg` what [`BusConfig::default`] (and so every command's
/// connection) starts from: the binary installs its effective
/// configuration here once, so credentials reach every subcommand.
pub fn install_defaults(cfg: BusConfig) {
    if let Ok(mut g) = INSTALLED.write() {
        *g = Some(cfg);
    }
}

/// How proprio proves who it is to NATS, and how it checks the server.
/// Any combination the server accepts: user and password, a token, a
/// credentials file (JWT + NKey, as `nsc` writes them) or an NKey seed
/// file; TLS with a private CA and/or a client certificate.
#[derive(Clone, Default, PartialEq)]
pub struct NatsSecurity {
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    /// A `.creds` file (user JWT and NKey seed).
    pub creds: Option<std::path::PathBuf>,
    /// A file holding an NKey seed (`SU...`), for NKey authentication.
    pub nkey: Option<std::path::PathBuf>,
    /// CA certificate(s) (PEM) the server's certificate must chain to.
    pub tls_ca: Option<std::path::PathBuf>,
    /// Client certificate and key (PEM), for servers that verify clients.
    pub tls_cert: Option<std::path::PathBuf>,
    pub tls_key: Option<std::path::PathBuf>,
    /// Refuse to talk to a server without TLS.
    pub tls_required: bool,
}

impl std::fmt::Debug for NatsSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redact = |o: &Option<String>| o.as_ref().map(|_| "<redacted>");
        f.debug_struct("NatsSecurity")
            .field("user", &self.user)
            .field("password", &redact(&self.password))
            .field("token", &redact(&self.token))
            .field("creds", &self.creds)
            .field("nkey", &self.nkey)
            .field("tls_ca", &self.tls_ca)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("tls_required", &self.tls_required)
            .finish()
    }
}

impl NatsSecurity {
    /// Checks the combination and that the files are there, naming the
    /// configuration key at fault.
    pub fn check(&self) -> Result<()> {
        let methods = [
            self.user.is_some(),
            self.token.is_some(),
            self.creds.is_some(),
            self.nkey.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if methods > 1 {
            bail!("nats: give one of user/password, token, creds or nkey, not several");
        }
        if self.password.is_some() && self.user.is_none() {
            bail!("nats.password is set but nats.user is not");
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            bail!("nats.tls_cert and nats.tls_key go together: give both or neither");
        }
        let files = [
            ("nats.creds", &self.creds),
            ("nats.nkey", &self.nkey),
            ("nats.tls_ca", &self.tls_ca),
            ("nats.tls_cert", &self.tls_cert),
            ("nats.tls_key", &self.tls_key),
        ];
        for (key, p) in files {
            if let Some(p) = p {
                std::fs::File::open(p)
                    .with_context(|| format!("{key}: cannot read {}", p.display()))?;
            }
        }
        Ok(())
    }

    /// Applies the settings to `opts`, after [`NatsSecurity::check`].
    async fn apply(
        &self,
        mut opts: async_nats::ConnectOptions,
    ) -> Result<async_nats::ConnectOptions> {
        self.check()?;
        if let Some(u) = &self.user {
            opts = opts.user_and_password(u.clone(), self.password.clone().unwrap_or_default());
        }
        if let Some(t) = &self.token {
            opts = opts.token(t.clone());
        }
        if let Some(p) = &self.creds {
            opts = opts.credentials_file(p).await.with_context(|| {
                format!("nats.creds: {} is not a credentials file", p.display())
            })?;
        }
        if let Some(p) = &self.nkey {
            let seed = std::fs::read_to_string(p)
                .with_context(|| format!("nats.nkey: reading {}", p.display()))?;
            let seed = seed
                .lines()
                .map(str::trim)
                .find(|l| l.starts_with('S') && l.len() > 40)
                .ok_or_else(|| anyhow!("nats.nkey: {} holds no NKey seed (SU...)", p.display()))?;
            opts = opts.nkey(seed.to_string());
        }
        if let Some(p) = &self.tls_ca {
            opts = opts.add_root_certificates(p.clone());
        }
        if let (Some(c), Some(k)) = (&self.tls_cert, &self.tls_key) {
            opts = opts.add_client_certificate(c.clone(), k.clone());
        }
        if self.tls_required || self.tls_ca.is_some() || self.tls_cert.is_some() {
            opts = opts.require_tls(true);
        }
        Ok(opts)
    }

    /// Whether any authentication method is configured.
    pub fn has_method(&self) -> bool {
        self.user.is_some() || self.token.is_some() || self.creds.is_some() || self.nkey.is_some()
    }

    /// What to check when the server refuses: the method in use.
    fn hint(&self) -> &'static str {
        if self.creds.is_some() {
            "check nats.creds"
        } else if self.nkey.is_some() {
            "check nats.nkey"
        } else if self.token.is_some() {
            "check nats.token"
        } else if self.user.is_some() {
            "check nats.user and nats.password"
        } else {
            "the server requires credentials: set nats.user/nats.password, nats.token, nats.creds or nats.nkey"
        }
    }
}

/// A connection error about TLS, whatever kind async-nats filed it under
/// (a refused certificate arrives as an IO error).
fn is_tls_error(e: &async_nats::ConnectError) -> bool {
    let text = format!("{e:#} {e:?}").to_lowercase();
    e.kind() == async_nats::ConnectErrorKind::Tls
        || ["certificate", "tls", "handshake", "unknownissuer"]
            .iter()
            .any(|w| text.contains(w))
}

/// Takes credentials out of NATS URLs (`nats://user:pass@host:4222`, or
/// `nats://token@host`; a comma-separated list too): the URLs without them,
/// and the first credentials found, as (user or token, password).
pub fn split_url_credentials(urls: &str) -> (String, Option<(String, Option<String>)>) {
    let mut found = None;
    let clean: Vec<String> = urls
        .split(',')
        .map(|u| {
            let u = u.trim();
            let (scheme, rest) = match u.split_once("://") {
                Some((s, r)) => (Some(s), r),
                None => (None, u),
            };
            let (auth, host) = match rest.rsplit_once('@') {
                Some((a, h)) if !a.contains('/') => (Some(a), h),
                _ => (None, rest),
            };
            if let Some(a) = auth.filter(|a| !a.is_empty()) {
                let creds = match a.split_once(':') {
                    Some((user, pass)) => (user.to_string(), Some(pass.to_string())),
                    None => (a.to_string(), None),
                };
                found.get_or_insert(creds);
            }
            match scheme {
                Some(s) => format!("{s}://{host}"),
                None => host.to_string(),
            }
        })
        .collect();
    (clean.join(","), found)
}

/// NATS URLs fit to print: credentials in them replaced by `<redacted>`.
pub fn redact_url(urls: &str) -> String {
    urls.split(',')
        .map(|u| {
            let u = u.trim();
            let (clean, creds) = split_url_credentials(u);
            let Some((user, pass)) = creds else {
                return u.to_string();
            };
            let shown = match pass {
                Some(_) => format!("{user}:<redacted>@"),
                None => "<redacted>@".to_string(),
            };
            match clean.split_once("://") {
                Some((scheme, host)) => format!("{scheme}://{shown}{host}"),
                None => format!("{shown}{clean}"),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
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

/// A bare client for `url` (credentials in it honoured) with the process's
/// configured credentials and TLS, failing fast and clearly like
/// [`Bus::connect`]: for tools that only publish, like `proprio simulate`.
pub async fn connect_client(url: &str) -> Result<async_nats::Client> {
    let cfg = BusConfig {
        url: url.to_string(),
        ..BusConfig::default()
    };
    Ok(Bus::connect(&cfg).await?.client().clone())
}

/// NATS_URL, then the local default: what every command uses without `--nats`.
pub fn default_url() -> String {
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

// ---- the bus ----

/// A connection plus the JetStream context, cheap to clone (one per role).
#[derive(Clone)]
pub struct Bus {
    client: async_nats::Client,
    js: jetstream::Context,
    root: String,
    replicas: usize,
    /// The first permission violation the server reported, if any.
    denied: tokio::sync::watch::Receiver<Option<String>>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus").field("root", &self.root).finish()
    }
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
        let client = match tokio::time::timeout(budget, opts.connect(url.as_str())).await {
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

    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    pub fn js(&self) -> &jetstream::Context {
        &self.js
    }

    pub fn root(&self) -> &str {
        &self.root
    }

    /// `<root>.>`: every telemetry subject.
    pub fn telemetry_filter(&self) -> String {
        format!("{}.>", self.root)
    }

    fn stream_configs(&self) -> Vec<stream::Config> {
        let mk = |name: &str, subject: String, max_age: Duration, desc: &str| stream::Config {
            name: name.to_string(),
            subjects: vec![subject],
            max_age,
            storage: StorageType::File,
            num_replicas: self.replicas,
            description: Some(desc.to_string()),
            ..Default::default()
        };
        vec![
            mk(
                STREAM_TELEMETRY,
                self.telemetry_filter(),
                DAY,
                "proprio: the system's telemetry, as published",
            ),
            mk(
                STREAM_CURRICULUM,
                SUBJECT_CURRICULUM_ALL.into(),
                DAY,
                "proprio: rendered, sampled curriculum documents",
            ),
            stream::Config {
                // A redelivered event or a second silence watcher re-publishes
                // the same alert id; an hour of dedup covers both.
                duplicate_window: HOUR,
                republish: Some(stream::Republish {
                    source: SUBJECT_RAISE_ALL.into(),
                    destination: SUBJECT_ALERTS_ALL.into(),
                    headers_only: false,
                }),
                ..mk(
                    STREAM_ALERTS,
                    SUBJECT_RAISE_ALL.into(),
                    7 * DAY,
                    "proprio: alerts (surprise and silence)",
                )
            },
            mk(
                STREAM_DLQ,
                SUBJECT_DLQ_ALL.into(),
                7 * DAY,
                "proprio: telemetry that failed validation, with the reason",
            ),
        ]
    }

    /// Creates every stream, bucket and object store the roles use, when
    /// missing. Existing ones are left exactly as they are, since an operator
    /// may have tuned them (retention, replicas); calling it from every role
    /// at start-up, concurrently, is safe.
    pub async fn ensure(&self) -> Result<()> {
        for cfg in self.stream_configs() {
            self.ensure_stream(cfg).await?;
        }
        self.ensure_stream_via(&format!("KV_{BUCKET_STATE}"), || async {
            self.js
                .create_key_value(kv::Config {
                    bucket: BUCKET_STATE.to_string(),
                    description: "proprio: digest, model metadata, mutes, trainer lock".into(),
                    history: 1,
                    storage: StorageType::File,
                    num_replicas: self.replicas,
                    ..Default::default()
                })
                .await
                .map(|_| ())
                .map_err(anyhow::Error::new)
        })
        .await?;
        self.ensure_stream_via(&format!("OBJ_{BUCKET_MODELS}"), || async {
            self.js
                .create_object_store(object_store::Config {
                    bucket: BUCKET_MODELS.to_string(),
                    description: Some("proprio: model checkpoints".into()),
                    storage: StorageType::File,
                    num_replicas: self.replicas,
                    ..Default::default()
                })
                .await
                .map(|_| ())
                .map_err(anyhow::Error::new)
        })
        .await?;
        Ok(())
    }

    async fn ensure_stream(&self, cfg: stream::Config) -> Result<()> {
        let name = cfg.name.clone();
        let wanted = cfg.subjects.clone();
        let existed = self
            .ensure_stream_via(&name, || async {
                self.js
                    .create_stream(cfg.clone())
                    .await
                    .map(|_| ())
                    .map_err(anyhow::Error::new)
            })
            .await?;
        if existed {
            if let Ok(s) = self.js.get_stream(&name).await {
                let have = &s.cached_info().config.subjects;
                if !wanted.iter().all(|w| have.contains(w)) {
                    tracing::warn!(
                        stream = %name,
                        "existing stream captures {have:?}, not {wanted:?}; left as is"
                    );
                }
            }
        }
        Ok(())
    }

    /// Creates the stream `name` (through `create`) when it does not exist;
    /// returns whether it already existed. A concurrent creator winning the
    /// race is success, not an error.
    async fn ensure_stream_via<F, Fut>(&self, name: &str, create: F) -> Result<bool>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<()>>,
    {
        match self.js.get_stream(name).await {
            Ok(_) => return Ok(true),
            Err(e) => match e.kind() {
                GetStreamErrorKind::JetStream(je) if je.code() == 404 => {}
                _ => {
                    return Err(anyhow!(e)).with_context(|| {
                        format!("looking up stream {name} (is JetStream enabled on the server? nats-server -js)")
                    })
                }
            },
        }
        match create().await {
            Ok(()) => {
                tracing::info!(stream = name, "created");
                Ok(false)
            }
            Err(e) => match self.js.get_stream(name).await {
                Ok(_) => Ok(true),
                Err(_) => Err(e).with_context(|| format!("creating stream {name}")),
            },
        }
    }

    // ---- handles ----

    /// The `proprio-state` bucket (digest, model metadata, mutes, lock).
    pub async fn kv(&self) -> Result<kv::Store> {
        self.js
            .get_key_value(BUCKET_STATE)
            .await
            .with_context(|| format!("opening KV bucket {BUCKET_STATE} (run ensure first)"))
    }

    /// The `proprio-models` object store (checkpoints).
    pub async fn models(&self) -> Result<object_store::ObjectStore> {
        self.js
            .get_object_store(BUCKET_MODELS)
            .await
            .with_context(|| format!("opening object store {BUCKET_MODELS} (run ensure first)"))
    }

    // ---- publishing ----

    /// A JetStream publish that returns only once the server has stored it,
    /// so the caller may then acknowledge whatever triggered it.
    pub async fn publish_acked(
        &self,
        subject: impl Into<String>,
        payload: impl Into<Bytes>,
        headers: Option<HeaderMap>,
    ) -> Result<()> {
        let subject = subject.into();
        let mut p = Publish::build().payload(payload.into());
        if let Some(h) = headers {
            p = p.headers(h);
        }
        self.send_acked(&subject, p).await.map(|_| ())
    }

    /// Publishes with a `Nats-Msg-Id`; returns false when the stream had
    /// already stored that id (a redelivery, or another replica was first).
    pub async fn publish_once(
        &self,
        subject: impl Into<String>,
        payload: impl Into<Bytes>,
        headers: Option<HeaderMap>,
        msg_id: &str,
    ) -> Result<bool> {
        let subject = subject.into();
        let mut p = Publish::build().payload(payload.into());
        if let Some(h) = headers {
            p = p.headers(h);
        }
        let ack = self.send_acked(&subject, p.message_id(msg_id)).await?;
        Ok(!ack.duplicate)
    }

    /// Raises an alert: stored once per id on the alerts stream, which
    /// republishes it to subscribers of `proprio.alert.>` (see
    /// [`SUBJECT_RAISE_PREFIX`]). False when the id was already stored.
    pub async fn publish_alert(&self, alert: &crate::alert::Alert) -> Result<bool> {
        let subject = format!(
            "{SUBJECT_RAISE_PREFIX}.{}",
            crate::event::subject_token(&alert.source)
        );
        self.publish_once(subject, alert.to_msgpack(), None, &alert.id)
            .await
    }

    async fn send_acked(
        &self,
        subject: &str,
        p: Publish,
    ) -> Result<async_nats::jetstream::publish::PublishAck> {
        let fut = self
            .js
            .send_publish(subject.to_string(), p)
            .await
            .with_context(|| format!("publishing on {subject}"))?;
        fut.await
            .with_context(|| format!("publishing on {subject}: no JetStream ack"))
    }

    /// Dead-letters a message that failed validation: the original bytes,
    /// with why and where from in headers, so its owner can see exactly what
    /// was refused. `msg_id` (e.g. the telemetry stream sequence) keeps a
    /// redelivered bad message from being dead-lettered twice.
    pub async fn publish_dlq(
        &self,
        reason: crate::event::Reason,
        detail: &str,
        original_subject: &str,
        payload: impl Into<Bytes>,
        msg_id: Option<&str>,
    ) -> Result<()> {
        let mut payload: Bytes = payload.into();
        let mut h = HeaderMap::new();
        h.insert(HEADER_REASON, reason.as_str());
        h.insert(HEADER_DETAIL, header_value(detail));
        h.insert(HEADER_SUBJECT, header_value(original_subject));
        // A payload refused for its size, plus headers, may not fit in a
        // message at all; a cut dead letter beats one that is never stored.
        if payload.len() > DLQ_MAX_PAYLOAD {
            h.insert(HEADER_TRUNCATED, payload.len().to_string().as_str());
            payload = payload.slice(..DLQ_MAX_PAYLOAD);
        }
        let subject = dlq_subject(reason.as_str());
        match msg_id {
            Some(id) => self
                .publish_once(subject, payload, Some(h), id)
                .await
                .map(|_| ()),
            None => self.publish_acked(subject, payload, Some(h)).await,
        }
    }

    // ---- consuming ----

    /// The shared durable pull consumer of a role: every replica binding the
    /// same `name` splits the work. Explicit acks; a message that keeps
    /// failing is dropped by the server after a bounded number of deliveries
    /// rather than blocking the role forever. An existing consumer is reused
    /// as is. Starts from the stream's beginning the first time.
    pub async fn durable_pull(
        &self,
        stream: &str,
        name: &str,
        filter: &str,
    ) -> Result<consumer::Consumer<pull::Config>> {
        self.durable_pull_from(stream, name, filter, DeliverPolicy::All)
            .await
    }

    /// [`Bus::durable_pull`] with the start position used when the consumer
    /// is first created (e.g. `DeliverPolicy::New` to skip history).
    pub async fn durable_pull_from(
        &self,
        stream: &str,
        name: &str,
        filter: &str,
        deliver_policy: DeliverPolicy,
    ) -> Result<consumer::Consumer<pull::Config>> {
        let s = self
            .js
            .get_stream(stream)
            .await
            .with_context(|| format!("opening stream {stream} (run ensure first)"))?;
        s.get_or_create_consumer(
            name,
            pull::Config {
                durable_name: Some(name.to_string()),
                filter_subject: filter.to_string(),
                ack_policy: AckPolicy::Explicit,
                ack_wait: Duration::from_secs(30),
                max_deliver: MAX_DELIVER,
                max_ack_pending: 4096,
                deliver_policy,
                ..Default::default()
            },
        )
        .await
        .with_context(|| format!("binding consumer {name} on {stream}"))
    }

    /// A never-ending feed of a durable pull consumer's messages that
    /// rebinds after the consumer or the server went away.
    pub async fn feed(&self, stream: &str, name: &str, filter: &str) -> Result<Feed> {
        self.feed_from(stream, name, filter, DeliverPolicy::All)
            .await
    }

    /// [`Bus::feed`] with the start position used if the consumer has to be
    /// created (e.g. `DeliverPolicy::New` for a scorer that should not
    /// score yesterday).
    pub async fn feed_from(
        &self,
        stream: &str,
        name: &str,
        filter: &str,
        deliver_policy: DeliverPolicy,
    ) -> Result<Feed> {
        let mut f = Feed {
            bus: self.clone(),
            stream: stream.to_string(),
            name: name.to_string(),
            filter: filter.to_string(),
            deliver_policy,
            messages: None,
            backoff: Duration::ZERO,
        };
        f.messages = Some(f.bind().await?);
        Ok(f)
    }

    /// Every message on `filter` in `stream` stamped at or after `since_ms`,
    /// as (payload, server timestamp ms), in stream order. Stops at the last
    /// message present when called, so it always returns.
    pub async fn read_since(
        &self,
        stream: &str,
        filter: &str,
        since_ms: i64,
    ) -> Result<Vec<(Bytes, i64)>> {
        let mut out = Vec::new();
        self.scan_since(stream, filter, since_ms, |m, ts| {
            out.push((m.payload.clone(), ts));
        })
        .await?;
        Ok(out)
    }

    /// Like [`Bus::read_since`], handing each message (subject and headers
    /// included) to `f` instead of collecting payloads.
    pub async fn scan_since(
        &self,
        stream: &str,
        filter: &str,
        since_ms: i64,
        mut f: impl FnMut(&async_nats::Message, i64),
    ) -> Result<u64> {
        let mut s = self
            .js
            .get_stream(stream)
            .await
            .with_context(|| format!("opening stream {stream}"))?;
        let last = s.info().await.context("stream info")?.state.last_sequence;
        let consumer = s
            .create_consumer(ordered_since(filter, since_ms)?)
            .await
            .with_context(|| format!("reading {stream} since {since_ms}"))?;
        if consumer.cached_info().num_pending == 0 {
            return Ok(0);
        }
        let mut msgs = consumer.messages().await.context("reading messages")?;
        let mut n = 0;
        loop {
            // A stream trimmed under us can leave nothing more to read; the
            // idle timeout keeps this a bounded read.
            let next = match tokio::time::timeout(Duration::from_secs(5), msgs.next()).await {
                Ok(Some(m)) => m.context("reading messages")?,
                Ok(None) | Err(_) => break,
            };
            let Ok(info) = next.info() else { continue };
            let (seq, pending, ts) = (info.stream_sequence, info.pending, datetime_ms(&info));
            if seq > last {
                break;
            }
            f(&next.message, ts);
            n += 1;
            if pending == 0 || seq == last {
                break;
            }
        }
        Ok(n)
    }

    // ---- KV ----

    pub async fn put(&self, key: &str, value: impl Into<Bytes>) -> Result<()> {
        self.kv()
            .await?
            .put(key, value.into())
            .await
            .with_context(|| format!("writing {BUCKET_STATE}/{key}"))?;
        Ok(())
    }

    /// None when the key was never written or was deleted.
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        self.kv()
            .await?
            .get(key)
            .await
            .with_context(|| format!("reading {BUCKET_STATE}/{key}"))
    }

    pub async fn delete(&self, key: &str) -> Result<()> {
        self.kv()
            .await?
            .delete(key)
            .await
            .with_context(|| format!("deleting {BUCKET_STATE}/{key}"))
    }

    // ---- mutes ----

    /// Mutes `source` until `until_ms` (unix ms); a time in the past (or 0)
    /// unmutes. Stored as decimal text, readable with `nats kv get`.
    pub async fn mute(&self, source: &str, until_ms: i64) -> Result<()> {
        let key = mute_key(source);
        if until_ms <= 0 {
            return self.delete(&key).await;
        }
        self.put(&key, until_ms.to_string()).await
    }

    /// When the mute on `source` ends (it may already have), if there is one.
    /// An unreadable value counts as no mute: alerts are never silenced by
    /// accident.
    pub async fn muted_until(&self, source: &str) -> Result<Option<i64>> {
        let v = self.get(&mute_key(source)).await?;
        Ok(v.and_then(|b| std::str::from_utf8(&b).ok()?.trim().parse::<i64>().ok()))
    }

    pub async fn is_muted(&self, source: &str, now_ms: i64) -> Result<bool> {
        Ok(self.muted_until(source).await?.is_some_and(|u| u > now_ms))
    }

    // ---- models ----

    pub async fn put_model_bytes(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let store = self.models().await?;
        let mut reader = bytes;
        store
            .put(name, &mut reader)
            .await
            .with_context(|| format!("storing model {name} in {BUCKET_MODELS}"))?;
        Ok(())
    }

    /// None when there is no such object.
    pub async fn get_model_bytes(&self, name: &str) -> Result<Option<Vec<u8>>> {
        let store = self.models().await?;
        let mut obj = match store.get(name).await {
            Ok(o) => o,
            Err(e) if e.kind() == object_store::GetErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(e).with_context(|| format!("reading model {name} from {BUCKET_MODELS}"))
            }
        };
        let mut out = Vec::new();
        obj.read_to_end(&mut out)
            .await
            .with_context(|| format!("reading model {name} from {BUCKET_MODELS}"))?;
        Ok(Some(out))
    }
}

/// Deliveries before the server gives up on a message. With the roles'
/// back-off between attempts this rides out a few minutes of outage
/// downstream without retrying a poisonous message forever.
pub const MAX_DELIVER: i64 = 10;

/// The delay before redelivering a message whose work failed, growing with
/// the attempts so an outage downstream is not hammered.
pub fn nak_delay(delivered: i64) -> Duration {
    let exp = delivered.clamp(1, 6) as u32 - 1;
    Duration::from_secs((1u64 << exp).min(30))
}

/// An ordered (ephemeral, flow-controlled) consumer starting at `since_ms`.
pub fn ordered_since(filter: &str, since_ms: i64) -> Result<pull::OrderedConfig> {
    Ok(pull::OrderedConfig {
        filter_subject: filter.to_string(),
        deliver_policy: start_at(since_ms)?,
        ..Default::default()
    })
}

/// `DeliverPolicy::ByStartTime` at a unix-ms instant (all, for 0 or less).
pub fn start_at(since_ms: i64) -> Result<DeliverPolicy> {
    if since_ms <= 0 {
        return Ok(DeliverPolicy::All);
    }
    let start_time = async_nats::datetime::from_nanos(since_ms as i128 * 1_000_000)
        .map_err(|e| anyhow!("start time {since_ms} ms: {e}"))?;
    Ok(DeliverPolicy::ByStartTime { start_time })
}

/// Header values may not hold line breaks, and a huge one would be refused
/// with the whole message; both are made safe rather than fail the publish.
fn header_value(s: &str) -> HeaderValue {
    let mut clean: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if clean.len() > 1024 {
        let mut cut = 1024;
        while !clean.is_char_boundary(cut) {
            cut -= 1;
        }
        clean.truncate(cut);
    }
    HeaderValue::from(clean)
}

/// Messages of a durable pull consumer, forever: transient errors (a missed
/// heartbeat while the server restarts, the consumer deleted by an operator)
/// are logged and the consumer rebound with back-off, so a role's loop is
/// just `while let Some(m) = feed.next().await`.
pub struct Feed {
    bus: Bus,
    stream: String,
    name: String,
    filter: String,
    deliver_policy: DeliverPolicy,
    messages: Option<pull::Stream>,
    backoff: Duration,
}

impl Feed {
    async fn bind(&self) -> Result<pull::Stream> {
        let c = self
            .bus
            .durable_pull_from(&self.stream, &self.name, &self.filter, self.deliver_policy)
            .await?;
        c.stream()
            .max_messages_per_batch(256)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
            .with_context(|| format!("pulling from {}", self.name))
    }

    /// The next message; waits (rebinding as needed) until there is one.
    /// Cancel-safe: meant to be raced against a shutdown signal.
    pub async fn next(&mut self) -> jetstream::Message {
        loop {
            if self.messages.is_none() {
                if !self.backoff.is_zero() {
                    tokio::time::sleep(self.backoff).await;
                }
                match self.bind().await {
                    Ok(m) => self.messages = Some(m),
                    Err(e) => {
                        tracing::warn!(consumer = %self.name, "rebinding: {e:#}");
                        self.bump();
                        continue;
                    }
                }
            }
            let Some(msgs) = self.messages.as_mut() else {
                continue;
            };
            match msgs.next().await {
                Some(Ok(m)) => {
                    self.backoff = Duration::ZERO;
                    return m;
                }
                Some(Err(e)) => {
                    use pull::MessagesErrorKind as K;
                    match e.kind() {
                        K::MissingHeartbeat | K::Pull | K::NoResponders | K::Other => {
                            tracing::debug!(consumer = %self.name, "pull: {e}");
                            self.bump();
                            tokio::time::sleep(self.backoff).await;
                        }
                        _ => {
                            tracing::warn!(consumer = %self.name, "pull: {e}; rebinding");
                            self.messages = None;
                            self.bump();
                        }
                    }
                }
                None => {
                    self.messages = None;
                    self.bump();
                }
            }
        }
    }

    fn bump(&mut self) {
        self.backoff = (self.backoff * 2).clamp(Duration::from_millis(100), Duration::from_secs(5));
    }
}
