//! `proprio eval`: does loss work as an anomaly score? Trains on one event
//! file, scores another that carries labels, and reports, for the language
//! model and for the baselines side by side, per fault type and overall:
//! precision, recall and F1 at a threshold chosen without test labels, AUROC
//! and AUPRC, time to detect each fault and false alerts per hour.
//!
//! The protocol, in the order it runs:
//!
//! 1. **Data.** `--train` and `--test` are event files (JSON lines). Without
//!    `--test`, the `--train` file is cut in time: its first `--split` share
//!    (events, or sessions by their first event with `--group-by key`) is
//!    the training part, the rest the test part.
//! 2. **Calibration slice.** The newest `--calibration` share of the training
//!    part (events, or sessions) is held out: nothing is fitted on it. With
//!    `--calibration 0` the whole training part is used for both (in-sample).
//! 3. **Setting.** By default training is unlabelled (the continuous setting:
//!    whatever the training part holds, anomalies included, is "normal").
//!    `--train-normal-only` drops labelled events (sessions holding one, with
//!    `--group-by key`) from training and calibration: the semi-supervised
//!    setting of DeepLog and LogBERT, which uses training labels only.
//! 4. **Detectors**, each fitted on the training part minus the slice:
//!    `model` (the GPT, trained for `--steps`; an event is scored in the
//!    context of its key's previous events, and its score is, by
//!    `--model-score`, the robust z of its loss as the live scorer computes
//!    it (default), or another reading of its token losses, [`ModelScore`];
//!    several at once give one row each), `template` (rare template),
//!    `zscore` (per-metric robust z) and `combined` (an alert when either
//!    baseline alerts: max of template/θ_template and zscore/θ_zscore); see
//!    [`baselines`]. With `--evidence S:K` every detector's event scores
//!    become the mean of the K highest of its key's last S seconds (a burst
//!    outweighs a lone spike). With `--group-by key --session-end` each
//!    session is closed by a marker event, so a session that stops early is
//!    itself surprising. The zscore and combined rows are left out when the
//!    data hold no metric.
//! 5. **Threshold rule**, the same for every detector: θ = the
//!    `--threshold-quantile` quantile (nearest rank; 1 = the maximum) of the
//!    detector's scores on the calibration slice's units. No test label is
//!    read before θ is fixed.
//! 6. **Units.** Per event, or per session with `--group-by key`: a session
//!    is a key's events and its score is `--aggregate` of their scores (max
//!    by default; `topK` = mean of the K highest; `mean`). A unit is
//!    anomalous when it holds a labelled event; its type is the label's fault
//!    type ([`metrics::label_type`]).
//! 7. **Metrics** (see [`metrics`]): P, R, F1 at θ, AUROC, AUPRC overall and
//!    per type (a type's anomalous units against all normal units).
//! 8. **Faults and alerts.** Faults come from `<test>.faults.json` (the
//!    simulator's ground truth) when present, else one per distinct label
//!    of the test part. Alerts replay the live scorer: per event mode, an
//!    event above θ alerts unless its (source, kind) alerted within
//!    `--cooldown-s`; per session mode, a session alerts once, when the
//!    aggregate of its events so far first exceeds θ. Per event mode, the
//!    silence watch ([`crate::silence::Tracker`], default settings) also runs
//!    over the test events: its alerts get a row of their own (`--silence
//!    row`, the default), join every detector's (`join`), or are left out
//!    (`off`). A fault is detected by the first alert at or after its start and at most
//!    `--grace-s` after its end whose event carries the fault's label or
//!    (faults file only) comes from one of its sources; time to detect is
//!    that alert's time minus the fault's start. Every other alert is false;
//!    false alerts per hour divide them by the test part's span.

pub mod baselines;
pub mod metrics;
pub mod report;
pub mod surprise;

use crate::curriculum::Renderer;
use crate::event::{read_jsonl, Event, Kind};
use crate::model::checkpoint::Checkpoint;
use crate::trainer::offline::{train_events, TrainArgs};
use anyhow::{bail, Context, Result};
use baselines::{MetricZ, TemplateFreq};
use metrics::{label_type, Aggregate, Confusion};
use report::{DetectorReport, FaultResult, Metrics, Report};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

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
    /// The model's score: `z` (robust z of the loss vs its key's baseline, as
    /// the live scorer alerts on), `loss` (raw mean loss per token) or `span`
    /// (mean loss of the event's most surprising 8-token stretch); `content`
    /// and `cspan` are `loss` and `span` without the source name's tokens;
    /// `xsum`, `xspan`, `xmax`: excess surprise, loss minus the model's
    /// expected loss (entropy), see [`surprise`]. A comma-separated list
    /// reports one row per score from one scoring pass.
    #[arg(
        long,
        default_value = "z",
        value_name = "z|loss|span|content|cspan|xsum|xspan|xmax|xall"
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
    /// The silence watch's alerts (per event mode): `row` (a row of their
    /// own), `join` (added to every detector's alerts) or `off`.
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
    /// Per event mode: `S:K` turns every detector's event score into the
    /// evidence of the last S seconds of its key: the mean of the K highest
    /// scores (negative ones as 0, missing ones as 0) among the key's events
    /// in the window ending at this event. One surprising event of a noisy
    /// key is divided by K; a fault's burst of them is not. Off by default.
    #[arg(long, value_name = "S:K")]
    pub evidence: Option<String>,
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
    /// The configuration's learning settings (the model trained here, and the
    /// rendering the baselines see; a --model brings its own rendering).
    #[arg(skip)]
    pub learning: crate::config::Learning,
}

impl EvalArgs {
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
            model_score: "z".into(),
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
            learning: Default::default(),
        }
    }
}

