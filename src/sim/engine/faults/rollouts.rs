//! Faults an operator's change sets off: a deploy whose port is taken or
//! that crashes on start, a config pointing at localhost, a maintenance
//! restart in the wrong order.

use super::super::lifecycle::Start;
use super::super::{rd, s, Simulation, SEC};
use super::{Placed, Window};
use crate::event::Scalar;
use crate::sim::rng::Rng;
use crate::sim::service::Fx;
use crate::sim::text::{self, lower};

impl Simulation {
    /// A new minor version of an ordinary service deployed, the deploy that
    /// will go wrong; returns the service and when its old process exited.
    fn bad_deploy(&mut self, r: &mut Rng, w: Window) -> Option<(usize, i64)> {
        let t = self.choose(r, &self.ordinary_target())?;
        self.svcs[t].version.1 += 1;
        Some((t, self.deploy_stop(r, t, w.t0, Some(w.f))))
    }

    /// Service `t` failing to start again and again from `at`: each try is
    /// `attempt(sim, r, started, k)`, which tells when try `k` failed and the
    /// nominal backoff before the next (shrunk with the window). Tries go on
    /// until the window is over, `tries.0` at least and `tries.1` at most;
    /// returns when the last backoff ends.
    fn failing_starts(
        &mut self,
        r: &mut Rng,
        w: Window,
        t: usize,
        mut at: i64,
        tries: (u32, u32),
        mut attempt: impl FnMut(&mut Self, &mut Rng, i64, u32) -> (i64, i64),
    ) -> i64 {
        let mut k = 0u32;
        loop {
            self.starting(r, at, t, Some(w.f));
            let (failed, backoff) = attempt(self, r, at, k);
            k += 1;
            at = failed + ((backoff as f64 * w.sc.max(0.05)) as i64).max(SEC);
            if at >= w.t0 + w.d && k >= tries.0 || k >= tries.1 {
                return at;
            }
        }
    }

    /// The bad deploy's end: service `t` starting cleanly a `gap` after `at`.
    /// Besides `t`, the deploy and the watchdog record the fault.
    fn rollout_end(
        &mut self,
        r: &mut Rng,
        w: Window,
        t: usize,
        at: i64,
        gap: (i64, i64),
    ) -> Placed {
        let end = self.start_after(r, t, at, gap, Some(w.f));
        let witnesses = self.rec.deploy.into_iter().chain(self.rec.watchdog);
        let srcs = self.involve(&[t], witnesses);
        Some((end, t, srcs))
    }

