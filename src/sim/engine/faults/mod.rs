//! Fault planning: when each fault happens, which services it picks, and the
//! symptoms several fault scripts share. The scripts themselves live in the
//! child modules, grouped by what goes wrong.

use super::queue::Act;
use super::{s, Simulation, HOUR, MIN, SEC};
use crate::event::Scalar;
use crate::sim::fault::{Fault, FaultKind, FaultSpec};
use crate::sim::graphs::{self, GRAPHS};
use crate::sim::rng::Rng;
use crate::sim::service::{Deps, Effect, Fx, Svc};
use std::collections::{BTreeMap, BTreeSet};

mod resources;
mod rollouts;
mod topology;

/// A placed fault's end (its last symptom), its root (the service it hit
/// first, see `Fault::root`) and the sources it labels; `None` when no
/// service of the registry can host it.
type Placed = Option<(i64, usize, BTreeSet<String>)>;

/// Where fault `f` is to happen: from `t0` for `d` ms, `sc` times its
/// nominal length (the scripts shrink their delays by it).
#[derive(Clone, Copy)]
struct Window {
    f: usize,
    t0: i64,
    d: i64,
    sc: f64,
}

impl Simulation {
    /// Spreads the faults over the run after its first 10% (and after the
    /// boot: a fault needs a running OS to break), one time slot each.
    pub(super) fn plan_faults(&mut self, spec: &FaultSpec, seed: u64, booted: i64) {
        let kinds: Vec<FaultKind> = match spec {
            FaultSpec::None => Vec::new(),
            FaultSpec::List(v) => v.clone(),
            FaultSpec::All => {
                let mut r = Rng::stream(seed, "fault-order");
                let mut v: Vec<FaultKind> = FaultKind::ALL
                    .into_iter()
                    .filter(|k| *k != FaultKind::ArchChange)
                    .collect();
                r.shuffle(&mut v);
                // Last: after it the OS *is* different, and everything earlier
                // should be judged against the architecture the model learnt.
                v.push(FaultKind::ArchChange);
                v
            }
        };
        if kinds.is_empty() {
            return;
        }
        let span = self.end - self.start;
        let lo = (self.start + span / 10).max(booted + 30 * SEC);
        let hi = self.start + span * 95 / 100;
        let slot = (hi - lo) / kinds.len() as i64;
        if slot < 5 * SEC {
            let slots = kinds.len() as f64 * 5.0 * SEC as f64;
            let boot = (booted + 30 * SEC - self.start) as f64;
            let need = ((boot + slots) / 0.95).max(slots / 0.85) / HOUR as f64;
            self.warnings.push(format!(
                "the run is too short to inject {} fault(s) after the boot (at least {:.2} hours needed); none injected",
                kinds.len(),
                (need * 100.0).ceil() / 100.0
            ));
            return;
        }
        let mut counts: BTreeMap<FaultKind, usize> = BTreeMap::new();
        for (k, &kind) in kinds.iter().enumerate() {
            let n = counts.entry(kind).or_insert(0);
            let id = format!("{kind}-{n}");
            *n += 1;
            let mut r = Rng::stream(seed, &id);
            let s0 = lo + k as i64 * slot;
            let t0 = s0 + (slot as f64 * r.range(0.05, 0.25)) as i64;
            let d = kind.nominal_ms().min(slot * 6 / 10).max(SEC);
            self.plan.push(Fault {
                id,
                kind,
                start_ms: t0,
                end_ms: t0 + d,
                sources: Vec::new(),
                root: None,
                registry_after: None,
            });
        }
        // Targets are chosen most-particular first (the latency spike wants
        // AitherMind, VRAM pressure a GPU worker), whatever the time order.
        let mut order: Vec<usize> = (0..self.plan.len()).collect();
        order.sort_by_key(|&f| (choice_rank(self.plan[f].kind), f));
        let mut placed = vec![false; self.plan.len()];
        for f in order {
            let Fault {
                id,
                kind,
                start_ms: t0,
                end_ms,
                ..
            } = self.plan[f].clone();
            let d = end_ms - t0;
            let sc = d as f64 / kind.nominal_ms() as f64;
            let mut r = Rng::stream(seed ^ 0x5EED, &id);
            let w = Window { f, t0, d, sc };
            let planned = match kind {
                FaultKind::LatencySpike => self.latency_spike(&mut r, w),
                FaultKind::OomDeath => self.oom_death(&mut r, w),
                FaultKind::OomCascade => self.oom_cascade(&mut r, w),
                FaultKind::PortConflict => self.port_conflict(&mut r, w),
                FaultKind::LocalhostTrap => self.localhost_trap(&mut r, w),
                FaultKind::CrashLoop => self.crash_loop(&mut r, w),
                FaultKind::VramPressure => self.vram_pressure(&mut r, w),
                FaultKind::StartupOrder => self.startup_order(&mut r, w),
                FaultKind::NewDependency => self.new_dependency(&mut r, w),
                FaultKind::ArchChange => self.arch_change(&mut r, w),
            };
            match planned {
                Some((end, root, sources)) => {
                    // Traces started inside the window end up to ~30 s later.
                    let traced = self
                        .trace_agents
                        .iter()
                        .any(|&a| sources.contains(&self.svcs[a].name));
                    let end = if traced { end + MIN } else { end };
                    let names: Vec<String> = sources.into_iter().collect();
                    let root = self.svcs[root].name.clone();
                    let fault = &mut self.plan[f];
                    fault.end_ms = end.min(self.end).max(fault.start_ms);
                    fault.sources = names;
                    fault.root = Some(root);
                    placed[f] = true;
                }
                None => self.warnings.push(format!(
                    "{id}: no service in this registry can host fault kind {kind}; skipped"
                )),
            }
        }
        self.faults = (0..self.plan.len())
            .filter(|&f| placed[f])
            .map(|f| self.plan[f].clone())
            .collect();
    }

