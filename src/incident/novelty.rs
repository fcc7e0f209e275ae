//! New dependencies: a known service that starts depending on a service it
//! was never seen to depend on is an alert of its own.
//!
//! Why a rule and not the model: the edge is plausible text (`X calls Y`
//! reads like every other edge), and a 32-dim model does not hold each
//! service's dependency set, so the model ranks a new dependency as
//! ordinary (eval: no detector found any at its threshold). The
//! [`Topology`] already holds the set (registry plus observed edges), so the
//! question "was this edge ever seen" is exact and costs a hash lookup.
//!
//! What keeps it quiet:
//! - only graph events of a dependency relation ([`DEPENDENCY_RELS`]) are
//!   judged, and only those of an established caller (in the registry, or
//!   first seen at least the warm-up ago): a new service's own edges are
//!   learnt, not alerted (its arrival is a deploy, and the model sees its
//!   start-up); an established service that starts calling it is a change
//!   of the known architecture, and alerts;
//! - a graph source is judged only once it has been heard from for the
//!   warm-up ([`EdgeWatch::new`]), so the edges of its first snapshots are
//!   learnt; after a restart the warm-up starts again (blind, not noisy);
//! - each new edge alerts once: judging it learns it.

use super::topology::{service_of, Topology, DEPENDENCY_RELS};
use crate::contract::alert::{Alert, AlertBaseline, AlertReason, BaselineOf, Span};
use crate::event::{Body, Event};
use std::collections::HashMap;

/// The warm-up by default: a graph published hourly is judged from its
/// second snapshot on (every edge of the first learnt), and a new caller's
/// edges are learnt for its first hour.
pub const DEFAULT_WARMUP_MS: i64 = 3_600_000;

/// Graph sources whose first message time is remembered; past it, the
/// earliest heard is forgotten (and warms up again if it returns).
const MAX_GRAPH_SOURCES: usize = 1024;
/// Nodes whose first appearance is remembered; past it, the earliest tenth
/// is forgotten (a forgotten node is new again: blind for a warm-up, never
/// noisy).
const MAX_NODES: usize = 100_000;

/// Judges graph events against the topology; see the module doc.
#[derive(Debug)]
pub struct EdgeWatch {
    warmup_ms: i64,
    /// Graph source → its first event's time.
    first_heard: HashMap<String, i64>,
    /// Caller node → when it was first seen calling.
    first_seen: HashMap<String, i64>,
}

/// A dependency a known service was never seen to have.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEdge {
    pub ts: i64,
    /// The graph event's source (e.g. the service graph).
    pub graph_source: String,
    /// The service that depends (calls), and the one it now depends on.
    pub caller: String,
    pub callee: String,
    pub rel: String,
}

impl EdgeWatch {
    /// Judges a graph source's edges once it has been heard from for
    /// `warmup_ms` (event time).
    pub fn new(warmup_ms: i64) -> EdgeWatch {
        EdgeWatch {
            warmup_ms: warmup_ms.max(0),
            first_heard: HashMap::new(),
            first_seen: HashMap::new(),
        }
    }

    /// Learns `ev` into `topo` (as [`Topology::observe_event`]) and says
    /// whether it showed a known service's new dependency.
    pub fn observe(&mut self, topo: &mut Topology, ev: &Event) -> Option<NewEdge> {
        let Body::Graph { src, rel, dst, .. } = &ev.body else {
            topo.observe_event(ev);
            return None;
        };
        let warm = self.heard(&ev.source, ev.ts);
        let (a, b) = (service_of(src), service_of(dst));
        if !DEPENDENCY_RELS.contains(&rel.as_str()) || a.is_empty() || b.is_empty() || a == b {
            topo.observe_event(ev);
            return None;
        }
        let established = topo.is_registered(a) || self.seen_since(a, ev.ts) >= self.warmup_ms;
        let new = established && !topo.has_edge(a, b);
        let out = (new && warm).then(|| NewEdge {
            ts: ev.ts,
            graph_source: ev.source.clone(),
            caller: a.to_string(),
            callee: b.to_string(),
            rel: rel.clone(),
        });
        topo.observe_event(ev);
        out
    }

    /// How long ago (from `ts`) `node` was first seen calling; records it
    /// as first seen now if it never was.
    fn seen_since(&mut self, node: &str, ts: i64) -> i64 {
        if let Some(&t0) = self.first_seen.get(node) {
            return ts.saturating_sub(t0);
        }
        if self.first_seen.len() >= MAX_NODES {
            let mut by_age: Vec<(i64, String)> = self
                .first_seen
                .iter()
                .map(|(k, t)| (*t, k.clone()))
                .collect();
            by_age.sort_unstable();
            for (_, k) in by_age.into_iter().take(MAX_NODES / 10) {
                self.first_seen.remove(&k);
            }
        }
        self.first_seen.insert(node.to_string(), ts);
        0
    }

    /// Records `source` as heard at `ts`; true once it has been heard from
    /// for the warm-up.
    fn heard(&mut self, source: &str, ts: i64) -> bool {
        if let Some(&t0) = self.first_heard.get(source) {
            return ts.saturating_sub(t0) >= self.warmup_ms;
        }
        if self.first_heard.len() >= MAX_GRAPH_SOURCES {
            if let Some(k) = self
                .first_heard
                .iter()
                .min_by_key(|(_, t)| **t)
                .map(|(k, _)| k.clone())
            {
                self.first_heard.remove(&k);
            }
        }
        self.first_heard.insert(source.to_string(), ts);
        self.warmup_ms == 0
    }
}

impl NewEdge {
    /// The diagnosis the alert carries (and that confirms its incident).
    pub fn diagnosis(&self) -> String {
        format!(
            "new dependency: {} {} {} (never seen before)",
            self.caller, self.rel, self.callee
        )
    }

