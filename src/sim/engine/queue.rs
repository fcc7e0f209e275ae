//! The two queues (tasks to run, events already decided) and the iterator that
//! releases events in time order; plus the emit helpers every generator uses
//! to put an event on them.

use super::Simulation;
use crate::event::{Body, Event, Scalar};
use crate::sim::rng::Rng;
use crate::sim::service::{Deps, Effect};
use std::cmp::{Ordering, Reverse};
use std::collections::BTreeMap;

/// Something a task does when its time comes.
pub(super) enum Act {
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
    Deps(usize, Deps),
    Exists(usize),
}

/// An entry of either queue, ordered by time and then by when it was
/// queued, so that entries due at the same instant keep their order.
pub(super) struct Queued<T> {
    t: i64,
    seq: u64,
    item: T,
}

impl<T> PartialEq for Queued<T> {
    fn eq(&self, o: &Self) -> bool {
        (self.t, self.seq) == (o.t, o.seq)
    }
}
impl<T> Eq for Queued<T> {}
impl<T> PartialOrd for Queued<T> {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl<T> Ord for Queued<T> {
    fn cmp(&self, o: &Self) -> Ordering {
        (self.t, self.seq).cmp(&(o.t, o.seq))
    }
}

fn attrs(kv: Vec<(&str, Scalar)>) -> BTreeMap<String, Scalar> {
    kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

impl Simulation {
    pub(super) fn task(&mut self, t: i64, act: Act) {
        if t >= self.end {
            return;
        }
        self.seq += 1;
        let t = t.max(self.now);
        self.tasks.push(Reverse(Queued {
            t,
            seq: self.seq,
            item: act,
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
            self.pending.push(Reverse(Queued {
                t: ev.ts,
                seq: self.seq,
                item: ev,
            }));
        }
    }

    fn label(&self, f: Option<usize>) -> Option<String> {
        f.and_then(|f| self.plan.get(f)).map(|f| f.id.clone())
    }

    pub(super) fn emit(&mut self, ts: i64, source: &str, body: Body, label: Option<usize>) {
        let ev = Event {
            ts,
            source: source.to_string(),
            key: source.to_string(),
            body,
            label: self.label(label),
        };
        self.push(ev);
    }

    pub(super) fn svc_emit(&mut self, ts: i64, i: usize, body: Body, label: Option<usize>) {
        let label = label.or(self.svcs[i].label_all);
        let name = self.svcs[i].name.clone();
        self.emit(ts, &name, body, label);
    }

    pub(super) fn flux(
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

    pub(super) fn log(
        &mut self,
        ts: i64,
        i: usize,
        level: &str,
        message: String,
        label: Option<usize>,
    ) {
        let body = Body::Log {
            message,
            level: Some(level.to_string()),
        };
        self.svc_emit(ts, i, body, label);
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn chron(
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

    pub(super) fn take_rng(&mut self) -> Rng {
        std::mem::replace(&mut self.rng, Rng::new(0))
    }

    pub(super) fn take_svc_rng(&mut self, i: usize) -> Rng {
        std::mem::replace(&mut self.svcs[i].rng, Rng::new(0))
    }

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
}

impl Iterator for Simulation {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(ev) = self.ready.pop_front() {
                return Some(ev);
            }
            let next_ev = self.pending.peek().map(|p| p.0.t);
            let next_task = self.tasks.peek().map(|t| t.0.t);
            match (next_ev, next_task) {
                (Some(e), Some(t)) if e <= t => return self.pending.pop().map(|p| p.0.item),
                (Some(_), None) => return self.pending.pop().map(|p| p.0.item),
                (_, Some(_)) => {
                    let Reverse(task) = self.tasks.pop()?;
                    self.now = task.t;
                    self.running = true;
                    self.run(task.t, task.item);
                    self.running = false;
                }
                (None, None) => return None,
            }
        }
    }
}
