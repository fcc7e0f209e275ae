//! The reasoning agents' request traces (the SixPillars cycle), which show a
//! fault on any service they call.

use super::queue::Act;
use super::{load, rd, Simulation};
use crate::event::{Body, Phase};
use crate::sim::rng::Rng;
use crate::sim::service::{Effect, Fx};
use crate::sim::text::{self, ms};

/// How a call from a reasoning agent to a service goes.
enum Call {
    Ok,
    Slow(f64, usize),
    Failing(usize),
    Down(Option<usize>),
}

impl Call {
    /// The fault a call that went wrong shows (a trace event's label).
    fn fault(&self) -> Option<usize> {
        match *self {
            Call::Slow(_, f) | Call::Failing(f) | Call::Down(Some(f)) => Some(f),
            Call::Ok | Call::Down(None) => None,
        }
    }
}

impl Simulation {
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
    pub(super) fn trace(&mut self, t: i64, a: usize) {
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
        let call = mem.map(|m| self.call(&mut r, m));
        let label = call.as_ref().and_then(Call::fault);
        let summary = match call {
            None => "no memory service configured, skipped recall".to_string(),
            Some(Call::Ok) => format!(
                "recalled {k} memories from {mem_n} (episodic={}, semantic={})",
                k / 2,
                k - k / 2
            ),
            Some(Call::Slow(x, _)) => {
                d += x;
                format!("recalled {k} memories from {mem_n} (slow: {}ms)", ms(x))
            }
            Some(Call::Failing(_)) => format!("{mem_n} returned 503, recalled 0 memories"),
            Some(Call::Down(Some(_))) => {
                d += r.range(1000.0, 3000.0);
                format!("{mem_n} unavailable: connection refused, continuing without recall")
            }
            Some(Call::Down(None)) => {
                d += r.range(200.0, 900.0);
                format!("{mem_n} restarting, retried: recalled {k} memories")
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
        let call = mind.map(|m| self.call(&mut r, m));
        let label = call.as_ref().and_then(Call::fault);
        let summary = match call {
            None => format!(
                "local model={model} tokens_in={tin} tokens_out={tout} confidence={conf:.2}"
            ),
            Some(Call::Ok) => format!(
                "{mind_n} model={model} tokens_in={tin} tokens_out={tout} confidence={conf:.2}"
            ),
            Some(Call::Slow(x, _)) => {
                d += x * r.range(2.0, 4.0);
                format!(
                    "{mind_n} model={model} tokens_in={tin} tokens_out={tout} confidence={conf:.2} (waited {}ms)",
                    ms(d)
                )
            }
            Some(Call::Failing(_)) => {
                format!("{mind_n} returned 503, retried once, confidence={conf:.2}")
            }
            Some(Call::Down(Some(_))) => {
                d += r.range(2000.0, 5000.0);
                format!("{mind_n} unavailable (connection refused), fell back to local model")
            }
            Some(Call::Down(None)) => {
                d += r.range(300.0, 1200.0);
                format!("{mind_n} restarting, retried: tokens_in={tin} tokens_out={tout}")
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
        let call = actor.map(|x| self.call(&mut r, x));
        let label = call.as_ref().and_then(Call::fault);
        let summary = match call {
            None => "answered directly, no delegation".to_string(),
            Some(Call::Ok) => format!("delegated to {actor_n}: ok ({calls} tool calls)"),
            Some(Call::Slow(x, _)) => {
                d += x;
                format!("delegated to {actor_n}: ok after {}ms", ms(d))
            }
            Some(Call::Failing(_)) => {
                format!("delegated to {actor_n}: error 502 (upstream failure)")
            }
            Some(Call::Down(Some(_))) => {
                d = r.range(20.0, 200.0);
                format!("delegation to {actor_n} failed: connection refused")
            }
            Some(Call::Down(None)) => {
                d += r.range(300.0, 1500.0);
                format!("delegated to {actor_n}: ok after retry ({calls} tool calls)")
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
}
