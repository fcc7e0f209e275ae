//! Services starting and stopping (the flux sequence and its log lines), the
//! boot of the whole OS, and the scheduling of each service's recurring work.

use super::queue::Act;
use super::{commit, s, Simulation, DAY, HOUR, MIN, SEC};
use crate::event::Scalar;
use crate::sim::graphs::GRAPHS;
use crate::sim::rng::Rng;
use crate::sim::text::{lower, ms};

/// How a startup goes.
pub(super) enum Start {
    Normal,
    /// Started before this dependency: the startup-order fault.
    MissingDep(usize),
}

impl Simulation {
    pub(super) fn startup_ms(&self, r: &mut Rng, i: usize) -> i64 {
        let (lo, hi) = self.svcs[i].prof.startup_s;
        (r.range(lo, hi) * SEC as f64) as i64
    }

    /// A service starting: the flux sequence starting, config_loaded,
    /// deps_ready, listening, healthy (in that fixed order) with its logs.
    /// Returns when it is healthy.
    pub(super) fn startup(
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
        self.starting(r, t, i, label);
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

    /// A process of service `i` launching: the `starting` flux event and the
    /// line that names its version, commit and pid.
    pub(super) fn starting(&mut self, r: &mut Rng, t: i64, i: usize, label: Option<usize>) {
        let pid = r.int(100, 65000);
        let name = self.svcs[i].name.clone();
        let (a, b, c) = self.svcs[i].version;
        let version = format!("v{a}.{b}.{c}");
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
    }

    /// A normal startup of service `i` a random `gap` after `after` (the
    /// duration is drawn first); returns when it is healthy.
    pub(super) fn start_after(
        &mut self,
        r: &mut Rng,
        i: usize,
        after: i64,
        gap: (i64, i64),
        label: Option<usize>,
    ) -> i64 {
        let dur = self.startup_ms(r, i);
        let at = after + r.int(gap.0, gap.1);
        self.startup(i, at, dur, label, Start::Normal, r)
    }

    /// A graceful stop; returns when the process has exited.
    pub(super) fn stop(
        &mut self,
        i: usize,
        t: i64,
        reason: &str,
        label: Option<usize>,
        r: &mut Rng,
    ) -> i64 {
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
    pub(super) fn boot(&mut self) -> i64 {
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

    /// The OS already up (see `SimConfig::running`): every service the
    /// boot would start is live at the first instant, with no start-up.
    pub(super) fn already_up(&mut self) -> i64 {
        for i in self.topo_order() {
            self.task(self.start, Act::Up(i, true, None));
        }
        self.start
    }

    pub(super) fn schedule_recurring(&mut self, r: &mut Rng, i: usize, from: i64) {
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

    pub(super) fn schedule_everyday(&mut self) {
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
}
