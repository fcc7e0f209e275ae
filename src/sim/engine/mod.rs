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
//!
//! The engine's `impl Simulation` is spread over its child modules, one
//! concern each, all sharing the state in [`Simulation`]: `queue` (the two
//! queues, emitting events, the iterator), `shape` (who records, who calls
//! whom), `lifecycle` (starts, stops, the boot), `everyday` (each service's
//! pulses, logs, heartbeats and work), `trace` (the agents' request traces),
//! `routine` (audit trail, deploys, maintenance, bursts, cron, graphs) and
//! `faults` (planning and the fault scripts).

mod everyday;
mod faults;
mod lifecycle;
mod queue;
mod routine;
mod shape;
mod trace;

use super::fault::{Fault, FaultSpec};
use super::registry_gen;
use super::rng::Rng;
use super::service::{new_svc, Svc};
use crate::event::{Event, Scalar};
use crate::registry::Registry;
use queue::{Act, Queued};
use shape::Recorders;
use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, VecDeque};

const SEC: i64 = 1000;
const MIN: i64 = 60 * SEC;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;

/// 2026-01-01T00:00:00Z: a fixed epoch so that outputs are reproducible.
pub const DEFAULT_START_MS: i64 = 1_767_225_600_000;

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
    /// The OS is already up at the first instant: no boot sequence, every
    /// service live and on its rhythm from the start. A run that continues
    /// another (the demo's phases) is not a reboot, in which services that
    /// boot last are silent for a minute.
    pub running: bool,
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
            running: false,
        }
    }
}

/// The simulation: an iterator over the OS's events in time order.
pub struct Simulation {
    start: i64,
    end: i64,
    now: i64,
    running: bool,
    svcs: Vec<Svc>,
    rng: Rng,
    tasks: BinaryHeap<Reverse<Queued<Act>>>,
    pending: BinaryHeap<Reverse<Queued<Event>>>,
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

/// `x` rounded to `decimals` places, as a metric is published.
fn rd(x: f64, decimals: i32) -> f64 {
    let p = 10f64.powi(decimals);
    (x * p).round() / p
}

/// Daily load cycle: 1.0 at 14:00 UTC, 0.2 at 02:00 UTC.
fn load(ts: i64) -> f64 {
    let h = ts.rem_euclid(DAY) as f64 / HOUR as f64;
    0.6 + 0.4 * (std::f64::consts::TAU * (h - 14.0) / 24.0).cos()
}

/// A string attribute.
fn s(v: impl Into<String>) -> Scalar {
    Scalar::Str(v.into())
}

impl Simulation {
    fn new(cfg: &SimConfig) -> anyhow::Result<Simulation> {
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
        let index = registry_gen::name_index(&registry);
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
        let booted = if cfg.running {
            sim.already_up()
        } else {
            sim.boot()
        };
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

    /// The first simulated instant (Unix ms).
    pub fn start_ms(&self) -> i64 {
        self.start
    }

    /// Faults that were asked for but could not be placed (e.g. no GPU worker).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
}
