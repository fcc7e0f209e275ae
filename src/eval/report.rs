//! The evaluation report: JSON (serde), a terminal table, and the per unit
//! score dump.

use super::baselines::TemplateFreq;
use super::data::{Data, Units};
use super::metrics::{self, Confusion};
use super::EvalArgs;
use crate::curriculum::Renderer;
use crate::event::Event;
use anyhow::{Context, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

/// Metrics over a set of units (all, or one fault type's against the normal ones).
#[derive(Debug, Clone, Serialize)]
pub struct Metrics {
    pub anomalous: u64,
    pub normal: u64,
    pub confusion: Confusion,
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    pub f1: Option<f64>,
    pub auroc: Option<f64>,
    pub auprc: Option<f64>,
    /// Faults (episodes) of this set, and how many an alert detected.
    pub faults: u64,
    pub faults_detected: u64,
    /// Median and worst time to detect over the detected faults, seconds.
    pub ttd_median_s: Option<f64>,
    pub ttd_max_s: Option<f64>,
}

impl Metrics {
    /// P, R, F1 at `thr`, AUROC and AUPRC of `scores`, and detection of `faults`.
    pub fn of(scores: &[f32], labels: &[bool], thr: f32, faults: &[&FaultResult]) -> Metrics {
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
}

/// One fault and whether (and how fast) it was detected.
#[derive(Debug, Clone, Serialize)]
pub struct FaultResult {
    pub id: String,
    pub kind: String,
    pub start_ms: i64,
    pub detected: bool,
    pub ttd_s: Option<f64>,
    /// `surprise` (a scored event) or `silence` (the silence watch).
    pub by: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DetectorReport {
    pub name: String,
    /// The threshold the rule chose (unit scores at or above it are flagged).
    pub threshold: f32,
    pub calibration_max: f32,
    pub overall: Metrics,
    pub by_type: BTreeMap<String, Metrics>,
    /// Per type, its labelled pulses (health metrics) against the normal
    /// pulses: how well the metrics are read (per event mode; types with
    /// labelled pulses only).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub pulses_by_type: BTreeMap<String, Metrics>,
    /// Alerts of the replay (after the cooldown), silence alerts included.
    pub alerts: u64,
    pub silence_alerts: u64,
    /// Alerts that detect no fault.
    pub false_alerts: u64,
    pub false_alerts_per_hour: Option<f64>,
    /// The first false alerts (ts, source), for diagnosis.
    pub false_alert_samples: Vec<(i64, String)>,
    pub faults: Vec<FaultResult>,
    pub note: Option<String>,
    /// The incidents its alerts make (per event mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incidents: Option<IncidentSummary>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub train: String,
    pub test: String,
    pub unit: String,
    pub aggregate: Option<String>,
    pub setting: String,
    pub threshold_rule: String,
    pub fit_events: u64,
    pub calibration_units: u64,
    pub calibration_anomalous: u64,
    pub test_events: u64,
    pub test_units: u64,
    pub test_anomalous: u64,
    pub test_hours: f64,
    /// Where the faults came from: `faults file`, `labels` or `none`.
    pub faults_from: String,
    pub detectors: Vec<DetectorReport>,
    pub notes: Vec<String>,
    /// The model's training summary, when it was trained here.
    pub model: Option<serde_json::Value>,
    pub seconds: f64,
}

fn f3(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{v:.3}"))
}

fn secs(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{v:.1}"))
}

impl Report {
    /// The terminal table: one row per detector and type, overall first.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "train: {}", self.train);
        let _ = writeln!(s, "test:  {}", self.test);
        let _ = writeln!(
            s,
            "unit: {}{}; setting: {}; fit on {} events; calibration {} units ({} anomalous); test {} units ({} anomalous) over {:.2} h; faults from {}",
            self.unit,
            self.aggregate.as_ref().map(|a| format!(" (aggregate {a})")).unwrap_or_default(),
            self.setting,
            self.fit_events,
            self.calibration_units,
            self.calibration_anomalous,
            self.test_units,
            self.test_anomalous,
            self.test_hours,
            self.faults_from
        );
        let _ = writeln!(s, "threshold: {}", self.threshold_rule);
        let _ = writeln!(
            s,
            "{:<13} {:<16} {:>6} {:>7} {:>9} {:>6} {:>6} {:>6} {:>6} {:>6} {:>7} {:>8} {:>7}",
            "detector",
            "type",
            "anom",
            "normal",
            "thresh",
            "P",
            "R",
            "F1",
            "AUROC",
            "AUPRC",
            "faults",
            "TTD~s",
            "FA/h"
        );
        for d in &self.detectors {
            let row = |s: &mut String, ty: &str, m: &Metrics, fa: Option<f64>| {
                let faults = if m.faults > 0 {
                    format!("{}/{}", m.faults_detected, m.faults)
                } else {
                    "-".into()
                };
                let _ = writeln!(
                    s,
                    "{:<13} {:<16} {:>6} {:>7} {:>9.3} {:>6} {:>6} {:>6} {:>6} {:>6} {:>7} {:>8} {:>7}",
                    d.name,
                    ty,
                    m.anomalous,
                    m.normal,
                    d.threshold,
                    f3(m.precision),
                    f3(m.recall),
                    f3(m.f1),
                    f3(m.auroc),
                    f3(m.auprc),
                    faults,
                    secs(m.ttd_median_s),
                    fa.map_or("".into(), |v| format!("{v:.2}"))
                );
            };
            row(&mut s, "(all)", &d.overall, d.false_alerts_per_hour);
            for (ty, m) in &d.by_type {
                row(&mut s, ty, m, None);
            }
        }
        for d in &self.detectors {
            if let Some(n) = &d.note {
                let _ = writeln!(
                    s,
                    "{}: {n}; {} alerts ({} silence), {} false",
                    d.name, d.alerts, d.silence_alerts, d.false_alerts
                );
            }
            if let Some(i) = &d.incidents {
                let _ = writeln!(s, "{}: {}", d.name, i.line());
            }
            if !d.pulses_by_type.is_empty() {
                let each: Vec<String> = d
                    .pulses_by_type
                    .iter()
                    .map(|(ty, m)| format!("{ty} {} ({})", f3(m.auroc), m.anomalous))
                    .collect();
                let _ = writeln!(
                    s,
                    "{}: AUROC of each type's labelled pulses against the normal pulses: {}",
                    d.name,
                    each.join(", ")
                );
            }
        }
        for n in &self.notes {
            let _ = writeln!(s, "note: {n}");
        }
        s
    }
}

impl Report {
    /// The report's description of the run, before any detector's rows.
    pub(super) fn header(
        args: &EvalArgs,
        data: &Data,
        cu: &Units,
        tu: &Units,
        hours: f64,
        faults_from: &str,
    ) -> Report {
        let grouped = args.group_by.is_some();
        let labelled = |u: &Units| u.labels.iter().filter(|l| l.is_some()).count() as u64;
        Report {
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
            calibration_anomalous: labelled(cu),
            test_events: data.test.len() as u64,
            test_units: tu.members.len() as u64,
            test_anomalous: labelled(tu),
            test_hours: hours,
            faults_from: faults_from.into(),
            detectors: Vec::new(),
            notes: Vec::new(),
            model: None,
            seconds: 0.0,
        }
    }
}

/// One part's units for `--dump`: the events of `idx` in `events`, each
/// unit's scores by detector.
pub(super) struct DumpPart<'a> {
    pub name: &'a str,
    pub events: &'a [Event],
    pub idx: &'a [usize],
    pub units: &'a Units,
    pub scores: &'a [(&'a str, &'a [f32])],
    /// Per event of `idx` (grouped mode lists a unit's events with these,
    /// to show which event lifts a unit).
    pub event_scores: &'a [(&'a str, &'a [f32])],
}

/// `--dump`: every test unit's scores, then every calibration unit's, one
/// JSON line each (per event mode, with the rendered text; test events also
/// with their template; grouped, with each member event's text and scores).
pub(super) fn write_dump(
    path: &Path,
    renderer: &Renderer,
    parts: &[DumpPart],
    grouped: bool,
) -> Result<()> {
    let f = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = std::io::BufWriter::new(f);
    for p in parts {
        // The part's own walk in time order, as its events were scored.
        let mut scaler = renderer.scaler();
        let texts: Vec<String> = p
            .idx
            .iter()
            .map(|&i| renderer.render(&p.events[i], &mut scaler))
            .collect();
        for (k, m) in p.units.members.iter().enumerate() {
            let e = &p.events[p.idx[m[0]]];
            let scores: BTreeMap<&str, f32> = p.scores.iter().map(|(n, s)| (*n, s[k])).collect();
            let mut line = serde_json::json!({
                "part": p.name,
                "ts": e.ts,
                "key": e.key,
                "source": e.source,
                "events": m.len(),
                "label": p.units.labels[k],
                "scores": scores,
            });
            if !grouped {
                line["text"] = texts[m[0]].as_str().into();
                if p.name == "test" {
                    line["template"] = TemplateFreq::template(renderer, e).into();
                }
            } else {
                let members: Vec<serde_json::Value> = m
                    .iter()
                    .map(|&j| {
                        let scores: BTreeMap<&str, f32> =
                            p.event_scores.iter().map(|(n, s)| (*n, s[j])).collect();
                        serde_json::json!({ "text": texts[j], "scores": scores })
                    })
                    .collect();
                line["members"] = members.into();
            }
            serde_json::to_writer(&mut w, &line)?;
            w.write_all(b"\n")?;
        }
    }
    w.flush()?;
    Ok(())
}

/// What the incidents of one detector's alerts were.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IncidentSummary {
    pub incidents: u64,
    /// Incidents no fault explains.
    pub false_incidents: u64,
    pub false_per_hour: Option<f64>,
    /// Faults explained by at least one incident.
    pub faults_caught: u64,
    pub faults: u64,
    /// Of the caught faults whose root is known: the first explaining
    /// incident named it first, or among its first three suspects.
    pub root_hit1: u64,
    pub root_hit3: u64,
    pub with_root: u64,
    /// Median seconds from a caught fault's start to its first incident.
    pub median_ttd_s: Option<f64>,
    /// Each fault's outcome, in the faults' order: which faults the
    /// incidents miss is what to work on next.
    pub per_fault: Vec<FaultOutcome>,
    /// The incidents no fault explains, in opening order: what a user
    /// would have been woken for.
    pub false_list: Vec<FalseIncident>,
}

