//! Configuration: one TOML file (deploy/proprio.toml documents every key),
//! every key overridable by an environment variable and the main ones by
//! flags. Precedence, lowest first: built-in default < file < environment <
//! flag.
//!
//! Keys are `section.name`, the fields of [`Config`]; the environment
//! variable of a key is `PROPRIO_<SECTION>_<NAME>` upper-cased
//! (`scorer.risk` → `PROPRIO_SCORER_RISK`). Two older names are
//! still read, below their `PROPRIO_` form: `NATS_URL` (nats.url) and
//! `PROPRIO_ROOT` (nats.root). A flag is a clap argument whose id is its
//! key (see [`flags`]).
//!
//! The layers are merged by figment ([`layers`]), which remembers which layer
//! gave each value (the origin `config check` prints and errors name), then
//! read into [`Config`] by serde, with `deny_unknown_fields`. Everything is
//! checked when the configuration is loaded, so a bad value is an error
//! naming its key (and where it came from) at start-up, never a panic later.

mod check;
pub mod flags;
mod incidents;
mod layers;
mod text;

pub use check::{command, keys_table, ConfigArgs, ConfigCommand};
pub use flags::{Flags, GlobalArgs, NatsFlags, RunArgs};
pub use incidents::IncidentsSection;
pub use layers::Origin;

use crate::bus::{BusConfig, NatsSecurity};
use crate::curriculum::{MetricFormat, RenderConfig};
use crate::model::train::TrainConfig;
use crate::model::GptConfig;
use crate::policy::Policy;
use crate::vocab::learn::VocabConfig;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::Duration;

/// A role `proprio run` can play.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Role {
    Harvester,
    Scorer,
    Trainer,
    Silence,
    Incidents,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Harvester,
        Role::Scorer,
        Role::Trainer,
        Role::Silence,
        Role::Incidents,
    ];

    pub fn name(self) -> String {
        use clap::ValueEnum;
        let v = self.to_possible_value().expect("no role is skipped");
        v.get_name().to_string()
    }

    /// "harvester,scorer": comma-separated names, each once, at least one.
    pub fn parse_list(s: &str) -> Result<Vec<Role>, String> {
        use clap::ValueEnum;
        let mut out = Vec::new();
        for r in s.split(',').map(str::trim).filter(|r| !r.is_empty()) {
            let r = Role::from_str(r, false).map_err(|_| {
                format!(
                    "unknown role {r:?} ({})",
                    Role::list(&Role::ALL).replace(',', ", ")
                )
            })?;
            if !out.contains(&r) {
                out.push(r);
            }
        }
        if out.is_empty() {
            return Err("no role given (harvester, scorer, trainer, silence, incidents)".into());
        }
        Ok(out)
    }

    /// The names, comma-separated ([`Role::parse_list`] reads it back).
    pub fn list(roles: &[Role]) -> String {
        roles.iter().map(|r| r.name()).collect::<Vec<_>>().join(",")
    }
}

/// A password or token: never in `Debug` output.
#[derive(Clone, PartialEq, Serialize)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsSection {
    #[serde(deserialize_with = "text::url")]
    pub url: String,
    #[serde(deserialize_with = "text::trimmed")]
    pub root: String,
    #[serde(with = "text::duration")]
    pub connect_timeout: Duration,
    #[serde(deserialize_with = "text::number")]
    pub replicas: usize,
    #[serde(deserialize_with = "text::optional")]
    pub user: Option<String>,
    #[serde(deserialize_with = "text::secret")]
    pub password: Option<Secret>,
    #[serde(deserialize_with = "text::token")]
    pub token: Option<Secret>,
    #[serde(deserialize_with = "text::optional_path")]
    pub creds: Option<PathBuf>,
    #[serde(deserialize_with = "text::optional_path")]
    pub nkey: Option<PathBuf>,
    #[serde(deserialize_with = "text::optional_path")]
    pub tls_ca: Option<PathBuf>,
    #[serde(deserialize_with = "text::optional_path")]
    pub tls_cert: Option<PathBuf>,
    #[serde(deserialize_with = "text::optional_path")]
    pub tls_key: Option<PathBuf>,
    #[serde(deserialize_with = "text::boolean")]
    pub tls_required: bool,
}

