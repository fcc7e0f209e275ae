//! The OS's routine episodes, none of them a fault: the audit trail, deploys,
//! planned maintenance, load bursts, the nightly cron and graph snapshots.

use super::queue::Act;
use super::{load, rd, s, Simulation, DAY, HOUR, MIN, SEC};
use crate::event::{Body, Scalar};
use crate::sim::graphs::{self, GRAPHS};
use crate::sim::rng::Rng;
use crate::sim::text::{self, lower};

impl Simulation {
    pub(super) fn chronicle(&mut self, t: i64) {
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

    pub(super) fn deploy(&mut self, t: i64) {
        let mut r = self.take_rng();
        self.task(t + r.exp(25.0 * MIN as f64) as i64, Act::Deploy);
        let cands: Vec<usize> = (0..self.svcs.len())
            .filter(|&i| self.eligible(i, t))
            .collect();
        if let Some(&i) = r.pick(&cands) {
            self.svcs[i].version.2 += 1;
            let stopped = self.deploy_stop(&mut r, i, t, None);
            let h = self.start_after(&mut r, i, stopped, (1000, 3000), None);
            self.svcs[i].busy_until = h + MIN;
        }
        self.rng = r;
    }

    /// Planned maintenance: a dependency and a dependent restarted in the
    /// right order (dependent stops first, dependency starts first), the
    /// pattern the startup-order fault breaks.
    pub(super) fn rolling(&mut self, t: i64) {
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
            let d_stopped = self.maintenance_stop(&mut r, t, sv, d);
            let hd = self.start_after(&mut r, d, d_stopped, (1000, 3000), None);
            let hs = self.start_after(&mut r, sv, hd, (500, 2000), None);
            self.svcs[d].busy_until = hs + MIN;
            self.svcs[sv].busy_until = hs + MIN;
        }
        self.rng = r;
    }

    /// The deploy of service `i`'s current version as the audit trail and the
    /// service tell it, up to the old process's exit (returned).
    pub(super) fn deploy_stop(
        &mut self,
        r: &mut Rng,
        i: usize,
        t: i64,
        label: Option<usize>,
    ) -> i64 {
        let (a, b, c) = self.svcs[i].version;
        let target = format!("{}@v{a}.{b}.{c}", self.svcs[i].name);
        self.chron(
            t,
            self.rec.deploy,
            "ci-bot",
            "deploy",
            &target,
            "success",
            label,
        );
        self.stop(i, t + r.int(1000, 3000), "deploy", label, r)
    }

    /// Maintenance of service `sv` and its dependency `d` announced and both
    /// stopped, the dependent first; returns when `d` has exited.
    pub(super) fn maintenance_stop(&mut self, r: &mut Rng, t: i64, sv: usize, d: usize) -> i64 {
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
        let s_stopped = self.stop(sv, t + SEC, "maintenance", None, r);
        self.stop(d, s_stopped + r.int(500, 2000), "maintenance", None, r)
    }

    pub(super) fn burst(&mut self, t: i64) {
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
    pub(super) fn cron(&mut self, t: i64) {
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

    pub(super) fn cron_end(&mut self, t: i64) {
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
    pub(super) fn graph(&mut self, t: i64, g: usize) {
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
}