/// One ground-truth fault (the simulator's FILE.faults.json entries; extra fields ignored).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct FaultTruth {
    pub id: String,
    pub kind: String,
    pub start_ms: i64,
    pub end_ms: i64,
    #[serde(default)]
    pub sources: Vec<String>,
    /// Sources count as evidence (true for a faults file; labels only otherwise).
    #[serde(skip, default = "yes")]
    pub by_source: bool,
}

fn yes() -> bool {
    true
}

/// The events an evaluation works on: indices into the source files.
struct Data {
    train_src: Vec<Event>,
    /// None: the test part is in `train_src` (a split).
    test_src: Option<Vec<Event>>,
    fit: Vec<usize>,
    calib: Vec<usize>,
    test: Vec<usize>,
}

impl Data {
    fn test_events(&self) -> &[Event] {
        self.test_src.as_deref().unwrap_or(&self.train_src)
    }
}

fn read_sorted(p: &Path) -> Result<Vec<Event>> {
    let mut ev = read_jsonl(p)?;
    ensure_nonempty(&ev, p)?;
    ev.sort_by_key(|e| e.ts);
    Ok(ev)
}

fn ensure_nonempty(ev: &[Event], p: &Path) -> Result<()> {
    anyhow::ensure!(!ev.is_empty(), "{} holds no events", p.display());
    Ok(())
}

/// Cuts `idx` (events in time order) into (older, newer), the newer holding
/// `share` of the events, or of the sessions by first event when grouped.
fn cut(
    events: &[Event],
    idx: &[usize],
    share_newer: f64,
    grouped: bool,
) -> (Vec<usize>, Vec<usize>) {
    let share = share_newer.clamp(0.0, 1.0);
    if !grouped {
        let n_new = (idx.len() as f64 * share).round() as usize;
        let at = idx.len() - n_new.min(idx.len());
        return (idx[..at].to_vec(), idx[at..].to_vec());
    }
    let mut order: Vec<&str> = Vec::new();
    let mut seen = BTreeSet::new();
    for &i in idx {
        if seen.insert(events[i].key.as_str()) {
            order.push(events[i].key.as_str());
        }
    }
    let n_new = (order.len() as f64 * share).round() as usize;
    let newer: BTreeSet<&str> = order[order.len() - n_new.min(order.len())..]
        .iter()
        .copied()
        .collect();
    idx.iter()
        .partition(|&&i| !newer.contains(events[i].key.as_str()))
}

/// Appends an end marker after each key's last event (see `--session-end`).
pub fn with_session_ends(events: Vec<Event>) -> Vec<Event> {
    let mut last: HashMap<&str, usize> = HashMap::new();
    let mut label: HashMap<&str, &str> = HashMap::new();
    for (i, e) in events.iter().enumerate() {
        last.insert(e.key.as_str(), i);
        if let Some(l) = &e.label {
            label.entry(e.key.as_str()).or_insert(l.as_str());
        }
    }
    let ends: BTreeSet<usize> = last.values().copied().collect();
    let mut out = Vec::with_capacity(events.len() + ends.len());
    for (i, e) in events.iter().enumerate() {
        out.push(e.clone());
        if ends.contains(&i) {
            out.push(Event {
                ts: e.ts,
                source: "session".into(),
                key: e.key.clone(),
                body: crate::event::Body::Log {
                    message: "end".into(),
                    level: None,
                },
                label: label.get(e.key.as_str()).map(|l| l.to_string()),
            });
        }
    }
    out
}

fn load(args: &EvalArgs) -> Result<Data> {
    let grouped = args.group_by.is_some();
    anyhow::ensure!(
        !args.session_end || grouped,
        "--session-end needs --group-by key"
    );
    let read = |p: &Path| -> Result<Vec<Event>> {
        let ev = read_sorted(p)?;
        Ok(if args.session_end {
            with_session_ends(ev)
        } else {
            ev
        })
    };
    let train_src = read(&args.train)?;
    let (train_part, test_src, test) = match &args.test {
        Some(t) => {
            let test_src = read(t)?;
            let n = test_src.len();
            (
                (0..train_src.len()).collect::<Vec<_>>(),
                Some(test_src),
                (0..n).collect(),
            )
        }
        None => {
            anyhow::ensure!(
                args.split > 0.0 && args.split < 1.0,
                "--split must be between 0 and 1 (exclusive) when --test is not given"
            );
            let all: Vec<usize> = (0..train_src.len()).collect();
            let (a, b) = cut(&train_src, &all, 1.0 - args.split, grouped);
            (a, None, b)
        }
    };
    let (mut fit, mut calib) = if args.calibration > 0.0 {
        cut(&train_src, &train_part, args.calibration, grouped)
    } else {
        (train_part.clone(), train_part)
    };
    if args.train_normal_only {
        let bad: BTreeSet<&str> = if grouped {
            train_src
                .iter()
                .filter(|e| e.label.is_some())
                .map(|e| e.key.as_str())
                .collect()
        } else {
            BTreeSet::new()
        };
        let keep = |i: &usize| {
            let e = &train_src[*i];
            e.label.is_none() && !bad.contains(e.key.as_str())
        };
        fit.retain(keep);
        calib.retain(keep);
    }
    anyhow::ensure!(!fit.is_empty(), "nothing to train on after the split");
    anyhow::ensure!(
        !calib.is_empty(),
        "the calibration slice is empty: raise --calibration"
    );
    anyhow::ensure!(!test.is_empty(), "nothing to test");
    Ok(Data {
        train_src,
        test_src,
        fit,
        calib,
        test,
    })
}