    pub(super) fn port_conflict(&mut self, r: &mut Rng, w: Window) -> Placed {
        let f = w.f;
        let (t, stopped) = self.bad_deploy(r, w)?;
        let (name, port) = (self.svcs[t].name.clone(), self.svcs[t].port);
        let first = stopped + r.int(1000, 3000);
        let at = self.failing_starts(r, w, t, first, (2, 40), |sim, r, at, k| {
            let fail = at + r.int(300, 1500);
            let msg = format!("listen tcp 0.0.0.0:{port}: bind: address already in use");
            sim.log(fail, t, "error", msg, Some(f));
            sim.flux(
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
            (fail, ((5 * SEC) << (k + 1).min(4)).min(60 * SEC))
        });
        let wd = self.rec.watchdog;
        let actor = self.watchdog_name();
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
        self.rollout_end(r, w, t, at, (1000, 2000))
    }

    /// An operator pointing service `t` at upstream `dep` by `localhost` (or
    /// back at its name) at `at`; returns when `t` has reloaded its config.
    fn set_upstream(
        &mut self,
        r: &mut Rng,
        f: usize,
        at: i64,
        t: usize,
        dep: usize,
        local: bool,
    ) -> i64 {
        let (dn, dp) = (self.svcs[dep].name.clone(), self.svcs[dep].port);
        let target = format!("{}.upstreams.{}", self.svcs[t].name, lower(&dn));
        let who = format!("user:{}", text::user(r));
        self.chron(
            at,
            self.rec.config,
            &who,
            "config.update",
            &target,
            "success",
            Some(f),
        );
        let reload = at + r.int(500, 2000);
        let (named, localhost) = (
            format!("http://{dn}:{dp}"),
            format!("http://localhost:{dp}"),
        );
        let (now, was) = if local {
            (localhost, named)
        } else {
            (named, localhost)
        };
        let msg = format!("config reloaded: {}_url={now} (was {was})", lower(&dn));
        self.log(reload, t, "info", msg, Some(f));
        reload
    }

    pub(super) fn localhost_trap(&mut self, r: &mut Rng, w: Window) -> Placed {
        let Window { f, t0, d, sc } = w;
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
        let reload = self.set_upstream(r, f, t0, t, dep, true);
        self.affect(reload, t, f, Fx::Refused { dep });
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
        let reload2 = self.set_upstream(r, f, t1, t, dep, false);
        self.end_effect(reload2, t);
        let rec = reload2 + r.int(3 * SEC, 10 * SEC);
        self.recovered(rec, t, deg, f);
        let srcs = self.involve(&[t], self.rec.config);
        Some((rec, t, srcs))
    }

    pub(super) fn crash_loop(&mut self, r: &mut Rng, w: Window) -> Placed {
        let f = w.f;
        let (t, stopped) = self.bad_deploy(r, w)?;
        let name = self.svcs[t].name.clone();
        let (code, why) = text::crash_reason(r, &name);
        let wd = self.rec.watchdog;
        let actor = self.watchdog_name();
        let first = stopped + r.int(1000, 2000);
        let at = self.failing_starts(r, w, t, first, (3, 60), |sim, r, at, k| {
            let cfg = at + r.int(300, 1000);
            sim.flux(
                cfg,
                t,
                "config_loaded",
                "starting",
                vec![("keys", Scalar::Int(r.int(12, 80)))],
                Some(f),
            );
            let die = cfg + r.int(500, 3000);
            sim.log(die, t, "error", why.clone(), Some(f));
            sim.flux(
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
            let outcome = if k < 2 { "success" } else { "backoff" };
            sim.chron(die + 50, wd, &actor, "restart", &name, outcome, Some(f));
            (die, ((10 * SEC) << k.min(5)).min(300 * SEC))
        });
        self.svcs[t].version.1 -= 1;
        let (pa, pb, pc) = self.svcs[t].version;
        self.chron(
            at,
            self.rec.deploy,
            "ci-bot",
            "rollback",
            &format!("{name}@v{pa}.{pb}.{pc}"),
            "success",
            Some(f),
        );
        self.rollout_end(r, w, t, at, (1000, 3000))
    }

    pub(super) fn startup_order(&mut self, r: &mut Rng, w: Window) -> Placed {
        let Window { f, t0, sc, .. } = w;
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
        // The maintenance itself is routine; only the order is wrong.
        let d_stopped = self.maintenance_stop(r, t0, sv, d);
        let dur = self.startup_ms(r, sv);
        let s_start = d_stopped + r.int(500, 2000);
        let hs = self.startup(sv, s_start, dur, Some(f), Start::MissingDep(d), r);
        let gap = (r.range(20.0, 60.0) * sc.max(0.1) * SEC as f64) as i64;
        let d_start = (d_stopped + gap).max(s_start + 2 * SEC);
        let dur = self.startup_ms(r, d);
        let hd = self.startup(d, d_start, dur, None, Start::Normal, r);
        if hd > hs {
            self.affect(hs, sv, f, Fx::Upstream { dep: d });
        }
        let rec = hd.max(hs) + r.int(2 * SEC, 5 * SEC);
        self.end_effect(rec, sv);
        self.recovered(rec, sv, hs, f);
        let srcs = self.involve(&[sv], None);
        self.reserve([d]);
        Some((rec, sv, srcs))
    }
}
