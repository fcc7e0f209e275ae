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
//!    `--model-score`, the live score (default: its surprisal
//!    calibrated against the tails fitted on the calibration slice, as the
//!    growth loop's EVALUATE step fits them on recent events), or another
//!    reading of its token losses, `scoring::ModelScore`;
//!    several at once give one row each), `template` (rare template),
//!    `zscore` (per-metric robust z) and `combined` (an alert when either
//!    baseline alerts: max of template/θ_template and zscore/θ_zscore); see
//!    [`baselines`]. Every detector's event scores then go through the live
//!    decision's evidence ([`crate::scorer::decide::Decider`], production
//!    policy unless `--evidence S:K`): the mean of the K highest of its
//!    key's last S seconds (a burst outweighs a lone spike). With `--group-by key --session-end` each
//!    session is closed by a marker event, so a session that stops early is
//!    itself surprising. The zscore and combined rows are left out when the
//!    data hold no metric.
//! 5. **Threshold rule.** The live score alerts where the live scorer does:
//!    at the policy's level, -log10(`--risk`); no calibration quantile, no
//!    label. Every other detector: θ = the smallest
//!    value above the `--threshold-quantile` quantile (nearest rank; 1 = the
//!    maximum) of the detector's scores on the calibration slice's units, so
//!    that the live rule (a score at or above θ alerts) flags only what is
//!    more surprising than that quantile: with q = 1, more surprising than
//!    anything in the slice (a baseline's saturated score, e.g. a template
//!    never seen, ties with the slice's own maximum and must not alert). No
//!    test label is read before θ is fixed.
//! 6. **Units.** Per event, or per session with `--group-by key`: a session
//!    is a key's events and its score is `--aggregate` of their scores (max
//!    by default; `topK` = mean of the K highest; `mean`). A unit is
//!    anomalous when it holds a labelled event; its type is the label's fault
//!    type ([`metrics::label_type`]).
//! 7. **Metrics** (see [`metrics`]): P, R, F1 at θ, AUROC, AUPRC overall and
//!    per type (a type's anomalous units against all normal units).
//! 8. **Faults and alerts.** Faults come from `<test>.faults.json` (the
//!    simulator's ground truth) when present, else one per distinct label
//!    of the test part. Alerts replay the live scorer's decision
//!    ([`crate::scorer::decide`], see [`replay`]): per event mode, an event
//!    at or above θ alerts unless its (source, kind) alerted within
//!    `--cooldown-s`; per session mode, a session alerts once, when the
//!    aggregate of its events so far first reaches θ. Per event mode, the
//!    silence watch ([`crate::silence::Tracker`], default settings) also runs
//!    over the test events: its alerts get a row of their own (`--silence
//!    row`, the default), join every detector's (`join`), or are left out
//!    (`off`). A fault is detected by the first alert at or after its start and at most
//!    `--grace-s` after its end whose event carries the fault's label or
//!    (faults file only) comes from one of its sources; time to detect is
//!    that alert's time minus the fault's start. Every other alert is false;
//!    false alerts per hour divide them by the test part's span.
//!
//! Where each step lives: `data` (the files, the time cut, units, faults),
//! `scoring` (the model as a detector), [`baselines`] (the detectors it has
//! to beat), `replay` (alerts as the live scorer and silence watch raise
//! them, and what they detected), [`metrics`] and [`report`]; [`evaluate`]
//! runs the steps in order.

mod args;
pub mod baselines;
mod data;
pub mod incidents;
pub mod metrics;
mod replay;
pub mod report;
mod scoring;

pub use args::EvalArgs;
pub use data::with_session_ends;

use crate::config::Learning;
use crate::curriculum::Renderer;
use crate::event::Event;
use anyhow::{bail, Context, Result};
use baselines::{MetricZ, TemplateFreq};
use data::{unit_scores, units, Data, Units};
use metrics::label_type;
use replay::Alert;
use report::{DetectorReport, FaultResult, Metrics, Report};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