/// Faults to detect: the test file's faults file, or one per distinct label.
fn faults_for(
    args: &EvalArgs,
    test_events: &[Event],
    test: &[usize],
) -> Result<(Vec<FaultTruth>, &'static str)> {
    let file = args.test.as_deref().unwrap_or(&args.train);
    let side = crate::sim::sidecar(file, ".faults.json");
    if side.exists() {
        let text = std::fs::read_to_string(&side)
            .with_context(|| format!("reading {}", side.display()))?;
        let mut f: Vec<FaultTruth> =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", side.display()))?;
        // A split keeps only the faults that start in the test part.
        if args.test.is_none() {
            let t0 = test
                .iter()
                .map(|&i| test_events[i].ts)
                .min()
                .unwrap_or(i64::MAX);
            f.retain(|x| x.start_ms >= t0);
        }
        return Ok((f, "faults file"));
    }
    let mut by: BTreeMap<&str, FaultTruth> = BTreeMap::new();
    for &i in test {
        let e = &test_events[i];
        if let Some(l) = &e.label {
            let f = by.entry(l.as_str()).or_insert_with(|| FaultTruth {
                id: l.clone(),
                kind: label_type(l).to_string(),
                start_ms: e.ts,
                end_ms: e.ts,
                sources: Vec::new(),
                by_source: false,
            });
            f.start_ms = f.start_ms.min(e.ts);
            f.end_ms = f.end_ms.max(e.ts);
            if !f.sources.contains(&e.source) {
                f.sources.push(e.source.clone());
            }
        }
    }
    let f: Vec<FaultTruth> = by.into_values().collect();
    let how = if f.is_empty() { "none" } else { "labels" };
    Ok((f, how))
}

/// Scores of one detector: per calibration event and per test event.
struct Scores {
    name: String,
    calib: Vec<f32>,
    test: Vec<f32>,
    note: Option<String>,
}

fn parse_detectors(s: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for d in s.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        match d {
            "model" | "template" | "zscore" | "combined" => out.push(d.to_string()),
            _ => bail!("unknown detector {d:?}: expected model, template, zscore or combined"),
        }
    }
    anyhow::ensure!(!out.is_empty(), "no detector to run");
    Ok(out)
}

