//! What a source last said about itself: its latest state transition (a
//! flux event's name), carried into its pulses for a while (rendering
//! scheme 3), so a metric row is read beside the change that explains it.
//!
//! Why: a routine load burst announces itself (`request_burst`, then
//! `degraded reason=load`) and the service's CPU and latency then sit
//! several spreads above their level for minutes. As bytes a pulse is
//! about 100 tokens, so in a 128-token block the flux event that
//! announced the burst is out of the context by the first pulse: every
//! pulse of every burst read as a metric anomaly, and bursts were most of
//! a fault-free day's false incidents (docs/EVAL.md, "What the fault-free
//! day's false incidents are"). Carried as `<|EVENT|>request_burst` after
//! the pulse's source name, the reason is in the line the model reads.
//! The carried words are context, not content: the flux event itself was
//! scored when it came (the scorer's `content_positions` leaves them out).
//!
//! A source's routine events (a heartbeat every 5 minutes, a worker's
//! `job_completed`) are neither carried nor end what is carried: said on
//! every pulse they would cost ten tokens and tell nothing, and a heartbeat
//! a minute into a burst would hide the burst. A name is routine for a
//! source that said it [`Said::ROUTINE_COUNT`] times within the last
//! [`Said::ROUTINE_MS`] before. Measured against carrying every flux event
//! (a heartbeat too), training seeds 1-3: fault-free day 2/8/0 false
//! incidents against 0/19/0, mixed day 3/4/3 against 0/7/0 (docs/EVAL.md,
//! "A pulse carries its source's latest state transition"); the filter's
//! worst seed is the better one.
//!
//! The state is the walk's, as [`super::Scaler`]'s is: each reader sees a
//! source's events in the same order and writes the same lines.

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

/// Per source, its latest unroutine flux event and when it came.
#[derive(Debug, Clone, Default)]
pub struct Said {
    sources: HashMap<String, Source>,
}

#[derive(Debug, Clone, Default)]
struct Source {
    /// The latest event that is not routine, and when.
    latest: Option<(String, i64)>,
    /// The names said lately (a hash of each) with the times of their
    /// last [`Said::ROUTINE_COUNT`] sayings, at most [`Said::NAMES`].
    names: Vec<(u64, [i64; Said::ROUTINE_COUNT])>,
    last_ts: i64,
}

impl Said {
    /// How long after its flux event a source's pulses carry it: a load
    /// burst lasts up to 6 minutes and its `recovered` follows its end.
    pub const CARRY_MS: i64 = 10 * 60_000;
    /// Sources kept; past it the half heard from longest ago is forgotten
    /// (about 200 bytes each with the names: 50 000 sources, ~10 MB).
    pub const MAX_SOURCES: usize = 50_000;
    /// The longest event name carried, in bytes: a name is a word, and a
    /// long one would push the metrics out of the block.
    pub const MAX_NAME: usize = 32;
    /// Names a source's history holds; a new one displaces the one said
    /// longest ago.
    pub const NAMES: usize = 8;
    /// A name said this many times ...
    pub const ROUTINE_COUNT: usize = 3;
    /// ... within this long is routine: a heartbeat (every 5 minutes) or
    /// a busy worker's jobs are, a daily job or a burst now and then not.
    pub const ROUTINE_MS: i64 = 60 * 60_000;

    /// `source` said `event` at `ts`. An unroutine event replaces what its
    /// pulses carry; one older than the latest known is ignored.
    pub fn note(&mut self, source: &str, event: &str, ts: i64) {
        if !self.sources.contains_key(source) && self.sources.len() >= Self::MAX_SOURCES {
            self.forget_older_half();
        }
        let s = self.sources.entry(source.to_string()).or_default();
        if ts < s.last_ts {
            return;
        }
        s.last_ts = ts;
        if s.routine(name_hash(event), ts) {
            return;
        }
        s.latest =
            (!event.is_empty() && event.len() <= Self::MAX_NAME).then(|| (event.to_string(), ts));
    }

    /// The event a pulse of `source` at `ts` carries: its latest unroutine
    /// one, if it came at most [`Said::CARRY_MS`] before (and not after)
    /// `ts`.
    pub fn recent(&self, source: &str, ts: i64) -> Option<&str> {
        let (event, t) = self.sources.get(source)?.latest.as_ref()?;
        (0..=Self::CARRY_MS)
            .contains(&(ts - t))
            .then_some(event.as_str())
    }

    /// A rendered line without a pulse's carried event (`<|EVENT|>` and
    /// the name after it), for readers that judge what the event itself
    /// says: a pulse carrying `oom_killed` is not an OOM kill.
    pub fn without_carried(rendered: &str) -> Cow<'_, str> {
        if !rendered.contains("<|PULSE|>") {
            return Cow::Borrowed(rendered);
        }
        let Some(i) = rendered.find("<|EVENT|>") else {
            return Cow::Borrowed(rendered);
        };
        let name = i + "<|EVENT|>".len();
        let end = rendered[name..]
            .find("<|")
            .map_or(rendered.len(), |j| name + j);
        Cow::Owned(format!("{}{}", &rendered[..i], &rendered[end..]))
    }

    pub fn len(&self) -> usize {
        self.sources.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    fn forget_older_half(&mut self) {
        super::forget_older_half(&mut self.sources, |s| s.last_ts);
    }
}