    /// The alert, on the caller (the service whose behaviour changed).
    /// `id` names the telemetry message, so a replay of it is a duplicate.
    /// Its score is `level`, the alert level of the scorer's policy: the
    /// edge was never seen, rarer than anything the tails could rank.
    pub fn alert(&self, id: String, key: &str, level: f32) -> Alert {
        Alert {
            id,
            ts: self.ts,
            source: self.caller.clone(),
            key: key.to_string(),
            kind: crate::event::Kind::Graph,
            score: level,
            loss: 0.0,
            baseline: AlertBaseline {
                median: 0.0,
                scale: 0.0,
                of: BaselineOf::None,
            },
            rendered: format!("{} {} {}", self.caller, self.rel, self.callee),
            span: Span::default(),
            diagnosis: Some(self.diagnosis()),
            model: None,
            reason: AlertReason::Topology,
            previous_epoch: false,
        }
    }

    /// The alert id for the telemetry message at `stream_seq` of `stream`.
    pub fn id_for_message(stream: &str, stream_seq: u64) -> String {
        format!("edge:{stream}:{stream_seq}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{Registry, Service};

    fn edge(ts: i64, src: &str, rel: &str, dst: &str) -> Event {
        Event {
            ts,
            source: "ServiceGraph".into(),
            key: "ServiceGraph".into(),
            body: Body::Graph {
                graph: "ServiceGraph".into(),
                src: src.into(),
                rel: rel.into(),
                dst: dst.into(),
            },
            label: None,
        }
    }

    const H: i64 = 3_600_000;

    #[test]
    fn a_known_service_s_new_edge_alerts_once_after_the_warm_up() {
        let mut topo = Topology::new(100);
        let mut w = EdgeWatch::new(2 * H);
        for ts in [0, H] {
            assert_eq!(w.observe(&mut topo, &edge(ts, "a", "calls", "b")), None);
            assert_eq!(w.observe(&mut topo, &edge(ts + 1, "c", "calls", "d")), None);
        }
        // Within the warm-up a new edge is learnt, not alerted.
        assert_eq!(w.observe(&mut topo, &edge(H + 2, "a", "calls", "d")), None);
        assert_eq!(w.observe(&mut topo, &edge(2 * H, "a", "calls", "d")), None);
        let n = w
            .observe(&mut topo, &edge(2 * H + 1, "c::run", "calls", "b::get"))
            .unwrap();
        assert_eq!((n.caller.as_str(), n.callee.as_str()), ("c", "b"));
        assert!(n.diagnosis().starts_with("new dependency: c calls b"));
        let a = n.alert("edge:S:7".into(), "ServiceGraph", 3.5);
        assert_eq!(
            (a.source.as_str(), a.reason, a.score),
            ("c", AlertReason::Topology, 3.5)
        );
        // Once.
        assert_eq!(
            w.observe(&mut topo, &edge(2 * H + 2, "c", "calls", "b")),
            None
        );
    }

    #[test]
    fn a_new_service_s_own_edges_other_relations_and_self_edges_do_not_alert() {
        let mut topo = Topology::new(100);
        let mut w = EdgeWatch::new(H);
        assert_eq!(w.observe(&mut topo, &edge(0, "a", "calls", "b")), None);
        assert_eq!(w.observe(&mut topo, &edge(1, "b", "calls", "c")), None);
        assert_eq!(
            w.observe(&mut topo, &edge(H + 1, "new", "calls", "a")),
            None,
            "new is new"
        );
        assert_eq!(
            w.observe(&mut topo, &edge(H + 2, "new", "calls", "b")),
            None,
            "still new"
        );
        assert_eq!(
            w.observe(&mut topo, &edge(H + 3, "a", "runs_on", "node-1")),
            None,
            "not a dependency"
        );
        assert_eq!(
            w.observe(&mut topo, &edge(H + 4, "a::x", "calls", "a::y")),
            None,
            "itself"
        );
        let n = w
            .observe(&mut topo, &edge(H + 5, "a", "calls", "new"))
            .expect("an established caller");
        assert_eq!(n.callee, "new");
        assert!(
            w.observe(&mut topo, &edge(2 * H + 1, "new", "calls", "c"))
                .is_some(),
            "established now"
        );
    }

    #[test]
    fn the_registry_s_dependencies_are_known_from_the_start() {
        let svc = |name: &str, deps: &[&str]| Service {
            name: name.into(),
            layer: 1,
            port: 8000,
            role: "service".into(),
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
        };
        let reg = Registry {
            services: vec![svc("a", &["b"]), svc("b", &[]), svc("c", &[])],
        };
        let mut topo = Topology::new(100).with_registry(&reg);
        let mut w = EdgeWatch::new(0);
        assert_eq!(w.observe(&mut topo, &edge(0, "a", "calls", "b")), None);
        assert!(w.observe(&mut topo, &edge(1, "a", "calls", "c")).is_some());
        // Without the registry, a is as new as any first-seen caller.
        let mut w = EdgeWatch::new(H);
        let mut topo = Topology::new(100);
        w.heard("ServiceGraph", -H);
        assert_eq!(w.observe(&mut topo, &edge(0, "a", "calls", "c")), None);
    }

    #[test]
    fn a_forgotten_graph_source_warms_up_again() {
        let mut w = EdgeWatch::new(H);
        for i in 0..MAX_GRAPH_SOURCES as i64 {
            w.heard(&format!("g{i}"), i);
        }
        assert!(w.heard("g1", 2 * H));
        w.heard("late", 3 * H);
        assert!(!w.heard("g0", 3 * H), "the earliest was forgotten");
        assert_eq!(w.first_heard.len(), MAX_GRAPH_SOURCES);
    }
}
