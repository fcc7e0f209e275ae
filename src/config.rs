//! Configuration: one TOML file (deploy/proprio.toml documents every key),
//! every key overridable by an environment variable and the main ones by
//! flags. Precedence, lowest first: built-in default < file < environment <
//! flag.
//!
//! Keys are `section.name`; the environment variable of a key is
//! `PROPRIO_<SECTION>_<NAME>` upper-cased (`scorer.threshold` →
//! `PROPRIO_SCORER_THRESHOLD`). Two older names are still read, below their
//! `PROPRIO_` form: `NATS_URL` (nats.url) and `PROPRIO_ROOT` (nats.root).
//!
//! Everything is checked when the configuration is loaded, so a bad value
//! is an error naming its key (and where it came from) at start-up, never a
//! panic later. `proprio config check FILE` prints the effective
//! configuration with secrets redacted.

use crate::bus::{BusConfig, NatsSecurity};
use crate::cli_ops::parse_duration;
use crate::curriculum::{MetricFormat, RenderConfig};
use crate::model::train::TrainConfig;
use crate::model::GptConfig;
use crate::run::{Role, RunArgs};
use anyhow::{anyhow, bail, Context as _, Result};
use clap::parser::ValueSource;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One configuration key: where it lives in the file, its environment
/// variable, its flag (if it has one), whether it is a secret.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    pub path: &'static str,
    pub env: &'static str,
    pub flag: Option<&'static str>,
    pub secret: bool,
    pub doc: &'static str,
}

const fn key(
    path: &'static str,
    env: &'static str,
    flag: Option<&'static str>,
    doc: &'static str,
) -> Key {
    Key {
        path,
        env,
        flag,
        secret: false,
        doc,
    }
}

const fn secret(path: &'static str, env: &'static str, doc: &'static str) -> Key {
    Key {
        path,
        env,
        flag: None,
        secret: true,
        doc,
    }
}

/// Every key, in the order `config check` prints them.
pub const KEYS: &[Key] = &[
    key(
        "nats.url",
        "PROPRIO_NATS_URL",
        Some("--nats"),
        "NATS server URL(s), comma-separated",
    ),
    key(
        "nats.root",
        "PROPRIO_NATS_ROOT",
        Some("--root"),
        "telemetry subject root",
    ),
    key(
        "nats.connect_timeout",
        "PROPRIO_NATS_CONNECT_TIMEOUT",
        None,
        "first connection must succeed within this",
    ),
    key(
        "nats.replicas",
        "PROPRIO_NATS_REPLICAS",
        None,
        "replicas of the streams/buckets proprio creates",
    ),
    key(
        "nats.user",
        "PROPRIO_NATS_USER",
        Some("--nats-user"),
        "user name (with nats.password)",
    ),
    secret(
        "nats.password",
        "PROPRIO_NATS_PASSWORD",
        "password (environment or file only)",
    ),
    secret(
        "nats.token",
        "PROPRIO_NATS_TOKEN",
        "authentication token (environment or file only)",
    ),
    key(
        "nats.creds",
        "PROPRIO_NATS_CREDS",
        Some("--nats-creds"),
        "credentials file (JWT + NKey seed)",
    ),
    key(
        "nats.nkey",
        "PROPRIO_NATS_NKEY",
        Some("--nats-nkey"),
        "file holding an NKey seed",
    ),
    key(
        "nats.tls_ca",
        "PROPRIO_NATS_TLS_CA",
        Some("--nats-tls-ca"),
        "CA certificate(s) (PEM) for the server",
    ),
    key(
        "nats.tls_cert",
        "PROPRIO_NATS_TLS_CERT",
        Some("--nats-tls-cert"),
        "client certificate (PEM)",
    ),
    key(
        "nats.tls_key",
        "PROPRIO_NATS_TLS_KEY",
        Some("--nats-tls-key"),
        "client key (PEM)",
    ),
    key(
        "nats.tls_required",
        "PROPRIO_NATS_TLS_REQUIRED",
        None,
        "refuse a server without TLS",
    ),
    key(
        "run.roles",
        "PROPRIO_RUN_ROLES",
        Some("--roles"),
        "roles of this process",
    ),
    key(
        "run.registry",
        "PROPRIO_RUN_REGISTRY",
        Some("--registry"),
        "service registry (services.yaml)",
    ),
    key(
        "run.threads",
        "PROPRIO_RUN_THREADS",
        Some("--threads"),
        "threads for the model",
    ),
    key(
        "run.max_payload",
        "PROPRIO_RUN_MAX_PAYLOAD",
        Some("--max-payload"),
        "largest telemetry payload accepted (bytes, or 64KiB, 1MiB); larger is dead-lettered as too_large",
    ),
    key(
        "run.key_files",
        "PROPRIO_RUN_KEY_FILES",
        None,
        "files whose change is an architecture change (besides the registry): fingerprint, cold start",
    ),
    key(
        "scorer.threshold",
        "PROPRIO_SCORER_THRESHOLD",
        Some("--threshold"),
        "score that raises an alert",
    ),
    key(
        "scorer.cooldown",
        "PROPRIO_SCORER_COOLDOWN",
        Some("--cooldown"),
        "per source and kind, one alert per this",
    ),
    key(
        "scorer.max_lag",
        "PROPRIO_SCORER_MAX_LAG",
        Some("--max-lag"),
        "events older than this when scored are shed unscored (\"\" = never)",
    ),
    key(
        "trainer.every",
        "PROPRIO_TRAINER_EVERY",
        Some("--train-every"),
        "built-in training tick period (\"\" = none)",
    ),
    key(
        "trainer.cold_steps",
        "PROPRIO_TRAINER_COLD_STEPS",
        Some("--cold-steps"),
        "steps of a cold-start cycle",
    ),
    key(
        "trainer.incremental_steps",
        "PROPRIO_TRAINER_INCREMENTAL_STEPS",
        Some("--incremental-steps"),
        "steps of an incremental cycle",
    ),
    key(
        "trainer.digest_debounce",
        "PROPRIO_TRAINER_DIGEST_DEBOUNCE",
        Some("--digest-debounce"),
        "least time between alert-driven digests",
    ),
    key(
        "trainer.batch_size",
        "PROPRIO_TRAINER_BATCH_SIZE",
        None,
        "windows per training step",
    ),
    key(
        "trainer.lr",
        "PROPRIO_TRAINER_LR",
        None,
        "peak learning rate",
    ),
    key(
        "trainer.weight_decay",
        "PROPRIO_TRAINER_WEIGHT_DECAY",
        None,
        "AdamW weight decay",
    ),
    key(
        "model.n_embd",
        "PROPRIO_MODEL_N_EMBD",
        None,
        "embedding width of a cold-started model",
    ),
    key(
        "model.n_layer",
        "PROPRIO_MODEL_N_LAYER",
        None,
        "transformer blocks",
    ),
    key(
        "model.n_head",
        "PROPRIO_MODEL_N_HEAD",
        None,
        "attention heads (dividing n_embd)",
    ),
    key(
        "model.block_size",
        "PROPRIO_MODEL_BLOCK_SIZE",
        None,
        "context window, in tokens",
    ),
    key(
        "render.metric_format",
        "PROPRIO_RENDER_METRIC_FORMAT",
        None,
        "metric values as buckets or digits",
    ),
    key(
        "render.masks",
        "PROPRIO_RENDER_MASKS",
        None,
        "TOML file of volatile-text masks replacing the built-in ones (\"\" = built-in)",
    ),
    key(
        "silence.multiple",
        "PROPRIO_SILENCE_MULTIPLE",
        Some("--silence-multiple"),
        "silent after this many usual intervals",
    ),
    key(
        "metrics.addr",
        "PROPRIO_METRICS_ADDR",
        Some("--metrics-addr"),
        "HTTP address of /metrics /healthz /readyz (\"\" = off)",
    ),
    key(
        "log.json",
        "PROPRIO_LOG_JSON",
        Some("--log-json"),
        "JSON log lines",
    ),
    key(
        "log.level",
        "PROPRIO_LOG_LEVEL",
        None,
        "log filter (RUST_LOG, when set, wins)",
    ),
];