    /// A random member of the first non-empty preference list, avoiding
    /// services other faults already use.
    fn choose(&self, r: &mut Rng, prefs: &[Vec<usize>]) -> Option<usize> {
        for p in prefs {
            let free: Vec<usize> = p
                .iter()
                .copied()
                .filter(|i| !self.reserved.contains(i) && !self.cron_targets.contains(i))
                .collect();
            if let Some(&i) = r.pick(&free) {
                return Some(i);
            }
        }
        prefs.iter().rev().find_map(|p| r.pick(p).copied())
    }

    fn all_where(&self, pred: impl Fn(usize, &Svc) -> bool) -> Vec<usize> {
        (0..self.svcs.len())
            .filter(|&i| self.svcs[i].exists && pred(i, &self.svcs[i]))
            .collect()
    }

    fn everyone(&self) -> Vec<usize> {
        self.all_where(|_, _| true)
    }

    fn names(&self, idx: impl IntoIterator<Item = usize>) -> BTreeSet<String> {
        idx.into_iter().map(|i| self.svcs[i].name.clone()).collect()
    }

    /// The sources a fault on `targets` labels (the targets, the `witnesses`
    /// that record it, the reasoning agents calling the targets); the targets
    /// are reserved for it.
    fn involve(
        &mut self,
        targets: &[usize],
        witnesses: impl IntoIterator<Item = usize>,
    ) -> BTreeSet<String> {
        let mut srcs = self.names(targets.iter().copied());
        srcs.extend(self.names(witnesses));
        srcs.extend(self.names(self.callers(targets)));
        self.reserve(targets.iter().copied());
        srcs
    }

    fn reserve(&mut self, idx: impl IntoIterator<Item = usize>) {
        self.reserved.extend(idx);
    }

    fn name_is(&self, n: &str) -> Vec<usize> {
        self.all_where(|_, s| s.name == n)
    }

