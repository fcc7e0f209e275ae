//! The evaluation report: JSON (serde) and a terminal table.

use super::metrics::Confusion;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;

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
    /// The threshold the rule chose (unit scores above it are flagged).
    pub threshold: f32,
    pub calibration_max: f32,
    pub overall: Metrics,
    pub by_type: BTreeMap<String, Metrics>,
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
        }
        for n in &self.notes {
            let _ = writeln!(s, "note: {n}");
        }
        s
    }
}