/// Older environment names, read below their `PROPRIO_` form.
const LEGACY_ENV: &[(&str, &str)] = &[("NATS_URL", "nats.url"), ("PROPRIO_ROOT", "nats.root")];

/// `PROPRIO_` variables that are not configuration keys.
const OTHER_ENV: &[&str] = &["PROPRIO_CONFIG", "PROPRIO_BENCH_ARGS", "PROPRIO_ROOT"];

pub fn find_key(path: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.path == path)
}

/// Where a value came from, for messages and `config check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Default,
    File(PathBuf),
    Env(String),
    Flag(String),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Default => write!(f, "default"),
            Origin::File(p) => write!(f, "file {}", p.display()),
            Origin::Env(v) => write!(f, "environment {v}"),
            Origin::Flag(v) => write!(f, "flag {v}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct NatsSection {
    pub url: String,
    pub root: String,
    pub connect_timeout: Duration,
    pub replicas: usize,
    pub security: NatsSecurity,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RunSection {
    pub roles: Vec<Role>,
    pub registry: PathBuf,
    pub threads: usize,
    pub max_payload: usize,
    pub key_files: Vec<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ScorerSection {
    pub threshold: f32,
    pub cooldown: Duration,
    pub max_lag: Option<Duration>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TrainerSection {
    pub every: Option<Duration>,
    pub cold_steps: usize,
    pub incremental_steps: usize,
    pub digest_debounce: Duration,
    pub batch_size: usize,
    pub lr: f64,
    pub weight_decay: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RenderSection {
    pub metric_format: MetricFormat,
    /// None: the built-in masks.
    pub masks: Option<PathBuf>,
}

/// What shapes learning, for the trainer (live or `proprio train`) and the
/// harvester: the model's shape, the training settings, the rendering and
/// the key files. A scorer needs none of it: it follows its model.
#[derive(Debug, Clone, PartialEq)]
pub struct Learning {
    pub shape: GptConfig,
    pub batch_size: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub render: RenderConfig,
    /// Key files after the registry, in this order.
    pub key_files: Vec<PathBuf>,
}

impl Default for Learning {
    fn default() -> Self {
        let t = TrainConfig::default();
        Learning {
            shape: GptConfig::default(),
            batch_size: t.batch_size,
            lr: t.lr,
            weight_decay: t.weight_decay,
            render: RenderConfig::default(),
            key_files: Vec::new(),
        }
    }
}

impl Learning {
    /// The freshness gates' fingerprint inputs: the registry first, then the
    /// configured key files, then a configured rendering.
    pub fn gates(&self, registry: &Path) -> crate::freshness::Gates {
        let mut key_files = vec![registry.to_path_buf()];
        key_files.extend(self.key_files.iter().cloned());
        crate::freshness::Gates {
            key_files,
            settings: self.render.fingerprint_text(),
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SilenceSection {
    pub multiple: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MetricsSection {
    pub addr: Option<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LogSection {
    pub json: bool,
    pub level: String,
}

/// The effective configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub nats: NatsSection,
    pub run: RunSection,
    pub scorer: ScorerSection,
    pub trainer: TrainerSection,
    pub model: GptConfig,
    pub render: RenderSection,
    pub silence: SilenceSection,
    pub metrics: MetricsSection,
    pub log: LogSection,
    /// Things worth a warning once logging is up (an unknown `PROPRIO_` variable).
    pub warnings: Vec<String>,
    origins: BTreeMap<&'static str, Origin>,
}

impl Default for Config {
    /// The built-in defaults: the same as `proprio run`'s flags'.
    fn default() -> Self {
        Config {
            nats: NatsSection {
                url: crate::bus::DEFAULT_URL.to_string(),
                root: crate::contract::DEFAULT_ROOT.to_string(),
                connect_timeout: Duration::from_secs(3),
                replicas: 1,
                security: NatsSecurity::default(),
            },
            run: RunSection {
                roles: Role::ALL.to_vec(),
                registry: PathBuf::from("deploy/services.yaml"),
                threads: 1,
                max_payload: crate::event::Limits::default().max_payload,
                key_files: Vec::new(),
            },
            scorer: ScorerSection {
                threshold: 3.0,
                cooldown: Duration::from_secs(60),
                max_lag: Some(Duration::from_secs(300)),
            },
            trainer: TrainerSection {
                every: None,
                cold_steps: 500,
                incremental_steps: 200,
                digest_debounce: Duration::from_secs(10),
                batch_size: TrainConfig::default().batch_size,
                lr: TrainConfig::default().lr,
                weight_decay: TrainConfig::default().weight_decay,
            },
            model: GptConfig::default(),
            render: RenderSection {
                metric_format: RenderConfig::default().metric_format,
                masks: None,
            },
            silence: SilenceSection { multiple: 3.0 },
            metrics: MetricsSection { addr: None },
            log: LogSection {
                json: false,
                level: "info".into(),
            },
            warnings: Vec::new(),
            origins: BTreeMap::new(),
        }
    }
}

pub fn role_name(r: Role) -> &'static str {
    match r {
        Role::Harvester => "harvester",
        Role::Scorer => "scorer",
        Role::Trainer => "trainer",
        Role::Silence => "silence",
    }
}

/// A duration as the shortest string [`parse_duration`] reads back.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0".into();
    }
    for (unit, n) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms % n == 0 {
            return format!("{}{unit}", ms / n);
        }
    }
    format!("{ms}ms")
}

fn opt_string(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

fn opt_path(s: &str) -> Option<PathBuf> {
    opt_string(s).map(PathBuf::from)
}

fn parse_bool(s: &str) -> Result<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" | "" => Ok(false),
        _ => bail!("{s:?} is not true or false"),
    }
}

fn parse_num<T: std::str::FromStr>(s: &str, what: &str) -> Result<T> {
    s.trim()
        .parse::<T>()
        .map_err(|_| anyhow!("{s:?} is not {what}"))
}

/// A size in bytes: `65536`, `64KiB` (or `64k`), `1MiB` (or `1m`).
pub fn parse_size(s: &str) -> std::result::Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: usize = n
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 65536, 64KiB, 1MiB)"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        _ => return Err(format!("{s:?}: unknown unit (use KiB or MiB)")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

fn parse_dur(s: &str) -> Result<Duration> {
    parse_duration(s).map_err(|e| anyhow!(e))
}

pub fn parse_roles(s: &str) -> Result<Vec<Role>> {
    let mut out = Vec::new();
    for r in s.split(',').filter(|r| !r.trim().is_empty()) {
        let r = Role::parse(r)?;
        if !out.contains(&r) {
            out.push(r);
        }
    }
    if out.is_empty() {
        bail!("no role given (harvester, scorer, trainer, silence)");
    }
    Ok(out)
}

/// Edit distance, for "did you mean".
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

fn suggest(path: &str) -> String {
    let best = KEYS
        .iter()
        .map(|k| (distance(path, k.path), k.path))
        .min()
        .filter(|(d, _)| *d <= 3);
    match best {
        Some((_, p)) => format!(" (did you mean `{p}`?)"),
        None => String::new(),
    }
}

const SECTIONS: &[&str] = &[
    "nats", "run", "scorer", "trainer", "model", "render", "silence", "metrics", "log",
];

impl Config {
    /// Defaults, then `file` (if any), then the environment `env`
    /// (name → value; pass `std::env::vars()`). Fully validated.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config> {
        let c = Config::load_unchecked(file, env)?;
        c.validate()?;
        Ok(c)
    }

    /// [`Config::load`] without the final checks, for when flags come on top.
    fn load_unchecked(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config> {
        let mut c = Config::default();
        if let Some(f) = file {
            c.merge_file(f)?;
        }
        c.merge_env(env)?;
        Ok(c)
    }

    /// What the binary runs with: `--config` (or PROPRIO_CONFIG), the
    /// environment, then the global flags. Not yet validated: a
    /// subcommand's own flags may still come on top; call
    /// [`Config::validate`] once they have.
    pub fn from_cli(g: &GlobalArgs, log_json: bool) -> Result<Config> {
        let mut c = Config::load_unchecked(g.config.as_deref(), std::env::vars())?;
        c.merge_global_flags(g, log_json)?;
        Ok(c)
    }

    /// Sets one key from its text form (what the environment gives; the
    /// file's values are turned into the same form).
    pub fn set(&mut self, path: &str, v: &str, origin: Origin) -> Result<()> {
        let k = find_key(path).ok_or_else(|| anyhow!("unknown key `{path}`{}", suggest(path)))?;
        self.set_value(k.path, v).with_context(|| {
            let shown = match k.path {
                _ if k.secret => "<redacted>".to_string(),
                "nats.url" => format!("{:?}", crate::bus::redact_url(v)),
                _ => format!("{v:?}"),
            };
            format!("`{}` = {shown} (from {origin})", k.path)
        })?;
        self.origins.insert(k.path, origin);
        Ok(())
    }

    fn set_value(&mut self, path: &str, v: &str) -> Result<()> {
        let s = &mut self.nats.security;
        match path {
            "nats.url" => {
                self.nats.url = opt_string(v).ok_or_else(|| anyhow!("the URL is empty"))?;
            }
            "nats.root" => self.nats.root = v.trim().to_string(),
            "nats.connect_timeout" => self.nats.connect_timeout = parse_dur(v)?,
            "nats.replicas" => self.nats.replicas = parse_num(v, "a number of replicas")?,
            "nats.user" => s.user = opt_string(v),
            "nats.password" => s.password = (!v.is_empty()).then(|| v.to_string()),
            "nats.token" => s.token = opt_string(v),
            "nats.creds" => s.creds = opt_path(v),
            "nats.nkey" => s.nkey = opt_path(v),
            "nats.tls_ca" => s.tls_ca = opt_path(v),
            "nats.tls_cert" => s.tls_cert = opt_path(v),
            "nats.tls_key" => s.tls_key = opt_path(v),
            "nats.tls_required" => s.tls_required = parse_bool(v)?,
            "run.roles" => self.run.roles = parse_roles(v)?,
            "run.registry" => {
                self.run.registry = opt_path(v).ok_or_else(|| anyhow!("the path is empty"))?
            }
            "run.threads" => self.run.threads = parse_num(v, "a number of threads")?,
            "run.max_payload" => self.run.max_payload = parse_size(v).map_err(|e| anyhow!(e))?,
            "run.key_files" => self.run.key_files = v.split(',').filter_map(opt_path).collect(),
            "scorer.threshold" => self.scorer.threshold = parse_num(v, "a number")?,
            "scorer.cooldown" => self.scorer.cooldown = parse_dur(v)?,
            "scorer.max_lag" => {
                self.scorer.max_lag = match v.trim() {
                    "" | "0" => None,
                    t => Some(parse_dur(t)?),
                }
            }
            "trainer.every" => {
                self.trainer.every = match v.trim() {
                    "" | "0" => None,
                    t => Some(parse_dur(t)?),
                }
            }
            "trainer.cold_steps" => self.trainer.cold_steps = parse_num(v, "a number of steps")?,
            "trainer.incremental_steps" => {
                self.trainer.incremental_steps = parse_num(v, "a number of steps")?
            }
            "trainer.digest_debounce" => self.trainer.digest_debounce = parse_dur(v)?,
            "trainer.batch_size" => self.trainer.batch_size = parse_num(v, "a number of windows")?,
            "trainer.lr" => self.trainer.lr = parse_num(v, "a number")?,
            "trainer.weight_decay" => self.trainer.weight_decay = parse_num(v, "a number")?,
            "model.n_embd" => self.model.n_embd = parse_num(v, "a width")?,
            "model.n_layer" => self.model.n_layer = parse_num(v, "a number of layers")?,
            "model.n_head" => self.model.n_head = parse_num(v, "a number of heads")?,
            "model.block_size" => self.model.block_size = parse_num(v, "a number of tokens")?,
            "render.metric_format" => {
                self.render.metric_format = v.parse().map_err(|e: String| anyhow!(e))?
            }
            "render.masks" => self.render.masks = opt_path(v),
            "silence.multiple" => self.silence.multiple = parse_num(v, "a number")?,
            "metrics.addr" => {
                self.metrics.addr = match opt_string(v) {
                    None => None,
                    Some(a) => Some(a.parse().map_err(|_| {
                        anyhow!("{a:?} is not an address like 0.0.0.0:9464 or 127.0.0.1:9464")
                    })?),
                }
            }
            "log.json" => self.log.json = parse_bool(v)?,
            "log.level" => {
                let l = opt_string(v).unwrap_or_else(|| "info".into());
                tracing_subscriber::EnvFilter::try_new(&l)
                    .map_err(|e| anyhow!("{l:?} is not a log filter: {e}"))?;
                self.log.level = l;
            }
            other => bail!("unknown key `{other}`"),
        }
        Ok(())
    }

    /// Reads a TOML file: unknown sections and keys are errors naming them.
    pub fn merge_file(&mut self, file: &Path) -> Result<()> {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("reading the configuration file {}", file.display()))?;
        let table: toml::Table = toml::from_str(&text)
            .map_err(|e| anyhow!("{}: not valid TOML: {e}", file.display()))?;
        let origin = Origin::File(file.to_path_buf());
        for (section, body) in &table {
            let Some(body) = body.as_table() else {
                bail!(
                    "{}: unknown key `{section}`{} (keys live in sections: {})",
                    file.display(),
                    suggest(section),
                    SECTIONS.join(", ")
                );
            };
            if !SECTIONS.contains(&section.as_str()) {
                bail!(
                    "{}: unknown section [{section}] (known: {})",
                    file.display(),
                    SECTIONS.join(", ")
                );
            }
            for (name, value) in body {
                let path = format!("{section}.{name}");
                if find_key(&path).is_none() {
                    bail!("{}: unknown key `{path}`{}", file.display(), suggest(&path));
                }
                let text = toml_text(value)
                    .with_context(|| format!("{}: key `{path}`", file.display()))?;
                self.set(&path, &text, origin.clone())
                    .with_context(|| format!("in {}", file.display()))?;
            }
        }
        Ok(())
    }

    /// Applies the environment: legacy names first, then `PROPRIO_...`.
    /// A `PROPRIO_` variable that is no key is reported (a typo would
    /// otherwise be silently ignored) but not fatal.
    pub fn merge_env(&mut self, env: impl IntoIterator<Item = (String, String)>) -> Result<()> {
        let env: BTreeMap<String, String> = env.into_iter().collect();
        for (name, path) in LEGACY_ENV {
            if let Some(v) = env.get(*name).filter(|v| !v.trim().is_empty()) {
                self.set(path, v, Origin::Env(name.to_string()))?;
            }
        }
        for k in KEYS {
            if let Some(v) = env.get(k.env) {
                self.set(k.path, v, Origin::Env(k.env.to_string()))?;
            }
        }
        for name in env.keys().filter(|n| n.starts_with("PROPRIO_")) {
            if !OTHER_ENV.contains(&name.as_str()) && !KEYS.iter().any(|k| k.env == name) {
                let close = KEYS
                    .iter()
                    .map(|k| (distance(name, k.env), k.env))
                    .min()
                    .filter(|(d, _)| *d <= 3)
                    .map(|(_, e)| format!(" (did you mean {e}?)"))
                    .unwrap_or_default();
                self.warnings.push(format!(
                    "environment variable {name} is not a proprio setting{close}; ignored"
                ));
            }
        }
        Ok(())
    }

    /// The global flags (every subcommand takes them).
    pub fn merge_global_flags(&mut self, g: &GlobalArgs, log_json: bool) -> Result<()> {
        let pairs: [(&str, &str, &Option<String>); 7] = [
            ("nats.user", "--nats-user", &g.nats_user),
            ("nats.creds", "--nats-creds", &g.nats_creds),
            ("nats.nkey", "--nats-nkey", &g.nats_nkey),
            ("nats.tls_ca", "--nats-tls-ca", &g.nats_tls_ca),
            ("nats.tls_cert", "--nats-tls-cert", &g.nats_tls_cert),
            ("nats.tls_key", "--nats-tls-key", &g.nats_tls_key),
            ("metrics.addr", "--metrics-addr", &g.metrics_addr),
        ];
        for (path, flag, v) in pairs {
            if let Some(v) = v {
                self.set(path, v, Origin::Flag(flag.into()))?;
            }
        }
        if log_json {
            self.set("log.json", "true", Origin::Flag("--log-json".into()))?;
        }
        Ok(())
    }

    /// `proprio run`'s flags given on the command line (not their
    /// defaults, not clap's environment fallbacks: the environment was
    /// applied already, with its own precedence).
    pub fn merge_run_flags(&mut self, a: &RunArgs, m: Option<&clap::ArgMatches>) -> Result<()> {
        let given = |id: &str| m.and_then(|m| m.value_source(id)) == Some(ValueSource::CommandLine);
        let flag = |f: &str| Origin::Flag(f.to_string());
        if given("nats") {
            self.set("nats.url", &a.nats.nats, flag("--nats"))?;
        }
        if given("root") {
            self.set("nats.root", &a.root, flag("--root"))?;
        }
        if given("roles") {
            let r: Vec<&str> = a.roles.iter().map(|r| role_name(*r)).collect();
            self.set("run.roles", &r.join(","), flag("--roles"))?;
        }
        if given("registry") {
            self.set(
                "run.registry",
                &a.registry.to_string_lossy(),
                flag("--registry"),
            )?;
        }
        if given("threads") {
            self.set("run.threads", &a.threads.to_string(), flag("--threads"))?;
        }
        if given("max_payload") {
            self.set(
                "run.max_payload",
                &a.max_payload.to_string(),
                flag("--max-payload"),
            )?;
        }
        if given("threshold") {
            self.set(
                "scorer.threshold",
                &a.threshold.to_string(),
                flag("--threshold"),
            )?;
        }
        if given("cooldown") {
            self.set(
                "scorer.cooldown",
                &format_duration(a.cooldown),
                flag("--cooldown"),
            )?;
        }
        if given("max_lag") {
            let v = if a.max_lag.is_zero() {
                String::new()
            } else {
                format_duration(a.max_lag)
            };
            self.set("scorer.max_lag", &v, flag("--max-lag"))?;
        }
        if given("train_every") {
            let v = a.train_every.map(format_duration).unwrap_or_default();
            self.set("trainer.every", &v, flag("--train-every"))?;
        }
        if given("cold_steps") {
            self.set(
                "trainer.cold_steps",
                &a.cold_steps.to_string(),
                flag("--cold-steps"),
            )?;
        }
        if given("incremental_steps") {
            self.set(
                "trainer.incremental_steps",
                &a.incremental_steps.to_string(),
                flag("--incremental-steps"),
            )?;
        }
        if given("digest_debounce") {
            self.set(
                "trainer.digest_debounce",
                &format_duration(a.digest_debounce),
                flag("--digest-debounce"),
            )?;
        }
        if given("silence_multiple") {
            self.set(
                "silence.multiple",
                &a.silence_multiple.to_string(),
                flag("--silence-multiple"),
            )?;
        }
        Ok(())
    }

    /// A NATS URL flag of an operator command (`digest`, `alerts`, ...):
    /// the flag when given on the command line, else the configured URL.
    pub fn nats_url_for(&self, given: &str, m: Option<&clap::ArgMatches>) -> String {
        let on_line = m.is_some_and(|m| m.value_source("nats") == Some(ValueSource::CommandLine));
        if on_line {
            given.to_string()
        } else {
            self.nats.url.clone()
        }
    }

    /// Every value in range, every file there: the checks a role would
    /// otherwise only trip over later.
    pub fn validate(&self) -> Result<()> {
        let bad = |path: &str, why: String| -> anyhow::Error {
            let from = self.origin(path);
            anyhow!("`{path}` {why} (from {from})")
        };
        let root = &self.nats.root;
        let bad_token = root
            .split('.')
            .any(|t| t.is_empty() || t.contains(['*', '>', ' ', '\t', '\r', '\n']));
        if root.is_empty() || bad_token {
            return Err(bad(
                "nats.root",
                format!("= {root:?} is not a plain subject prefix like \"os\""),
            ));
        }
        if root == "proprio" || root.starts_with("proprio.") || root.starts_with('$') {
            return Err(bad(
                "nats.root",
                format!("= {root:?} overlaps proprio's or the server's own subjects"),
            ));
        }
        if !(1..=5).contains(&self.nats.replicas) {
            return Err(bad(
                "nats.replicas",
                format!("= {} must be 1 to 5", self.nats.replicas),
            ));
        }
        if self.nats.connect_timeout.is_zero() {
            return Err(bad("nats.connect_timeout", "must be more than 0".into()));
        }
        if self.run.threads == 0 {
            return Err(bad("run.threads", "must be at least 1".into()));
        }
        if self.run.max_payload < 1024 {
            return Err(bad(
                "run.max_payload",
                format!("= {} must be at least 1024 bytes", self.run.max_payload),
            ));
        }
        if !(self.scorer.threshold.is_finite() && self.scorer.threshold > 0.0) {
            return Err(bad(
                "scorer.threshold",
                format!("= {} must be a positive number", self.scorer.threshold),
            ));
        }
        if !(self.silence.multiple.is_finite() && self.silence.multiple >= 1.0) {
            return Err(bad(
                "silence.multiple",
                format!("= {} must be at least 1", self.silence.multiple),
            ));
        }
        if self.trainer.cold_steps == 0 {
            return Err(bad("trainer.cold_steps", "must be at least 1".into()));
        }
        if let Some(e) = self.trainer.every.filter(|e| *e < Duration::from_secs(1)) {
            return Err(bad(
                "trainer.every",
                format!("= {} is too short (at least 1s)", format_duration(e)),
            ));
        }
        self.learning()?;
        self.nats.security.check().map_err(|e| {
            // The key the message starts with (or names first).
            let msg = format!("{e:#}");
            let key = KEYS
                .iter()
                .filter_map(|k| msg.find(k.path).map(|at| (at, k.path)))
                .min()
                .map(|(_, k)| k);
            match key {
                Some(k) => anyhow!("{e:#} (from {})", self.origin(k)),
                None => e,
            }
        })?;
        Ok(())
    }

    /// Where `path`'s value came from.
    pub fn origin(&self, path: &str) -> Origin {
        self.origins.get(path).cloned().unwrap_or(Origin::Default)
    }

    /// The bus settings: what every command connects with.
    pub fn bus_config(&self) -> BusConfig {
        BusConfig {
            url: self.nats.url.clone(),
            root: self.nats.root.clone(),
            connect_timeout: self.nats.connect_timeout,
            replicas: self.nats.replicas,
            security: self.nats.security.clone(),
        }
    }

    /// The learning settings, checked, the masks file read. Offline
    /// commands (`train`, `eval`) need these even without NATS settings.
    pub fn learning(&self) -> Result<Learning> {
        let bad = |path: &str, why: String| -> anyhow::Error {
            anyhow!("`{path}` {why} (from {})", self.origin(path))
        };
        if self.trainer.batch_size == 0 {
            return Err(bad("trainer.batch_size", "must be at least 1".into()));
        }
        if !(self.trainer.lr.is_finite() && self.trainer.lr > 0.0) {
            return Err(bad(
                "trainer.lr",
                format!("= {} must be a positive number", self.trainer.lr),
            ));
        }
        if !(self.trainer.weight_decay.is_finite() && self.trainer.weight_decay >= 0.0) {
            return Err(bad(
                "trainer.weight_decay",
                format!("= {} must be 0 or more", self.trainer.weight_decay),
            ));
        }
        if let Err(e) = self.model.validate() {
            let key = [
                "model.n_embd",
                "model.n_layer",
                "model.n_head",
                "model.block_size",
            ]
            .into_iter()
            .find(|k| self.origin(k) != Origin::Default)
            .unwrap_or("model.n_embd");
            return Err(bad(key, format!("is refused: {e:#}")));
        }
        let render = RenderConfig::load(self.render.metric_format, self.render.masks.as_deref())
            .map_err(|e| bad("render.masks", format!("is refused: {e:#}")))?;
        Ok(Learning {
            shape: self.model,
            batch_size: self.trainer.batch_size,
            lr: self.trainer.lr,
            weight_decay: self.trainer.weight_decay,
            render,
            key_files: self.run.key_files.clone(),
        })
    }

    /// `proprio run`'s arguments from the effective configuration.
    pub fn run_args(&self) -> RunArgs {
        RunArgs {
            nats: crate::cli_ops::NatsArgs {
                nats: self.nats.url.clone(),
            },
            roles: self.run.roles.clone(),
            train_every: self.trainer.every,
            root: self.nats.root.clone(),
            threshold: self.scorer.threshold,
            cooldown: self.scorer.cooldown,
            max_lag: self.scorer.max_lag.unwrap_or(Duration::ZERO),
            registry: self.run.registry.clone(),
            cold_steps: self.trainer.cold_steps,
            incremental_steps: self.trainer.incremental_steps,
            silence_multiple: self.silence.multiple,
            threads: self.run.threads,
            max_payload: self.run.max_payload,
            digest_debounce: self.trainer.digest_debounce,
            // validate() read the masks file already; only a file changed
            // since then can fail here, and the built-in rendering is then
            // the safe choice (documents get the built-in fingerprint).
            learning: self.learning().unwrap_or_else(|e| {
                tracing::error!("render settings not applied: {e:#}");
                Learning::default()
            }),
        }
    }

    /// A key's value as text (None when unset); secrets redacted.
    pub fn value(&self, path: &str) -> Option<String> {
        let s = &self.nats.security;
        let p = |o: &Option<PathBuf>| o.as_ref().map(|p| p.display().to_string());
        let redacted = |o: &Option<String>| o.as_ref().map(|_| "<redacted>".to_string());
        Some(match path {
            "nats.url" => crate::bus::redact_url(&self.nats.url),
            "nats.root" => self.nats.root.clone(),
            "nats.connect_timeout" => format_duration(self.nats.connect_timeout),
            "nats.replicas" => self.nats.replicas.to_string(),
            "nats.user" => return s.user.clone(),
            "nats.password" => return redacted(&s.password),
            "nats.token" => return redacted(&s.token),
            "nats.creds" => return p(&s.creds),
            "nats.nkey" => return p(&s.nkey),
            "nats.tls_ca" => return p(&s.tls_ca),
            "nats.tls_cert" => return p(&s.tls_cert),
            "nats.tls_key" => return p(&s.tls_key),
            "nats.tls_required" => s.tls_required.to_string(),
            "run.roles" => self
                .run
                .roles
                .iter()
                .map(|r| role_name(*r))
                .collect::<Vec<_>>()
                .join(","),
            "run.registry" => self.run.registry.display().to_string(),
            "run.threads" => self.run.threads.to_string(),
            "run.max_payload" => self.run.max_payload.to_string(),
            "run.key_files" => {
                let f: Vec<String> = self
                    .run
                    .key_files
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect();
                f.join(",")
            }
            "scorer.threshold" => self.scorer.threshold.to_string(),
            "scorer.cooldown" => format_duration(self.scorer.cooldown),
            "scorer.max_lag" => return self.scorer.max_lag.map(format_duration),
            "trainer.every" => return self.trainer.every.map(format_duration),
            "trainer.cold_steps" => self.trainer.cold_steps.to_string(),
            "trainer.incremental_steps" => self.trainer.incremental_steps.to_string(),
            "trainer.digest_debounce" => format_duration(self.trainer.digest_debounce),
            "trainer.batch_size" => self.trainer.batch_size.to_string(),
            "trainer.lr" => self.trainer.lr.to_string(),
            "trainer.weight_decay" => self.trainer.weight_decay.to_string(),
            "model.n_embd" => self.model.n_embd.to_string(),
            "model.n_layer" => self.model.n_layer.to_string(),
            "model.n_head" => self.model.n_head.to_string(),
            "model.block_size" => self.model.block_size.to_string(),
            "render.metric_format" => self.render.metric_format.as_str().to_string(),
            "render.masks" => return self.render.masks.as_ref().map(|p| p.display().to_string()),
            "silence.multiple" => self.silence.multiple.to_string(),
            "metrics.addr" => return self.metrics.addr.map(|a| a.to_string()),
            "log.json" => self.log.json.to_string(),
            "log.level" => self.log.level.clone(),
            _ => return None,
        })
    }

    /// The effective configuration as TOML (secrets redacted), each key
    /// with where its value came from; unset keys are commented out.
    pub fn render(&self) -> String {
        let mut out = String::from(
            "# proprio: effective configuration (default < file < environment < flag)\n",
        );
        let mut section = "";
        for k in KEYS {
            let (sec, name) = k.path.split_once('.').unwrap_or(("", k.path));
            if sec != section {
                out.push_str(&format!("\n[{sec}]\n"));
                section = sec;
            }
            let line = match self.value(k.path) {
                Some(v) => format!("{name} = {}", toml_literal(k.path, &v)),
                None => format!("# {name} = (unset)"),
            };
            out.push_str(&format!(
                "{line:<48} # {} (env {})\n",
                self.origin(k.path),
                k.env
            ));
        }
        out
    }
}

/// A value as TOML: numbers and booleans bare, the rest quoted.
fn toml_literal(path: &str, v: &str) -> String {
    let bare = matches!(
        path,
        "nats.replicas"
            | "nats.tls_required"
            | "run.threads"
            | "run.max_payload"
            | "scorer.threshold"
            | "trainer.cold_steps"
            | "trainer.incremental_steps"
            | "trainer.batch_size"
            | "trainer.lr"
            | "trainer.weight_decay"
            | "model.n_embd"
            | "model.n_layer"
            | "model.n_head"
            | "model.block_size"
            | "silence.multiple"
            | "log.json"
    );
    if bare {
        // A whole float must still read back as a float.
        if matches!(
            path,
            "scorer.threshold" | "silence.multiple" | "trainer.lr" | "trainer.weight_decay"
        ) && !v.contains(['.', 'e', 'i', 'N'])
        {
            return format!("{v}.0");
        }
        v.to_string()
    } else {
        toml::Value::String(v.to_string()).to_string()
    }
}

/// A TOML value in the text form [`Config::set`] takes.
fn toml_text(v: &toml::Value) -> Result<String> {
    Ok(match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Array(a) => a
            .iter()
            .map(|x| match x {
                toml::Value::String(s) => Ok(s.clone()),
                other => Err(anyhow!("expected a list of strings, found {other}")),
            })
            .collect::<Result<Vec<_>>>()?
            .join(","),
        other => bail!("expected a value, found {}", other.type_str()),
    })
}