    /// The graphs whose snapshots will carry fault `f`'s edges once `change`
    /// is made (the change is undone before returning).
    fn graph_sources(&mut self, f: usize, change: impl FnOnce(&mut Self)) -> Vec<String> {
        let saved: Vec<(bool, Deps)> = self
            .svcs
            .iter()
            .map(|s| (s.exists, s.deps.clone()))
            .collect();
        change(self);
        let out = (0..GRAPHS.len())
            .filter(|&g| {
                graphs::edges(g, &self.svcs)
                    .iter()
                    .any(|e| e.label == Some(f))
            })
            .map(|g| GRAPHS[g].to_string())
            .collect();
        for (s, (exists, deps)) in self.svcs.iter_mut().zip(saved) {
            s.exists = exists;
            s.deps = deps;
        }
        out
    }

    fn degraded(&mut self, t: i64, i: usize, reason: &str, extra: Vec<(&str, Scalar)>, f: usize) {
        let mut kv = vec![("reason", s(reason))];
        kv.extend(extra);
        self.flux(t, i, "degraded", "degraded", kv, Some(f));
    }

    fn recovered(&mut self, t: i64, i: usize, since: i64, f: usize) {
        self.flux(
            t,
            i,
            "recovered",
            "healthy",
            vec![("after_s", Scalar::Int((t - since).max(0) / SEC))],
            Some(f),
        );
    }

    fn oom_kill(&mut self, r: &mut Rng, t: i64, i: usize, f: usize, why: &str) {
        let limit = self.svcs[i].prof.mem_limit;
        let rss = limit + r.range(0.5, 40.0);
        self.log(
            t,
            i,
            "error",
            format!(
                "OOMKilled: container {} exceeded memory limit {limit:.0}MiB (rss={rss:.0}MiB){why}; exit code 137",
                self.svcs[i].name
            ),
            Some(f),
        );
        self.flux(
            t,
            i,
            "killed",
            "dead",
            vec![
                ("reason", s("OOMKilled")),
                ("exit_code", Scalar::Int(137)),
                ("rss_mb", Scalar::Int(rss as i64)),
            ],
            Some(f),
        );
        self.end_effect(t, i);
        self.task(t, Act::Up(i, false, Some(f)));
    }

    /// Fault `f`'s effect `fx` on service `i` from `t` on.
    fn affect(&mut self, t: i64, i: usize, f: usize, fx: Fx) {
        self.task(t, Act::Effect(i, Some(Effect { fault: f, fx })));
    }

    /// Service `i` back to normal at `t`.
    fn end_effect(&mut self, t: i64, i: usize) {
        self.task(t, Act::Effect(i, None));
    }

    /// Who the audit trail says restarted a service.
    fn watchdog_name(&self) -> String {
        self.rec
            .watchdog
            .map(|w| self.svcs[w].name.clone())
            .unwrap_or_else(|| "watchdog".into())
    }

    /// The watchdog bringing a service back after a fault; returns when healthy.
    fn watchdog_restart(&mut self, r: &mut Rng, t: i64, i: usize, f: usize) -> i64 {
        let wd = self.rec.watchdog;
        let actor = self.watchdog_name();
        let target = self.svcs[i].name.clone();
        self.chron(t, wd, &actor, "restart", &target, "success", Some(f));
        self.start_after(r, i, t, (500, 2000), Some(f))
    }
    fn not_called_by_agents(&self, i: usize) -> bool {
        !self
            .trace_agents
            .iter()
            .any(|&a| a == i || self.calls(a).contains(&i))
    }
    fn ordinary_target(&self) -> Vec<Vec<usize>> {
        vec![
            self.all_where(|_, s| {
                (2..=10).contains(&s.layer)
                    && !matches!(s.role.as_str(), "orchestrator" | "gpu_worker")
            }),
            self.all_where(|_, s| s.role != "orchestrator"),
            self.everyone(),
        ]
    }
}

/// Which faults pick their targets first: the ones with the fewest candidates.
fn choice_rank(k: FaultKind) -> u8 {
    match k {
        FaultKind::LatencySpike => 0,
        FaultKind::VramPressure => 1,
        FaultKind::ArchChange => 2,
        FaultKind::OomCascade => 3,
        FaultKind::StartupOrder => 4,
        FaultKind::LocalhostTrap => 5,
        FaultKind::OomDeath => 6,
        FaultKind::PortConflict => 7,
        FaultKind::CrashLoop => 8,
        FaultKind::NewDependency => 9,
    }
}
