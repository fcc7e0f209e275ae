//! Who depends on whom, as far as incidents need it: the registry's
//! `depends_on` (permanent) plus the calls seen in graph and trace events
//! (remembered up to a bound, least recently seen forgotten first).
//!
//! An edge `a → b` means "a depends on b" (a calls b): when b fails, a is
//! expected to alert after it, so b sits upstream of a.

use crate::event::{Body, Event};
use crate::registry::Registry;
use std::collections::{HashMap, HashSet, VecDeque};

/// Graph relations that mean "src depends on dst". Other relations
/// (`runs_on`, `reads`, `documents`, ...) link a service to a thing that
/// does not alert, and would only make unrelated services look close.
pub const DEPENDENCY_RELS: [&str; 4] = ["calls", "depends_on", "routes_to", "uses"];

/// Most service names taken from one trace summary.
const MAX_TRACE_NAMES: usize = 8;
/// Most nodes one bounded walk visits: keeps a hub (the bus everything
/// depends on) from making a neighbourhood query cost the whole graph.
const MAX_VISIT: usize = 4096;

#[derive(Debug, Default)]
pub struct Topology {
    /// node → what it depends on, and node → what depends on it; registry
    /// and observed edges together.
    deps: HashMap<String, HashSet<String>>,
    dependents: HashMap<String, HashSet<String>>,
    /// Registry edges and services, never forgotten.
    fixed: HashSet<(String, String)>,
    services: HashSet<String>,
    /// Observed edges → when last seen (a counter, not a time).
    observed: HashMap<(String, String), u64>,
    seen: u64,
    max_observed: usize,
}

impl Topology {
    /// No edges; up to `max_observed` observed ones will be kept.
    pub fn new(max_observed: usize) -> Topology {
        Topology {
            max_observed: max_observed.max(1),
            ..Default::default()
        }
    }

    /// The registry's dependencies, kept for good.
    pub fn with_registry(mut self, reg: &Registry) -> Topology {
        for s in &reg.services {
            self.services.insert(s.name.clone());
            for d in &s.depends_on {
                if *d != s.name {
                    self.link(&s.name, d);
                    self.fixed.insert((s.name.clone(), d.clone()));
                }
            }
        }
        self
    }

    /// Edges held: registry plus observed.
    pub fn edges(&self) -> usize {
        self.fixed.len() + self.observed.len()
    }

    /// `node` is a service of the registry.
    pub fn is_registered(&self, node: &str) -> bool {
        self.services.contains(node)
    }

    /// `a` is known to depend on `b` (registry or observed).
    pub fn has_edge(&self, a: &str, b: &str) -> bool {
        self.deps.get(a).is_some_and(|d| d.contains(b))
    }

    pub fn observed_edges(&self) -> usize {
        self.observed.len()
    }

    pub fn is_known(&self, node: &str) -> bool {
        self.services.contains(node)
            || self.deps.contains_key(node)
            || self.dependents.contains_key(node)
    }

    /// Learns from one telemetry event: a graph edge of a dependency
    /// relation, or the known services a trace step names (the agent
    /// depends on them). Other events teach nothing.
    pub fn observe_event(&mut self, ev: &Event) {
        match &ev.body {
            Body::Graph { src, rel, dst, .. } if DEPENDENCY_RELS.contains(&rel.as_str()) => {
                self.observe(service_of(src), service_of(dst));
            }
            Body::Trace { summary, .. } => {
                let names: Vec<String> = summary
                    .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
                    .filter(|w| !w.is_empty() && *w != ev.source && self.is_known(w))
                    .take(MAX_TRACE_NAMES)
                    .map(str::to_string)
                    .collect();
                for n in names {
                    self.observe(&ev.source, &n);
                }
            }
            _ => {}
        }
    }

    /// Records `a → b` (a depends on b) as seen now. Past the bound, the
    /// least recently seen observed edge is forgotten.
    pub fn observe(&mut self, a: &str, b: &str) {
        if a.is_empty() || b.is_empty() || a == b {
            return;
        }
        let e = (a.to_string(), b.to_string());
        if self.fixed.contains(&e) {
            return;
        }
        self.seen += 1;
        if let Some(t) = self.observed.get_mut(&e) {
            *t = self.seen;
            return;
        }
        if self.observed.len() >= self.max_observed {
            self.forget_oldest();
        }
        self.link(a, b);
        self.observed.insert(e, self.seen);
    }

    /// Forgets the least recently seen tenth of the observed edges (at
    /// least one): one sort per many inserts instead of a scan per insert.
    fn forget_oldest(&mut self) {
        let mut by_age: Vec<(u64, (String, String))> =
            self.observed.iter().map(|(e, t)| (*t, e.clone())).collect();
        by_age.sort_unstable();
        let n = (self.max_observed / 10).max(1);
        for (_, (a, b)) in by_age.into_iter().take(n) {
            self.observed.remove(&(a.clone(), b.clone()));
            self.unlink(&a, &b);
        }
    }