/// Scores of one detector: per calibration event and per test event.
struct Scores {
    name: String,
    calib: Vec<f32>,
    test: Vec<f32>,
    note: Option<String>,
    /// The live score: its threshold is the policy's level, not a quantile.
    live: bool,
    /// Per calibration and test event, whether the live scorer leaves it
    /// unscored (a repeated pulse); empty for the baselines, which score
    /// every event.
    unscored: (Vec<bool>, Vec<bool>),
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

/// A detector's unit scores and threshold on the calibration and test parts.
struct Det {
    name: String,
    calib: Vec<f32>,
    test: Vec<f32>,
    thr: f32,
    note: Option<String>,
    /// Per test event, for the alert replay (None: alerts come from sessions).
    event_test: Option<Vec<f32>>,
}

/// Runs the whole evaluation and returns the report. `learning` is the
/// configuration's: the model trained here, and the rendering the baselines
/// see (a `--model` brings its own rendering).
pub fn evaluate(args: &EvalArgs, learning: &Learning) -> Result<Report> {
    let started = Instant::now();
    if let Some(g) = &args.group_by {
        anyhow::ensure!(g == "key", "--group-by {g:?}: only `key` is supported");
    }
    let grouped = args.group_by.is_some();
    let detectors = parse_detectors(&args.detectors)?;
    let data = data::load(args)?;
    let test_events = data.test_events();
    let (faults, faults_from) = data::faults_for(args, test_events, &data.test)?;
    let ts = || data.test.iter().map(|&i| test_events[i].ts);
    let hours = (ts().max().unwrap_or(0) - ts().min().unwrap_or(0)) as f64 / 3_600_000.0;
    let cu = units(&data.train_src, &data.calib, grouped);
    let tu = units(test_events, &data.test, grouped);
    let test_labels: Vec<bool> = tu.labels.iter().map(|l| l.is_some()).collect();
    let mut report = Report::header(args, &data, &cu, &tu, hours, faults_from);

    // The baselines see the text the way the model was trained to.
    let renderer = Renderer::new(&learning.render)?;
    let want = |d: &str| detectors.iter().any(|x| x == d);
    let (mut all, has_metrics) = baseline_scores(&renderer, &data, &want);
    if want("model") {
        let s = scoring::model_scores(args, learning, &data, &mut report)?;
        all.splice(0..0, s);
    }

    anyhow::ensure!(
        matches!(args.silence.as_str(), "row" | "join" | "off"),
        "--silence {:?}: expected row, join or off",
        args.silence
    );
    let grace_ms = (args.grace_s * 1000.0) as i64;
    // The registry the incident replay's topology starts from.
    let registry = args.registry.clone().or_else(|| {
        let p = crate::sim::sidecar(args.test.as_ref().unwrap_or(&args.train), ".registry.yaml");
        p.exists().then_some(p)
    });
    let (silence, edges) = if args.silence == "off" || grouped {
        (Vec::new(), Vec::new())
    } else {
        let reg = registry
            .as_deref()
            .and_then(|p| crate::registry::Registry::load(p).ok());
        // As if proprio had watched the training part before the test.
        let before: &[Event] = if data.test_src.is_some() {
            &data.train_src
        } else {
            &[]
        };
        (
            replay::silence_alerts(test_events, &data.test),
            replay::edge_alerts(before, test_events, &data.test, reg.as_ref()),
        )
    };

    // The risk as the live scorer applies it to a model that has seen
    // the fitted events.
    let policy = args.policy()?.for_model(data.fit_span_ms());
    // Each event's own score, before the evidence (for --dump).
    let own: Vec<(String, Vec<f32>)> = all
        .iter()
        .map(|s| (format!("{}:event", s.name), s.test.clone()))
        .collect();
    for s in all.iter_mut() {
        s.calib = replay::decided(
            &data.train_src,
            &data.calib,
            &s.calib,
            &s.unscored.0,
            &policy,
        );
        s.test = replay::decided(test_events, &data.test, &s.test, &s.unscored.1, &policy);
    }
    report.notes.push(format!(
        "event scores are the live decision's weight: per key, the evidence (the mean of the top {} over {}s), at most {} times the event's own; the live score alerts at -log10(risk {:e}) = {}",
        policy.evidence_k,
        policy.evidence_window_ms as f64 / 1000.0,
        policy.evidence_k,
        policy.risk,
        policy.level()
    ));
    // Unit scores and thresholds first (combined needs its parts').
    let mut dets: Vec<Det> = all
        .iter()
        .map(|s| {
            let calib = unit_scores(&cu, &s.calib, args.aggregate);
            Det {
                name: s.name.clone(),
                thr: if s.live {
                    policy.level()
                } else {
                    threshold(&calib, args)
                },
                calib,
                test: unit_scores(&tu, &s.test, args.aggregate),
                note: s.note.clone(),
                event_test: Some(s.test.clone()),
            }
        })
        .collect();
    if want("combined") {
        dets.extend(combined(&dets, &cu, &tu, args, has_metrics));
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
    // The rows of one detector: overall and per type, from its alerts.
    let row = |name: String, thr: f32, test: &[f32], alerts: Vec<Alert>| {
        let (fr, false_alerts, fa_samples) = replay::judge(&alerts, &faults, grace_ms);
        let all_faults: Vec<&FaultResult> = fr.iter().collect();
        // A type's labelled units against every normal unit, of those `keep` admits.
        let of_type = |ty: &str, keep: &dyn Fn(usize) -> bool, f: &[&FaultResult]| {
            let pick: Vec<usize> = (0..test.len())
                .filter(|&k| keep(k))
                .filter(|&k| tu.labels[k].as_deref().is_none_or(|l| label_type(l) == ty))
                .collect();
            let s: Vec<f32> = pick.iter().map(|&k| test[k]).collect();
            let y: Vec<bool> = pick.iter().map(|&k| test_labels[k]).collect();
            Metrics::of(&s, &y, thr, f)
        };
        let mut by_type = BTreeMap::new();
        // The metrics' own share: a type's labelled pulses against the
        // normal pulses (per event only).
        let mut pulses_by_type = BTreeMap::new();
        let pulse = |k: usize| test_events[data.test[k]].kind() == crate::event::Kind::Pulse;
        for ty in &types {
            let f: Vec<&FaultResult> = fr.iter().filter(|f| &f.kind == ty).collect();
            by_type.insert(ty.clone(), of_type(ty, &|_| true, &f));
            if !grouped {
                let m = of_type(ty, &pulse, &[]);
                if m.anomalous > 0 {
                    pulses_by_type.insert(ty.clone(), m);
                }
            }
        }
        let labels = &test_labels[..test.len()];
        DetectorReport {
            name,
            threshold: thr,
            calibration_max: f32::NAN,
            overall: Metrics::of(test, labels, thr, &all_faults),
            by_type,
            pulses_by_type,
            alerts: alerts.len() as u64,
            silence_alerts: alerts
                .iter()
                .filter(|a| a.reason == crate::contract::alert::AlertReason::Silence)
                .count() as u64,
            false_alerts,
            false_alerts_per_hour: (hours > 0.0).then(|| false_alerts as f64 / hours),
            false_alert_samples: fa_samples,
            faults: fr,
            note: None,
            incidents: None,
        }
    };
    for d in &dets {
        // Session mode replays on event scores with the session aggregate;
        // combined has no per-event scores there, so its sessions alert at
        // their last event (the aggregate is only known whole).
        let event_scores = if !grouped {
            d.event_test.as_ref()
        } else if d.name != "combined" {
            all.iter().find(|s| s.name == d.name).map(|s| &s.test)
        } else {
            None
        };
        let mut alerts = match event_scores {
            Some(ev) => replay::replay(test_events, &data.test, &tu, ev, d.thr, args),
            None => replay::session_alerts(test_events, &data.test, &tu, &d.test, d.thr),
        };
        if args.silence == "join" {
            alerts.extend(silence.iter().cloned());
            alerts.extend(edges.iter().cloned());
        }
        alerts.sort_by_key(|a| a.ts);
        // Incidents, per event mode: sessions are not sources in a topology.
        let incidents = (!grouped).then(|| {
            let mut with_silence = alerts.clone();
            if args.silence == "row" {
                with_silence.extend(silence.iter().cloned());
                with_silence.extend(edges.iter().cloned());
                with_silence.sort_by_key(|a| a.ts);
            }
            let told = incidents::replay_incidents(
                &with_silence,
                test_events,
                &data.test,
                registry.as_deref(),
                args.configured_incidents.clone().unwrap_or_default(),
            );
            incidents::judge(&told, &faults, grace_ms, hours)
        });
        report.detectors.push(DetectorReport {
            calibration_max: d.calib.iter().copied().fold(f32::NEG_INFINITY, f32::max),
            note: d.note.clone(),
            incidents,
            ..row(d.name.clone(), d.thr, &d.test, alerts)
        });
    }
    if args.silence == "row" && !grouped {
        let thr = crate::silence::SilenceConfig::default().multiple as f32;
        report.detectors.push(DetectorReport {
            note: Some("the silence watch alone (threshold: multiple of a source's usual interval); no event scores".into()),
            ..row("silence".into(), thr, &[], silence.clone())
        });
        report.detectors.push(DetectorReport {
            note: Some(
                "the new-dependency watch alone (incident::novelty); no event scores".into(),
            ),
            ..row("topology".into(), 0.0, &[], edges.clone())
        });
    }
    if let Some(p) = &args.dump {
        let scores = |pick: fn(&Det) -> &[f32]| -> Vec<(&str, &[f32])> {
            dets.iter().map(|d| (d.name.as_str(), pick(d))).collect()
        };
        let (mut test, calib) = (scores(|d| &d.test), scores(|d| &d.calib));
        // Per event: its own score and the decision's weight.
        let own_scores = || own.iter().map(|(n, v)| (n.as_str(), v.as_slice()));
        let mut test_events_scores: Vec<(&str, &[f32])> = own_scores().collect();
        test_events_scores.extend(all.iter().map(|s| (s.name.as_str(), s.test.as_slice())));
        let calib_events_scores: Vec<(&str, &[f32])> = all
            .iter()
            .map(|s| (s.name.as_str(), s.calib.as_slice()))
            .collect();
        if !grouped {
            test.extend(own_scores());
        }
        let parts = [
            report::DumpPart {
                name: "test",
                events: test_events,
                idx: &data.test,
                units: &tu,
                scores: &test,
                event_scores: &test_events_scores,
            },
            report::DumpPart {
                name: "calibration",
                events: &data.train_src,
                idx: &data.calib,
                units: &cu,
                scores: &calib,
                event_scores: &calib_events_scores,
            },
        ];
        report::write_dump(p, &renderer, &parts, grouped)?;
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The model as eval runs it, for a caller with its own events and split
/// (the metrics benchmark, `proprio metricbench`): trained on `fit` (or
/// `args.model`), every calibration and test event scored in its key's
/// context with the live score ([`scoring`], its tails fitted on the
/// calibration events), then the live decision's evidence ([`replay`]).
pub struct ModelEvidence {
    /// The live decision's evidence per calibration and per test event.
    pub calib: Vec<f32>,
    pub test: Vec<f32>,
    /// The live score per test event, before the evidence.
    pub test_live: Vec<f32>,
    /// The level the live scorer alerts at (the policy's).
    pub level: f32,
    pub note: String,
    /// The training summary, when trained here.
    pub model: Option<serde_json::Value>,
}

/// See [`ModelEvidence`]. `events` in time order; `fit`, `calib` and
/// `test` are increasing indices into it.
pub fn model_evidence(
    args: &EvalArgs,
    learning: &Learning,
    events: Vec<Event>,
    fit: Vec<usize>,
    calib: Vec<usize>,
    test: Vec<usize>,
) -> Result<ModelEvidence> {
    anyhow::ensure!(
        !fit.is_empty() && !calib.is_empty() && !test.is_empty(),
        "the model needs training, calibration and test events"
    );
    anyhow::ensure!(
        events.windows(2).all(|w| w[0].ts <= w[1].ts),
        "events must be in time order"
    );
    let data = Data {
        train_src: events,
        test_src: None,
        fit,
        calib,
        test,
    };
    let cu = units(&data.train_src, &data.calib, false);
    let tu = units(&data.train_src, &data.test, false);
    let mut report = Report::header(args, &data, &cu, &tu, 0.0, "none");
    let live_args = EvalArgs {
        model_score: "live".into(),
        group_by: None,
        ..args.clone()
    };
    let s = scoring::model_scores(&live_args, learning, &data, &mut report)?
        .into_iter()
        .next()
        .context("the model gave no score")?;
    // The risk as the live scorer applies it to a model that has seen
    // the fitted events.
    let policy = args.policy()?.for_model(data.fit_span_ms());
    Ok(ModelEvidence {
        calib: replay::decided(
            &data.train_src,
            &data.calib,
            &s.calib,
            &s.unscored.0,
            &policy,
        ),
        test: replay::decided(&data.train_src, &data.test, &s.test, &s.unscored.1, &policy),
        test_live: s.test,
        level: policy.level(),
        note: s.note.unwrap_or_default(),
        model: report.model,
    })
}

/// θ: the next value above the `--threshold-quantile` quantile of the
/// calibration units' scores (see the threshold rule above).
fn threshold(calib: &[f32], args: &EvalArgs) -> f32 {
    metrics::quantile(calib, args.threshold_quantile).map_or(f32::INFINITY, f32::next_up)
}

/// The template and zscore baselines, fitted on the fit part (as wanted),
/// and whether the data hold any metric.
fn baseline_scores(
    renderer: &Renderer,
    data: &Data,
    want: &dyn Fn(&str) -> bool,
) -> (Vec<Scores>, bool) {
    let part = |idx: &[usize], events: &[Event]| -> Vec<Event> {
        idx.iter().map(|&i| events[i].clone()).collect()
    };
    let fit = part(&data.fit, &data.train_src);
    let calib = part(&data.calib, &data.train_src);
    let test = part(&data.test, data.test_events());
    let mut all = Vec::new();
    if want("template") || want("combined") {
        let t = TemplateFreq::fit(renderer, &fit);
        all.push(Scores {
            name: "template".into(),
            calib: t.score(renderer, &calib),
            test: t.score(renderer, &test),
            note: Some(format!("{} templates in training", t.templates())),
            live: false,
            unscored: Default::default(),
        });
    }
    let mut has_metrics = false;
    if want("zscore") || want("combined") {
        let z = MetricZ::fit(&fit);
        has_metrics = z.series() > 0;
        all.push(Scores {
            name: "zscore".into(),
            calib: z.score(&calib),
            test: z.score(&test),
            note: Some(format!("{} metric series in training", z.series())),
            live: false,
            unscored: Default::default(),
        });
    }
    (all, has_metrics)
}

/// The combined detector: per unit, the max of template and zscore (the
/// latter only with metrics) over their own thresholds.
fn combined(
    dets: &[Det],
    cu: &Units,
    tu: &Units,
    args: &EvalArgs,
    has_metrics: bool,
) -> Option<Det> {
    let find = |n: &str| dets.iter().find(|d| d.name == n);
    let (t, z) = (find("template")?, find("zscore")?);
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
    let names: Vec<&str> = parts.iter().map(|d| d.name.as_str()).collect();
    Some(Det {
        name: "combined".into(),
        thr: threshold(&calib, args),
        calib,
        // Per event, for the alert replay: the same normalisation.
        event_test: args.group_by.is_none().then(|| test.clone()),
        test,
        note: Some(format!("max of {} over their thresholds", names.join(", "))),
    })
}

/// `proprio eval`: the table on stdout, the JSON report with `--json`.
pub fn run(args: EvalArgs, learning: Learning) -> Result<()> {
    let report = evaluate(&args, &learning)?;
    print!("{}", report.table());
    if let Some(p) = &args.json {
        std::fs::write(p, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("writing {}", p.display()))?;
        eprintln!("eval: wrote {}", p.display());
    }
    Ok(())
}