impl Source {
    /// Notes the name `h` said at `ts`; whether it was routine by then.
    fn routine(&mut self, h: u64, ts: i64) -> bool {
        let i = match self.names.iter().position(|(n, _)| *n == h) {
            Some(i) => i,
            None => {
                if self.names.len() >= Said::NAMES {
                    let stalest = (0..self.names.len())
                        .min_by_key(|&i| self.names[i].1[Said::ROUTINE_COUNT - 1])
                        .unwrap_or(0);
                    self.names.swap_remove(stalest);
                }
                self.names.push((h, [i64::MIN; Said::ROUTINE_COUNT]));
                self.names.len() - 1
            }
        };
        // The times, oldest first.
        let times = &mut self.names[i].1;
        let routine = times[0] != i64::MIN && ts - times[0] <= Said::ROUTINE_MS;
        times.rotate_left(1);
        times[Said::ROUTINE_COUNT - 1] = ts;
        routine
    }
}

/// A name's hash, to tell names apart within one walk.
fn name_hash(s: &str) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pulse_carries_the_latest_event_for_a_while() {
        let mut s = Said::default();
        assert_eq!(s.recent("a", 0), None);
        s.note("a", "request_burst", 1_000);
        assert_eq!(s.recent("a", 1_000), Some("request_burst"));
        assert_eq!(s.recent("a", 1_000 + Said::CARRY_MS), Some("request_burst"));
        assert_eq!(s.recent("a", 1_001 + Said::CARRY_MS), None);
        // Not before it came, and not for another source.
        assert_eq!(s.recent("a", 999), None);
        assert_eq!(s.recent("b", 1_000), None);
        // A later event replaces it; an older one does not.
        s.note("a", "degraded", 30_000);
        s.note("a", "started", 20_000);
        assert_eq!(s.recent("a", 40_000), Some("degraded"));
        // A name too long to carry ends what was carried.
        s.note("a", &"x".repeat(Said::MAX_NAME + 1), 50_000);
        assert_eq!(s.recent("a", 60_000), None);
    }

    #[test]
    fn routine_events_are_not_carried_and_hide_nothing() {
        let mut s = Said::default();
        let min = 60_000;
        // A heartbeat every 5 minutes: news the first times, then routine.
        for i in 0..Said::ROUTINE_COUNT as i64 {
            s.note("a", "heartbeat", i * 5 * min);
        }
        assert_eq!(s.recent("a", 10 * min), Some("heartbeat"));
        // Routine from the fourth on: once the third is past its carry,
        // nothing is carried.
        let t = 25 * min;
        for ts in [15 * min, 20 * min, t] {
            s.note("a", "heartbeat", ts);
        }
        assert_eq!(s.recent("a", t), None);
        // A burst, then a heartbeat a minute in: the burst is carried.
        s.note("a", "request_burst", t + min);
        s.note("a", "heartbeat", t + 2 * min);
        assert_eq!(s.recent("a", t + 3 * min), Some("request_burst"));
        // A day of heartbeats with a burst now and then: bursts stay news.
        for i in 0..300 {
            let ts = t + (i + 3) * 5 * min;
            s.note(
                "a",
                if i % 100 == 50 {
                    "request_burst"
                } else {
                    "heartbeat"
                },
                ts,
            );
            let want = (i % 100 == 50 || i % 100 == 51).then_some("request_burst");
            assert_eq!(s.recent("a", ts + 1), want, "i={i}");
        }
        // A source that only ever bursts, hours apart: each is news.
        for i in 0..5 {
            s.note("b", "request_burst", i * 120 * min);
            assert_eq!(s.recent("b", i * 120 * min), Some("request_burst"));
        }
        // A history holds a bounded number of names.
        for i in 0..100 {
            s.note("a", &format!("e{i}"), 10_000 * min + i);
        }
        assert!(s.sources["a"].names.len() <= Said::NAMES);
    }

    #[test]
    fn the_carried_event_can_be_taken_out() {
        let p = "<|BOE|><|PULSE|><|SVC|>a<|EVENT|>oom_killed<|METRIC|>cpu=0<|EOE|>";
        assert_eq!(
            Said::without_carried(p),
            "<|BOE|><|PULSE|><|SVC|>a<|METRIC|>cpu=0<|EOE|>"
        );
        // A flux event's own name stays.
        let f = "<|BOE|><|FLUX|><|SVC|>a<|EVENT|>oom_killed<|EOE|>";
        assert_eq!(Said::without_carried(f), f);
        let bare = "<|BOE|><|PULSE|><|SVC|>a<|METRIC|>cpu=0<|EOE|>";
        assert_eq!(Said::without_carried(bare), bare);
    }

    #[test]
    fn sources_are_bounded() {
        let mut s = Said::default();
        for i in 0..Said::MAX_SOURCES + 10 {
            s.note(&format!("s{i}"), "started", i as i64);
        }
        assert!(s.len() <= Said::MAX_SOURCES);
        // The newest are kept.
        let last = Said::MAX_SOURCES + 9;
        assert_eq!(s.recent(&format!("s{last}"), last as i64), Some("started"));
    }
}
