//! Checking and showing the configuration: the checks across keys, the
//! learning settings, the effective configuration as TOML with each value's
//! origin (`proprio config check`) and the table of keys (`config keys`).

use super::{flags::Flags, Config, Learning, Origin, KEYS};
use crate::curriculum::RenderConfig;
use anyhow::{anyhow, Result};
use figment::value::{Num, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

impl Config {
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
        if !(self.scorer.risk > 0.0 && self.scorer.risk < 1.0) {
            return Err(bad(
                "scorer.risk",
                format!(
                    "= {} must be a share between 0 and 1 (e.g. 1e-5)",
                    self.scorer.risk
                ),
            ));
        }
        if self.scorer.evidence_count == 0 || self.scorer.evidence_window.is_zero() {
            return Err(bad(
                "scorer.evidence_count",
                "evidence needs at least one event over a window longer than 0".into(),
            ));
        }
        if !(1..=64).contains(&self.scorer.partitions) {
            return Err(bad(
                "scorer.partitions",
                format!("= {} must be 1 (shared) or 2 to 64", self.scorer.partitions),
            ));
        }
        if !(self.silence.multiple.is_finite() && self.silence.multiple >= 1.0) {
            return Err(bad(
                "silence.multiple",
                format!("= {} must be at least 1", self.silence.multiple),
            ));
        }
        for (key, d) in [
            ("incidents.join_window", self.incidents.join_window),
            ("incidents.quiet", self.incidents.quiet),
        ] {
            if d < Duration::from_secs(1) {
                return Err(bad(key, "must be at least 1s".into()));
            }
        }
        if self.incidents.max_hops > 6 {
            return Err(bad(
                "incidents.max_hops",
                format!("= {} must be 0 to 6", self.incidents.max_hops),
            ));
        }
        if self.incidents.confirm_alerts == 0 {
            return Err(bad("incidents.confirm_alerts", "must be at least 1".into()));
        }
        if !self.incidents.confirm_score.is_finite() {
            return Err(bad("incidents.confirm_score", "must be a number".into()));
        }
        if self.incidents.max_open == 0 {
            return Err(bad("incidents.max_open", "must be at least 1".into()));
        }
        if self.trainer.cold_steps == 0 {
            return Err(bad("trainer.cold_steps", "must be at least 1".into()));
        }
        if let Some(e) = self.trainer.every.filter(|e| *e < Duration::from_secs(1)) {
            return Err(bad(
                "trainer.every",
                format!(
                    "= {} is too short (at least 1s)",
                    crate::units::format_duration(e)
                ),
            ));
        }
        if self.trainer.epoch_check < Duration::from_secs(1) {
            return Err(bad(
                "trainer.epoch_check",
                format!(
                    "= {} is too short (at least 1s)",
                    crate::units::format_duration(self.trainer.epoch_check)
                ),
            ));
        }
        self.learning()?;
        self.nats.security().check().map_err(|e| {
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

    /// The learning settings, checked, the masks file read. Offline
    /// commands (`train`, `eval`) need these even without NATS settings.
    pub fn learning(&self) -> Result<Learning> {
        let bad = |path: &str, why: String| -> anyhow::Error {
            anyhow!("`{path}` {why} (from {})", self.origin(path))
        };
        let t = &self.trainer;
        if t.batch_size == 0 {
            return Err(bad("trainer.batch_size", "must be at least 1".into()));
        }
        if !(t.lr.is_finite() && t.lr > 0.0) {
            return Err(bad(
                "trainer.lr",
                format!("= {} must be a positive number", t.lr),
            ));
        }
        if !(t.weight_decay.is_finite() && t.weight_decay >= 0.0) {
            return Err(bad(
                "trainer.weight_decay",
                format!("= {} must be 0 or more", t.weight_decay),
            ));
        }
        let shape = self.model.shape();
        if let Err(e) = shape.validate() {
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
        let render = RenderConfig::load(
            self.render.metric_format,
            self.render.adapt,
            self.render.masks.as_deref(),
        )
        .map_err(|e| bad("render.masks", format!("is refused: {e:#}")))?;
        Ok(Learning {
            shape,
            vocab: self.model.vocab(),
            batch_size: t.batch_size,
            lr: t.lr,
            weight_decay: t.weight_decay,
            render,
            key_files: self.run.key_files.clone(),
            sampling: crate::curriculum::Sampling {
                budget_per_minute: match t.sample_per_minute {
                    0 => u32::MAX,
                    n => n,
                },
                ..Default::default()
            },
        })
    }

    /// Each key's value as a TOML literal (None when unset), secrets
    /// redacted.
    fn literals(&self) -> BTreeMap<String, Option<String>> {
        let mut out = BTreeMap::new();
        let Ok(Value::Dict(_, sections)) = Value::serialize(self) else {
            return out;
        };
        for (section, body) in sections {
            let Value::Dict(_, body) = body else { continue };
            for (name, v) in body {
                let path = format!("{section}.{name}");
                let secret = KEYS.iter().any(|k| k.path == path && k.secret);
                let lit = match v {
                    Value::Empty(..) => None,
                    _ if secret => Some("\"<redacted>\"".to_string()),
                    Value::String(_, s) if path == "nats.url" => {
                        Some(toml_string(&crate::bus::redact_url(&s)))
                    }
                    Value::String(_, s) => Some(toml_string(&s)),
                    Value::Bool(_, b) => Some(b.to_string()),
                    Value::Num(_, n) => Some(num_literal(n)),
                    other => Some(toml_string(&format!("{other:?}"))),
                };
                out.insert(path, lit);
            }
        }
        out
    }

    /// The effective configuration as TOML (secrets redacted), each key
    /// with where its value came from; unset keys are commented out.
    pub fn render(&self) -> String {
        let mut out = String::from(
            "# proprio: effective configuration (default < file < environment < flag)\n",
        );
        let literals = self.literals();
        let mut section = "";
        for k in KEYS.iter() {
            let (sec, name) = k.path.split_once('.').unwrap_or(("", k.path));
            if sec != section {
                out.push_str(&format!("\n[{sec}]\n"));
                section = sec;
            }
            let line = match literals.get(k.path).cloned().flatten() {
                Some(v) => format!("{name} = {v}"),
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

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// A number as text, as written in the configuration.
pub(super) fn num_text(n: Num) -> String {
    match n {
        Num::F32(v) => v.to_string(),
        Num::F64(v) => v.to_string(),
        n => n
            .to_i128()
            .map(|v| v.to_string())
            .or_else(|| n.to_u128().map(|v| v.to_string()))
            .unwrap_or_default(),
    }
}

/// A number as a TOML literal: a whole float still reads back as a float.
fn num_literal(n: Num) -> String {
    let t = num_text(n);
    let float = matches!(n, Num::F32(_) | Num::F64(_));
    if float && !t.contains(['.', 'e', 'i', 'N']) {
        format!("{t}.0")
    } else {
        t
    }
}

/// The keys' defaults as plain text (the keys that have one), for `--help`.
pub(super) fn default_texts() -> BTreeMap<String, String> {
    Config::default()
        .literals()
        .into_iter()
        .filter_map(|(k, v)| Some((k, v?.trim_matches('"').to_string())))
        .collect()
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
    for k in KEYS.iter() {
        out.push_str(&format!(
            "{:<28} {:<36} {:<22} {}\n",
            k.path,
            k.env,
            k.flag.as_deref().unwrap_or("-"),
            k.doc
        ));
    }
    out
}

/// `proprio config check FILE` / `proprio config keys`.
pub fn command(a: &ConfigArgs, flags: &Flags) -> Result<()> {
    match &a.command {
        ConfigCommand::Check { file } => {
            let c = Config::load_with(Some(file), std::env::vars(), flags)?;
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
