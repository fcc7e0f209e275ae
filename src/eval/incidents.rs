//! Incidents in eval: the live incident engine ([`crate::incident::Engine`],
//! the configured settings) replayed over a detector's alerts, with the topology it
//! would have learnt (the registry, then the graph and trace events of the
//! test part in time order), and judged against the faults by the rule the
//! demo uses ([`crate::sim::fault::explains`]): an incident is explained by
//! a fault when it opened inside the fault's window (plus the grace) and one
//! of its sources is one of the fault's.

use super::data::FaultTruth;
use super::replay::Alert;
use super::report::{FalseIncident, FaultOutcome, IncidentSummary};
use crate::contract::alert::{Alert as WireAlert, AlertBaseline, BaselineOf, Span};
use crate::contract::incident::Incident;
use crate::event::Event;
use crate::incident::{Engine, EngineConfig, Topology};
use crate::sim::explains;
use std::path::Path;

/// The incidents `alerts` make under `cfg` (alerts in time order; `idx`
/// the test events in time order, for the topology).
pub(super) fn replay_incidents(
    alerts: &[Alert],
    events: &[Event],
    idx: &[usize],
    registry: Option<&Path>,
    cfg: EngineConfig,
) -> Vec<Incident> {
    let mut topo = Topology::new(cfg.max_edges);
    if let Some(reg) = registry.and_then(|p| crate::registry::Registry::load(p).ok()) {
        topo = topo.with_registry(&reg);
    }
    let mut engine = Engine::new(cfg, topo);
    let mut next = 0;
    for (n, a) in alerts.iter().enumerate() {
        // The topology as the live role would know it by then.
        while next < idx.len() && events[idx[next]].ts <= a.ts {
            engine.topology_mut().observe_event(&events[idx[next]]);
            next += 1;
        }
        engine.observe(&wire(a, n));
    }
    engine.advance(i64::MAX / 4);
    engine.changed()
}

/// An eval alert in the wire form the engine reads.
fn wire(a: &Alert, n: usize) -> WireAlert {
    WireAlert {
        id: format!("eval:{n}"),
        ts: a.ts,
        source: a.source.clone(),
        key: a.source.clone(),
        kind: a.kind,
        score: a.score,
        loss: 0.0,
        baseline: AlertBaseline {
            median: 0.0,
            scale: 0.0,
            of: BaselineOf::Kind,
        },
        rendered: String::new(),
        span: Span::default(),
        diagnosis: a.diagnosis.clone(),
        model: None,
        reason: a.reason,
        previous_epoch: false,
    }
}

fn explained_by(i: &Incident, f: &FaultTruth, grace_ms: i64) -> bool {
    i.sources
        .iter()
        .any(|s| explains((f.start_ms, f.end_ms), &f.sources, grace_ms, s, i.opened_ts))
}

/// The incidents judged against `faults`.
pub(super) fn judge(
    incidents: &[Incident],
    faults: &[FaultTruth],
    grace_ms: i64,
    hours: f64,
) -> IncidentSummary {
    let mut s = IncidentSummary {
        incidents: incidents.len() as u64,
        faults: faults.len() as u64,
        ..Default::default()
    };
    s.false_list = incidents
        .iter()
        .filter(|i| !faults.iter().any(|f| explained_by(i, f, grace_ms)))
        .map(|i| FalseIncident {
            opened_ts: i.opened_ts,
            alerts: i.alerts,
            score: i.score,
            sources: i.sources.iter().take(4).cloned().collect(),
        })
        .collect();
    s.false_incidents = s.false_list.len() as u64;
    s.false_per_hour = (hours > 0.0).then(|| s.false_incidents as f64 / hours);
    let mut ttd = Vec::new();
    for f in faults {
        let first = incidents
            .iter()
            .filter(|i| explained_by(i, f, grace_ms))
            .min_by_key(|i| i.confirmed_ts.unwrap_or(i.opened_ts));
        let mut outcome = FaultOutcome {
            id: f.id.clone(),
            kind: f.kind.clone(),
            ..Default::default()
        };
        let Some(i) = first else {
            s.per_fault.push(outcome);
            continue;
        };
        s.faults_caught += 1;
        let told = i.confirmed_ts.unwrap_or(i.opened_ts);
        let t = (told - f.start_ms).max(0) as f64 / 1000.0;
        ttd.push(t);
        outcome.ttd_s = Some(t);
        outcome.suspect = i.suspects.first().map(|x| x.source.clone());
        outcome.alerts = i.alerts;
        outcome.score = i.score;
        s.per_fault.push(outcome);
        if let Some(root) = &f.root {
            s.with_root += 1;
            let named = |k: usize| i.suspects.iter().take(k).any(|x| &x.source == root);
            s.root_hit1 += named(1) as u64;
            s.root_hit3 += named(3) as u64;
        }
    }
    if !ttd.is_empty() {
        s.median_ttd_s = Some(crate::baseline::median(&mut ttd));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::incident::IncidentState;

    fn incident(ts: i64, sources: &[&str], alerts: u32) -> Incident {
        Incident {
            id: format!("i{ts}"),
            state: IncidentState::Resolved,
            opened_ts: ts,
            updated_ts: ts,
            confirmed_ts: Some(ts),
            resolved_ts: Some(ts + 1),
            score: 5.0,
            alerts,
            suspects: Vec::new(),
            sources: sources.iter().map(|s| s.to_string()).collect(),
            alert_ids: Vec::new(),
        }
    }

    #[test]
    fn false_incidents_are_listed_and_caught_faults_sized() {
        let fault = FaultTruth {
            id: "oom-0".into(),
            kind: "oom".into(),
            start_ms: 1_000,
            end_ms: 2_000,
            sources: vec!["db".into()],
            root: None,
            by_source: true,
        };
        let incidents = [
            incident(1_500, &["db", "api"], 7),
            // Inside the window, but not on the fault's source.
            incident(1_600, &["web"], 3),
            // On the fault's source, but after its window.
            incident(9_000, &["db"], 2),
        ];
        let s = judge(&incidents, &[fault], 0, 1.0);
        assert_eq!((s.incidents, s.false_incidents, s.faults_caught), (3, 2, 1));
        let listed: Vec<(i64, &str, u32)> = s
            .false_list
            .iter()
            .map(|f| (f.opened_ts, f.sources[0].as_str(), f.alerts))
            .collect();
        assert_eq!(listed, vec![(1_600, "web", 3), (9_000, "db", 2)]);
        assert_eq!((s.per_fault[0].alerts, s.per_fault[0].score), (7, 5.0));
    }
}
