//! Faults that change the OS's shape: a new dependency, and an architecture
//! change that splits a service in two.

use super::super::queue::Act;
use super::super::{Simulation, SEC};
use super::{Placed, Window};
use crate::event::Body;
use crate::registry::Service;
use crate::sim::graphs::GRAPHS;
use crate::sim::rng::Rng;
use crate::sim::service::new_svc;
use std::collections::{BTreeMap, BTreeSet};

impl Simulation {
    /// A `calls` edge of the service graph, seen as soon as the calls flow
    /// rather than at the next snapshot.
    fn call_edge(&mut self, ts: i64, src: String, dst: String, f: usize) {
        let graph = GRAPHS[0];
        let body = Body::Graph {
            graph: graph.to_string(),
            src,
            rel: "calls".to_string(),
            dst,
        };
        self.emit(ts, graph, body, Some(f));
    }

    pub(super) fn new_dependency(&mut self, r: &mut Rng, w: Window) -> Placed {
        let Window { f, t0, d, .. } = w;
        let sv = self.choose(r, &self.ordinary_target())?;
        let has = |x: usize| self.svcs[sv].deps.iter().any(|&(y, _)| y == x);
        let layer = self.svcs[sv].layer;
        let upward = self.all_where(|x, s| x != sv && s.layer > layer && !has(x));
        let other = self.all_where(|x, _| x != sv && !has(x));
        let x = r.pick(&upward).or(r.pick(&other)).copied()?;
        let before = self.svcs[sv].deps.clone();
        let mut after = before.clone();
        after.push((x, Some(f)));
        self.task(t0, Act::Deps(sv, after));
        self.task(t0 + d, Act::Deps(sv, before));
        let (sn, xn, xp) = (
            self.svcs[sv].name.clone(),
            self.svcs[x].name.clone(),
            self.svcs[x].port,
        );
        let disc = self
            .svcs
            .iter()
            .find(|s| s.role == "config")
            .map(|s| s.name.clone())
            .unwrap_or_else(|| "DNS".into());
        self.log(
            t0,
            sv,
            "info",
            format!("resolved new upstream {xn} via {disc}: http://{xn}:{xp} (first call)"),
            Some(f),
        );
        self.call_edge(t0 + r.int(SEC, 5 * SEC), sn, xn, f);
        let mut srcs = self.names([sv]);
        srcs.insert(GRAPHS[0].to_string());
        srcs.extend(self.graph_sources(f, |sim| sim.svcs[sv].deps.push((x, Some(f)))));
        self.reserve([sv]);
        Some((t0 + d, sv, srcs))
    }

    pub(super) fn arch_change(&mut self, r: &mut Rng, w: Window) -> Placed {
        let Window { f, t0, .. } = w;
        let security = self.all_where(|_, s| s.role == "security" && !s.deps.is_empty());
        let with_deps = self.all_where(|_, s| !s.deps.is_empty() && s.role != "orchestrator");
        let named = self.name_is("AitherAuth");
        let t = self.choose(r, &[named, security, with_deps, self.everyone()])?;
        let base = self.svcs[t].name.clone();
        let mut new_name = format!("{base}Worker");
        let mut k = 2;
        while self.svcs.iter().any(|s| s.name == new_name) {
            new_name = format!("{base}Worker{k}");
            k += 1;
        }
        let used: BTreeSet<u16> = self.svcs.iter().map(|s| s.port).collect();
        let port = (self.svcs.iter().map(|s| s.port).max().unwrap_or(8000)..=u16::MAX)
            .find(|p| !used.contains(p))
            .or_else(|| (1024..u16::MAX).find(|p| !used.contains(p)))?;
        let old_deps = self.svcs[t].deps.clone();
        let svc = Service {
            name: new_name.clone(),
            layer: self.svcs[t].layer,
            port,
            role: self.svcs[t].role.clone(),
            depends_on: Vec::new(),
        };
        let mut n = new_svc(&svc, &BTreeMap::new(), 0, t0);
        n.rng = Rng::stream(r.next_u64(), &new_name);
        n.exists = false;
        n.up = false;
        n.label_all = Some(f);
        n.deps = old_deps.iter().map(|&(d, _)| (d, None)).collect();
        let ni = self.svcs.len();
        self.svcs.push(n);

        // The registry as it is after the split.
        let mut after = self
            .registry_after
            .clone()
            .unwrap_or_else(|| self.registry.clone());
        if let Some(pos) = after.services.iter().position(|s| s.name == base) {
            let mut ns = svc.clone();
            ns.depends_on =
                std::mem::replace(&mut after.services[pos].depends_on, vec![new_name.clone()]);
            after.services.insert(pos + 1, ns);
        }
        self.registry_after = Some(after);

        let rec = self.rec.deploy;
        self.chron(
            t0,
            rec,
            "user:platform-team",
            "architecture.change",
            &format!("{base} split into {base}+{new_name}"),
            "success",
            Some(f),
        );
        let stopped = self.stop(t, t0 + r.int(2000, 5000), "refactor", Some(f), r);
        self.task(t0, Act::Exists(ni));
        self.task(stopped, Act::Deps(t, vec![(ni, Some(f))]));
        let hn = self.start_after(r, ni, stopped, (1000, 3000), Some(f));
        // Its own startup sees its new dependency list: set it for the
        // scripted sequence, the task above makes it true at run time.
        let saved = std::mem::replace(&mut self.svcs[t].deps, vec![(ni, Some(f))]);
        let ht = self.start_after(r, t, hn, (1000, 3000), Some(f));
        // The live topology notices the new edges as soon as calls flow.
        let mut edges = vec![(base.clone(), new_name.clone())];
        edges.extend(
            old_deps
                .iter()
                .map(|&(d, _)| (new_name.clone(), self.svcs[d].name.clone())),
        );
        for (k, (a, b)) in edges.into_iter().enumerate() {
            self.call_edge(ht + 200 + 25 * k as i64, a, b, f);
        }
        self.svcs[t].deps = saved;
        let mut srcs = self.involve(&[t], [ni].into_iter().chain(rec));
        srcs.extend(self.graph_sources(f, |sim| {
            sim.svcs[ni].exists = true;
            sim.svcs[t].deps = vec![(ni, Some(f))];
        }));
        let mut r2 = Rng::stream(r.next_u64(), "arch-change-recurring");
        self.schedule_recurring(&mut r2, ni, hn);
        self.reserve([ni]);
        Some((self.end, t, srcs))
    }
}
