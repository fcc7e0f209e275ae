//! `proprio eval`'s command line, and the alert policy it replays.

use super::metrics::Aggregate;
use super::replay;
use crate::scorer::decide::Policy;
use anyhow::Result;
use std::path::PathBuf;

/// Arguments of `proprio eval`.
#[derive(Debug, Clone, clap::Args)]
pub struct EvalArgs {
    /// Training events (JSON lines; labels, if any, are ignored unless --train-normal-only).
    #[arg(long, value_name = "FILE")]
    pub train: PathBuf,
    /// Test events with labels. Faults are read from FILE.faults.json when present.
    /// Without --test, the --train file is split in time (see --split).
    #[arg(long, value_name = "FILE")]
    pub test: Option<PathBuf>,
    /// Without --test: share of the --train file (events by time; sessions by
    /// their first event with --group-by key) that trains; the rest tests.
    #[arg(long, default_value_t = 0.6, value_name = "SHARE")]
    pub split: f64,
    /// Report per session instead of per event: `key` groups events by their key.
    #[arg(long, value_name = "key")]
    pub group_by: Option<String>,
    /// A session's score from its events' scores: max, mean, or topK (mean of the K highest).
    #[arg(long, default_value = "max", value_name = "max|mean|topK")]
    pub aggregate: Aggregate,
    /// Newest share of the training part held out to choose the threshold (0: in-sample).
    #[arg(long, default_value_t = 0.2, value_name = "SHARE")]
    pub calibration: f64,
    /// Threshold = this quantile of a detector's scores on the calibration slice (1 = max).
    #[arg(long, default_value_t = 1.0, value_name = "Q")]
    pub threshold_quantile: f64,
    /// Drop labelled events (sessions, with --group-by) from training and calibration.
    #[arg(long)]
    pub train_normal_only: bool,
    /// Detectors to run, comma-separated: model, template, zscore, combined.
    #[arg(
        long,
        default_value = "model,template,zscore,combined",
        value_name = "LIST"
    )]
    pub detectors: String,
    /// Training steps of the model.
    #[arg(long, default_value_t = 500)]
    pub steps: usize,
    /// Use this checkpoint instead of training one.
    #[arg(long, value_name = "FILE")]
    pub model: Option<PathBuf>,
    /// Save the trained checkpoint here.
    #[arg(long, value_name = "FILE")]
    pub save_model: Option<PathBuf>,
    /// The model's score: `live` (what the scorer alerts on: the event's
    /// surprisal calibrated by the live tails), `surprisal` (the raw
    /// statistic, [`crate::scorer::surprisal`]), `z` (robust z of the loss
    /// vs its key's baseline), `loss` (raw mean loss per token) or `span`
    /// (mean loss of the event's most surprising 8-token stretch); `content`
    /// and `cspan` are `loss` and `span` without the source name's tokens;
    /// `xsum`, `xspan`, `xmax`: excess surprise, loss minus the model's
    /// expected loss (entropy), see [`crate::scorer::excess_surprise`]
    /// (`xall` is `xsum` with the source name's tokens). A comma-separated
    /// list reports one row per score from one scoring pass.
    #[arg(
        long,
        default_value = "live",
        value_name = "live|z|loss|span|content|cspan|xsum|xspan|xmax|xall|surprisal"
    )]
    pub model_score: String,
    /// Registry for the axiomatic/topology curricula [default: TRAIN.registry.yaml if present, else none].
    #[arg(long, value_name = "FILE")]
    pub registry: Option<PathBuf>,
    /// Per event mode: at most one alert per (source, kind) per this many seconds of event time.
    #[arg(long, default_value_t = 60.0, value_name = "S")]
    pub cooldown_s: f64,
    /// An alert up to this long after a fault's end still detects it.
    #[arg(long, default_value_t = 0.0, value_name = "S")]
    pub grace_s: f64,
    /// The silence watch's and the new-dependency watch's alerts (per
    /// event mode): `row` (a row each, and joined into every detector's
    /// incidents, as live), `join` (added to every detector's alerts) or `off`.
    #[arg(long, default_value = "row", value_name = "row|join|off")]
    pub silence: String,
    /// Write the report as JSON here.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write every test unit's scores (JSON lines) here, for analysis.
    #[arg(long, value_name = "FILE")]
    pub dump: Option<PathBuf>,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// With --group-by key: close every session with a marker event (source
    /// `session`, message `end`, the session's label), in training and test,
    /// so the model can find a session that ends too early (missing events).
    #[arg(long)]
    pub session_end: bool,
    /// Share of each key's newest events the model does not train on (its
    /// validation set) [default: 0 with --group-by, where keys are short
    /// sessions whose tails would never be learnt, else 0.1].
    #[arg(long, value_name = "SHARE")]
    pub val_fraction: Option<f32>,
    /// Context window of the model in tokens [default: the model's, 128].
    #[arg(long, value_name = "TOKENS")]
    pub block_size: Option<usize>,
    /// The live policy's evidence, `S:K` [default: the production policy's,
    /// 60:2]: every detector's event score becomes the evidence of the last
    /// S seconds of its key, the mean of the K highest scores (negative ones
    /// as 0, missing ones as 0), as the live decision weighs it. One
    /// surprising event of a noisy key is divided by K; a burst is not.
    #[arg(long, value_name = "S:K")]
    pub evidence: Option<String>,
    /// The live policy's risk: the `live` score's alert level is -log10(RISK), RISK scaled
    /// as the scorer scales it for a model trained on less than a day (the fitted events' span)
    /// [default: the configured `scorer.risk`, 1e-4].
    #[arg(long, value_name = "RISK")]
    pub risk: Option<f64>,
    /// Cache of the model's scores (calibration and test events): read when
    /// the file exists and matches the event counts, else written after
    /// scoring. For trying thresholds and --evidence without scoring again;
    /// the caller keeps it tied to one model and one data set.
    #[arg(long, value_name = "FILE")]
    pub score_cache: Option<PathBuf>,
    /// With --test: cache of the model's calibration scores alone (read when
    /// it exists, else written), shared by runs on different test files
    /// with the same --train, --model and --calibration.
    #[arg(long, value_name = "FILE")]
    pub calib_cache: Option<PathBuf>,
    /// Threads for libtorch and the scorer.
    #[arg(long, default_value_t = 2)]
    pub threads: i32,
    /// Forward-pass batch size.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// The configured alert policy (`[scorer]`), which `--risk` and
    /// `--evidence` override: eval replays what the scorer would decide
    /// under the same configuration. The built-in defaults when unset.
    #[arg(skip)]
    pub configured: Option<Policy>,
    /// The configured incident engine (`[incidents]`) eval's incidents are
    /// replayed with. The engine's defaults when unset.
    #[arg(skip)]
    pub configured_incidents: Option<crate::incident::EngineConfig>,
}