/// Flags every subcommand takes (`proprio --config FILE digest`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct GlobalArgs {
    /// Configuration file (TOML; see deploy/proprio.toml).
    #[arg(long, global = true, env = "PROPRIO_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Serve /metrics, /healthz and /readyz on this address (e.g. 0.0.0.0:9464).
    #[arg(long, global = true, value_name = "ADDR")]
    pub metrics_addr: Option<String>,
    /// NATS user (the password comes from PROPRIO_NATS_PASSWORD or the file).
    #[arg(long, global = true, value_name = "USER")]
    pub nats_user: Option<String>,
    /// NATS credentials file (JWT + NKey seed).
    #[arg(long, global = true, value_name = "FILE")]
    pub nats_creds: Option<String>,
    /// File holding an NKey seed.
    #[arg(long, global = true, value_name = "FILE")]
    pub nats_nkey: Option<String>,
    /// CA certificate(s) (PEM) for the NATS server's certificate.
    #[arg(long, global = true, value_name = "FILE")]
    pub nats_tls_ca: Option<String>,
    /// Client certificate (PEM) for NATS.
    #[arg(long, global = true, value_name = "FILE")]
    pub nats_tls_cert: Option<String>,
    /// Client key (PEM) for NATS.
    #[arg(long, global = true, value_name = "FILE")]
    pub nats_tls_key: Option<String>,
}

