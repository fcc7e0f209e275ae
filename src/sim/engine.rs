//! The simulated OS as a discrete-event simulation that yields [`Event`]s in
//! time order.
//!
//! Two queues drive it: *tasks* (a service's next pulse, the next deploy, a
//! fault switching an effect on) and *pending events* (already decided, with a
//! timestamp at or after the task that made them, e.g. the remaining steps of
//! a startup). An event is released only when no task could still produce an
//! earlier one, so the stream is ordered without buffering the whole run, and
//! file and live mode can share this one iterator.
//!
//! Faults are planned when the simulation is built: their scripted events
//! (the OOMKilled line, the restart storm, ...) are queued up front, and
//! their *effects* (slow, leaking, refusing, ...) are switched on and off by
//! tasks, so the everyday generators (pulses, logs, traces) produce the
//! fault's symptoms naturally and label exactly the events the fault changed.

use super::fault::{Fault, FaultKind, FaultSpec};
use super::graphs::{self, GRAPHS};
use super::registry_gen;
use super::rng::Rng;
use super::text::{self, lower, ms, LogCtx};
use crate::event::{Body, Event, Phase, Scalar};
use crate::registry::{Registry, Service};
use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, VecDeque};

const SEC: i64 = 1000;
const MIN: i64 = 60 * SEC;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;

/// 2026-01-01T00:00:00Z: a fixed epoch so that outputs are reproducible.
pub const DEFAULT_START_MS: i64 = 1_767_225_600_000;

/// Salt of the per-service profile streams: a service's character (its
/// baseline latency, memory, pulse interval) depends on its name only, so a
/// model trained on one seed's run meets the same OS in another seed's run.
const PROFILE_SEED: u64 = 0x0050_F11E;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The OS (deploy/services.yaml, or [`registry_gen::default_registry`]).
    pub registry: Registry,
    /// Simulated duration.
    pub hours: f64,
    pub seed: u64,
    pub faults: FaultSpec,
    /// Keep a dependency-closed subset of at most this many services.
    pub services: Option<usize>,
    /// Unix ms of the simulation's first instant.
    pub start_ms: i64,
}

impl SimConfig {
    /// One healthy hour of the default OS from the fixed epoch, seed 1, all faults.
    pub fn new(registry: Registry) -> SimConfig {
        SimConfig {
            registry,
            hours: 1.0,
            seed: 1,
            faults: FaultSpec::All,
            services: None,
            start_ms: DEFAULT_START_MS,
        }
    }
}

/// A service's character: stable per name.
#[derive(Debug, Clone)]
pub(super) struct Profile {
    pub pulse_ms: i64,
    pub cpu: f64,
    pub mem: f64,
    pub mem_limit: f64,
    pub rps: f64,
    pub p50: f64,
    pub tail: f64,
    pub err: f64,
    pub vram: Option<f64>,
    pub io: Option<f64>,
    /// Mean time between log lines at full load.
    pub log_ms: f64,
    pub startup_s: (f64, f64),
    /// Mean time between flux work events (job completed, ...), if any.
    pub work_ms: Option<f64>,
}

fn profile(name: &str, role: &str) -> Profile {
    let mut r = Rng::stream(PROFILE_SEED, name);
    let pulse_ms = 10_000 + 1000 * r.int(0, 50);
    let (cpu, mem, rps, p50, log_s, startup_s) = match role {
        "gpu_worker" => (
            r.range(25.0, 45.0),
            r.range(6000.0, 14000.0),
            r.range(0.5, 4.0),
            r.range(150.0, 600.0),
            25.0,
            (12.0, 40.0),
        ),
        "orchestrator" => (
            r.range(20.0, 35.0),
            r.range(1500.0, 3000.0),
            r.range(2.0, 6.0),
            r.range(80.0, 140.0),
            15.0,
            (3.0, 8.0),
        ),
        "cognition" => (
            r.range(15.0, 30.0),
            r.range(800.0, 2500.0),
            r.range(1.0, 5.0),
            r.range(120.0, 300.0),
            40.0,
            (2.0, 6.0),
        ),
        "memory" => (
            r.range(10.0, 25.0),
            r.range(1200.0, 4000.0),
            r.range(5.0, 40.0),
            r.range(8.0, 40.0),
            30.0,
            (2.0, 5.0),
        ),
        "storage" | "cache" => (
            r.range(8.0, 30.0),
            r.range(500.0, 8000.0),
            r.range(20.0, 300.0),
            r.range(0.8, 8.0),
            45.0,
            (1.0, 4.0),
        ),
        "bus" => (
            r.range(10.0, 30.0),
            r.range(200.0, 1200.0),
            r.range(200.0, 3000.0),
            r.range(0.3, 3.0),
            60.0,
            (1.0, 3.0),
        ),
        "api" => (
            r.range(10.0, 30.0),
            r.range(300.0, 900.0),
            r.range(10.0, 120.0),
            r.range(15.0, 60.0),
            12.0,
            (1.5, 4.0),
        ),
        "ui" | "dashboard" => (
            r.range(3.0, 12.0),
            r.range(150.0, 500.0),
            r.range(2.0, 30.0),
            r.range(20.0, 80.0),
            35.0,
            (1.0, 3.0),
        ),
        "agent" => (
            r.range(5.0, 20.0),
            r.range(400.0, 1500.0),
            r.range(0.2, 2.0),
            r.range(300.0, 1500.0),
            60.0,
            (2.0, 5.0),
        ),
        "tool" => (
            r.range(3.0, 15.0),
            r.range(150.0, 800.0),
            r.range(0.5, 10.0),
            r.range(30.0, 300.0),
            70.0,
            (1.0, 3.0),
        ),
        "perception" => (
            r.range(10.0, 35.0),
            r.range(600.0, 2500.0),
            r.range(1.0, 20.0),
            r.range(30.0, 150.0),
            45.0,
            (2.0, 6.0),
        ),
        "security" | "audit" | "config" => (
            r.range(3.0, 12.0),
            r.range(150.0, 600.0),
            r.range(5.0, 80.0),
            r.range(2.0, 20.0),
            45.0,
            (1.0, 3.0),
        ),
        _ => (
            r.range(5.0, 20.0),
            r.range(200.0, 1000.0),
            r.range(1.0, 50.0),
            r.range(10.0, 80.0),
            60.0,
            (1.0, 4.0),
        ),
    };
    // The article's AitherMind answers in ~200 ms before its spike to 3 s.
    let p50 = if name == "AitherMind" {
        r.range(192.0, 208.0)
    } else {
        p50
    };
    let mem_limit = ((mem * r.range(1.6, 2.2)) / 256.0).ceil() * 256.0;
    Profile {
        pulse_ms,
        cpu,
        mem,
        mem_limit,
        rps,
        p50,
        tail: r.range(2.0, 3.5),
        err: r.range(0.0005, 0.008),
        vram: (role == "gpu_worker").then(|| r.range(40.0, 58.0)),
        io: matches!(role, "storage" | "memory").then(|| r.range(2.0, 30.0)),
        log_ms: log_s * 1000.0,
        startup_s,
        work_ms: match role {
            "gpu_worker" => Some(45_000.0),
            "memory" => Some(600_000.0),
            "scheduler" => Some(120_000.0),
            _ => None,
        },
    }
}

/// A service's dependencies, each with the fault that added it (if one did).
type Deps = Vec<(usize, Option<usize>)>;

/// What a fault does to a service while it is on.
#[derive(Debug, Clone)]
pub(super) enum Fx {
    /// Median latency forced to this many ms.
    Latency { p50: f64 },
    /// Memory climbing to the limit between t0 and t1 (the OOM is scripted).
    MemLeak { t0: i64, t1: i64, to: f64 },
    /// Calls to `dep` go to 127.0.0.1 and are refused.
    Refused { dep: usize },
    /// The dependency `dep` is down; requests fail.
    Upstream { dep: usize },
    /// GPU memory held near this percentage.
    Vram { pct: f64 },
}

#[derive(Debug, Clone)]
pub(super) struct Effect {
    pub fault: usize,
    pub fx: Fx,
}

/// A service of the simulated OS and its running state.
pub(super) struct Svc {
    pub name: String,
    pub layer: u8,
    pub port: u16,
    pub role: String,
    /// Current dependencies; the second field is the fault that added the edge.
    pub deps: Vec<(usize, Option<usize>)>,
    pub prof: Profile,
    rng: Rng,
    /// False for a service an architecture change has not created yet.
    pub exists: bool,
    up: bool,
    /// The fault that took the service down, if one did.
    down_fault: Option<usize>,
    up_since: i64,
    mem: f64,
    burst: Option<(i64, f64)>,
    effect: Option<Effect>,
    /// Every event of this service belongs to this fault (a service an
    /// architecture change created).
    pub label_all: Option<usize>,
    busy_until: i64,
    version: (u32, u32, u32),
    pid: i64,
    in_cron: bool,
    hb_seq: i64,
    log_chain: u32,
}

enum Act {
    Pulse(usize),
    /// A log line of service i; the chain number drops stale chains.
    Log(usize, u32),
    Heartbeat(usize),
    Work(usize),
    Trace(usize),
    Chronicle,
    Deploy,
    Rolling,
    Burst,
    Cron,
    CronEnd,
    Graph(usize),
    Up(usize, bool, Option<usize>),
    Effect(usize, Option<Effect>),
    Deps(usize, Vec<(usize, Option<usize>)>),
    Exists(usize),
}

struct Task {
    t: i64,
    seq: u64,
    act: Act,
}