impl EvalArgs {
    /// The alert policy eval replays: the configured one (production
    /// defaults without a configuration) unless `--risk` or `--evidence`
    /// say otherwise.
    pub fn policy(&self) -> Result<Policy> {
        let mut p = self.configured.unwrap_or_default();
        if let Some(risk) = self.risk {
            p.risk = risk;
        }
        anyhow::ensure!(
            p.risk > 0.0 && p.risk < 1.0,
            "--risk {}: expected a share between 0 and 1",
            p.risk
        );
        if let Some(ev) = &self.evidence {
            let (w, k) = replay::parse_evidence(ev)?;
            p.evidence_window_ms = w;
            p.evidence_k = k;
        }
        Ok(p)
    }

    /// Defaults, as the command line gives them, for `train`.
    pub fn new(train: impl Into<PathBuf>) -> EvalArgs {
        EvalArgs {
            train: train.into(),
            test: None,
            split: 0.6,
            group_by: None,
            aggregate: Aggregate::Max,
            calibration: 0.2,
            threshold_quantile: 1.0,
            train_normal_only: false,
            detectors: "model,template,zscore,combined".into(),
            steps: 500,
            model: None,
            save_model: None,
            model_score: "live".into(),
            risk: None,
            registry: None,
            cooldown_s: 60.0,
            grace_s: 0.0,
            silence: "row".into(),
            json: None,
            dump: None,
            session_end: false,
            evidence: None,
            score_cache: None,
            calib_cache: None,
            val_fraction: None,
            block_size: None,
            seed: 1,
            threads: 2,
            batch: 64,
            configured: None,
            configured_incidents: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configured_policy_is_replayed_unless_a_flag_overrides_it() {
        let configured = Policy {
            risk: 1e-5,
            evidence_window_ms: 30_000,
            evidence_k: 3,
        };
        let mut a = EvalArgs::new("x.jsonl");
        assert_eq!(a.policy().unwrap(), Policy::default());
        a.configured = Some(configured);
        assert_eq!(a.policy().unwrap(), configured);
        a.risk = Some(2e-4);
        a.evidence = Some("60:2".into());
        let p = a.policy().unwrap();
        assert_eq!(
            (p.risk, p.evidence_window_ms, p.evidence_k),
            (2e-4, 60_000, 2)
        );
        a.risk = Some(1.5);
        assert!(a.policy().is_err());
    }
}