/// An incident no fault explains.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FalseIncident {
    pub opened_ts: i64,
    pub alerts: u32,
    pub score: f32,
    /// Its sources in onset order (at most a few).
    pub sources: Vec<String>,
}

/// One fault as the incidents told it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FaultOutcome {
    pub id: String,
    pub kind: String,
    /// Seconds from the fault's start to its first explaining incident's
    /// confirmation; `None` when no incident explains it.
    pub ttd_s: Option<f64>,
    /// The first explaining incident's first suspect.
    pub suspect: Option<String>,
    /// That incident's alerts and highest score.
    pub alerts: u32,
    pub score: f32,
}

impl IncidentSummary {
    pub fn line(&self) -> String {
        let pct = |a: u64, b: u64| {
            if b == 0 {
                "-".to_string()
            } else {
                format!("{:.0}%", 100.0 * a as f64 / b as f64)
            }
        };
        format!(
            "{} incidents, {} false ({}/h); faults caught by incidents {}/{}; root cause hit@1 {} hit@3 {} (of {} with a known root); median time to detect {}",
            self.incidents,
            self.false_incidents,
            self.false_per_hour
                .map_or("-".into(), |h| format!("{h:.2}")),
            self.faults_caught,
            self.faults,
            pct(self.root_hit1, self.with_root),
            pct(self.root_hit3, self.with_root),
            self.with_root,
            self.median_ttd_s
                .map_or("-".into(), |t| format!("{t:.0}s")),
        ) + &self.missed()
    }

    /// "; missed: a-0, b-2" naming the faults no incident explains.
    fn missed(&self) -> String {
        let ids: Vec<&str> = self
            .per_fault
            .iter()
            .filter(|f| f.ttd_s.is_none())
            .map(|f| f.id.as_str())
            .collect();
        if ids.is_empty() {
            String::new()
        } else {
            format!("; missed: {}", ids.join(", "))
        }
    }
}