impl PartialEq for Task {
    fn eq(&self, o: &Self) -> bool {
        (self.t, self.seq) == (o.t, o.seq)
    }
}
impl Eq for Task {}
impl PartialOrd for Task {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Task {
    fn cmp(&self, o: &Self) -> Ordering {
        (self.t, self.seq).cmp(&(o.t, o.seq))
    }
}

struct Pending {
    seq: u64,
    ev: Event,
}

impl PartialEq for Pending {
    fn eq(&self, o: &Self) -> bool {
        (self.ev.ts, self.seq) == (o.ev.ts, o.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Pending {
    fn cmp(&self, o: &Self) -> Ordering {
        (self.ev.ts, self.seq).cmp(&(o.ev.ts, o.seq))
    }
}

/// Services that write the audit trail (the chronicle's sources).
#[derive(Default)]
struct Recorders {
    auth: Option<usize>,
    vault: Option<usize>,
    policy: Option<usize>,
    config: Option<usize>,
    deploy: Option<usize>,
    scheduler: Option<usize>,
    watchdog: Option<usize>,
    memory: Option<usize>,
    backup: Option<usize>,
}

/// How a startup goes.
enum Start {
    Normal,
    /// Started before this dependency: the startup-order fault.
    MissingDep(usize),
}

/// The simulation: an iterator over the OS's events in time order.
pub struct Simulation {
    start: i64,
    end: i64,
    now: i64,
    running: bool,
    svcs: Vec<Svc>,
    rng: Rng,
    tasks: BinaryHeap<Reverse<Task>>,
    pending: BinaryHeap<Reverse<Pending>>,
    ready: VecDeque<Event>,
    seq: u64,
    /// Every fault asked for, by index (effects and tasks refer to these).
    plan: Vec<Fault>,
    /// The faults that could be placed, in time order.
    faults: Vec<Fault>,
    rec: Recorders,
    trace_agents: Vec<usize>,
    agents: Vec<usize>,
    cron_targets: Vec<usize>,
    cron_until: i64,
    /// Services a fault involves: everyday episodes (deploys, bursts) leave them alone.
    reserved: BTreeSet<usize>,
    registry: Registry,
    registry_after: Option<Registry>,
    warnings: Vec<String>,
}

/// Builds the simulation for `cfg`.
pub fn generate(cfg: &SimConfig) -> anyhow::Result<Simulation> {
    Simulation::new(cfg)
}

/// The commit a version was built from: fixed per (service, version), as a
/// real build is, so restarts of one version print one hash.
fn commit(name: &str, version: &str) -> String {
    let h = super::rng::fnv1a(&format!("{name}@{version}"));
    format!("{:07x}", h & 0x0fff_ffff)
}

fn rd(x: f64, decimals: i32) -> f64 {
    let p = 10f64.powi(decimals);
    (x * p).round() / p
}

/// Daily load cycle: 1.0 at 14:00 UTC, 0.2 at 02:00 UTC.
fn load(ts: i64) -> f64 {
    let h = ts.rem_euclid(DAY) as f64 / HOUR as f64;
    0.6 + 0.4 * (std::f64::consts::TAU * (h - 14.0) / 24.0).cos()
}

fn attrs(kv: Vec<(&str, Scalar)>) -> BTreeMap<String, Scalar> {
    kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

fn s(v: impl Into<String>) -> Scalar {
    Scalar::Str(v.into())
}

impl Simulation {
    pub fn new(cfg: &SimConfig) -> anyhow::Result<Simulation> {
        anyhow::ensure!(
            cfg.hours.is_finite() && cfg.hours > 0.0 && cfg.hours <= 24.0 * 366.0,
            "--hours must be a positive number of hours up to a year, got {}",
            cfg.hours
        );
        anyhow::ensure!(cfg.start_ms >= 0, "--start-ms must not be negative");
        anyhow::ensure!(cfg.services != Some(0), "--services must be at least 1");
        cfg.registry.check()?;
        let registry = match cfg.services {
            Some(n) => registry_gen::subset(&cfg.registry, n),
            None => cfg.registry.clone(),
        };
        anyhow::ensure!(
            !registry.services.is_empty(),
            "the registry has no services"
        );
        let start = cfg.start_ms;
        let end = start + (cfg.hours * HOUR as f64).round().max(1.0) as i64;
        let index: BTreeMap<&str, usize> = registry
            .services
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.as_str(), i))
            .collect();
        let svcs: Vec<Svc> = registry
            .services
            .iter()
            .map(|s| new_svc(s, &index, cfg.seed, start))
            .collect();
        let mut sim = Simulation {
            start,
            end,
            now: start,
            running: false,
            svcs,
            rng: Rng::stream(cfg.seed, "os"),
            tasks: BinaryHeap::new(),
            pending: BinaryHeap::new(),
            ready: VecDeque::new(),
            seq: 0,
            plan: Vec::new(),
            faults: Vec::new(),
            rec: Recorders::default(),
            trace_agents: Vec::new(),
            agents: Vec::new(),
            cron_targets: Vec::new(),
            cron_until: i64::MIN,
            reserved: BTreeSet::new(),
            registry,
            registry_after: None,
            warnings: Vec::new(),
        };
        sim.find_roles();
        let booted = sim.boot();
        sim.schedule_everyday();
        sim.plan_faults(&cfg.faults, cfg.seed, booted);
        Ok(sim)
    }

    /// The injected faults, known before the first event.
    pub fn faults(&self) -> &[Fault] {
        &self.faults
    }

    /// The registry the run starts with (the `--services` subset if one was asked).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The registry after an architecture change, if one is injected.
    pub fn registry_after(&self) -> Option<&Registry> {
        self.registry_after.as_ref()
    }

    pub fn start_ms(&self) -> i64 {
        self.start
    }

    /// First instant after the run (events have `ts < end_ms`).
    pub fn end_ms(&self) -> i64 {
        self.end
    }

    /// Faults that were asked for but could not be placed (e.g. no GPU worker).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    // ---- queues -------------------------------------------------------

    fn task(&mut self, t: i64, act: Act) {
        if t >= self.end {
            return;
        }
        self.seq += 1;
        let t = t.max(self.now);
        self.tasks.push(Reverse(Task {
            t,
            seq: self.seq,
            act,
        }));
    }

    fn push(&mut self, mut ev: Event) {
        if ev.ts >= self.end {
            return;
        }
        ev.ts = ev.ts.max(self.now);
        if self.running && ev.ts == self.now {
            self.ready.push_back(ev);
        } else {
            self.seq += 1;
            self.pending.push(Reverse(Pending { seq: self.seq, ev }));
        }
    }

    fn label(&self, f: Option<usize>) -> Option<String> {
        f.and_then(|f| self.plan.get(f)).map(|f| f.id.clone())
    }

    fn emit(&mut self, ts: i64, source: &str, body: Body, label: Option<usize>) {
        let ev = Event {
            ts,
            source: source.to_string(),
            key: source.to_string(),
            body,
            label: self.label(label),
        };
        self.push(ev);
    }

    fn svc_emit(&mut self, ts: i64, i: usize, body: Body, label: Option<usize>) {
        let label = label.or(self.svcs[i].label_all);
        let name = self.svcs[i].name.clone();
        self.emit(ts, &name, body, label);
    }

    fn flux(
        &mut self,
        ts: i64,
        i: usize,
        event: &str,
        state: &str,
        kv: Vec<(&str, Scalar)>,
        label: Option<usize>,
    ) {
        let body = Body::Flux {
            event: event.to_string(),
            state: Some(state.to_string()),
            attrs: attrs(kv),
        };
        self.svc_emit(ts, i, body, label);
    }

    fn log(&mut self, ts: i64, i: usize, level: &str, message: String, label: Option<usize>) {
        let body = Body::Log {
            message,
            level: Some(level.to_string()),
        };
        self.svc_emit(ts, i, body, label);
    }

    #[allow(clippy::too_many_arguments)]
    fn chron(
        &mut self,
        ts: i64,
        rec: Option<usize>,
        actor: &str,
        action: &str,
        target: &str,
        outcome: &str,
        label: Option<usize>,
    ) {
        let Some(i) = rec else { return };
        let body = Body::Chronicle {
            actor: actor.to_string(),
            action: action.to_string(),
            target: target.to_string(),
            outcome: outcome.to_string(),
        };
        self.svc_emit(ts, i, body, label);
    }

    fn take_rng(&mut self) -> Rng {
        std::mem::replace(&mut self.rng, Rng::new(0))
    }

    fn take_svc_rng(&mut self, i: usize) -> Rng {
        std::mem::replace(&mut self.svcs[i].rng, Rng::new(0))
    }

    // ---- the OS's shape ----------------------------------------------

    fn find_svc(&self, names: &[&str], roles: &[&str]) -> Option<usize> {
        let by_name = names
            .iter()
            .find_map(|n| self.svcs.iter().position(|s| s.name == *n));
        by_name
            .or_else(|| {
                roles
                    .iter()
                    .find_map(|r| self.svcs.iter().position(|s| s.role == *r))
            })
            .or_else(|| self.svcs.iter().position(|s| s.role == "audit"))
            .or(if self.svcs.is_empty() { None } else { Some(0) })
    }

    fn find_roles(&mut self) {
        self.rec = Recorders {
            auth: self.find_svc(&["AitherAuth"], &["security"]),
            vault: self.find_svc(&["AitherVault"], &["security"]),
            policy: self.find_svc(&["AitherPolicy"], &["security"]),
            config: self.find_svc(&["AitherConfig"], &["config"]),
            deploy: self.find_svc(&["AitherDeploy"], &["deploy"]),
            scheduler: self.find_svc(&["AitherScheduler"], &["scheduler"]),
            watchdog: self.find_svc(&["AitherWatchdog"], &["supervisor"]),
            memory: self.find_svc(&["AitherMemory"], &["memory"]),
            backup: self.svcs.iter().position(|s| s.role == "cron"),
        };
        self.trace_agents = (0..self.svcs.len())
            .filter(|&i| matches!(self.svcs[i].role.as_str(), "orchestrator" | "agent"))
            .collect();
        self.agents = (0..self.svcs.len())
            .filter(|&i| self.svcs[i].role == "agent")
            .collect();
        let named = [
            "AitherPostgres",
            "AitherVectorStore",
            "AitherSearchIndex",
            "AitherMinIO",
            "AitherBackup",
        ];
        self.cron_targets = named
            .iter()
            .filter_map(|n| self.svcs.iter().position(|s| s.name == *n))
            .collect();
        if self.cron_targets.is_empty() {
            self.cron_targets = (0..self.svcs.len())
                .filter(|&i| self.svcs[i].role == "storage")
                .take(3)
                .collect();
        }
        let recs = [
            self.rec.auth,
            self.rec.vault,
            self.rec.policy,
            self.rec.config,
            self.rec.deploy,
            self.rec.scheduler,
            self.rec.watchdog,
            self.rec.backup,
        ];
        self.reserved.extend(recs.into_iter().flatten());
    }

    fn dependents(&self, i: usize) -> Vec<usize> {
        (0..self.svcs.len())
            .filter(|&j| self.svcs[j].exists && self.svcs[j].deps.iter().any(|&(d, _)| d == i))
            .collect()
    }

    /// What a reasoning agent calls: its dependencies, and for the
    /// orchestrator every agent it may delegate to.
    fn calls(&self, a: usize) -> Vec<usize> {
        let mut c: Vec<usize> = self.svcs[a].deps.iter().map(|&(d, _)| d).collect();
        if self.svcs[a].role == "orchestrator" {
            c.extend(self.agents.iter().copied());
        }
        c
    }

    /// Reasoning agents whose traces a fault on `affected` shows up in.
    fn callers(&self, affected: &[usize]) -> Vec<usize> {
        self.trace_agents
            .iter()
            .copied()
            .filter(|&a| {
                !affected.contains(&a) && self.calls(a).iter().any(|c| affected.contains(c))
            })
            .collect()
    }

    /// Dependencies first; ties by layer then registry order. A cycle (only
    /// possible in a hand-edited registry) is broken rather than refused.
    fn topo_order(&self) -> Vec<usize> {
        let n = self.svcs.len();
        let mut indeg: Vec<usize> = self.svcs.iter().map(|s| s.deps.len()).collect();
        let mut done = vec![false; n];
        let mut order = Vec::with_capacity(n);
        while order.len() < n {
            let next = (0..n)
                .filter(|&i| !done[i] && indeg[i] == 0)
                .min_by_key(|&i| (self.svcs[i].layer, i))
                .or_else(|| (0..n).filter(|&i| !done[i]).min_by_key(|&i| (indeg[i], i)));
            let Some(i) = next else { break };
            done[i] = true;
            order.push(i);
            for j in 0..n {
                if !done[j] {
                    let k = self.svcs[j].deps.iter().filter(|&&(d, _)| d == i).count();
                    indeg[j] = indeg[j].saturating_sub(k);
                }
            }
        }
        order
    }

    // ---- lifecycle ----------------------------------------------------

    fn startup_ms(&self, r: &mut Rng, i: usize) -> i64 {
        let (lo, hi) = self.svcs[i].prof.startup_s;
        (r.range(lo, hi) * SEC as f64) as i64
    }

    /// A service starting: the flux sequence starting, config_loaded,
    /// deps_ready, listening, healthy (in that fixed order) with its logs.
    /// Returns when it is healthy.
    fn startup(
        &mut self,
        i: usize,
        t: i64,
        dur: i64,
        label: Option<usize>,
        how: Start,
        r: &mut Rng,
    ) -> i64 {
        let dur = dur.max(500);
        let name = self.svcs[i].name.clone();
        let port = self.svcs[i].port;
        let (a, b, c) = self.svcs[i].version;
        let version = format!("v{a}.{b}.{c}");
        let pid = r.int(100, 65000);
        self.svcs[i].pid = pid;
        self.flux(
            t,
            i,
            "starting",
            "starting",
            vec![("version", s(version.clone())), ("pid", Scalar::Int(pid))],
            label,
        );
        self.log(
            t,
            i,
            "info",
            format!(
                "Starting {name} {version} (commit {}) pid={pid}",
                commit(&name, &version)
            ),
            label,
        );
        let t1 = t + dur * 15 / 100;
        let keys = r.int(12, 80);
        self.flux(
            t1,
            i,
            "config_loaded",
            "starting",
            vec![("keys", Scalar::Int(keys))],
            label,
        );
        self.log(
            t1,
            i,
            "debug",
            format!(
                "loaded config /etc/aither/{}.yaml ({keys} keys)",
                lower(&name)
            ),
            label,
        );
        let t2 = t + dur * 45 / 100;
        let deps: Vec<usize> = self.svcs[i].deps.iter().map(|&(d, _)| d).collect();
        match how {
            Start::Normal => {
                self.flux(
                    t2,
                    i,
                    "deps_ready",
                    "starting",
                    vec![("deps", Scalar::Int(deps.len() as i64))],
                    label,
                );
                for (k, &d) in deps.iter().take(3).enumerate() {
                    let msg = format!(
                        "connected to {} at {}:{} in {}ms",
                        self.svcs[d].name,
                        self.svcs[d].name,
                        self.svcs[d].port,
                        ms(r.range(0.8, 40.0))
                    );
                    self.log(t2 + k as i64 * 3, i, "info", msg, label);
                }
            }
            Start::MissingDep(d) => {
                let dn = self.svcs[d].name.clone();
                let dp = self.svcs[d].port;
                self.flux(
                    t2,
                    i,
                    "dependency_unavailable",
                    "starting",
                    vec![("dep", s(dn.clone()))],
                    label,
                );
                self.log(
                    t2,
                    i,
                    "warn",
                    format!(
                        "dependency {dn} not ready ({dn}:{dp}: connect: connection refused), starting in degraded mode"
                    ),
                    label,
                );
            }
        }
        let t3 = t + dur * 80 / 100;
        self.flux(
            t3,
            i,
            "listening",
            "starting",
            vec![("port", Scalar::Int(port.into()))],
            label,
        );
        self.log(t3, i, "info", format!("Listening on 0.0.0.0:{port}"), label);
        let t4 = t + dur;
        self.flux(
            t4,
            i,
            "healthy",
            "healthy",
            vec![("startup_ms", Scalar::Int(dur))],
            label,
        );
        self.log(t4, i, "info", format!("{name} ready in {dur}ms"), label);
        self.task(t4, Act::Up(i, true, None));
        t4
    }

    /// A graceful stop; returns when the process has exited.
    fn stop(&mut self, i: usize, t: i64, reason: &str, label: Option<usize>, r: &mut Rng) -> i64 {
        self.task(t, Act::Up(i, false, label));
        self.flux(
            t,
            i,
            "stopping",
            "stopping",
            vec![("reason", s(reason))],
            label,
        );
        self.log(
            t,
            i,
            "info",
            format!(
                "received SIGTERM ({reason}), draining {} connections",
                r.int(0, 40)
            ),
            label,
        );
        let t1 = t + r.int(300, 2000);
        self.flux(
            t1,
            i,
            "stopped",
            "stopped",
            vec![("exit_code", Scalar::Int(0))],
            label,
        );
        self.log(t1, i, "info", "shutdown complete".to_string(), label);
        t1
    }

    /// The OS boots at the start of the run, every service after its
    /// dependencies. Returns when the last one is healthy.
    fn boot(&mut self) -> i64 {
        let mut r = self.take_rng();
        let order = self.topo_order();
        let mut healthy = vec![self.start; self.svcs.len()];
        for i in order {
            let after = self.svcs[i]
                .deps
                .iter()
                .map(|&(d, _)| healthy[d])
                .max()
                .map(|h| h + r.int(300, 2000))
                .unwrap_or(self.start + r.int(0, 3000));
            let dur = self.startup_ms(&mut r, i);
            healthy[i] = self.startup(i, after, dur, None, Start::Normal, &mut r);
        }
        self.rng = r;
        healthy.into_iter().max().unwrap_or(self.start)
    }

    fn schedule_recurring(&mut self, r: &mut Rng, i: usize, from: i64) {
        let p = self.svcs[i].prof.clone();
        self.task(from + r.int(0, p.pulse_ms), Act::Pulse(i));
        let chain = self.svcs[i].log_chain;
        self.task(from + r.exp(p.log_ms) as i64, Act::Log(i, chain));
        self.task(from + r.int(0, 300 * SEC), Act::Heartbeat(i));
        if let Some(w) = p.work_ms {
            self.task(from + r.exp(w) as i64, Act::Work(i));
        }
        if matches!(self.svcs[i].role.as_str(), "orchestrator" | "agent") {
            self.task(from + r.int(5 * SEC, 60 * SEC), Act::Trace(i));
        }
    }

    fn schedule_everyday(&mut self) {
        let mut r = self.take_rng();
        let start = self.start;
        for i in 0..self.svcs.len() {
            self.schedule_recurring(&mut r, i, start);
        }
        self.task(start + r.int(5 * SEC, 20 * SEC), Act::Chronicle);
        self.task(
            start + 5 * MIN + r.exp(25.0 * MIN as f64) as i64,
            Act::Deploy,
        );
        self.task(
            start + 10 * MIN + r.exp(3.0 * HOUR as f64) as i64,
            Act::Rolling,
        );
        self.task(
            start + 3 * MIN + r.exp(12.0 * MIN as f64) as i64,
            Act::Burst,
        );
        let day0 = start - start.rem_euclid(DAY);
        let mut cron = day0 + 2 * HOUR;
        if cron < start {
            cron += DAY;
        }
        self.task(cron, Act::Cron);
        for g in 0..GRAPHS.len() {
            self.task(start + 90 * SEC + g as i64 * 30 * SEC, Act::Graph(g));
        }
        self.rng = r;
    }

    // ---- the everyday generators ------------------------------------

    fn run(&mut self, t: i64, act: Act) {
        match act {
            Act::Pulse(i) => self.pulse(t, i),
            Act::Log(i, chain) => {
                if chain == self.svcs[i].log_chain {
                    self.everyday_log(t, i)
                }
            }
            Act::Heartbeat(i) => self.heartbeat(t, i),
            Act::Work(i) => self.work(t, i),
            Act::Trace(i) => self.trace(t, i),
            Act::Chronicle => self.chronicle(t),
            Act::Deploy => self.deploy(t),
            Act::Rolling => self.rolling(t),
            Act::Burst => self.burst(t),
            Act::Cron => self.cron(t),
            Act::CronEnd => self.cron_end(t),
            Act::Graph(g) => self.graph(t, g),
            Act::Up(i, up, f) => {
                let s = &mut self.svcs[i];
                s.up = up;
                s.down_fault = if up { None } else { f };
                if up {
                    s.up_since = t;
                    s.mem = s.prof.mem * 0.85;
                    s.effect = None;
                }
            }
            Act::Effect(i, e) => {
                // A service that starts (or stops) failing changes its log
                // cadence now, not after the gap drawn at the old rate.
                let s = &mut self.svcs[i];
                s.effect = e;
                s.log_chain = s.log_chain.wrapping_add(1);
                let chain = s.log_chain;
                let soon = t + s.rng.int(200, 3000);
                self.task(soon, Act::Log(i, chain));
            }
            Act::Deps(i, d) => self.svcs[i].deps = d,
            Act::Exists(i) => self.svcs[i].exists = true,
        }
    }

    fn live(&self, i: usize) -> bool {
        self.svcs[i].exists && self.svcs[i].up
    }

    fn pulse(&mut self, t: i64, i: usize) {
        let mut r = self.take_svc_rng(i);
        let next = t + self.svcs[i].prof.pulse_ms + r.int(-250, 250);
        self.task(next, Act::Pulse(i));
        if !self.live(i) {
            self.svcs[i].rng = r;
            return;
        }
        let cron = self.svcs[i].in_cron && t < self.cron_until;
        let s = &mut self.svcs[i];
        let p = &s.prof;
        let burst = match s.burst {
            Some((until, f)) if t < until => f,
            _ => 1.0,
        };
        let l = load(t) * burst;
        // A sawtooth: heaps grow, then a GC or compaction gives memory back.
        s.mem += p.mem * 0.004 * r.range(0.0, 2.0);
        if s.mem > p.mem * 1.12 {
            s.mem = p.mem * r.range(0.9, 0.97);
        }
        let mut cpu = p.cpu * (0.35 + 0.65 * l) * (1.0 + 0.08 * r.normal());
        let mut mem = s.mem * (1.0 + 0.01 * r.normal());
        let mut rps = p.rps * l * (1.0 + 0.08 * r.normal());
        let mut p50 = p.p50 * (0.85 + 0.3 * l) * (1.0 + 0.06 * r.normal());
        let mut tail = p.tail * (1.0 + 0.08 * r.normal().abs());
        let mut err = p.err * r.range(0.6, 1.4);
        // Models stay resident: load moves VRAM a little (KV cache), never to the ceiling.
        let mut vram = p.vram.map(|v| v + 16.0 * l.min(1.4) + 1.5 * r.normal());
        let mut io =
            p.io.map(|v| v * (0.5 + 0.5 * l) * (1.0 + 0.15 * r.normal()));
        if cron {
            cpu = r.range(70.0, 95.0);
            io = io.map(|v| v * r.range(6.0, 12.0));
            p50 *= 1.6;
        }
        let mut label = None;
        if let Some(e) = &s.effect {
            match e.fx {
                Fx::Latency { p50: x } => {
                    p50 = x * (1.0 + 0.05 * r.normal());
                    tail = r.range(1.5, 2.2);
                    err = r.range(0.02, 0.06);
                    rps *= 0.7;
                    cpu *= 1.2;
                    label = Some(e.fault);
                }
                Fx::MemLeak { t0, t1, to } => {
                    let frac = ((t - t0) as f64 / (t1 - t0).max(1) as f64).clamp(0.0, 1.0);
                    mem = p.mem + (to - p.mem) * frac.powf(1.2) + p.mem * 0.01 * r.normal();
                    cpu *= 1.0 + 0.3 * frac;
                    label = Some(e.fault);
                }
                Fx::Refused { .. } => {
                    err = r.range(0.35, 0.9);
                    p50 = r.range(1.0, 6.0);
                    tail = r.range(3.0, 8.0);
                    label = Some(e.fault);
                }
                Fx::Upstream { .. } => {
                    err = r.range(0.08, 0.45);
                    p50 *= r.range(2.0, 5.0);
                    tail = r.range(3.0, 8.0);
                    label = Some(e.fault);
                }
                Fx::Vram { pct } => {
                    vram = Some(pct + 0.8 * r.normal());
                    p50 *= 1.8;
                    label = Some(e.fault);
                }
            }
        }
        let mut m = BTreeMap::new();
        m.insert("cpu".to_string(), rd(cpu.clamp(0.2, 99.9), 1));
        m.insert("mem_mb".to_string(), rd(mem.max(16.0), 0));
        m.insert("req_rate".to_string(), rd(rps.max(0.0), 2));
        m.insert("latency_p50_ms".to_string(), rd(p50.max(0.1), 1));
        m.insert("latency_p99_ms".to_string(), rd((p50 * tail).max(0.2), 1));
        m.insert("error_rate".to_string(), rd(err.clamp(0.0, 1.0), 4));
        if let Some(v) = vram {
            m.insert("vram_pct".to_string(), rd(v.clamp(1.0, 99.9), 1));
        }
        if let Some(v) = io {
            m.insert("disk_io_mb_s".to_string(), rd(v.max(0.0), 1));
        }
        s.rng = r;
        self.svc_emit(t, i, Body::Pulse { metrics: m }, label);
    }

    fn pick_dep(
        &self,
        r: &mut Rng,
        i: usize,
        avoid: Option<usize>,
    ) -> Option<(usize, Option<usize>)> {
        let deps: Vec<(usize, Option<usize>)> = self.svcs[i]
            .deps
            .iter()
            .copied()
            .filter(|&(d, _)| Some(d) != avoid && self.svcs[d].exists)
            .collect();
        // A dependency a fault just added is the new code path: it is busy.
        if let Some(&new) = deps.iter().find(|(_, f)| f.is_some()) {
            if r.chance(0.5) {
                return Some(new);
            }
        }
        r.pick(&deps).copied()
    }

    fn everyday_log(&mut self, t: i64, i: usize) {
        let mut r = self.take_svc_rng(i);
        let s = &self.svcs[i];
        let burst = match s.burst {
            Some((until, f)) if t < until => f,
            _ => 1.0,
        };
        let mut mean = s.prof.log_ms / (load(t) * burst);
        if s.effect.is_some()
            && !matches!(
                s.effect,
                Some(Effect {
                    fx: Fx::MemLeak { .. },
                    ..
                })
            )
        {
            // Failing requests are logged: a sick service is a chatty one.
            mean = (mean / 3.0).min(20_000.0);
        }
        let chain = s.log_chain;
        self.task(t + (r.exp(mean) as i64).max(200), Act::Log(i, chain));
        if !self.live(i) {
            self.svcs[i].rng = r;
            return;
        }
        let effect = self.svcs[i].effect.clone();
        let name = self.svcs[i].name.clone();
        let mut p50 = self.svcs[i].prof.p50 * (0.85 + 0.3 * load(t));
        let mut avoid = None;
        if let Some(e) = effect {
            let f = Some(e.fault);
            match e.fx {
                Fx::Latency { p50: x } => {
                    if r.chance(0.5) {
                        let msg = format!(
                            "slow request POST /v1/{} took {}ms (threshold 1000ms) request_id={}",
                            lower(&name),
                            ms(text::dur(&mut r, x).max(1200.0)),
                            r.uuid()
                        );
                        self.svcs[i].rng = r;
                        return self.log(t, i, "warn", msg, f);
                    }
                    // Every response is slow: the ordinary lines change too.
                    let (msg, level, _) = self.ordinary(&mut r, i, x, None);
                    self.svcs[i].rng = r;
                    return self.log(t, i, level, msg, f);
                }
                Fx::Refused { dep } => {
                    if r.chance(0.75) {
                        let d = &self.svcs[dep];
                        let msg = format!(
                            "request to {} failed: dial tcp 127.0.0.1:{}: connect: connection refused req_id={}",
                            d.name,
                            d.port,
                            r.hex(16)
                        );
                        self.svcs[i].rng = r;
                        return self.log(t, i, "error", msg, f);
                    }
                    avoid = Some(dep);
                }
                Fx::Upstream { dep } => {
                    if r.chance(0.65) {
                        let d = &self.svcs[dep];
                        let msg = format!(
                            "upstream {} unavailable: dial tcp {}:{}: connect: connection refused (retry {}/5) req_id={}",
                            d.name,
                            d.name,
                            d.port,
                            r.int(1, 5),
                            r.hex(16)
                        );
                        self.svcs[i].rng = r;
                        return self.log(t, i, "error", msg, f);
                    }
                    avoid = Some(dep);
                }
                Fx::Vram { pct } => {
                    let x = r.f64();
                    if x < 0.1 {
                        let msg = format!(
                            "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate {} MiB (GPU 0; 15.99 GiB total capacity; {:.2} GiB already allocated)",
                            r.int(128, 2048),
                            15.99 * pct / 100.0
                        );
                        self.svcs[i].rng = r;
                        return self.log(t, i, "error", msg, f);
                    }
                    if x < 0.6 {
                        let msg = format!(
                            "CUDA memory pressure: allocated {:.1}GiB / 16.0GiB ({:.0}%), evicting {} KV cache blocks",
                            16.0 * pct / 100.0,
                            pct,
                            r.int(8, 512)
                        );
                        self.svcs[i].rng = r;
                        return self.log(t, i, "warn", msg, f);
                    }
                    p50 *= 1.8;
                    if !r.chance(0.5) {
                        // Half the ordinary lines print the slower durations.
                        let (msg, level, _) = self.ordinary(&mut r, i, p50, None);
                        self.svcs[i].rng = r;
                        return self.log(t, i, level, msg, f);
                    }
                    p50 /= 1.8;
                }
                Fx::MemLeak { .. } => {}
            }
        }
        let (msg, level, dep_label) = self.ordinary(&mut r, i, p50, avoid);
        self.svcs[i].rng = r;
        self.log(t, i, level, msg, dep_label);
    }

    /// An ordinary line; labelled only when it calls a dependency a fault added.
    fn ordinary(
        &self,
        r: &mut Rng,
        i: usize,
        p50: f64,
        avoid: Option<usize>,
    ) -> (String, &'static str, Option<usize>) {
        let s = &self.svcs[i];
        let dep = self.pick_dep(r, i, avoid);
        let ctx = LogCtx {
            name: &s.name,
            role: &s.role,
            port: s.port,
            p50,
            dep: dep.map(|(d, _)| (self.svcs[d].name.as_str(), self.svcs[d].port)),
        };
        if let (Some((_, Some(f))), Some((dn, dp))) = (dep, ctx.dep) {
            // The new code path calls its new upstream often.
            if r.chance(0.4) {
                return (text::dep_call(r, &ctx, dn, dp), "info", Some(f));
            }
        }
        let (msg, level, used) = text::normal_log(r, &ctx);
        let label = if used { dep.and_then(|(_, f)| f) } else { None };
        (msg, level, label)
    }

    fn heartbeat(&mut self, t: i64, i: usize) {
        self.task(t + 300 * SEC, Act::Heartbeat(i));
        if !self.live(i) {
            return;
        }
        let s = &mut self.svcs[i];
        s.hb_seq += 1;
        let uptime = (t - s.up_since) / SEC;
        let seq = s.hb_seq;
        let (state, label) = match &s.effect {
            Some(Effect {
                fx: Fx::MemLeak { .. },
                ..
            })
            | None => ("healthy", None),
            Some(e) => ("degraded", Some(e.fault)),
        };
        self.flux(
            t,
            i,
            "heartbeat",
            state,
            vec![("uptime_s", Scalar::Int(uptime)), ("seq", Scalar::Int(seq))],
            label,
        );
    }

    fn work(&mut self, t: i64, i: usize) {
        let mut r = self.take_svc_rng(i);
        let mean = self.svcs[i].prof.work_ms.unwrap_or(60_000.0) / load(t);
        self.task(t + (r.exp(mean) as i64).max(500), Act::Work(i));
        if !self.live(i) {
            self.svcs[i].rng = r;
            return;
        }
        let role = self.svcs[i].role.clone();
        let p50 = self.svcs[i].prof.p50;
        let (mult, fail, label) = match &self.svcs[i].effect {
            Some(Effect {
                fx: Fx::Latency { p50: x },
                fault,
            }) => (x / p50.max(1.0), false, Some(*fault)),
            Some(Effect {
                fx: Fx::Vram { .. },
                fault,
            }) => (2.2, false, Some(*fault)),
            Some(Effect {
                fx: Fx::Refused { .. } | Fx::Upstream { .. },
                fault,
            }) => (1.0, true, Some(*fault)),
            _ => (1.0, false, None),
        };
        let job = r.hex(8);
        if fail {
            self.flux(
                t,
                i,
                "job_failed",
                "degraded",
                vec![("job", s(job)), ("error", s("upstream connection refused"))],
                label,
            );
        } else {
            match role.as_str() {
                "gpu_worker" => {
                    let d = text::dur(&mut r, p50 * 4.0) * mult;
                    let m = text::model(&mut r);
                    let tokens = r.int(64, 4096);
                    self.flux(
                        t,
                        i,
                        "job_completed",
                        "healthy",
                        vec![
                            ("job", s(job)),
                            ("model", s(m)),
                            ("duration_ms", Scalar::Int(d as i64)),
                            ("tokens", Scalar::Int(tokens)),
                        ],
                        label,
                    );
                }
                "memory" => {
                    let d = text::dur(&mut r, 900.0) * mult;
                    let n = r.int(10, 800);
                    self.flux(
                        t,
                        i,
                        "consolidated",
                        "healthy",
                        vec![
                            ("memories", Scalar::Int(n)),
                            ("duration_ms", Scalar::Int(d as i64)),
                        ],
                        label,
                    );
                }
                _ => {
                    let target = r
                        .pick(&self.trace_agents)
                        .map(|&a| self.svcs[a].name.clone())
                        .unwrap_or_else(|| "worker-0".into());
                    self.flux(
                        t,
                        i,
                        "job_dispatched",
                        "healthy",
                        vec![("job", s(job)), ("target", s(target))],
                        label,
                    );
                }
            }
        }
        self.svcs[i].rng = r;
    }

    /// How a call from a reasoning agent to `c` goes right now.
    fn call(&self, r: &mut Rng, c: usize) -> Call {
        let s = &self.svcs[c];
        if !s.exists {
            return Call::Down(None);
        }
        if !s.up {
            return Call::Down(s.down_fault);
        }
        match &s.effect {
            Some(Effect {
                fx: Fx::Latency { p50 },
                fault,
            }) => Call::Slow(p50 * r.range(0.9, 1.4), *fault),
            Some(Effect {
                fx: Fx::Vram { .. },
                fault,
            }) => Call::Slow(s.prof.p50 * r.range(0.8, 2.0), *fault),
            Some(Effect {
                fx: Fx::Refused { .. } | Fx::Upstream { .. },
                fault,
            }) => Call::Failing(*fault),
            _ => Call::Ok,
        }
    }

    /// One request through the SixPillars cycle: Perceive, Remember, Reason,
    /// Plan, Act, Learn, each traced when it ends.
    fn trace(&mut self, t: i64, a: usize) {
        let mut r = self.take_svc_rng(a);
        let orchestrator = self.svcs[a].role == "orchestrator";
        let mean = if orchestrator { 14_000.0 } else { 600_000.0 } / load(t);
        self.task(t + (r.exp(mean) as i64).max(500), Act::Trace(a));
        if !self.live(a) {
            self.svcs[a].rng = r;
            return;
        }
        let deps: Vec<usize> = self.svcs[a]
            .deps
            .iter()
            .map(|&(d, _)| d)
            .filter(|&d| self.svcs[d].exists)
            .collect();
        let mem = deps
            .iter()
            .copied()
            .find(|&d| self.svcs[d].role == "memory");
        let mind = deps
            .iter()
            .copied()
            .find(|&d| self.svcs[d].role == "cognition")
            .or(deps.first().copied());
        let agents: Vec<usize> = self
            .agents
            .iter()
            .copied()
            .filter(|&g| g != a && self.svcs[g].exists)
            .collect();
        let actor = if orchestrator {
            r.pick(&agents).copied().or(deps.last().copied())
        } else {
            deps.last().copied()
        };
        let req = format!("req-{}", r.hex(12));
        let mut ts = t;
        let nm = |x: Option<usize>| x.map(|i| self.svcs[i].name.clone()).unwrap_or_default();
        let (mem_n, mind_n, actor_n) = (nm(mem), nm(mind), nm(actor));
        let mut out: Vec<(Phase, String, f64, Option<usize>)> = Vec::with_capacity(6);

        // Perceive
        let d = r.range(5.0, 35.0);
        out.push((
            Phase::Perceive,
            format!(
                "intent={} channel={} user={} tokens={}",
                text::intent(&mut r),
                ["chat", "api", "voice", "slack"][r.below(4)],
                text::user(&mut r),
                r.int(12, 2400)
            ),
            d,
            None,
        ));
        // Remember
        let k = r.int(0, 12);
        let mut d = text::dur(&mut r, 45.0);
        let (summary, label) = match mem.map(|m| self.call(&mut r, m)) {
            None => (
                "no memory service configured, skipped recall".to_string(),
                None,
            ),
            Some(Call::Ok) => (
                format!(
                    "recalled {k} memories from {mem_n} (episodic={}, semantic={})",
                    k / 2,
                    k - k / 2
                ),
                None,
            ),
            Some(Call::Slow(x, f)) => {
                d += x;
                (
                    format!("recalled {k} memories from {mem_n} (slow: {}ms)", ms(x)),
                    Some(f),
                )
            }
            Some(Call::Failing(f)) => (
                format!("{mem_n} returned 503, recalled 0 memories"),
                Some(f),
            ),
            Some(Call::Down(Some(f))) => {
                d += r.range(1000.0, 3000.0);
                (
                    format!("{mem_n} unavailable: connection refused, continuing without recall"),
                    Some(f),
                )
            }
            Some(Call::Down(None)) => {
                d += r.range(200.0, 900.0);
                (
                    format!("{mem_n} restarting, retried: recalled {k} memories"),
                    None,
                )
            }
        };
        out.push((Phase::Remember, summary, d, label));
        // Reason
        let base = mind.map(|m| self.svcs[m].prof.p50).unwrap_or(300.0);
        let mut d = base * r.range(3.0, 8.0);
        let tin = r.int(300, 8000);
        let tout = r.int(20, 1200);
        let conf = r.range(0.55, 0.98);
        let model = text::llm(&mut r);
        let (summary, label) = match mind.map(|m| self.call(&mut r, m)) {
            None => (
                format!(
                    "local model={model} tokens_in={tin} tokens_out={tout} confidence={conf:.2}"
                ),
                None,
            ),
            Some(Call::Ok) => (
                format!(
                    "{mind_n} model={model} tokens_in={tin} tokens_out={tout} confidence={conf:.2}"
                ),
                None,
            ),
            Some(Call::Slow(x, f)) => {
                d += x * r.range(2.0, 4.0);
                (
                    format!(
                        "{mind_n} model={model} tokens_in={tin} tokens_out={tout} confidence={conf:.2} (waited {}ms)",
                        ms(d)
                    ),
                    Some(f),
                )
            }
            Some(Call::Failing(f)) => (
                format!("{mind_n} returned 503, retried once, confidence={conf:.2}"),
                Some(f),
            ),
            Some(Call::Down(Some(f))) => {
                d += r.range(2000.0, 5000.0);
                (
                    format!("{mind_n} unavailable (connection refused), fell back to local model"),
                    Some(f),
                )
            }
            Some(Call::Down(None)) => {
                d += r.range(300.0, 1200.0);
                (
                    format!("{mind_n} restarting, retried: tokens_in={tin} tokens_out={tout}"),
                    None,
                )
            }
        };
        out.push((Phase::Reason, summary, d, label));
        // Plan
        let steps = r.int(1, 4);
        let mut plan: Vec<String> = Vec::new();
        if !actor_n.is_empty() {
            plan.push(format!("delegate {actor_n}"));
        }
        for _ in 1..steps {
            if let Some(&x) = r.pick(&deps) {
                plan.push(format!("call {}", self.svcs[x].name));
            }
        }
        plan.push("compose answer".into());
        out.push((
            Phase::Plan,
            format!("{} steps: {}", plan.len(), plan.join(", ")),
            r.range(20.0, 220.0),
            None,
        ));
        // Act
        let calls = r.int(0, 6);
        let mut d = r.range(150.0, 3500.0);
        let (summary, label) = match actor.map(|x| self.call(&mut r, x)) {
            None => ("answered directly, no delegation".to_string(), None),
            Some(Call::Ok) => (
                format!("delegated to {actor_n}: ok ({calls} tool calls)"),
                None,
            ),
            Some(Call::Slow(x, f)) => {
                d += x;
                (
                    format!("delegated to {actor_n}: ok after {}ms", ms(d)),
                    Some(f),
                )
            }
            Some(Call::Failing(f)) => (
                format!("delegated to {actor_n}: error 502 (upstream failure)"),
                Some(f),
            ),
            Some(Call::Down(Some(f))) => {
                d = r.range(20.0, 200.0);
                (
                    format!("delegation to {actor_n} failed: connection refused"),
                    Some(f),
                )
            }
            Some(Call::Down(None)) => {
                d += r.range(300.0, 1500.0);
                (
                    format!("delegated to {actor_n}: ok after retry ({calls} tool calls)"),
                    None,
                )
            }
        };
        out.push((Phase::Act, summary, d, label));
        // Learn
        let reward = r.range(0.2, 1.0);
        let (summary, label) = match mem.map(|m| self.call(&mut r, m)) {
            Some(Call::Down(Some(f))) | Some(Call::Failing(f)) => (
                format!("could not store outcome: {mem_n} unavailable"),
                Some(f),
            ),
            None => (
                format!("outcome reward={reward:.2} kept in context only"),
                None,
            ),
            _ => (
                format!("stored outcome reward={reward:.2} memory={}", r.hex(8)),
                None,
            ),
        };
        out.push((Phase::Learn, summary, r.range(4.0, 50.0), label));

        self.svcs[a].rng = r;
        for (phase, summary, d, label) in out {
            ts += d.max(1.0) as i64;
            // A request that outlives its fault's window is told as it was
            // when it started; past the window the label would be a lie.
            let label = label.filter(|&f| self.plan.get(f).is_some_and(|f| ts <= f.end_ms));
            let body = Body::Trace {
                phase,
                request: req.clone(),
                summary,
                duration_ms: Some(rd(d, 1)),
            };
            self.svc_emit(ts, a, body, label);
        }
    }

    fn chronicle(&mut self, t: i64) {
        let mut r = self.take_rng();
        self.task(
            t + (r.exp(2500.0 / load(t)) as i64).max(100),
            Act::Chronicle,
        );
        let uis: Vec<String> = self
            .svcs
            .iter()
            .filter(|s| s.exists && matches!(s.role.as_str(), "ui" | "dashboard"))
            .map(|s| s.name.clone())
            .collect();
        let any = r.below(self.svcs.len());
        let any_name = self.svcs[any].name.clone();
        let x = r.f64();
        let (rec, actor, action, target, outcome) = if x < 0.40 {
            let ui = r.pick(&uis).cloned().unwrap_or_else(|| "console".into());
            let ok = r.chance(0.96);
            (
                self.rec.auth,
                format!("user:{}", text::user(&mut r)),
                "login",
                ui,
                if ok { "success" } else { "denied" },
            )
        } else if x < 0.65 {
            (
                self.rec.vault,
                format!("svc:{any_name}"),
                "secret.read",
                format!(
                    "secret/{}/{}",
                    lower(&any_name),
                    ["db-password", "api-key", "tls-cert"][r.below(3)]
                ),
                "success",
            )
        } else if x < 0.80 {
            let agent = r
                .pick(&self.trace_agents)
                .map(|&a| self.svcs[a].name.clone())
                .unwrap_or_else(|| any_name.clone());
            let tool = self
                .svcs
                .iter()
                .filter(|s| s.role == "tool")
                .nth(r.below(20))
                .map(|s| s.name.clone())
                .unwrap_or_else(|| "shell".into());
            let ok = r.chance(0.97);
            (
                self.rec.policy,
                format!("agent:{agent}"),
                "tool.invoke",
                tool,
                if ok { "allowed" } else { "denied" },
            )
        } else if x < 0.92 {
            let orch = self
                .trace_agents
                .first()
                .map(|&a| self.svcs[a].name.clone())
                .unwrap_or_else(|| any_name.clone());
            (
                self.rec.memory,
                format!("svc:{orch}"),
                "memory.write",
                format!("{}/{}", ["episodic", "semantic"][r.below(2)], r.hex(8)),
                "success",
            )
        } else if x < 0.98 {
            (
                self.rec.config,
                format!("svc:{any_name}"),
                "config.read",
                format!("config/{}.yaml", lower(&any_name)),
                "success",
            )
        } else {
            let ui = r.pick(&uis).cloned().unwrap_or_else(|| "console".into());
            (
                self.rec.auth,
                format!("user:{}", text::user(&mut r)),
                "logout",
                ui,
                "success",
            )
        };
        self.rng = r;
        if rec.is_some_and(|i| self.live(i)) {
            self.chron(t, rec, &actor, action, &target, outcome, None);
        }
    }

    fn eligible(&self, i: usize, t: i64) -> bool {
        let s = &self.svcs[i];
        s.exists && s.up && s.effect.is_none() && s.busy_until < t && !self.reserved.contains(&i)
    }

    fn deploy(&mut self, t: i64) {
        let mut r = self.take_rng();
        self.task(t + r.exp(25.0 * MIN as f64) as i64, Act::Deploy);
        let cands: Vec<usize> = (0..self.svcs.len())
            .filter(|&i| self.eligible(i, t))
            .collect();
        if let Some(&i) = r.pick(&cands) {
            let s = &mut self.svcs[i];
            s.version.2 += 1;
            let target = format!(
                "{}@v{}.{}.{}",
                s.name, s.version.0, s.version.1, s.version.2
            );
            self.chron(
                t,
                self.rec.deploy,
                "ci-bot",
                "deploy",
                &target,
                "success",
                None,
            );
            let stopped = self.stop(i, t + r.int(1000, 3000), "deploy", None, &mut r);
            let dur = self.startup_ms(&mut r, i);
            let h = self.startup(
                i,
                stopped + r.int(1000, 3000),
                dur,
                None,
                Start::Normal,
                &mut r,
            );
            self.svcs[i].busy_until = h + MIN;
        }
        self.rng = r;
    }

    /// Planned maintenance: a dependency and a dependent restarted in the
    /// right order (dependent stops first, dependency starts first), the
    /// pattern the startup-order fault breaks.
    fn rolling(&mut self, t: i64) {
        let mut r = self.take_rng();
        self.task(t + r.exp(3.0 * HOUR as f64) as i64, Act::Rolling);
        let pairs: Vec<(usize, usize)> = (0..self.svcs.len())
            .filter(|&i| self.eligible(i, t))
            .flat_map(|i| {
                self.svcs[i]
                    .deps
                    .iter()
                    .filter(|&&(d, _)| self.eligible(d, t))
                    .map(move |&(d, _)| (i, d))
                    .collect::<Vec<_>>()
            })
            .collect();
        if let Some(&(sv, d)) = r.pick(&pairs) {
            let target = format!("{},{}", self.svcs[d].name, self.svcs[sv].name);
            self.chron(
                t,
                self.rec.scheduler,
                "ops:maintenance",
                "maintenance.restart",
                &target,
                "success",
                None,
            );
            let s_stopped = self.stop(sv, t + SEC, "maintenance", None, &mut r);
            let d_stopped = self.stop(d, s_stopped + r.int(500, 2000), "maintenance", None, &mut r);
            let dur = self.startup_ms(&mut r, d);
            let hd = self.startup(
                d,
                d_stopped + r.int(1000, 3000),
                dur,
                None,
                Start::Normal,
                &mut r,
            );
            let dur = self.startup_ms(&mut r, sv);
            let hs = self.startup(sv, hd + r.int(500, 2000), dur, None, Start::Normal, &mut r);
            self.svcs[d].busy_until = hs + MIN;
            self.svcs[sv].busy_until = hs + MIN;
        }
        self.rng = r;
    }

    fn burst(&mut self, t: i64) {
        let mut r = self.take_rng();
        self.task(t + r.exp(12.0 * MIN as f64) as i64, Act::Burst);
        let cands: Vec<usize> = (0..self.svcs.len())
            .filter(|&i| {
                self.eligible(i, t)
                    && matches!(
                        self.svcs[i].role.as_str(),
                        "api"
                            | "ui"
                            | "dashboard"
                            | "orchestrator"
                            | "gpu_worker"
                            | "cognition"
                            | "tool"
                    )
            })
            .collect();
        if let Some(&i) = r.pick(&cands) {
            let factor = r.range(1.6, 3.5);
            let dur = r.int(2 * MIN, 6 * MIN);
            let rps = self.svcs[i].prof.rps * load(t) * factor;
            self.svcs[i].burst = Some((t + dur, factor));
            self.svcs[i].busy_until = t + dur + MIN;
            self.flux(
                t,
                i,
                "request_burst",
                "healthy",
                vec![
                    ("factor", Scalar::Float(rd(factor, 2))),
                    ("req_rate", Scalar::Float(rd(rps, 1))),
                ],
                None,
            );
            if factor > 2.6 {
                let p = &self.svcs[i].prof;
                let p99 = (p.p50 * p.tail * factor) as i64;
                let deg = t + r.int(20 * SEC, 60 * SEC);
                self.flux(
                    deg,
                    i,
                    "degraded",
                    "degraded",
                    vec![("reason", s("load")), ("p99_ms", Scalar::Int(p99))],
                    None,
                );
                let rec = t + dur + r.int(5 * SEC, 20 * SEC);
                self.flux(
                    rec,
                    i,
                    "recovered",
                    "healthy",
                    vec![("after_s", Scalar::Int((rec - deg) / SEC))],
                    None,
                );
            }
        }
        self.rng = r;
    }

    /// The nightly backup and reindex (02:00-02:20): heavy, legitimate, unlabelled.
    fn cron(&mut self, t: i64) {
        let mut r = self.take_rng();
        self.task(t + DAY, Act::Cron);
        let until = t + 20 * MIN;
        self.cron_until = until;
        self.chron(
            t,
            self.rec.scheduler,
            "cron:nightly-backup",
            "job.start",
            "backup+reindex",
            "success",
            None,
        );
        if let Some(b) = self.rec.backup {
            self.flux(
                t,
                b,
                "job_started",
                "healthy",
                vec![("job", s("nightly-backup"))],
                None,
            );
        }
        for i in self.cron_targets.clone() {
            self.svcs[i].in_cron = true;
            let what = if self.svcs[i].role == "storage" && r.chance(0.5) {
                "reindex"
            } else {
                "backup"
            };
            let msg = format!("nightly {what} started: snapshot {}", r.uuid());
            self.log(t + r.int(0, 5000), i, "info", msg, None);
        }
        self.task(until + r.int(0, 60 * SEC), Act::CronEnd);
        self.rng = r;
    }

    fn cron_end(&mut self, t: i64) {
        let mut r = self.take_rng();
        for i in self.cron_targets.clone() {
            self.svcs[i].in_cron = false;
            let msg = format!(
                "nightly job complete: {:.1} GB in {}s, snapshot {}",
                r.range(2.0, 40.0),
                r.int(900, 1260),
                r.uuid()
            );
            self.log(t + r.int(0, 5000), i, "info", msg, None);
        }
        if let Some(b) = self.rec.backup {
            self.flux(
                t,
                b,
                "job_completed",
                "healthy",
                vec![
                    ("job", s("nightly-backup")),
                    ("duration_ms", Scalar::Int(t - self.cron_until + 20 * MIN)),
                ],
                None,
            );
        }
        self.chron(
            t,
            self.rec.scheduler,
            "cron:nightly-backup",
            "job.complete",
            "backup+reindex",
            "success",
            None,
        );
        self.rng = r;
    }

    /// A graph's hourly snapshot, its edges a few tens of ms apart.
    fn graph(&mut self, t: i64, g: usize) {
        self.task(t + HOUR, Act::Graph(g));
        let edges = graphs::edges(g, &self.svcs);
        let name = GRAPHS[g];
        for (k, e) in edges.into_iter().enumerate() {
            let body = Body::Graph {
                graph: name.to_string(),
                src: e.src,
                rel: e.rel.to_string(),
                dst: e.dst,
            };
            self.emit(t + 25 * k as i64, name, body, e.label);
        }
    }

    // ---- faults -------------------------------------------------------

    /// Spreads the faults over the run after its first 10% (and after the
    /// boot: a fault needs a running OS to break), one time slot each.
    fn plan_faults(&mut self, spec: &FaultSpec, seed: u64, booted: i64) {
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
            let planned = match kind {
                FaultKind::LatencySpike => self.latency_spike(&mut r, f, t0, d, sc),
                FaultKind::OomDeath => self.oom_death(&mut r, f, t0, d),
                FaultKind::OomCascade => self.oom_cascade(&mut r, f, t0, d, sc),
                FaultKind::PortConflict => self.port_conflict(&mut r, f, t0, d, sc),
                FaultKind::LocalhostTrap => self.localhost_trap(&mut r, f, t0, d, sc),
                FaultKind::CrashLoop => self.crash_loop(&mut r, f, t0, d, sc),
                FaultKind::VramPressure => self.vram_pressure(&mut r, f, t0, d, sc),
                FaultKind::StartupOrder => self.startup_order(&mut r, f, t0, sc),
                FaultKind::NewDependency => self.new_dependency(&mut r, f, t0, d),
                FaultKind::ArchChange => self.arch_change(&mut r, f, t0),
            };
            match planned {
                Some((end, sources)) => {
                    // Traces started inside the window end up to ~30 s later.
                    let traced = self
                        .trace_agents
                        .iter()
                        .any(|&a| sources.contains(&self.svcs[a].name));
                    let end = if traced { end + MIN } else { end };
                    let names: Vec<String> = sources.into_iter().collect();
                    let fault = &mut self.plan[f];
                    fault.end_ms = end.min(self.end).max(fault.start_ms);
                    fault.sources = names;
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

    fn names(&self, idx: impl IntoIterator<Item = usize>) -> BTreeSet<String> {
        idx.into_iter().map(|i| self.svcs[i].name.clone()).collect()
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
        self.task(t, Act::Effect(i, None));
        self.task(t, Act::Up(i, false, Some(f)));
    }

    /// The watchdog bringing a service back after a fault; returns when healthy.
    fn watchdog_restart(&mut self, r: &mut Rng, t: i64, i: usize, f: usize) -> i64 {
        let wd = self.rec.watchdog;
        let actor = wd
            .map(|w| self.svcs[w].name.clone())
            .unwrap_or_else(|| "watchdog".into());
        let target = self.svcs[i].name.clone();
        self.chron(t, wd, &actor, "restart", &target, "success", Some(f));
        let dur = self.startup_ms(r, i);
        self.startup(i, t + r.int(500, 2000), dur, Some(f), Start::Normal, r)
    }

    fn latency_spike(
        &mut self,
        r: &mut Rng,
        f: usize,
        t0: i64,
        d: i64,
        sc: f64,
    ) -> Option<(i64, BTreeSet<String>)> {
        let with_dependents = self.all_where(|i, _| !self.dependents(i).is_empty());
        let cognition =
            self.all_where(|i, s| s.role == "cognition" && !self.dependents(i).is_empty());
        let t = self.choose(
            r,
            &[
                self.name_is("AitherMind"),
                cognition,
                with_dependents,
                self.all_where(|_, _| true),
            ],
        )?;
        let t1 = t0 + d;
        let p50 = r.range(2800.0, 3300.0);
        self.task(
            t0,
            Act::Effect(
                t,
                Some(Effect {
                    fault: f,
                    fx: Fx::Latency { p50 },
                }),
            ),
        );
        self.task(t1, Act::Effect(t, None));
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
        let mut srcs = self.names([t]);
        srcs.extend(self.names(deps.iter().copied()));
        srcs.extend(self.names(self.callers(&[t])));
        self.reserve([t]);
        self.reserve(deps);
        Some((rec, srcs))
    }

    fn not_called_by_agents(&self, i: usize) -> bool {
        !self
            .trace_agents
            .iter()
            .any(|&a| a == i || self.calls(a).contains(&i))
    }

    fn oom_death(
        &mut self,
        r: &mut Rng,
        f: usize,
        t0: i64,
        d: i64,
    ) -> Option<(i64, BTreeSet<String>)> {
        let quiet = self.all_where(|i, s| {
            matches!(
                s.role.as_str(),
                "memory" | "storage" | "gpu_worker" | "perception" | "cache"
            ) && self.not_called_by_agents(i)
        });
        let quiet_any = self.all_where(|i, _| self.not_called_by_agents(i));
        let t = self.choose(r, &[quiet, quiet_any, self.all_where(|_, _| true)])?;
        let kill = t0 + (5 * MIN).min(d / 4);
        let to = self.svcs[t].prof.mem_limit * 0.98;
        self.task(
            t0,
            Act::Effect(
                t,
                Some(Effect {
                    fault: f,
                    fx: Fx::MemLeak { t0, t1: kill, to },
                }),
            ),
        );
        self.oom_kill(r, kill, t, f, "");
        let end = self.watchdog_restart(r, t0 + d, t, f);
        let mut srcs = self.names([t]);
        srcs.extend(self.names(self.rec.watchdog));
        srcs.extend(self.names(self.callers(&[t])));
        self.reserve([t]);
        Some((end, srcs))
    }

    fn oom_cascade(
        &mut self,
        r: &mut Rng,
        f: usize,
        t0: i64,
        d: i64,
        sc: f64,
    ) -> Option<(i64, BTreeSet<String>)> {
        let memory = self
            .all_where(|i, s| s.role == "memory" && (2..=6).contains(&self.dependents(i).len()));
        let some = self.all_where(|i, _| (2..=8).contains(&self.dependents(i).len()));
        let one = self.all_where(|i, _| !self.dependents(i).is_empty());
        let root = self.choose(r, &[memory, some, one])?;
        let kill = t0 + (2 * MIN).min(d * 15 / 100);
        let to = self.svcs[root].prof.mem_limit * 0.98;
        self.task(
            t0,
            Act::Effect(
                root,
                Some(Effect {
                    fault: f,
                    fx: Fx::MemLeak { t0, t1: kill, to },
                }),
            ),
        );
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
            self.task(
                deg,
                Act::Effect(
                    x,
                    Some(Effect {
                        fault: f,
                        fx: Fx::Upstream { dep: root },
                    }),
                ),
            );
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
                self.task(
                    deg,
                    Act::Effect(
                        y,
                        Some(Effect {
                            fault: f,
                            fx: Fx::Upstream { dep: x },
                        }),
                    ),
                );
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
                self.task(at, Act::Effect(x, None));
                self.recovered(at, x, deg, f);
                end = end.max(at);
            }
        }
        let all: Vec<usize> = seen.iter().copied().collect();
        let mut srcs = self.names(all.iter().copied());
        srcs.extend(self.names(self.rec.watchdog));
        srcs.extend(self.names(self.callers(&all)));
        self.reserve(all);
        Some((end, srcs))
    }

    fn ordinary_target(&self) -> Vec<Vec<usize>> {
        vec![
            self.all_where(|_, s| {
                (2..=10).contains(&s.layer)
                    && !matches!(s.role.as_str(), "orchestrator" | "gpu_worker")
            }),
            self.all_where(|_, s| s.role != "orchestrator"),
            self.all_where(|_, _| true),
        ]
    }

    fn port_conflict(
        &mut self,
        r: &mut Rng,
        f: usize,
        t0: i64,
        d: i64,
        sc: f64,
    ) -> Option<(i64, BTreeSet<String>)> {
        let t = self.choose(r, &self.ordinary_target())?;
        let (name, port) = (self.svcs[t].name.clone(), self.svcs[t].port);
        self.svcs[t].version.1 += 1;
        let (a, b, c) = self.svcs[t].version;
        self.chron(
            t0,
            self.rec.deploy,
            "ci-bot",
            "deploy",
            &format!("{name}@v{a}.{b}.{c}"),
            "success",
            Some(f),
        );
        let stopped = self.stop(t, t0 + r.int(1000, 3000), "deploy", Some(f), r);
        let mut at = stopped + r.int(1000, 3000);
        let mut k = 0u32;
        loop {
            let pid = r.int(100, 65000);
            self.flux(
                at,
                t,
                "starting",
                "starting",
                vec![
                    ("version", s(format!("v{a}.{b}.{c}"))),
                    ("pid", Scalar::Int(pid)),
                ],
                Some(f),
            );
            self.log(
                at,
                t,
                "info",
                format!(
                    "Starting {name} v{a}.{b}.{c} (commit {}) pid={pid}",
                    commit(&name, &format!("v{a}.{b}.{c}"))
                ),
                Some(f),
            );
            let fail = at + r.int(300, 1500);
            self.log(
                fail,
                t,
                "error",
                format!("listen tcp 0.0.0.0:{port}: bind: address already in use"),
                Some(f),
            );
            self.flux(
                fail + 2,
                t,
                "failed",
                "failed",
                vec![
                    ("error", s("EADDRINUSE")),
                    ("port", Scalar::Int(port.into())),
                    ("attempt", Scalar::Int(i64::from(k) + 1)),
                ],
                Some(f),
            );
            k += 1;
            let backoff = ((5 * SEC) << k.min(4)).min(60 * SEC);
            at = fail + ((backoff as f64 * sc.max(0.05)) as i64).max(SEC);
            if at >= t0 + d && k >= 2 || k >= 40 {
                break;
            }
        }
        let wd = self.rec.watchdog;
        let actor = wd
            .map(|w| self.svcs[w].name.clone())
            .unwrap_or_else(|| "watchdog".into());
        let stale = r.int(100, 65000);
        self.chron(
            at,
            wd,
            &actor,
            "kill_stale_process",
            &format!("{name}:{port} pid={stale}"),
            "success",
            Some(f),
        );
        let dur = self.startup_ms(r, t);
        let end = self.startup(t, at + r.int(1000, 2000), dur, Some(f), Start::Normal, r);
        let mut srcs = self.names([t]);
        srcs.extend(self.names(self.rec.deploy));
        srcs.extend(self.names(wd));
        srcs.extend(self.names(self.callers(&[t])));
        self.reserve([t]);
        Some((end, srcs))
    }

    fn localhost_trap(
        &mut self,
        r: &mut Rng,
        f: usize,
        t0: i64,
        d: i64,
        sc: f64,
    ) -> Option<(i64, BTreeSet<String>)> {
        let prefs: Vec<Vec<usize>> = self
            .ordinary_target()
            .into_iter()
            .map(|v| {
                v.into_iter()
                    .filter(|&i| !self.svcs[i].deps.is_empty())
                    .collect()
            })
            .collect();
        let t = self.choose(r, &prefs)?;
        let dep = self.pick_dep(r, t, None)?.0;
        let (dn, dp) = (self.svcs[dep].name.clone(), self.svcs[dep].port);
        let target = format!("{}.upstreams.{}", self.svcs[t].name, lower(&dn));
        let who = format!("user:{}", text::user(r));
        self.chron(
            t0,
            self.rec.config,
            &who,
            "config.update",
            &target,
            "success",
            Some(f),
        );
        let reload = t0 + r.int(500, 2000);
        self.log(
            reload,
            t,
            "info",
            format!(
                "config reloaded: {}_url=http://localhost:{dp} (was http://{dn}:{dp})",
                lower(&dn)
            ),
            Some(f),
        );
        self.task(
            reload,
            Act::Effect(
                t,
                Some(Effect {
                    fault: f,
                    fx: Fx::Refused { dep },
                }),
            ),
        );
        let first = format!(
            "request to {dn} failed: dial tcp 127.0.0.1:{dp}: connect: connection refused req_id={}",
            r.hex(16)
        );
        self.log(reload + r.int(50, 900), t, "error", first, Some(f));
        let deg = reload + (r.range(15.0, 45.0) * sc * SEC as f64) as i64;
        self.degraded(
            deg,
            t,
            "error_rate",
            vec![("error_rate", Scalar::Float(rd(r.range(0.4, 0.9), 2)))],
            f,
        );
        let t1 = (t0 + d).max(deg + SEC);
        let who = format!("user:{}", text::user(r));
        self.chron(
            t1,
            self.rec.config,
            &who,
            "config.update",
            &target,
            "success",
            Some(f),
        );
        let reload2 = t1 + r.int(500, 2000);
        self.log(
            reload2,
            t,
            "info",
            format!(
                "config reloaded: {}_url=http://{dn}:{dp} (was http://localhost:{dp})",
                lower(&dn)
            ),
            Some(f),
        );
        self.task(reload2, Act::Effect(t, None));
        let rec = reload2 + r.int(3 * SEC, 10 * SEC);
        self.recovered(rec, t, deg, f);
        let mut srcs = self.names([t]);
        srcs.extend(self.names(self.rec.config));
        srcs.extend(self.names(self.callers(&[t])));
        self.reserve([t]);
        Some((rec, srcs))
    }

    fn crash_loop(
        &mut self,
        r: &mut Rng,
        f: usize,
        t0: i64,
        d: i64,
        sc: f64,
    ) -> Option<(i64, BTreeSet<String>)> {
        let t = self.choose(r, &self.ordinary_target())?;
        let name = self.svcs[t].name.clone();
        let prev = self.svcs[t].version;
        self.svcs[t].version.1 += 1;
        let (a, b, c) = self.svcs[t].version;
        self.chron(
            t0,
            self.rec.deploy,
            "ci-bot",
            "deploy",
            &format!("{name}@v{a}.{b}.{c}"),
            "success",
            Some(f),
        );
        let stopped = self.stop(t, t0 + r.int(1000, 3000), "deploy", Some(f), r);
        let (code, why) = text::crash_reason(r, &name);
        let wd = self.rec.watchdog;
        let actor = wd
            .map(|w| self.svcs[w].name.clone())
            .unwrap_or_else(|| "watchdog".into());
        let mut at = stopped + r.int(1000, 2000);
        let mut k = 0u32;
        loop {
            let pid = r.int(100, 65000);
            self.flux(
                at,
                t,
                "starting",
                "starting",
                vec![
                    ("version", s(format!("v{a}.{b}.{c}"))),
                    ("pid", Scalar::Int(pid)),
                ],
                Some(f),
            );
            self.log(
                at,
                t,
                "info",
                format!(
                    "Starting {name} v{a}.{b}.{c} (commit {}) pid={pid}",
                    commit(&name, &format!("v{a}.{b}.{c}"))
                ),
                Some(f),
            );
            let cfg = at + r.int(300, 1000);
            self.flux(
                cfg,
                t,
                "config_loaded",
                "starting",
                vec![("keys", Scalar::Int(r.int(12, 80)))],
                Some(f),
            );
            let die = cfg + r.int(500, 3000);
            self.log(die, t, "error", why.clone(), Some(f));
            self.flux(
                die + 3,
                t,
                "crashed",
                "crashed",
                vec![
                    ("exit_code", Scalar::Int(code)),
                    ("restarts", Scalar::Int(k.into())),
                ],
                Some(f),
            );
            let backoff = ((10 * SEC) << k.min(5)).min(300 * SEC);
            let outcome = if k < 2 { "success" } else { "backoff" };
            self.chron(die + 50, wd, &actor, "restart", &name, outcome, Some(f));
            k += 1;
            at = die + ((backoff as f64 * sc.max(0.05)) as i64).max(SEC);
            if at >= t0 + d && k >= 3 || k >= 60 {
                break;
            }
        }
        let (pa, pb, pc) = prev;
        self.chron(
            at,
            self.rec.deploy,
            "ci-bot",
            "rollback",
            &format!("{name}@v{pa}.{pb}.{pc}"),
            "success",
            Some(f),
        );
        self.svcs[t].version = prev;
        let dur = self.startup_ms(r, t);
        let end = self.startup(t, at + r.int(1000, 3000), dur, Some(f), Start::Normal, r);
        let mut srcs = self.names([t]);
        srcs.extend(self.names(self.rec.deploy));
        srcs.extend(self.names(wd));
        srcs.extend(self.names(self.callers(&[t])));
        self.reserve([t]);
        Some((end, srcs))
    }

    fn vram_pressure(
        &mut self,
        r: &mut Rng,
        f: usize,
        t0: i64,
        d: i64,
        sc: f64,
    ) -> Option<(i64, BTreeSet<String>)> {
        let gpus = self.all_where(|_, s| s.role == "gpu_worker");
        let g = self.choose(r, &[gpus])?;
        let pct = r.range(94.0, 97.0);
        self.task(
            t0,
            Act::Effect(
                g,
                Some(Effect {
                    fault: f,
                    fx: Fx::Vram { pct },
                }),
            ),
        );
        let t1 = t0 + d;
        self.task(t1, Act::Effect(g, None));
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
        let mut srcs = self.names([g]);
        srcs.extend(self.names(self.callers(&[g])));
        self.reserve([g]);
        Some((rec, srcs))
    }

    fn startup_order(
        &mut self,
        r: &mut Rng,
        f: usize,
        t0: i64,
        sc: f64,
    ) -> Option<(i64, BTreeSet<String>)> {
        let reserved = self.reserved.clone();
        let prefs: Vec<Vec<usize>> = self
            .ordinary_target()
            .into_iter()
            .map(|v| {
                v.into_iter()
                    .filter(|&i| self.svcs[i].deps.iter().any(|(d, _)| !reserved.contains(d)))
                    .collect()
            })
            .collect();
        let sv = self.choose(r, &prefs)?;
        let deps: Vec<usize> = self.svcs[sv]
            .deps
            .iter()
            .map(|&(d, _)| d)
            .filter(|d| !reserved.contains(d) && !self.cron_targets.contains(d))
            .collect();
        let d = match r.pick(&deps) {
            Some(&d) => d,
            None => self.pick_dep(r, sv, None)?.0,
        };
        let target = format!("{},{}", self.svcs[d].name, self.svcs[sv].name);
        // The maintenance itself is routine; only the order is wrong.
        self.chron(
            t0,
            self.rec.scheduler,
            "ops:maintenance",
            "maintenance.restart",
            &target,
            "success",
            None,
        );
        let s_stopped = self.stop(sv, t0 + SEC, "maintenance", None, r);
        let d_stopped = self.stop(d, s_stopped + r.int(500, 2000), "maintenance", None, r);
        let dur = self.startup_ms(r, sv);
        let s_start = d_stopped + r.int(500, 2000);
        let hs = self.startup(sv, s_start, dur, Some(f), Start::MissingDep(d), r);
        let gap = (r.range(20.0, 60.0) * sc.max(0.1) * SEC as f64) as i64;
        let d_start = (d_stopped + gap).max(s_start + 2 * SEC);
        let dur = self.startup_ms(r, d);
        let hd = self.startup(d, d_start, dur, None, Start::Normal, r);
        if hd > hs {
            self.task(
                hs,
                Act::Effect(
                    sv,
                    Some(Effect {
                        fault: f,
                        fx: Fx::Upstream { dep: d },
                    }),
                ),
            );
        }
        let rec = hd.max(hs) + r.int(2 * SEC, 5 * SEC);
        self.task(rec, Act::Effect(sv, None));
        self.recovered(rec, sv, hs, f);
        let mut srcs = self.names([sv]);
        srcs.extend(self.names(self.callers(&[sv])));
        self.reserve([sv, d]);
        Some((rec, srcs))
    }

    fn new_dependency(
        &mut self,
        r: &mut Rng,
        f: usize,
        t0: i64,
        d: i64,
    ) -> Option<(i64, BTreeSet<String>)> {
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
        let graph = GRAPHS[0];
        let body = Body::Graph {
            graph: graph.to_string(),
            src: sn,
            rel: "calls".to_string(),
            dst: xn,
        };
        self.emit(t0 + r.int(SEC, 5 * SEC), graph, body, Some(f));
        let mut srcs = self.names([sv]);
        srcs.insert(graph.to_string());
        srcs.extend(self.graph_sources(f, |sim| sim.svcs[sv].deps.push((x, Some(f)))));
        self.reserve([sv]);
        Some((t0 + d, srcs))
    }

    fn arch_change(&mut self, r: &mut Rng, f: usize, t0: i64) -> Option<(i64, BTreeSet<String>)> {
        let security = self.all_where(|_, s| s.role == "security" && !s.deps.is_empty());
        let with_deps = self.all_where(|_, s| !s.deps.is_empty() && s.role != "orchestrator");
        let t = self.choose(
            r,
            &[
                self.name_is("AitherAuth"),
                security,
                with_deps,
                self.all_where(|_, _| true),
            ],
        )?;
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
        let dur = self.startup_ms(r, ni);
        let hn = self.startup(
            ni,
            stopped + r.int(1000, 3000),
            dur,
            Some(f),
            Start::Normal,
            r,
        );
        // Its own startup sees its new dependency list: set it for the
        // scripted sequence, the task above makes it true at run time.
        let saved = std::mem::replace(&mut self.svcs[t].deps, vec![(ni, Some(f))]);
        let dur = self.startup_ms(r, t);
        let ht = self.startup(t, hn + r.int(1000, 3000), dur, Some(f), Start::Normal, r);
        // The live topology notices the new edges as soon as calls flow.
        let g = GRAPHS[0];
        let mut edges = vec![(base.clone(), new_name.clone())];
        edges.extend(
            old_deps
                .iter()
                .map(|&(d, _)| (new_name.clone(), self.svcs[d].name.clone())),
        );
        for (k, (a, b)) in edges.into_iter().enumerate() {
            let body = Body::Graph {
                graph: g.to_string(),
                src: a,
                rel: "calls".to_string(),
                dst: b,
            };
            self.emit(ht + 200 + 25 * k as i64, g, body, Some(f));
        }
        self.svcs[t].deps = saved;
        let mut srcs = self.names([t, ni]);
        srcs.extend(self.graph_sources(f, |sim| {
            sim.svcs[ni].exists = true;
            sim.svcs[t].deps = vec![(ni, Some(f))];
        }));
        srcs.extend(self.names(rec));
        srcs.extend(self.names(self.callers(&[t])));
        let mut r2 = Rng::stream(r.next_u64(), "arch-change-recurring");
        self.schedule_recurring(&mut r2, ni, hn);
        self.reserve([t, ni]);
        Some((self.end, srcs))
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

enum Call {
    Ok,
    Slow(f64, usize),
    Failing(usize),
    Down(Option<usize>),
}

fn new_svc(s: &Service, index: &BTreeMap<&str, usize>, seed: u64, start: i64) -> Svc {
    let prof = profile(&s.name, &s.role);
    let mut vr = Rng::stream(PROFILE_SEED ^ 0x7E5, &s.name);
    Svc {
        name: s.name.clone(),
        layer: s.layer,
        port: s.port,
        role: s.role.clone(),
        deps: s
            .depends_on
            .iter()
            .filter_map(|d| index.get(d.as_str()).map(|&i| (i, None)))
            .collect(),
        mem: prof.mem * 0.85,
        prof,
        rng: Rng::stream(seed, &s.name),
        exists: true,
        up: false,
        down_fault: None,
        up_since: start,
        burst: None,
        effect: None,
        label_all: None,
        busy_until: i64::MIN,
        version: (
            vr.int(0, 3) as u32,
            vr.int(0, 30) as u32,
            vr.int(0, 20) as u32,
        ),
        pid: 0,
        in_cron: false,
        hb_seq: 0,
        log_chain: 0,
    }
}

impl Iterator for Simulation {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(ev) = self.ready.pop_front() {
                return Some(ev);
            }
            let next_ev = self.pending.peek().map(|p| p.0.ev.ts);
            let next_task = self.tasks.peek().map(|t| t.0.t);
            match (next_ev, next_task) {
                (Some(e), Some(t)) if e <= t => return self.pending.pop().map(|p| p.0.ev),
                (Some(_), None) => return self.pending.pop().map(|p| p.0.ev),
                (_, Some(_)) => {
                    let Reverse(task) = self.tasks.pop()?;
                    self.now = task.t;
                    self.running = true;
                    self.run(task.t, task.act);
                    self.running = false;
                }
                (None, None) => return None,
            }
        }
    }
}