impl Default for NatsSection {
    fn default() -> Self {
        NatsSection {
            url: crate::bus::DEFAULT_URL.to_string(),
            root: crate::contract::DEFAULT_ROOT.to_string(),
            connect_timeout: Duration::from_secs(3),
            replicas: 1,
            user: None,
            password: None,
            token: None,
            creds: None,
            nkey: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            tls_required: false,
        }
    }
}

impl NatsSection {
    /// Credentials and TLS, as the bus takes them.
    pub fn security(&self) -> NatsSecurity {
        let secret = |s: &Option<Secret>| s.as_ref().map(|s| s.0.clone());
        NatsSecurity {
            user: self.user.clone(),
            password: secret(&self.password),
            token: secret(&self.token),
            creds: self.creds.clone(),
            nkey: self.nkey.clone(),
            tls_ca: self.tls_ca.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            tls_required: self.tls_required,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunSection {
    #[serde(with = "text::roles")]
    pub roles: Vec<Role>,
    #[serde(deserialize_with = "text::path")]
    pub registry: PathBuf,
    #[serde(deserialize_with = "text::number")]
    pub threads: usize,
    #[serde(deserialize_with = "text::size")]
    pub max_payload: usize,
    #[serde(with = "text::paths")]
    pub key_files: Vec<PathBuf>,
}

impl Default for RunSection {
    fn default() -> Self {
        RunSection {
            roles: Role::ALL.to_vec(),
            registry: PathBuf::from("deploy/services.yaml"),
            threads: 1,
            max_payload: crate::event::Limits::default().max_payload,
            key_files: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScorerSection {
    /// Share of normal events whose score alone reaches the alert level.
    #[serde(deserialize_with = "text::number")]
    pub risk: f64,
    /// Evidence: the mean of the `evidence_count` highest scores of a key
    /// in this window.
    #[serde(with = "text::duration")]
    pub evidence_window: Duration,
    #[serde(deserialize_with = "text::number")]
    pub evidence_count: usize,
    #[serde(with = "text::duration")]
    pub cooldown: Duration,
    /// None: never shed.
    #[serde(with = "text::optional_duration")]
    pub max_lag: Option<Duration>,
    /// 1: replicas share one consumer; 2 to 64: split by source.
    #[serde(deserialize_with = "text::number")]
    pub partitions: u32,
}

impl ScorerSection {
    /// The alert policy these settings make.
    pub fn policy(&self) -> Policy {
        Policy {
            risk: self.risk,
            evidence_window_ms: self.evidence_window.as_millis() as i64,
            evidence_k: self.evidence_count,
        }
    }
}

impl Default for ScorerSection {
    fn default() -> Self {
        ScorerSection {
            risk: Policy::DEFAULT_RISK,
            evidence_window: Duration::from_millis(Policy::DEFAULT_EVIDENCE_WINDOW_MS as u64),
            evidence_count: Policy::DEFAULT_EVIDENCE_K,
            cooldown: Duration::from_secs(60),
            max_lag: Some(Duration::from_secs(300)),
            partitions: 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainerSection {
    /// None: no built-in tick.
    #[serde(with = "text::optional_duration")]
    pub every: Option<Duration>,
    #[serde(deserialize_with = "text::number")]
    pub cold_steps: usize,
    #[serde(deserialize_with = "text::number")]
    pub incremental_steps: usize,
    #[serde(with = "text::duration")]
    pub digest_debounce: Duration,
    /// After a fingerprint change, the new epoch's cold start waits for at
    /// least this many of its telemetry documents, harvested over at least
    /// `epoch_min_age`; checked every `epoch_check`.
    #[serde(deserialize_with = "text::number")]
    pub epoch_min_docs: usize,
    #[serde(with = "text::duration")]
    pub epoch_min_age: Duration,
    #[serde(with = "text::duration")]
    pub epoch_check: Duration,
    #[serde(deserialize_with = "text::number")]
    pub batch_size: usize,
    #[serde(deserialize_with = "text::number")]
    pub lr: f64,
    #[serde(deserialize_with = "text::number")]
    pub weight_decay: f64,
    /// Most curriculum documents one source gives per minute of event
    /// time (the harvester's sampler, which offline training follows);
    /// 0: no budget.
    #[serde(deserialize_with = "text::number")]
    pub sample_per_minute: u32,
}

impl Default for TrainerSection {
    fn default() -> Self {
        let t = TrainConfig::default();
        TrainerSection {
            every: None,
            cold_steps: 500,
            incremental_steps: 200,
            digest_debounce: Duration::from_secs(10),
            // EpochWait's defaults (the trainer depends on this module).
            epoch_min_docs: 1000,
            epoch_min_age: Duration::from_secs(600),
            epoch_check: Duration::from_secs(60),
            batch_size: t.batch_size,
            lr: t.lr,
            weight_decay: t.weight_decay,
            sample_per_minute: crate::curriculum::Sampling::default().budget_per_minute,
        }
    }
}

/// The shape of a cold-started model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelSection {
    #[serde(deserialize_with = "text::number")]
    pub n_embd: usize,
    #[serde(deserialize_with = "text::number")]
    pub n_layer: usize,
    #[serde(deserialize_with = "text::number")]
    pub n_head: usize,
    #[serde(deserialize_with = "text::number")]
    pub block_size: usize,
    #[serde(deserialize_with = "text::number")]
    pub vocab_merges: usize,
    #[serde(deserialize_with = "text::number")]
    pub vocab_names: usize,
}

impl Default for ModelSection {
    fn default() -> Self {
        let g = GptConfig::default();
        let v = VocabConfig::default();
        ModelSection {
            n_embd: g.n_embd,
            n_layer: g.n_layer,
            n_head: g.n_head,
            block_size: g.block_size,
            vocab_merges: v.merges,
            vocab_names: v.names,
        }
    }
}

impl ModelSection {
    pub fn shape(&self) -> GptConfig {
        GptConfig {
            n_embd: self.n_embd,
            n_layer: self.n_layer,
            n_head: self.n_head,
            block_size: self.block_size,
            ..GptConfig::default()
        }
    }

    pub fn vocab(&self) -> VocabConfig {
        VocabConfig {
            merges: self.vocab_merges,
            names: self.vocab_names,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RenderSection {
    #[serde(deserialize_with = "text::parsed")]
    pub metric_format: MetricFormat,
    /// `scaled`: a series' sustained new level reads as usual within this.
    #[serde(with = "text::duration")]
    pub adapt: Duration,
    /// None: the built-in masks.
    #[serde(deserialize_with = "text::optional_path")]
    pub masks: Option<PathBuf>,
}

impl Default for RenderSection {
    fn default() -> Self {
        RenderSection {
            metric_format: RenderConfig::default().metric_format,
            adapt: Duration::from_millis(RenderConfig::default().adapt_ms as u64),
            masks: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SilenceSection {
    #[serde(deserialize_with = "text::number")]
    pub multiple: f64,
}

impl Default for SilenceSection {
    fn default() -> Self {
        SilenceSection { multiple: 3.0 }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    #[serde(with = "text::address")]
    pub addr: Option<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    #[serde(deserialize_with = "text::boolean")]
    pub json: bool,
    #[serde(deserialize_with = "text::log_filter")]
    pub level: String,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            json: false,
            level: "info".into(),
        }
    }
}

/// The effective configuration. Its sections and fields are the file's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub nats: NatsSection,
    pub run: RunSection,
    pub scorer: ScorerSection,
    pub trainer: TrainerSection,
    pub model: ModelSection,
    pub render: RenderSection,
    pub silence: SilenceSection,
    pub incidents: IncidentsSection,
    pub metrics: MetricsSection,
    pub log: LogSection,
    /// Things worth a warning once logging is up (an unknown `PROPRIO_` variable).
    #[serde(skip)]
    pub warnings: Vec<String>,
    /// Where each key's value came from (absent: the default).
    #[serde(skip)]
    origins: BTreeMap<String, Origin>,
}

/// What shapes learning, for the trainer (live or `proprio train`) and the
/// harvester: the model's shape, the training settings, the rendering and
/// the key files. A scorer needs none of it: it follows its model.
#[derive(Debug, Clone, PartialEq)]
pub struct Learning {
    pub shape: GptConfig,
    /// The vocabulary a cold start learns.
    pub vocab: VocabConfig,
    pub batch_size: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub render: RenderConfig,
    /// Key files after the registry, in this order.
    pub key_files: Vec<PathBuf>,
    /// What of the stream becomes curriculum: the live harvester samples
    /// by it, and offline training admits its events by it, so both learn
    /// from the same documents.
    pub sampling: crate::curriculum::Sampling,
}

impl Default for Learning {
    fn default() -> Self {
        let t = TrainConfig::default();
        Learning {
            shape: GptConfig::default(),
            vocab: VocabConfig::default(),
            batch_size: t.batch_size,
            lr: t.lr,
            weight_decay: t.weight_decay,
            render: RenderConfig::default(),
            key_files: Vec::new(),
            sampling: Default::default(),
        }
    }
}

impl Learning {
    /// The freshness gates' fingerprint inputs: the registry first, then the
    /// configured key files, then a configured rendering.
    pub fn gates(&self, registry: &Path) -> crate::freshness::Gates {
        let mut key_files = vec![registry.to_path_buf()];
        key_files.extend(self.key_files.iter().cloned());
        // A new vocabulary setting is a new vocabulary: a cold start.
        let mut settings = self.render.fingerprint_text();
        if self.vocab != VocabConfig::default() {
            settings.push_str(&serde_json::to_string(&self.vocab).unwrap_or_default());
        }
        crate::freshness::Gates {
            key_files,
            settings,
            ..Default::default()
        }
    }
}

/// What `proprio run` starts its roles with: the configuration's sections
/// the roles read, the bus settings and the checked learning settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSettings {
    pub bus: BusConfig,
    pub run: RunSection,
    pub scorer: ScorerSection,
    pub trainer: TrainerSection,
    pub silence: SilenceSection,
    pub incidents: IncidentsSection,
    pub learning: Learning,
    /// Telemetry time runs this many times faster than the wall clock: 1,
    /// except in the demo, which replays the simulated OS faster; the
    /// silence watch judges rhythms in telemetry time
    /// ([`crate::silence::SilenceConfig::at_speed`]).
    pub speed: f64,
}

impl Default for RunSettings {
    /// The built-in defaults (what `proprio run` without configuration runs).
    fn default() -> Self {
        Config::default().run_settings()
    }
}

/// One configuration key, for `config keys` and the documentation.
#[derive(Debug, Clone)]
pub struct Key {
    pub path: &'static str,
    /// Its environment variable.
    pub env: String,
    /// Its flag, if it has one (e.g. `--risk`).
    pub flag: Option<String>,
    pub secret: bool,
    pub doc: &'static str,
}

/// What each key means, in the order `config check` prints them. A unit
/// test holds this list equal to [`Config`]'s fields.
const DOCS: &[(&str, &str)] = &[
    ("nats.url", "NATS server URL(s), comma-separated"),
    ("nats.root", "telemetry subject root"),
    ("nats.connect_timeout", "first connection must succeed within this"),
    ("nats.replicas", "replicas of the streams/buckets proprio creates"),
    ("nats.user", "user name (with nats.password)"),
    ("nats.password", "password (environment or file only)"),
    ("nats.token", "authentication token (environment or file only)"),
    ("nats.creds", "credentials file (JWT + NKey seed)"),
    ("nats.nkey", "file holding an NKey seed"),
    ("nats.tls_ca", "CA certificate(s) (PEM) for the server"),
    ("nats.tls_cert", "client certificate (PEM)"),
    ("nats.tls_key", "client key (PEM)"),
    ("nats.tls_required", "refuse a server without TLS"),
    ("run.roles", "roles of this process"),
    ("run.registry", "service registry (services.yaml)"),
    ("run.threads", "threads for the model"),
    ("run.max_payload", "largest telemetry payload accepted (bytes, or 64KiB, 1MiB); larger is dead-lettered as too_large"),
    ("run.key_files", "files whose change is an architecture change (besides the registry): fingerprint, cold start"),
    ("scorer.risk", "share of normal events whose score alone would alert, for a model trained on a day or more (younger: its share of a day, at least 1/30); for a key slower than the evidence window, share of its windows"),
    ("scorer.evidence_window", "an alert weighs the key's events in this window"),
    ("scorer.evidence_count", "evidence = mean of this many highest scores in the window"),
    ("scorer.cooldown", "per source and kind, one alert per this"),
    ("scorer.max_lag", "events older than this when scored are shed unscored (\"\" = never)"),
    ("scorer.partitions", "1: scorer replicas share one consumer; 2 to 64: the telemetry is split by source, each partition scored by one replica at a time (set it before starting several scorers)"),
    ("trainer.every", "built-in training tick period (\"\" = none)"),
    ("trainer.cold_steps", "steps of a cold-start cycle"),
    ("trainer.incremental_steps", "steps of an incremental cycle"),
    ("trainer.digest_debounce", "least time between alert-driven digests"),
    ("trainer.epoch_min_docs", "after a fingerprint change, the new epoch's cold start waits for this many of its telemetry documents"),
    ("trainer.epoch_min_age", "... and for this long since the change (the old model scores meanwhile, marked previous epoch)"),
    ("trainer.epoch_check", "how often the trainer checks the fingerprint and whether the new epoch's cold start can run"),
    ("trainer.batch_size", "windows per training step"),
    ("trainer.lr", "peak learning rate"),
    ("trainer.weight_decay", "AdamW weight decay"),
    ("trainer.sample_per_minute", "most curriculum documents one source gives per minute of event time (0: no budget)"),
    ("model.n_embd", "embedding width of a cold-started model"),
    ("model.n_layer", "transformer blocks"),
    ("model.n_head", "attention heads (dividing n_embd)"),
    ("model.block_size", "context window, in tokens"),
    ("model.vocab_merges", "byte-pair merges a cold start learns (0 with vocab_names 0: bytes only)"),
    ("model.vocab_names", "most whole-name tokens a cold start learns"),
    ("render.metric_format", "metric values as scaled (a pulse's against its own series), buckets or digits"),
    ("render.adapt", "scaled: a series' sustained new level reads as usual within this"),
    ("render.masks", "TOML file of volatile-text masks replacing the built-in ones (\"\" = built-in)"),
    ("silence.multiple", "silent after this many usual intervals"),
    ("incidents.join_window", "an alert joins an incident whose latest alert is this recent"),
    ("incidents.quiet", "an incident resolves this long after its latest alert"),
    ("incidents.max_hops", "topology distance within which an alert's source joins an incident"),
    ("incidents.max_open", "most open incidents; one more resolves the quietest"),
    ("incidents.confirm_span", "an incident is told once its alerts span this long (\"0s\": at once)"),
    ("incidents.confirm_alerts", "... or once it has this many alerts (1: every incident at once)"),
    ("incidents.confirm_score", "... or once one alert scores this high"),
    ("incidents.new_edges", "alert when a known service starts depending on a known service it never did"),
    ("incidents.edge_warmup", "... once the graph source has been heard from this long (its edges learnt)"),
    ("metrics.addr", "HTTP address of /metrics /healthz /readyz (\"\" = off)"),
    ("log.json", "JSON log lines"),
    ("log.level", "log filter (RUST_LOG, when set, wins)"),
];

/// Keys whose value is never printed.
const SECRETS: &[&str] = &["nats.password", "nats.token"];

/// Every key, in the order `config check` prints them.
pub static KEYS: LazyLock<Vec<Key>> = LazyLock::new(|| {
    DOCS.iter()
        .map(|&(path, doc)| Key {
            path,
            env: env_name(path),
            flag: flags::flag_of(path),
            secret: SECRETS.contains(&path),
            doc,
        })
        .collect()
});

/// `scorer.risk` → `PROPRIO_SCORER_RISK`.
pub fn env_name(path: &str) -> String {
    format!("PROPRIO_{}", path.replace('.', "_").to_ascii_uppercase())
}

pub fn find_key(path: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.path == path)
}

impl Config {
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
            security: self.nats.security(),
        }
    }

    /// `proprio run`'s settings.
    pub fn run_settings(&self) -> RunSettings {
        RunSettings {
            bus: self.bus_config(),
            run: self.run.clone(),
            scorer: self.scorer.clone(),
            trainer: self.trainer.clone(),
            silence: self.silence.clone(),
            incidents: self.incidents.clone(),
            speed: 1.0,
            // validate() read the masks file already; only a file changed
            // since then can fail here, and the built-in rendering is then
            // the safe choice (documents get the built-in fingerprint).
            learning: self.learning().unwrap_or_else(|e| {
                tracing::error!("render settings not applied: {e:#}");
                Learning::default()
            }),
        }
    }
}
