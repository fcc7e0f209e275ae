//! Faults where a service runs short of something: time (latency spike),
//! memory (OOM death, OOM cascade) or GPU memory (VRAM pressure).

use super::super::{rd, s, Simulation, MIN, SEC};
use super::{Placed, Window};
use crate::event::Scalar;
use crate::sim::rng::Rng;
use crate::sim::service::Fx;
use crate::sim::text::{self, lower, ms};
use std::collections::{BTreeMap, BTreeSet};

impl Simulation {
    pub(super) fn latency_spike(&mut self, r: &mut Rng, w: Window) -> Placed {
        let Window { f, t0, d, sc } = w;
        let with_dependents = self.all_where(|i, _| !self.dependents(i).is_empty());
        let cognition =
            self.all_where(|i, s| s.role == "cognition" && !self.dependents(i).is_empty());
        let named = self.name_is("AitherMind");
        let t = self.choose(r, &[named, cognition, with_dependents, self.everyone()])?;
        let t1 = t0 + d;
        let p50 = r.range(2800.0, 3300.0);
        self.affect(t0, t, f, Fx::Latency { p50 });
        self.end_effect(t1, t);
        let deg = t0 + (r.range(10.0, 40.0) * sc * SEC as f64) as i64;
        let p99 = (p50 * r.range(1.6, 2.1)) as i64;
        let first = format!(
            "slow request POST /v1/{} took {}ms (threshold 1000ms) request_id={}",
            lower(&self.svcs[t].name),
            ms(text::dur(r, p50).max(1200.0)),
            r.uuid()
        );
        self.log(deg, t, "warn", first, Some(f));
        self.degraded(deg, t, "latency", vec![("p99_ms", Scalar::Int(p99))], f);
        let rec = t1 + (r.range(5.0, 20.0) * sc * SEC as f64) as i64;
        self.recovered(rec, t, deg, f);
        let mut deps = self.dependents(t);
        r.shuffle(&mut deps);
        deps.truncate(3);
        let (tn, tp) = (self.svcs[t].name.clone(), self.svcs[t].port);
        for &x in &deps {
            for _ in 0..r.int(2, 4) {
                let at = t0 + (d as f64 * r.range(0.05, 0.95)) as i64;
                let msg = format!(
                    "upstream {tn} slow: POST http://{tn}:{tp}/v1/{} took {}ms (timeout 5000ms) req_id={}",
                    lower(&tn),
                    ms(text::dur(r, p50).max(1500.0)),
                    r.hex(16)
                );
                self.log(at, x, "warn", msg, Some(f));
            }
        }
        let srcs = self.involve(&[t], deps.iter().copied());
        self.reserve(deps);
        Some((rec, t, srcs))
    }
    pub(super) fn oom_death(&mut self, r: &mut Rng, w: Window) -> Placed {
        let Window { f, t0, d, .. } = w;
        let quiet = self.all_where(|i, s| {
            matches!(
                s.role.as_str(),
                "memory" | "storage" | "gpu_worker" | "perception" | "cache"
            ) && self.not_called_by_agents(i)
        });
        let quiet_any = self.all_where(|i, _| self.not_called_by_agents(i));
        let t = self.choose(r, &[quiet, quiet_any, self.everyone()])?;
        let kill = t0 + (5 * MIN).min(d / 4);
        let to = self.svcs[t].prof.mem_limit * 0.98;
        self.affect(t0, t, f, Fx::MemLeak { t0, t1: kill, to });
        self.oom_kill(r, kill, t, f, "");
        let end = self.watchdog_restart(r, t0 + d, t, f);
        let srcs = self.involve(&[t], self.rec.watchdog);
        Some((end, t, srcs))
    }

