//! Each running service's everyday output: metric pulses, log lines,
//! heartbeats and work events, with a fault's effect showing in them.

use super::queue::Act;
use super::{load, rd, s, Simulation, SEC};
use crate::event::{Body, Scalar};
use crate::sim::rng::Rng;
use crate::sim::service::{Effect, Fx};
use crate::sim::text::{self, lower, ms, LogCtx};
use std::collections::BTreeMap;

impl Simulation {
    pub(super) fn live(&self, i: usize) -> bool {
        self.svcs[i].exists && self.svcs[i].up
    }

    pub(super) fn pulse(&mut self, t: i64, i: usize) {
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

    pub(super) fn pick_dep(
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

    pub(super) fn everyday_log(&mut self, t: i64, i: usize) {
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

    pub(super) fn heartbeat(&mut self, t: i64, i: usize) {
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

    pub(super) fn work(&mut self, t: i64, i: usize) {
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
}