/// The model's scores on the calibration and test events; each event is
/// scored in the context of the previous events of its key, as live.
fn model_scores(args: &EvalArgs, data: &Data, report: &mut Report) -> Result<Vec<Scores>> {
    let threads = args.threads.max(1) as usize;
    crate::model::set_libtorch_threads(threads);
    let hows: Vec<&str> = args
        .model_score
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .collect();
    for how in &hows {
        anyhow::ensure!(
            MODEL_SCORES.contains(how),
            "--model-score {how:?}: expected one of {}",
            MODEL_SCORES.join(", ")
        );
    }
    anyhow::ensure!(!hows.is_empty(), "--model-score: no score named");
    if let Some(p) = args.score_cache.as_ref().filter(|p| p.exists()) {
        let text =
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        let (calib, test): (Vec<ModelScore>, Vec<ModelScore>) = serde_json::from_str(&text)?;
        anyhow::ensure!(
            calib.len() == data.calib.len() && test.len() == data.test.len(),
            "{} holds scores for other data ({} + {} events, here {} + {})",
            p.display(),
            calib.len(),
            test.len(),
            data.calib.len(),
            data.test.len()
        );
        eprintln!("eval: model scores from {}", p.display());
        return Ok(model_rows(&hows, &calib, &test, "cached".into()));
    }
    let t0 = Instant::now();
    let ck = match &args.model {
        Some(p) => Checkpoint::load(p)?,
        None => {
            let registry = args
                .registry
                .clone()
                .unwrap_or_else(|| crate::sim::sidecar(&args.train, ".registry.yaml"));
            let targs = TrainArgs {
                input: args.train.clone(),
                out: PathBuf::new(),
                steps: args.steps,
                init: None,
                registry,
                ttl_hours: 0.0,
                half_life_hours: 0.0,
                seed: args.seed,
                threads: args.threads,
                val_fraction: args.val_fraction.unwrap_or(if args.group_by.is_some() {
                    0.0
                } else {
                    0.1
                }),
                block_size: args.block_size,
                batch_size: None,
                lr: None,
                weight_decay: None,
                learning: args.learning.clone(),
            };
            let fit: Vec<Event> = data
                .fit
                .iter()
                .map(|&i| data.train_src[i].clone())
                .collect();
            eprintln!(
                "eval: training the model on {} events, {} steps",
                fit.len(),
                args.steps
            );
            use std::io::IsTerminal;
            let (ck, summary) = train_events(&fit, &targs, std::io::stderr().is_terminal())?;
            report.model = Some(serde_json::to_value(&summary)?);
            if let Some(p) = &args.save_model {
                ck.save(p)
                    .with_context(|| format!("writing {}", p.display()))?;
            }
            ck
        }
    };
    let train_s = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    // A cache is written complete, so any score can be read from it later.
    let excess = hows.iter().any(|h| h.starts_with('x'))
        || args.score_cache.is_some()
        || args.calib_cache.is_some();
    let score_idx = |events: &[Event], idx: &[usize]| -> Result<Vec<ModelScore>> {
        event_scores(&ck, events, idx, args.batch, threads, excess)
    };
    // Context warm-up: the last few training events of each key before the
    // calibration slice (per event mode; sessions are their own context).
    let warm = warmup(
        &data.train_src,
        &data.fit,
        &data.calib,
        args.group_by.is_some(),
    );
    let (calib, test) = if data.test_src.is_none() {
        // One pass over warm-up, calibration and test in time order.
        let mut all: Vec<(usize, u8)> = warm.iter().map(|&i| (i, 0u8)).collect();
        all.extend(data.calib.iter().map(|&i| (i, 1u8)));
        all.extend(data.test.iter().map(|&i| (i, 2u8)));
        all.sort_by_key(|&(i, _)| i);
        let idx: Vec<usize> = all.iter().map(|&(i, _)| i).collect();
        eprintln!("eval: model scoring {} events", idx.len());
        let s = score_idx(&data.train_src, &idx)?;
        let (mut c, mut t) = (Vec::new(), Vec::new());
        for ((_, part), v) in all.iter().zip(s) {
            match part {
                1 => c.push(v),
                2 => t.push(v),
                _ => {}
            }
        }
        (c, t)
    } else {
        let cached: Option<Vec<ModelScore>> = match &args.calib_cache {
            Some(p) if p.exists() => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("reading {}", p.display()))?;
                let c: Vec<ModelScore> = serde_json::from_str(&text)?;
                anyhow::ensure!(
                    c.len() == data.calib.len(),
                    "{} holds {} calibration scores, here {} events",
                    p.display(),
                    c.len(),
                    data.calib.len()
                );
                eprintln!("eval: calibration scores from {}", p.display());
                Some(c)
            }
            _ => None,
        };
        let c = match cached {
            Some(c) => c,
            None => {
                let mut idx = warm.clone();
                idx.extend(&data.calib);
                idx.sort_unstable();
                eprintln!("eval: model scoring {} calibration events", idx.len());
                let s = score_idx(&data.train_src, &idx)?;
                let calib_set: BTreeSet<usize> = data.calib.iter().copied().collect();
                let c: Vec<ModelScore> = idx
                    .iter()
                    .zip(s)
                    .filter(|(i, _)| calib_set.contains(i))
                    .map(|(_, v)| v)
                    .collect();
                if let Some(p) = &args.calib_cache {
                    std::fs::write(p, serde_json::to_string(&c)?)
                        .with_context(|| format!("writing {}", p.display()))?;
                }
                c
            }
        };
        eprintln!("eval: model scoring {} test events", data.test.len());
        let t = score_idx(data.test_events(), &data.test)?;
        (c, t)
    };
    let scored_s = t1.elapsed().as_secs_f64();
    if let Some(p) = &args.score_cache {
        std::fs::write(p, serde_json::to_string(&(&calib, &test))?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(model_rows(
        &hows,
        &calib,
        &test,
        format!("trained in {train_s:.0}s, scored in {scored_s:.0}s"),
    ))
}

fn model_rows(
    hows: &[&str],
    calib: &[ModelScore],
    test: &[ModelScore],
    how_long: String,
) -> Vec<Scores> {
    hows.iter()
        .map(|how| Scores {
            name: if hows.len() == 1 {
                "model".into()
            } else {
                format!("model:{how}")
            },
            calib: calib.iter().map(|m| m.get(how)).collect(),
            test: test.iter().map(|m| m.get(how)).collect(),
            note: Some(format!("{how} score; {how_long}")),
        })
        .collect()
}

/// The model scores `--model-score` accepts.
pub const MODEL_SCORES: [&str; 9] = [
    "z", "loss", "span", "content", "cspan", "xsum", "xspan", "xmax", "xall",
];

/// Every way the model can score one event.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, Deserialize)]
pub struct ModelScore {
    /// Robust z of `loss` against the checkpoint's baseline for the key (the live score).
    pub z: f32,
    /// Mean loss per token of the event.
    pub loss: f32,
    /// Mean loss of the event's most surprising 8-token stretch.
    pub span: f32,
    /// Mean loss over the event's tokens without its source name (which
    /// source speaks is the key's identity, not what it says).
    pub content: f32,
    /// `span` over the same tokens as `content`.
    pub cspan: f32,
    /// Excess surprise ([`surprise`]) over the content tokens: the sum of
    /// loss - entropy, its most surprising 8-token stretch, its largest token.
    pub xsum: f32,
    pub xspan: f32,
    pub xmax: f32,
    /// `xsum` over every token, the source name's included.
    #[serde(default)]
    pub xall: f32,
}

impl ModelScore {
    pub fn get(&self, how: &str) -> f32 {
        match how {
            "loss" => self.loss,
            "span" => self.span,
            "content" => self.content,
            "cspan" => self.cspan,
            "xsum" => self.xsum,
            "xspan" => self.xspan,
            "xmax" => self.xmax,
            "xall" => self.xall,
            _ => self.z,
        }
    }
}

/// Token-loss positions (indices into `token_losses`) of an event's content:
/// every predicted token except the source name's bytes (the tokens between
/// `<|SVC|>` and the next special token).
pub fn content_positions(tokens: &[u32]) -> Vec<usize> {
    let tok = crate::tokenizer::tokenizer();
    let svc = tok.special("<|SVC|>");
    let (a, b) = match tokens.iter().position(|&t| t == svc) {
        Some(i) => {
            let end = tokens[i + 1..]
                .iter()
                .position(|&t| t >= 256)
                .map_or(tokens.len(), |j| i + 1 + j);
            (i + 1, end)
        }
        None => (0, 0),
    };
    // token_losses[j] is the loss of tokens[j + 1].
    (0..tokens.len().saturating_sub(1))
        .filter(|&j| !(a..b).contains(&(j + 1)))
        .collect()
}

/// Scores events `idx` of `events` in order, each in the context of the
/// previous scored events of its key, every way [`ModelScore`] knows.
pub fn event_scores(
    ck: &Checkpoint,
    events: &[Event],
    idx: &[usize],
    batch: usize,
    threads: usize,
    excess: bool,
) -> Result<Vec<ModelScore>> {
    use crate::scorer::{finish, EventScorer};
    let mut scorer = EventScorer::new(
        Renderer::new(&ck.meta.render)?,
        ck.meta.config.block_size,
        crate::scorer::Contexts::DEFAULT_MAX_KEYS,
    );
    let native = crate::model::NativeScorer::new(&ck.gpt, threads);
    let mut out = Vec::with_capacity(idx.len());
    for chunk in idx.chunks(4096) {
        let prepared: Vec<_> = chunk
            .iter()
            .map(|&i| scorer.prepare_event(&events[i]))
            .collect();
        let items: Vec<_> = prepared.iter().map(|p| p.item.clone()).collect();
        let losses = native.score(&items, batch);
        let ex = if excess {
            surprise::token_surprise(&ck.gpt, &items, batch)
        } else {
            Vec::new()
        };
        for (n, (p, l)) in prepared.iter().zip(&losses).enumerate() {
            let s = finish(p, l, &ck.meta.baselines);
            let pos = content_positions(&p.tokens);
            let content: Vec<f32> = pos
                .iter()
                .filter_map(|&j| l.token_losses.get(j).copied())
                .collect();
            let mean = if content.is_empty() {
                0.0
            } else {
                content.iter().sum::<f32>() / content.len() as f32
            };
            let mut m = ModelScore {
                z: s.score,
                loss: s.loss,
                span: s.span.loss,
                content: mean,
                cspan: crate::scorer::span::surprising_span(&content, crate::scorer::SPAN_WIDTH).2,
                ..Default::default()
            };
            if let Some((tl, th)) = ex.get(n) {
                let x: Vec<f32> = pos
                    .iter()
                    .filter_map(|&j| Some(tl.get(j)? - th.get(j)?))
                    .filter(|v| v.is_finite())
                    .collect();
                m.xsum = x.iter().sum();
                m.xspan = crate::scorer::span::surprising_span(&x, crate::scorer::SPAN_WIDTH).2;
                m.xmax = x.iter().copied().fold(0.0f32, f32::max);
                m.xall = tl
                    .iter()
                    .zip(th)
                    .map(|(l, h)| l - h)
                    .filter(|v| v.is_finite())
                    .sum();
            }
            out.push(m);
        }
    }
    Ok(out)
}

/// Up to 8 of each key's last fit events before the calibration slice, so the
/// first calibration events are scored in context as they would be live.
fn warmup(events: &[Event], fit: &[usize], calib: &[usize], grouped: bool) -> Vec<usize> {
    if grouped || calib.is_empty() {
        return Vec::new();
    }
    let first = calib[0];
    let mut per: HashMap<&str, usize> = HashMap::new();
    let mut out: Vec<usize> = Vec::new();
    for &i in fit.iter().rev().filter(|&&i| i < first) {
        let n = per.entry(events[i].key.as_str()).or_insert(0);
        if *n < 8 {
            *n += 1;
            out.push(i);
        }
    }
    out.reverse();
    out
}

/// `S:K` → (window in ms, k).
fn parse_evidence(s: &str) -> Result<(i64, usize)> {
    let bad = || anyhow::anyhow!("--evidence {s:?}: expected S:K, e.g. 60:3");
    let (w, k) = s.split_once(':').ok_or_else(bad)?;
    let w: f64 = w.trim().parse().map_err(|_| bad())?;
    let k: usize = k.trim().parse().map_err(|_| bad())?;
    anyhow::ensure!(
        w > 0.0 && k > 0,
        "--evidence {s:?}: S and K must be positive"
    );
    Ok(((w * 1000.0) as i64, k))
}

/// The evidence of each event (see `--evidence`): over the events of its key
/// in the `window_ms` ending at it (itself included), the mean of the `k`
/// highest scores, negative scores and missing events counting 0.
pub fn evidence_scores(
    events: &[Event],
    idx: &[usize],
    scores: &[f32],
    window_ms: i64,
    k: usize,
) -> Vec<f32> {
    let mut ev =
        crate::scorer::Evidence::new(window_ms, k, crate::scorer::Contexts::DEFAULT_MAX_KEYS);
    idx.iter()
        .zip(scores)
        .map(|(&i, &s)| ev.push(&events[i].key, events[i].ts, s))
        .collect()
}

/// A unit (event or session) of the test or calibration part.
struct Units {
    /// Per unit: event indices (into the part's index list) in time order.
    members: Vec<Vec<usize>>,
    labels: Vec<Option<String>>,
}

fn units(events: &[Event], idx: &[usize], grouped: bool) -> Units {
    if !grouped {
        return Units {
            members: (0..idx.len()).map(|j| vec![j]).collect(),
            labels: idx.iter().map(|&i| events[i].label.clone()).collect(),
        };
    }
    let mut pos: HashMap<&str, usize> = HashMap::new();
    let mut u = Units {
        members: Vec::new(),
        labels: Vec::new(),
    };
    for (j, &i) in idx.iter().enumerate() {
        let e = &events[i];
        let k = *pos.entry(e.key.as_str()).or_insert_with(|| {
            u.members.push(Vec::new());
            u.labels.push(None);
            u.members.len() - 1
        });
        u.members[k].push(j);
        if u.labels[k].is_none() {
            u.labels[k] = e.label.clone();
        }
    }
    u
}

fn unit_scores(u: &Units, event_scores: &[f32], agg: Aggregate) -> Vec<f32> {
    u.members
        .iter()
        .map(|m| {
            let s: Vec<f32> = m.iter().map(|&j| event_scores[j]).collect();
            agg.apply(&s)
        })
        .collect()
}

/// One alert of the replay.
#[derive(Debug, Clone)]
struct Alert {
    ts: i64,
    source: String,
    label: Option<String>,
    silence: bool,
}

/// Silence alerts over the test events, as the silence watch would raise them.
fn silence_alerts(events: &[Event], idx: &[usize]) -> Vec<Alert> {
    use crate::silence::{SilenceConfig, Tracker};
    let cfg = SilenceConfig::default();
    let floor = cfg.floor.as_millis() as i64;
    let multiple = cfg.multiple;
    let mut tr = Tracker::new(cfg);
    let mut out = Vec::new();
    let check = |tr: &mut Tracker, now: i64, out: &mut Vec<Alert>| {
        for o in tr.overdue(now) {
            // Noticed as soon as the threshold passed (the live watch checks every 250 ms).
            let thr = ((o.usual_ms as f64 * multiple) as i64).max(floor);
            out.push(Alert {
                ts: o.last_seen + thr + 1,
                source: o.source.clone(),
                label: None,
                silence: true,
            });
            tr.settle(&o.source);
        }
    };
    for &i in idx {
        let e = &events[i];
        if e.kind() == Kind::Graph {
            continue;
        }
        check(&mut tr, e.ts, &mut out);
        tr.observe(&e.source, e.kind(), e.ts);
    }
    out
}

/// Alerts a detector raises on the test part at threshold `thr`.
fn replay(
    events: &[Event],
    idx: &[usize],
    u: &Units,
    scores: &[f32],
    thr: f32,
    args: &EvalArgs,
) -> Vec<Alert> {
    let mut out = Vec::new();
    if args.group_by.is_some() {
        for (k, m) in u.members.iter().enumerate() {
            let mut so_far = Vec::with_capacity(m.len());
            for &j in m {
                so_far.push(scores[j]);
                if args.aggregate.apply(&so_far) > thr {
                    let e = &events[idx[j]];
                    out.push(Alert {
                        ts: e.ts,
                        source: e.source.clone(),
                        label: u.labels[k].clone(),
                        silence: false,
                    });
                    break;
                }
            }
        }
        out.sort_by_key(|a| a.ts);
        return out;
    }
    let cooldown = (args.cooldown_s * 1000.0) as i64;
    let mut last: HashMap<(&str, Kind), i64> = HashMap::new();
    for (j, &i) in idx.iter().enumerate() {
        if scores[j] <= thr {
            continue;
        }
        let e = &events[i];
        let k = (e.source.as_str(), e.kind());
        if let Some(&t) = last.get(&k) {
            if e.ts >= t && e.ts - t < cooldown {
                continue;
            }
        }
        last.insert(k, e.ts);
        out.push(Alert {
            ts: e.ts,
            source: e.source.clone(),
            label: e.label.clone(),
            silence: false,
        });
    }
    out
}

fn matches(a: &Alert, f: &FaultTruth, grace_ms: i64) -> bool {
    if a.ts < f.start_ms || a.ts > f.end_ms + grace_ms {
        return false;
    }
    a.label.as_deref() == Some(f.id.as_str())
        || (f.by_source && f.sources.iter().any(|s| *s == a.source))
}

/// Detection of each fault, and the false alerts.
fn judge(
    alerts: &[Alert],
    faults: &[FaultTruth],
    grace_ms: i64,
) -> (Vec<FaultResult>, u64, Vec<(i64, String)>) {
    let mut results: Vec<FaultResult> = faults
        .iter()
        .map(|f| FaultResult {
            id: f.id.clone(),
            kind: f.kind.clone(),
            start_ms: f.start_ms,
            detected: false,
            ttd_s: None,
            by: None,
        })
        .collect();
    let mut false_alerts = 0;
    let mut samples = Vec::new();
    for a in alerts {
        let mut any = false;
        for (f, r) in faults.iter().zip(results.iter_mut()) {
            if matches(a, f, grace_ms) {
                any = true;
                if !r.detected {
                    r.detected = true;
                    r.ttd_s = Some((a.ts - f.start_ms) as f64 / 1000.0);
                    r.by = Some(if a.silence { "silence" } else { "surprise" }.into());
                }
            }
        }
        if !any {
            false_alerts += 1;
            if samples.len() < 50 {
                samples.push((a.ts, a.source.clone()));
            }
        }
    }
    (results, false_alerts, samples)
}

fn metrics_for(scores: &[f32], labels: &[bool], thr: f32, faults: &[&FaultResult]) -> Metrics {
    let c = Confusion::at(scores, labels, thr);
    let ttd: Vec<f64> = faults.iter().filter_map(|f| f.ttd_s).collect();
    Metrics {
        anomalous: labels.iter().filter(|&&y| y).count() as u64,
        normal: labels.iter().filter(|&&y| !y).count() as u64,
        precision: c.precision(),
        recall: c.recall(),
        f1: c.f1(),
        auroc: metrics::auroc(scores, labels),
        auprc: metrics::auprc(scores, labels),
        confusion: c,
        faults: faults.len() as u64,
        faults_detected: faults.iter().filter(|f| f.detected).count() as u64,
        ttd_median_s: metrics::median(&ttd),
        ttd_max_s: ttd
            .iter()
            .copied()
            .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x)))),
    }
}