/// `proprio config ...`
#[derive(clap::Args, Debug, Clone)]
pub struct ConfigArgs {
    #[command(subcommand)]
    pub command: ConfigCommand,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum ConfigCommand {
    /// Validate FILE (with the environment and flags applied) and print the
    /// effective configuration, secrets redacted. Exits non-zero on any error.
    Check {
        /// The TOML file.
        file: PathBuf,
    },
    /// Print every key with its environment variable and flag.
    Keys,
}

/// The table of keys, for `proprio config keys` and the README.
pub fn keys_table() -> String {
    let mut out = String::new();
    for k in KEYS {
        out.push_str(&format!(
            "{:<28} {:<36} {:<22} {}\n",
            k.path,
            k.env,
            k.flag.unwrap_or("-"),
            k.doc
        ));
    }
    out
}

/// What the binary does before a command runs. A command on NATS gets the
/// full configuration (a bad key is an error here, before anything
/// starts), `run` with its own flags on top; logging is set up from it (the
/// caller connects with [`Config::bus_config`]). An offline command
/// is not stopped by a NATS setting; one that trains (`learns`: `train`,
/// `eval`) is stopped by a configuration it cannot read, since it would
/// otherwise train another model than the one configured.
pub fn startup(
    g: &GlobalArgs,
    log_json: bool,
    on_nats: bool,
    learns: bool,
    run: Option<(&RunArgs, Option<&clap::ArgMatches>)>,
) -> Result<Config> {
    if !on_nats {
        return Ok(match Config::from_cli(g, log_json) {
            Ok(c) => {
                crate::logging::init_with(c.log.json, Some(&c.log.level));
                c
            }
            Err(e) => {
                crate::logging::init(log_json);
                if learns {
                    return Err(e);
                }
                tracing::warn!("configuration not applied: {e:#}");
                Config::default()
            }
        });
    }
    let mut c = Config::from_cli(g, log_json)?;
    if let Some((a, m)) = run {
        c.merge_run_flags(a, m)?;
    }
    c.validate()?;
    crate::logging::init_with(c.log.json, Some(&c.log.level));
    for w in &c.warnings {
        tracing::warn!("{w}");
    }
    Ok(c)
}

/// `proprio config check FILE` / `proprio config keys`.
pub fn command(a: &ConfigArgs, g: &GlobalArgs, log_json: bool) -> Result<()> {
    match &a.command {
        ConfigCommand::Check { file } => {
            let mut c = Config::load_unchecked(Some(file), std::env::vars())?;
            c.merge_global_flags(g, log_json)?;
            c.validate()?;
            for w in &c.warnings {
                eprintln!("warning: {w}");
            }
            if !c.run.registry.exists() {
                eprintln!(
                    "warning: run.registry {} does not exist here (the trainer skips the axiomatic curriculum without it)",
                    c.run.registry.display()
                );
            }
            print!("{}", c.render());
            Ok(())
        }
        ConfigCommand::Keys => {
            print!("{}", keys_table());
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_run_flags() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct W {
            #[command(flatten)]
            a: RunArgs,
        }
        let w = W::try_parse_from(["run"]).unwrap();
        let mut d = Config::default().run_args();
        // These two follow the environment in clap; compare the rest.
        d.nats.nats = w.a.nats.nats.clone();
        d.root = w.a.root.clone();
        assert_eq!(format!("{:?}", w.a), format!("{d:?}"));
    }

    #[test]
    fn durations_round_trip() {
        for s in ["0", "500ms", "30s", "10m", "6h", "1d", "90s"] {
            let d = parse_duration(s).unwrap();
            assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
        }
        assert_eq!(format_duration(Duration::from_secs(3600)), "1h");
    }

    #[test]
    fn suggestions() {
        assert!(suggest("nats.pasword").contains("nats.password"));
        assert!(suggest("zzz.qqqqqqqq").is_empty());
    }
}