    pub(super) fn oom_cascade(&mut self, r: &mut Rng, w: Window) -> Placed {
        let Window { f, t0, d, sc } = w;
        let memory = self
            .all_where(|i, s| s.role == "memory" && (2..=6).contains(&self.dependents(i).len()));
        let some = self.all_where(|i, _| (2..=8).contains(&self.dependents(i).len()));
        let one = self.all_where(|i, _| !self.dependents(i).is_empty());
        let root = self.choose(r, &[memory, some, one])?;
        let kill = t0 + (2 * MIN).min(d * 15 / 100);
        let to = self.svcs[root].prof.mem_limit * 0.98;
        self.affect(t0, root, f, Fx::MemLeak { t0, t1: kill, to });
        self.oom_kill(r, kill, root, f, "");
        let secs =
            |r: &mut Rng, lo: f64, hi: f64| (r.range(lo, hi) * sc.max(0.02) * SEC as f64) as i64;
        // (service, its failed upstream, degraded at, died at)
        let mut affected: Vec<(usize, usize, i64, Option<i64>)> = Vec::new();
        let mut seen: BTreeSet<usize> = BTreeSet::from([root]);
        let mut level1 = self.dependents(root);
        level1.retain(|i| !seen.contains(i));
        r.shuffle(&mut level1);
        level1.truncate(5);
        let dying = level1.len().div_ceil(2);
        let mut last = kill;
        for (k, &x) in level1.iter().enumerate() {
            seen.insert(x);
            let deg = kill + secs(r, 5.0, 45.0);
            let rootn = self.svcs[root].name.clone();
            self.degraded(
                deg,
                x,
                "upstream_unavailable",
                vec![("upstream", s(rootn))],
                f,
            );
            self.affect(deg, x, f, Fx::Upstream { dep: root });
            let died = if k < dying {
                let die = deg + secs(r, 60.0, 180.0);
                let why = format!(
                    " after retry queue for {} grew to {} requests",
                    self.svcs[root].name,
                    r.int(5000, 90000)
                );
                self.oom_kill(r, die, x, f, &why);
                last = last.max(die);
                Some(die)
            } else {
                None
            };
            affected.push((x, root, deg, died));
        }
        for (x, _, _, died) in affected.clone() {
            let Some(die) = died else { continue };
            for y in self.dependents(x) {
                if seen.contains(&y) || seen.len() >= 10 {
                    continue;
                }
                seen.insert(y);
                let deg = die + secs(r, 5.0, 45.0);
                let xn = self.svcs[x].name.clone();
                self.degraded(deg, y, "upstream_unavailable", vec![("upstream", s(xn))], f);
                self.affect(deg, y, f, Fx::Upstream { dep: x });
                last = last.max(deg);
                affected.push((y, x, deg, None));
            }
        }
        // Recovery: the root first, then the dead in dependency order, then
        // the degraded once their upstream answers again.
        let mut healthy: BTreeMap<usize, i64> = BTreeMap::new();
        let back = (t0 + d).max(last + 10 * SEC);
        healthy.insert(root, self.watchdog_restart(r, back, root, f));
        let mut end = healthy[&root];
        for &(x, up, _, died) in &affected {
            if died.is_some() {
                let after = healthy.get(&up).copied().unwrap_or(end) + r.int(SEC, 5 * SEC);
                let h = self.watchdog_restart(r, after, x, f);
                healthy.insert(x, h);
                end = end.max(h);
            }
        }
        for &(x, up, deg, died) in &affected {
            if died.is_none() {
                let at = healthy.get(&up).copied().unwrap_or(end) + r.int(2 * SEC, 10 * SEC);
                self.end_effect(at, x);
                self.recovered(at, x, deg, f);
                end = end.max(at);
            }
        }
        let all: Vec<usize> = seen.iter().copied().collect();
        let srcs = self.involve(&all, self.rec.watchdog);
        Some((end, root, srcs))
    }
    pub(super) fn vram_pressure(&mut self, r: &mut Rng, w: Window) -> Placed {
        let Window { f, t0, d, sc } = w;
        let gpus = self.all_where(|_, s| s.role == "gpu_worker");
        let g = self.choose(r, &[gpus])?;
        let pct = r.range(94.0, 97.0);
        self.affect(t0, g, f, Fx::Vram { pct });
        let t1 = t0 + d;
        self.end_effect(t1, g);
        let deg = t0 + (r.range(10.0, 40.0) * sc * SEC as f64) as i64;
        let first = format!(
            "CUDA memory pressure: allocated {:.1}GiB / 16.0GiB ({pct:.0}%), evicting {} KV cache blocks",
            16.0 * pct / 100.0,
            r.int(8, 512)
        );
        self.log(deg, g, "warn", first, Some(f));
        self.degraded(
            deg,
            g,
            "vram_pressure",
            vec![("vram_pct", Scalar::Float(rd(pct, 1)))],
            f,
        );
        let rec = t1 + (r.range(5.0, 20.0) * sc * SEC as f64) as i64;
        self.recovered(rec, g, deg, f);
        let srcs = self.involve(&[g], None);
        Some((rec, g, srcs))
    }
}