/// Runs the whole evaluation and returns the report.
pub fn evaluate(args: &EvalArgs) -> Result<Report> {
    let started = Instant::now();
    if let Some(g) = &args.group_by {
        anyhow::ensure!(g == "key", "--group-by {g:?}: only `key` is supported");
    }
    let grouped = args.group_by.is_some();
    let detectors = parse_detectors(&args.detectors)?;
    let data = load(args)?;
    let test_events = data.test_events();
    let (faults, faults_from) = faults_for(args, test_events, &data.test)?;
    let t_first = data
        .test
        .iter()
        .map(|&i| test_events[i].ts)
        .min()
        .unwrap_or(0);
    let t_last = data
        .test
        .iter()
        .map(|&i| test_events[i].ts)
        .max()
        .unwrap_or(0);
    let hours = (t_last - t_first) as f64 / 3_600_000.0;
    let cu = units(&data.train_src, &data.calib, grouped);
    let tu = units(test_events, &data.test, grouped);
    let test_labels: Vec<bool> = tu.labels.iter().map(|l| l.is_some()).collect();
    let mut report = Report {
        train: args.train.display().to_string(),
        test: match &args.test {
            Some(t) => t.display().to_string(),
            None => format!(
                "{} (after the first {} share)",
                args.train.display(),
                args.split
            ),
        },
        unit: if grouped {
            "session (key)".into()
        } else {
            "event".into()
        },
        aggregate: grouped.then(|| args.aggregate.name()),
        setting: if args.train_normal_only {
            "normal only (labelled training units dropped)".into()
        } else {
            "continuous (training labels ignored)".into()
        },
        threshold_rule: format!(
            "quantile {} of each detector's scores on the calibration slice ({})",
            args.threshold_quantile,
            if args.calibration > 0.0 {
                format!(
                    "newest {} of the training part, not fitted on",
                    args.calibration
                )
            } else {
                "the training part itself, in-sample".into()
            }
        ),
        fit_events: data.fit.len() as u64,
        calibration_units: cu.members.len() as u64,
        calibration_anomalous: cu.labels.iter().filter(|l| l.is_some()).count() as u64,
        test_events: data.test.len() as u64,
        test_units: tu.members.len() as u64,
        test_anomalous: test_labels.iter().filter(|&&y| y).count() as u64,
        test_hours: hours,
        faults_from: faults_from.into(),
        detectors: Vec::new(),
        notes: Vec::new(),
        model: None,
        seconds: 0.0,
    };

    // The baselines see the text the way the model was trained to.
    let renderer = Renderer::new(&args.learning.render)?;
    let fit_events: Vec<&Event> = data.fit.iter().map(|&i| &data.train_src[i]).collect();
    let fit_owned: Vec<Event> = fit_events.iter().map(|e| (*e).clone()).collect();
    let calib_events: Vec<Event> = data
        .calib
        .iter()
        .map(|&i| data.train_src[i].clone())
        .collect();
    let test_owned: Vec<Event> = data.test.iter().map(|&i| test_events[i].clone()).collect();

    let mut all: Vec<Scores> = Vec::new();
    let want = |d: &str| detectors.iter().any(|x| x == d);
    if want("template") || want("combined") {
        let t = TemplateFreq::fit(&renderer, &fit_owned);
        all.push(Scores {
            name: "template".into(),
            calib: t.score(&renderer, &calib_events),
            test: t.score(&renderer, &test_owned),
            note: Some(format!("{} templates in training", t.templates())),
        });
    }
    let mut has_metrics = false;
    if want("zscore") || want("combined") {
        let z = MetricZ::fit(&fit_owned);
        has_metrics = z.series() > 0;
        all.push(Scores {
            name: "zscore".into(),
            calib: z.score(&calib_events),
            test: z.score(&test_owned),
            note: Some(format!("{} metric series in training", z.series())),
        });
    }
    drop(fit_owned);
    if want("model") {
        let s = model_scores(args, &data, &mut report)?;
        all.splice(0..0, s);
    }

    anyhow::ensure!(
        matches!(args.silence.as_str(), "row" | "join" | "off"),
        "--silence {:?}: expected row, join or off",
        args.silence
    );
    let silence = if args.silence == "off" || grouped {
        Vec::new()
    } else {
        silence_alerts(test_events, &data.test)
    };
    let grace_ms = (args.grace_s * 1000.0) as i64;

    // Unit scores and thresholds first (combined needs its parts').
    struct Det {
        name: String,
        calib: Vec<f32>,
        test: Vec<f32>,
        thr: f32,
        note: Option<String>,
        event_test: Option<Vec<f32>>,
    }
    if let Some(ev) = &args.evidence {
        let (w, k) = parse_evidence(ev)?;
        anyhow::ensure!(!grouped, "--evidence is for per event mode");
        for s in all.iter_mut() {
            s.calib = evidence_scores(&data.train_src, &data.calib, &s.calib, w, k);
            s.test = evidence_scores(test_events, &data.test, &s.test, w, k);
        }
        report.notes.push(format!(
            "event scores are evidence over {}s windows per key: mean of the top {k}",
            w as f64 / 1000.0
        ));
    }
    let mut dets: Vec<Det> = Vec::new();
    for s in &all {
        let calib = unit_scores(&cu, &s.calib, args.aggregate);
        let test = unit_scores(&tu, &s.test, args.aggregate);
        let thr = metrics::quantile(&calib, args.threshold_quantile).unwrap_or(f32::INFINITY);
        dets.push(Det {
            name: s.name.clone(),
            calib,
            test,
            thr,
            note: s.note.clone(),
            event_test: Some(s.test.clone()),
        });
    }
    if want("combined") {
        let find = |n: &str| dets.iter().find(|d| d.name == n);
        let (t, z) = (find("template"), find("zscore"));
        if let (Some(t), Some(z)) = (t, z) {
            let parts: Vec<&Det> = [t, z]
                .into_iter()
                .filter(|d| d.thr.is_finite() && d.thr > 0.0 && (d.name != "zscore" || has_metrics))
                .collect();
            let comb = |pick: &dyn Fn(&Det) -> &Vec<f32>, n: usize| -> Vec<f32> {
                (0..n)
                    .map(|j| {
                        parts
                            .iter()
                            .map(|d| pick(d)[j] / d.thr)
                            .fold(0.0f32, f32::max)
                    })
                    .collect()
            };
            let calib = comb(&|d| &d.calib, cu.members.len());
            let test = comb(&|d| &d.test, tu.members.len());
            // Per event, for the alert replay: the same normalisation.
            let event_test = if grouped { None } else { Some(test.clone()) };
            let thr = metrics::quantile(&calib, args.threshold_quantile).unwrap_or(f32::INFINITY);
            let names: Vec<&str> = parts.iter().map(|d| d.name.as_str()).collect();
            dets.push(Det {
                name: "combined".into(),
                calib,
                test,
                thr,
                note: Some(format!("max of {} over their thresholds", names.join(", "))),
                event_test,
            });
        }
    }
    dets.retain(|d| want(d.name.split(':').next().unwrap_or(&d.name)));
    if !has_metrics && (want("zscore") || want("combined")) {
        // Nothing to z-score: the rows would be noise, and combined would be
        // the template detector again.
        dets.retain(|d| d.name != "zscore" && d.name != "combined");
        report
            .notes
            .push("zscore and combined not applicable: the training data holds no metrics".into());
    }

    let types: BTreeSet<String> = tu
        .labels
        .iter()
        .flatten()
        .map(|l| label_type(l).to_string())
        .chain(faults.iter().map(|f| f.kind.clone()))
        .collect();
    let mut dump_rows: Vec<BTreeMap<String, f32>> = vec![BTreeMap::new(); tu.members.len()];
    for d in &dets {
        for (row, s) in dump_rows.iter_mut().zip(&d.test) {
            row.insert(d.name.clone(), *s);
        }
        // Session mode replays on event scores with the session aggregate;
        // combined has no per-event scores there, so its sessions alert at
        // their last event (the aggregate is only known whole).
        let alerts = match (&d.event_test, grouped) {
            (Some(ev), _) if !grouped => replay(test_events, &data.test, &tu, ev, d.thr, args),
            _ if grouped && d.name != "combined" => {
                let ev = &all
                    .iter()
                    .find(|s| s.name == d.name)
                    .expect("a scored detector")
                    .test;
                replay(test_events, &data.test, &tu, ev, d.thr, args)
            }
            _ => tu
                .members
                .iter()
                .enumerate()
                .filter(|(k, _)| d.test[*k] > d.thr)
                .map(|(k, m)| {
                    let e = &test_events[data.test[*m.last().expect("sessions are non-empty")]];
                    Alert {
                        ts: e.ts,
                        source: e.source.clone(),
                        label: tu.labels[k].clone(),
                        silence: false,
                    }
                })
                .collect(),
        };
        let mut alerts = alerts;
        if args.silence == "join" {
            alerts.extend(silence.iter().cloned());
        }
        alerts.sort_by_key(|a| a.ts);
        let (fr, false_alerts, fa_samples) = judge(&alerts, &faults, grace_ms);
        let all_faults: Vec<&FaultResult> = fr.iter().collect();
        let overall = metrics_for(&d.test, &test_labels, d.thr, &all_faults);
        let mut by_type = BTreeMap::new();
        for ty in &types {
            let pick: Vec<usize> = (0..tu.labels.len())
                .filter(|&k| tu.labels[k].as_deref().is_none_or(|l| label_type(l) == ty))
                .collect();
            let s: Vec<f32> = pick.iter().map(|&k| d.test[k]).collect();
            let y: Vec<bool> = pick.iter().map(|&k| test_labels[k]).collect();
            let f: Vec<&FaultResult> = fr.iter().filter(|f| &f.kind == ty).collect();
            by_type.insert(ty.clone(), metrics_for(&s, &y, d.thr, &f));
        }
        report.detectors.push(DetectorReport {
            name: d.name.clone(),
            threshold: d.thr,
            calibration_max: d.calib.iter().copied().fold(f32::NEG_INFINITY, f32::max),
            overall,
            by_type,
            alerts: alerts.len() as u64,
            silence_alerts: if args.silence == "join" {
                silence.len() as u64
            } else {
                0
            },
            false_alerts,
            false_alerts_per_hour: (hours > 0.0).then(|| false_alerts as f64 / hours),
            false_alert_samples: fa_samples,
            faults: fr,
            note: d.note.clone(),
        });
    }
    if args.silence == "row" && !grouped {
        let (fr, false_alerts, fa_samples) = judge(&silence, &faults, grace_ms);
        let all_faults: Vec<&FaultResult> = fr.iter().collect();
        let mut by_type = BTreeMap::new();
        for ty in &types {
            let f: Vec<&FaultResult> = fr.iter().filter(|f| &f.kind == ty).collect();
            by_type.insert(ty.clone(), metrics_for(&[], &[], f32::INFINITY, &f));
        }
        report.detectors.push(DetectorReport {
            name: "silence".into(),
            threshold: crate::silence::SilenceConfig::default().multiple as f32,
            calibration_max: f32::NAN,
            overall: metrics_for(&[], &[], f32::INFINITY, &all_faults),
            by_type,
            alerts: silence.len() as u64,
            silence_alerts: silence.len() as u64,
            false_alerts,
            false_alerts_per_hour: (hours > 0.0).then(|| false_alerts as f64 / hours),
            false_alert_samples: fa_samples,
            faults: fr,
            note: Some("the silence watch alone (threshold: multiple of a source's usual interval); no event scores".into()),
        });
    }
    if let Some(p) = &args.dump {
        let f = std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?;
        let mut w = std::io::BufWriter::new(f);
        for (k, row) in dump_rows.iter().enumerate() {
            let e = &test_events[data.test[tu.members[k][0]]];
            let mut line = serde_json::json!({
                "ts": e.ts,
                "key": e.key,
                "source": e.source,
                "events": tu.members[k].len(),
                "label": tu.labels[k],
                "scores": row,
            });
            if !grouped {
                line["text"] = renderer.render(e).into();
                line["template"] = TemplateFreq::template(&renderer, e).into();
            }
            line["part"] = "test".into();
            serde_json::to_writer(&mut w, &line)?;
            w.write_all(b"\n")?;
        }
        for (k, m) in cu.members.iter().enumerate() {
            let e = &data.train_src[data.calib[m[0]]];
            let scores: BTreeMap<&str, f32> =
                dets.iter().map(|d| (d.name.as_str(), d.calib[k])).collect();
            let mut line = serde_json::json!({
                "part": "calibration",
                "ts": e.ts,
                "key": e.key,
                "source": e.source,
                "events": m.len(),
                "label": cu.labels[k],
                "scores": scores,
            });
            if !grouped {
                line["text"] = renderer.render(e).into();
            }
            serde_json::to_writer(&mut w, &line)?;
            w.write_all(b"\n")?;
        }
        w.flush()?;
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// `proprio eval`: the table on stdout, the JSON report with `--json`.
pub fn run(args: EvalArgs) -> Result<()> {
    let report = evaluate(&args)?;
    print!("{}", report.table());
    if let Some(p) = &args.json {
        std::fs::write(p, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", p.display()))?;
        eprintln!("eval: wrote {}", p.display());
    }
    Ok(())
}