    fn link(&mut self, a: &str, b: &str) {
        self.deps
            .entry(a.to_string())
            .or_default()
            .insert(b.to_string());
        self.dependents
            .entry(b.to_string())
            .or_default()
            .insert(a.to_string());
    }

    fn unlink(&mut self, a: &str, b: &str) {
        if let Some(s) = self.deps.get_mut(a) {
            s.remove(b);
            if s.is_empty() {
                self.deps.remove(a);
            }
        }
        if let Some(s) = self.dependents.get_mut(b) {
            s.remove(a);
            if s.is_empty() {
                self.dependents.remove(b);
            }
        }
    }

    /// Every node within `hops` edges of `from`, either direction,
    /// `from` included (bounded walk).
    pub fn near(&self, from: &str, hops: usize) -> HashSet<String> {
        let mut seen = HashSet::from([from.to_string()]);
        let mut frontier = vec![from.to_string()];
        for _ in 0..hops {
            let mut next = Vec::new();
            for n in &frontier {
                let around = self.deps.get(n).into_iter().chain(self.dependents.get(n));
                for m in around.flatten() {
                    if seen.len() >= MAX_VISIT {
                        return seen;
                    }
                    if seen.insert(m.clone()) {
                        next.push(m.clone());
                    }
                }
            }
            frontier = next;
        }
        seen
    }

    /// Every node `from` depends on, directly or transitively (bounded
    /// walk), `from` excluded.
    pub fn upstream_of(&self, from: &str) -> HashSet<String> {
        let mut seen = HashSet::new();
        let mut queue = VecDeque::from([from.to_string()]);
        while let Some(n) = queue.pop_front() {
            for d in self.deps.get(&n).into_iter().flatten() {
                if seen.len() >= MAX_VISIT {
                    return seen;
                }
                if d != from && seen.insert(d.clone()) {
                    queue.push_back(d.clone());
                }
            }
        }
        seen
    }
}

/// The service a graph node stands for: `AitherMind::recall` (a code
/// graph's function) is AitherMind.
pub(crate) fn service_of(node: &str) -> &str {
    node.split("::").next().unwrap_or(node)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Phase;

    fn ev(source: &str, body: Body) -> Event {
        Event {
            ts: 0,
            source: source.into(),
            key: source.into(),
            body,
            label: None,
        }
    }

    #[test]
    fn registry_edges_distances_and_upstream() {
        let reg = Registry::parse(
            "services:\n\
             - {name: C, layer: 0, port: 1}\n\
             - {name: B, layer: 1, port: 2, depends_on: [C]}\n\
             - {name: A, layer: 2, port: 3, depends_on: [B]}\n\
             - {name: Z, layer: 0, port: 4}\n",
        )
        .unwrap();
        let t = Topology::new(10).with_registry(&reg);
        assert_eq!(t.edges(), 2);
        assert!(t.near("A", 2).contains("C"));
        assert!(!t.near("A", 1).contains("C"));
        assert!(!t.near("A", 5).contains("Z"));
        assert_eq!(t.upstream_of("A"), HashSet::from(["B".into(), "C".into()]));
        assert!(t.upstream_of("C").is_empty());
        assert!(t.is_known("Z"));
    }

    #[test]
    fn graph_and_trace_events_teach_edges() {
        let mut t = Topology::new(10);
        let g = |src: &str, rel: &str, dst: &str| Body::Graph {
            graph: "G".into(),
            src: src.into(),
            rel: rel.into(),
            dst: dst.into(),
        };
        t.observe_event(&ev("CodeGraph", g("A::think", "calls", "B::recall")));
        t.observe_event(&ev("InfraGraph", g("A", "runs_on", "node-1")));
        assert_eq!(t.upstream_of("A"), HashSet::from(["B".into()]));
        assert!(!t.is_known("node-1"));
        t.observe_event(&ev("Q", g("Q", "calls", "Q")));
        assert_eq!(t.edges(), 1, "self edges are ignored");
        // A trace step naming a known service: the agent depends on it.
        t.observe_event(&ev(
            "Agent",
            Body::Trace {
                phase: Phase::Act,
                request: "r".into(),
                summary: "delegate B, then Unknown (B again)".into(),
                duration_ms: None,
            },
        ));
        assert_eq!(t.upstream_of("Agent"), HashSet::from(["B".into()]));
        assert!(!t.is_known("Unknown"));
    }

    #[test]
    fn observed_edges_are_bounded_least_recent_first() {
        let mut t = Topology::new(10);
        for i in 0..10 {
            t.observe(&format!("s{i}"), "hub");
        }
        t.observe("s0", "hub"); // s0 seen again: now the most recent
        t.observe("new", "hub");
        assert_eq!(t.observed_edges(), 10);
        assert!(t.near("hub", 1).contains("s0"));
        assert!(!t.near("hub", 1).contains("s1"), "the oldest is forgotten");
        assert!(!t.is_known("s1"));
        for i in 0..1000 {
            t.observe(&format!("x{i}"), &format!("y{i}"));
            assert!(t.observed_edges() <= 10);
        }
    }
}
