//! The alerts a detector would have raised, and what they detected. The
//! replay runs the live decision itself ([`crate::scorer::decide`]: the
//! threshold test and the per (source, kind) cooldown) and the live silence
//! watch's [`Tracker`](crate::silence::Tracker), so eval measures the
//! detector that runs.

use super::data::{FaultTruth, Units};
use super::report::FaultResult;
use super::EvalArgs;
use crate::contract::alert::AlertReason;
use crate::event::{Event, Kind};
use crate::scorer::decide::{crosses, Cooldown, Decider, Policy};
use crate::sim::explains;
use anyhow::Result;

/// `S:K` → (window in ms, k).
pub(super) fn parse_evidence(s: &str) -> Result<(i64, usize)> {
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

/// The weight of each event as the live [`Decider`] gives it: over the
/// events of its key in the policy's window ending at it (itself
/// included), the mean of the `k` highest scores, at most `k` times its own.
/// An event marked in `unscored` (a repeated pulse the live scorer leaves
/// unscored) restates its key's last pulse or is only heard, as live
/// ([`Decider::restated`]), and then weighs 0.
pub(super) fn decided(
    events: &[Event],
    idx: &[usize],
    scores: &[f32],
    unscored: &[bool],
    policy: &Policy,
) -> Vec<f32> {
    let mut d = Decider::new(*policy, crate::scorer::Contexts::DEFAULT_MAX_KEYS);
    idx.iter()
        .zip(scores)
        .enumerate()
        .map(|(j, (&i, &s))| {
            let e = &events[i];
            if unscored.get(j).copied().unwrap_or(false) {
                d.restated(&e.key, e.ts).map_or(0.0, |x| x.weight)
            } else if e.kind() == Kind::Pulse {
                d.decide_pulse(&e.key, e.ts, s).weight
            } else {
                d.decide(&e.key, e.ts, s).weight
            }
        })
        .collect()
}

/// The scorer's default diagnoser, built once.
fn diagnoser() -> &'static crate::alert::Diagnoser {
    static D: std::sync::OnceLock<crate::alert::Diagnoser> = std::sync::OnceLock::new();
    D.get_or_init(crate::alert::Diagnoser::default)
}

/// One alert of the replay.
#[derive(Debug, Clone)]
pub(super) struct Alert {
    pub ts: i64,
    pub source: String,
    pub label: Option<String>,
    pub reason: AlertReason,
    pub kind: Kind,
    pub score: f32,
    /// The live scorer's diagnosis of the event (known failure patterns).
    pub diagnosis: Option<String>,
}

impl Alert {
    /// A surprise alert raised by event `e` (for a unit labelled `label`).
    fn of(e: &Event, label: Option<String>, score: f32) -> Alert {
        Alert {
            ts: e.ts,
            source: e.source.clone(),
            label,
            reason: AlertReason::Surprise,
            kind: e.kind(),
            score,
            diagnosis: diagnoser().diagnose_event(e),
        }
    }
}

/// Silence alerts over the test events, as the silence watch would raise them.
pub(super) fn silence_alerts(events: &[Event], idx: &[usize]) -> Vec<Alert> {
    use crate::silence::{SilenceConfig, Tracker};
    let mut tr = Tracker::new(SilenceConfig::default());
    let mut out = Vec::new();
    for &i in idx {
        let e = &events[i];
        if e.kind() == Kind::Graph {
            continue;
        }
        for o in tr.overdue(e.ts) {
            // Noticed as soon as the threshold passed (the live watch checks every 250 ms).
            out.push(Alert {
                ts: o.crossed_at(e.ts),
                source: o.source.clone(),
                label: None,
                reason: AlertReason::Silence,
                kind: o.kind,
                score: 0.0,
                diagnosis: None,
            });
            tr.settle(&o.source);
        }
        tr.observe(&e.source, e.kind(), e.ts);
    }
    out
}

/// New-dependency alerts over the test events, as the incidents role's
/// [`EdgeWatch`](crate::incident::EdgeWatch) raises them: its topology
/// starts from `registry` and has watched the graph events of `before`
/// (the training part, as if proprio had run through it).
pub(super) fn edge_alerts(
    before: &[Event],
    events: &[Event],
    idx: &[usize],
    registry: Option<&crate::registry::Registry>,
) -> Vec<Alert> {
    use crate::incident::{EdgeWatch, EngineConfig, Topology};
    let mut topo = Topology::new(EngineConfig::default().max_edges);
    if let Some(r) = registry {
        topo = topo.with_registry(r);
    }
    let mut w = EdgeWatch::new(crate::incident::novelty::DEFAULT_WARMUP_MS);
    let graph = |e: &&Event| e.kind() == Kind::Graph;
    for e in before.iter().filter(graph) {
        w.observe(&mut topo, e);
    }
    let mut out = Vec::new();
    for e in idx.iter().map(|&i| &events[i]).filter(graph) {
        if let Some(n) = w.observe(&mut topo, e) {
            out.push(Alert {
                ts: n.ts,
                source: n.caller.clone(),
                label: e.label.clone(),
                reason: AlertReason::Topology,
                kind: Kind::Graph,
                score: 0.0,
                diagnosis: Some(n.diagnosis()),
            });
        }
    }
    out
}

/// Alerts a detector raises on the test part at threshold `thr`, decided as
/// the live scorer decides: per event, [`crosses`] and then the
/// [`Cooldown`]; per session, once, when the aggregate of its events so far
/// first [`crosses`] the threshold.
pub(super) fn replay(
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
                if crosses(args.aggregate.apply(&so_far), thr) {
                    out.push(Alert::of(&events[idx[j]], u.labels[k].clone(), scores[j]));
                    break;
                }
            }
        }
        out.sort_by_key(|a| a.ts);
        return out;
    }
    let mut cooldown = Cooldown::new((args.cooldown_s * 1000.0) as i64);
    for (j, &i) in idx.iter().enumerate() {
        let e = &events[i];
        if crosses(scores[j], thr) && cooldown.admit(&e.source, e.kind(), e.ts) {
            out.push(Alert::of(e, e.label.clone(), scores[j]));
        }
    }
    out
}

/// Per session, for a detector without event scores (combined): a session
/// whose whole score crosses `thr` alerts at its last event.
pub(super) fn session_alerts(
    events: &[Event],
    idx: &[usize],
    u: &Units,
    unit_scores: &[f32],
    thr: f32,
) -> Vec<Alert> {
    u.members
        .iter()
        .enumerate()
        .filter(|(k, _)| crosses(unit_scores[*k], thr))
        .map(|(k, m)| {
            let last = *m.last().expect("sessions are non-empty");
            Alert::of(&events[idx[last]], u.labels[k].clone(), unit_scores[k])
        })
        .collect()
}

/// An alert detects a fault when it carries the fault's label inside its
/// window, or (faults file only) by the demo's rule, [`explains`].
fn matches(a: &Alert, f: &FaultTruth, grace_ms: i64) -> bool {
    let window = (f.start_ms, f.end_ms);
    let labelled = a.label.as_deref() == Some(f.id.as_str())
        && a.ts >= f.start_ms
        && a.ts <= f.end_ms.saturating_add(grace_ms);
    labelled || (f.by_source && explains(window, &f.sources, grace_ms, &a.source, a.ts))
}

/// Detection of each fault, and the false alerts.
pub(super) fn judge(
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
                    r.by = Some(a.reason.as_str().into());
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
