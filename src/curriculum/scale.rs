//! Metric values relative to their own series: each (source, metric)
//! series keeps a robust recent level and spread, and a value is written as
//! how many spreads it sits from that level, quantised into a few shared
//! value words (`0` within two spreads, `+1` .. `+7` one per doubling,
//! `-1` .. `-7`), as Chronos scales each
//! series by its own level before quantising (Ansari et al., 2024).
//!
//! Why: as an absolute half-octave bucket (`b23`) a value is resolved to
//! about +/-19 %, and what is usual differs per service, so the 32-dim
//! model had to memorise every service's levels: a latency spike from a
//! service's usual 120 ms to 3 s scored like ordinary text (issue 16). Here
//! the usual reads `0` for every series, and a spike reads `+7` wherever it
//! happens.
//!
//! The state is per reader of the stream (the harvester, each scorer,
//! eval's and `proprio score`'s walk over a file): each sees the same
//! series' values in the same order, so each writes the same words once its
//! series are warm. A series with fewer than [`Scaler::MIN_SAMPLES`] values
//! is cold and its values read as usual (`0`): a reader that restarts is
//! blind to a series' values for its first few samples, rather than
//! alarmed by all of them.
//!
//! A stuck series (scheme 2, [`Scaler::flat`]): a series that varies
//! and then repeats one non-zero value, exactly, more times in a row than
//! it ever did before (twice its longest earlier run, and at least
//! [`Scaler::FLAT_RUN`] samples) reads `flat` instead of its value word. A
//! stuck exporter or a frozen gauge repeats its last value, which every
//! value word reads as usual (issue 16's flat-line). Zero is left out: a
//! counter or a queue that idles at 0 is quiet, not stuck; so is a series
//! back at the value of its longest earlier run (a constant gauge after a
//! noisy spell, read by a walk that began shortly before it).
//!
//! A held series (scheme 5, [`Scaler::held`]): a slow series whose window
//! word has stayed at `+2` or beyond (or `-2`) for its last
//! [`Scaler::HELD_RUN`] values, or whose last values all sit off the line
//! through the two hours before them ([`Recent::off_trend`]), writes `~`
//! after its word (`+2~!0`, `0~!0`): a level shift or a drift the window
//! has not taken in yet. One such value is an excursion; a run is not, and
//! its repeated line is never scored again, so the run must be in the word.
//!
//! Adaptation: a series admits at most one value per `adapt / WINDOW` of
//! event time into its window of [`Scaler::WINDOW`] values, so after a
//! sustained level shift its median, and with it the words, follow within
//! about half of `adapt` (30 min by default, `render.adapt`); a spike of a
//! few samples hardly enters the window at all.

use super::sudden::Recent;
use super::Said;
use crate::median::median;
use std::collections::{HashMap, VecDeque};
use std::fmt::Write;

/// Per (source, metric), the recent values a value is read against.
#[derive(Debug, Clone)]
pub struct Scaler {
    series: HashMap<(String, String), Series>,
    /// Whether the event being rendered keeps its [`Reading`]s
    /// ([`Scaler::recording`]): a scorer's explanations want them, the
    /// harvester does not.
    record: bool,
    readings: Vec<Reading>,
    /// Event time a window spans once full: a level shift is the new
    /// normal after about half of it.
    adapt_ms: i64,
    max_series: usize,
    /// Whether a stuck series reads `flat` (rendering scheme 2).
    flat: bool,
    /// Whether a value far off its last few values says so (rendering
    /// scheme 4, [`Recent`]).
    sudden: bool,
    /// Whether a slow series held off its usual says so (rendering
    /// scheme 5, [`Scaler::HELD_RUN`]).
    held: bool,
    /// Each source's latest flux event, when pulses carry it (rendering
    /// scheme 3).
    said: Option<Said>,
}

/// A pulse metric's value as published and its series' usual range (level
/// -/+ two spreads) when it was read; none while the series was too new to
/// know. What an explanation names instead of the value word.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub metric: String,
    pub value: f64,
    pub usual: Option<(f64, f64)>,
    /// Samples in a row at this value when it read `flat`, else 0.
    pub flat_for: u32,
    /// Where the line through the series' last values put it (level -/+
    /// [`Recent::LEAST`] spreads) when the value sat off it (scheme 4).
    pub lately: Option<(f64, f64)>,
}

#[derive(Debug, Clone, Default)]
struct Series {
    window: VecDeque<f64>,
    last_admitted: i64,
    last_ts: i64,
    /// The repeats: the previous value, how many samples in a row held it,
    /// the longest such run that ended, the changes of value and the
    /// samples seen (saturating).
    last: Option<f64>,
    run: u32,
    longest: u32,
    /// The value of that longest run: back at it, a series rests.
    rest: Option<f64>,
    changes: u32,
    seen: u32,
    /// The last values as they came, every one (scheme 4).
    recent: Recent,
    /// Window words in a row at [`Scaler::HELD_BIN`] or beyond on one
    /// side, signed by the side (scheme 5).
    off_run: i32,
}

/// A value's word: its reading against the window, and from scheme 4
/// against its last few values when that is far (`0!+3`: usual for the
/// hours, 8 to 16 spreads off the last minutes' line); from scheme 5 `~`
/// after the window's word when it has stayed off for a while (`+2~!0`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Word {
    pub scaled: Scaled,
    /// Bins off the local line ([`Recent::bin`]), 0 within 4 spreads;
    /// none for a fast series or one too new to have a line.
    pub sudden: Option<i8>,
    /// The series has been off its usual on one side for its last values
    /// ([`Scaler::HELD_RUN`], [`Recent::off_trend`]).
    pub held: bool,
}

impl Word {
    pub fn write(self, s: &mut String) {
        self.scaled.write(s);
        if self.held {
            s.push('~');
        }
        match self.sudden {
            _ if matches!(self.scaled, Scaled::Flat(_)) => {}
            Some(0) => s.push_str("!0"),
            Some(b) => {
                let _ = write!(s, "!{b:+}");
            }
            None => {}
        }
    }
}

/// How far a value sits from its series' usual level.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scaled {
    /// Too few values yet to know the series.
    Cold,
    /// Spreads from the level, quantised: 0 within two spreads (a
    /// series' ordinary noise reads as its usual), then one step per
    /// doubling (1 for 2 to 4 spreads), signed, at most [`Scaler::MAX_BIN`].
    Bin(i8),
    /// Stuck at one value for this many samples in a row ([`Scaler::flat`]).
    Flat(u32),
}

impl Scaled {
    /// The value word as rendered.
    pub fn write(self, s: &mut String) {
        match self {
            // As usual: after a restart every series is new, and a word
            // the model seldom saw would make each first value a surprise.
            Scaled::Cold | Scaled::Bin(0) => s.push('0'),
            Scaled::Bin(b) => {
                let _ = write!(s, "{b:+}");
            }
            Scaled::Flat(_) => s.push_str("flat"),
        }
    }
}

impl Default for Scaler {
    fn default() -> Self {
        Scaler::new(Self::DEFAULT_ADAPT_MS)
    }
}

impl Scaler {
    pub const DEFAULT_ADAPT_MS: i64 = 30 * 60_000;
    /// Values a series' window holds.
    pub const WINDOW: usize = 32;
    /// A series reads against its last values' line (scheme 4) only when
    /// its window of [`Scaler::WINDOW`] values spans more than this many
    /// times `adapt`: a series sampled every few minutes, whose window
    /// spans hours and so lags a daily cycle. A series sampled every few
    /// seconds has a window of `adapt` (30 min), which the cycle hardly
    /// moves, and its word reads a spike already. Measured: written for
    /// every series, the simulated OS's 10-second pulses (load bursts)
    /// gave a 500-step model 19 false incidents on a fault-free day
    /// against none (docs/EVAL.md).
    pub const SLOW: i64 = 2;
    /// Values before a series is warm.
    pub const MIN_SAMPLES: usize = 6;
    /// The largest bin: 2^7 = 128 spreads and beyond.
    pub const MAX_BIN: i8 = 7;
    /// The least spread relative to the level: a 5 % move of a steady
    /// series is 2.5 spreads (bin 1), never lost in its own rounding.
    pub const REL_FLOOR: f64 = 0.02;
    /// The least spread at all: any move off a flat zero is the top bin.
    pub const ABS_FLOOR: f64 = 1e-9;
    /// Series kept; past it the half heard from longest ago is forgotten.
    /// About 450 bytes each with their names, and from scheme 4 their last
    /// 32 (time, value) pairs, 512 bytes more: 50 000 series, ~48 MB.
    pub const MAX_SERIES: usize = 50_000;
    /// The shortest run of one value that can read `flat`.
    pub const FLAT_RUN: u32 = 6;
    /// A series reads `flat` only once it has shown this many samples and
    /// this many changes of value: a new reader, or a gauge that seldom
    /// moves, has no claim to know its longest run yet.
    pub const FLAT_HISTORY: u32 = 64;
    pub const FLAT_CHANGES: u32 = 16;
    /// A slow series whose window word stays at bin 2 or beyond (4+
    /// spreads) on one side for 3 values in a row (15 minutes at 5) is
    /// held off its usual: a level shift or a drift the window has not
    /// yet taken in, which no single value shows (a shift of 4 to 8 noise
    /// scales reads `+1` or `+2` like the day's own excursions, and its
    /// repeats are not scored). Runs of 2 were common on the metrics
    /// benchmark's normal series, and their per-metric floors sank; runs
    /// at bin 1 too, on a daily cycle's slopes, which the window lags
    /// (docs/EVAL.md); [`Recent::off_trend`] reads those.
    pub const HELD_BIN: i8 = 2;
    pub const HELD_RUN: i32 = 3;

    pub fn new(adapt_ms: i64) -> Scaler {
        Scaler {
            series: HashMap::new(),
            record: false,
            readings: Vec::new(),
            adapt_ms: adapt_ms.max(Self::WINDOW as i64),
            max_series: Self::MAX_SERIES,
            flat: false,
            sudden: false,
            held: false,
            said: None,
        }
    }

    /// This walk carries a source's latest flux event into its pulses
    /// (rendering scheme 3, [`Said`]).
    pub fn carrying(mut self, on: bool) -> Scaler {
        self.said = on.then(Said::default);
        self
    }

    /// A flux event of `source` at `ts`, for the pulses that follow.
    pub(super) fn note_flux(&mut self, source: &str, event: &str, ts: i64) {
        if let Some(s) = &mut self.said {
            s.note(source, event, ts);
        }
    }

    /// The flux event a pulse of `source` at `ts` carries, if any.
    pub(super) fn carried(&self, source: &str, ts: i64) -> Option<&str> {
        self.said.as_ref()?.recent(source, ts)
    }

    /// This scaler writes `flat` for a stuck series (rendering scheme 2;
    /// a checkpoint of scheme 1 is read without it, as it was trained).
    pub fn flat(mut self, on: bool) -> Scaler {
        self.flat = on;
        self
    }

    /// This scaler writes how far a value sits off its series' last few
    /// values when that is far (rendering scheme 4).
    pub fn sudden(mut self, on: bool) -> Scaler {
        self.sudden = on;
        self
    }

    /// This scaler writes `~` after a slow series' window word held off
    /// its usual (rendering scheme 5).
    pub fn held(mut self, on: bool) -> Scaler {
        self.held = on;
        self
    }

    /// This scaler keeps the readings of the event being rendered, for
    /// [`Scaler::take_readings`].
    pub fn recording(mut self) -> Scaler {
        self.record = true;
        self
    }

    /// The readings of the event rendered last (none unless
    /// [`Scaler::recording`], or the event was no pulse).
    pub fn take_readings(&mut self) -> Vec<Reading> {
        std::mem::take(&mut self.readings)
    }

    /// A pulse's rendering begins: the previous event's readings go.
    pub(super) fn start_event(&mut self) {
        self.readings.clear();
    }

    /// Reads `x` of `metric` from `source` at `ts` against its series,
    /// then learns it (the value is judged before it can move its own
    /// level).
    pub fn scale(&mut self, source: &str, metric: &str, ts: i64, x: f64) -> Scaled {
        self.word(source, metric, ts, x).scaled
    }

    /// [`Scaler::scale`] with the reading against the last few values.
    pub fn word(&mut self, source: &str, metric: &str, ts: i64, x: f64) -> Word {
        let (word, usual, lately) = self.read_and_learn(source, metric, ts, x);
        let out = word.scaled;
        if self.record {
            self.readings.push(Reading {
                metric: metric.to_string(),
                value: x,
                usual,
                flat_for: match out {
                    Scaled::Flat(n) => n,
                    _ => 0,
                },
                lately: lately.filter(|_| word.sudden.is_some_and(|b| b != 0)),
            });
        }
        word
    }

    fn read_and_learn(
        &mut self,
        source: &str,
        metric: &str,
        ts: i64,
        x: f64,
    ) -> (Word, Option<(f64, f64)>, Option<(f64, f64)>) {
        if !x.is_finite() {
            let cold = Word {
                scaled: Scaled::Cold,
                sudden: None,
                held: false,
            };
            return (cold, None, None);
        }
        let key = (source.to_string(), metric.to_string());
        if !self.series.contains_key(&key) && self.series.len() >= self.max_series {
            self.forget_older_half();
        }
        let gap = self.adapt_ms / Self::WINDOW as i64;
        let s = self.series.entry(key).or_default();
        let (mut out, usual) = s.read(x);
        let run = s.repeat(x);
        if self.flat && s.stuck(x, run) {
            out = Scaled::Flat(run);
        }
        let (mut sudden, mut lately, mut held) = (None, None, false);
        // Only where the window spans hours: see [`Scaler::SLOW`].
        let slow = (self.sudden || self.held)
            .then(|| s.recent.usual_gap())
            .flatten()
            .filter(|g| g.saturating_mul(Self::WINDOW as i64) > Self::SLOW * self.adapt_ms);
        if self.held {
            let b = match out {
                Scaled::Bin(b) => b,
                _ => 0,
            };
            s.off_run = extend(s.off_run, b, Self::HELD_BIN);
            held = slow.is_some() && s.off_run.abs() >= Self::HELD_RUN;
        }
        if self.sudden {
            let line = slow.and_then(|g| s.recent.line(ts, g, Self::REL_FLOOR, Self::ABS_FLOOR));
            if let Some((level, spread)) = line {
                sudden = Some(Recent::bin((x - level) / spread));
                let r = Recent::LEAST * spread;
                lately = Some((level - r, level + r));
            }
        }
        if self.sudden || self.held {
            // Their times tell a slow series.
            s.recent.push(ts, x);
        }
        if let (true, Some(g), false) = (self.held, slow, held) {
            held = s.recent.off_trend(g, Self::REL_FLOOR, Self::ABS_FLOOR) != 0;
        }
        s.last_ts = s.last_ts.max(ts);
        if s.window.len() < Self::MIN_SAMPLES || ts - s.last_admitted >= gap {
            if s.window.len() >= Self::WINDOW {
                s.window.pop_front();
            }
            s.window.push_back(x);
            s.last_admitted = ts;
        }
        let word = Word {
            scaled: out,
            sudden,
            held,
        };
        (word, usual, lately)
    }

    pub fn len(&self) -> usize {
        self.series.len()
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    fn forget_older_half(&mut self) {
        super::forget_older_half(&mut self.series, |s| s.last_ts);
    }
}

impl Series {
    /// Counts `x` into the repeats; the run it is part of.
    fn repeat(&mut self, x: f64) -> u32 {
        if self.last == Some(x) {
            self.run = self.run.saturating_add(1);
        } else {
            if let Some(last) = self.last {
                if self.run > self.longest {
                    self.longest = self.run;
                    self.rest = Some(last);
                }
                self.changes = self.changes.saturating_add(1);
            }
            self.last = Some(x);
            self.run = 1;
        }
        self.seen = self.seen.saturating_add(1);
        self.run
    }

    /// Whether a run of `run` samples at `x` is longer than this series
    /// has shown it can hold still: see the module doc.
    fn stuck(&self, x: f64, run: u32) -> bool {
        x != 0.0
            && self.rest != Some(x)
            && self.seen >= Scaler::FLAT_HISTORY
            && self.changes >= Scaler::FLAT_CHANGES
            && run >= Scaler::FLAT_RUN
            && run > self.longest.saturating_mul(2)
    }

    /// The value's word, and the usual range it was read against.
    fn read(&self, x: f64) -> (Scaled, Option<(f64, f64)>) {
        let Some((level, spread)) = self.level_spread() else {
            return (Scaled::Cold, None);
        };
        let usual = (level - 2.0 * spread, level + 2.0 * spread);
        (Scaled::Bin(bin((x - level) / spread)), Some(usual))
    }

    /// Median and spread: 1.4826 MAD, or where over half the window is
    /// one value (a mostly-zero series) the upper quartile of the absolute
    /// deviations instead; at least a share of the level, and an absolute
    /// floor. Not the mean deviation: a shift's first few values in the
    /// window would widen it enough to hide the shift within minutes.
    fn level_spread(&self) -> Option<(f64, f64)> {
        if self.window.len() < Scaler::MIN_SAMPLES {
            return None;
        }
        let mut v: Vec<f64> = self.window.iter().copied().collect();
        let med = median(&mut v);
        let mut dev: Vec<f64> = v.iter().map(|x| (x - med).abs()).collect();
        let mad = median(&mut dev);
        let robust = if mad > 0.0 {
            1.4826 * mad
        } else {
            // `dev` is sorted by `median`.
            0.87 * dev[(dev.len() * 3) / 4]
        };
        let spread = robust
            .max(Scaler::REL_FLOOR * med.abs())
            .max(Scaler::ABS_FLOOR);
        Some((med, spread))
    }
}

/// A run of window words at `least` or beyond on one side, signed by
/// the side, after a word `b`.
fn extend(run: i32, b: i8, least: i8) -> i32 {
    let side = if b >= least {
        1
    } else if b <= -least {
        -1
    } else {
        0
    };
    if side != 0 && run.signum() == side {
        run.saturating_add(side)
    } else {
        side
    }
}

/// Spreads quantised: 0 within two, then one per doubling (1 for 2 to 4),
/// signed, at most [`Scaler::MAX_BIN`].
fn bin(z: f64) -> i8 {
    let a = z.abs();
    let b = if a < 2.0 {
        0
    } else {
        (a.log2().floor() as i64).min(Scaler::MAX_BIN as i64) as i8
    };
    if z < 0.0 {
        -b
    } else {
        b
    }
}

#[cfg(test)]
#[path = "scale_tests.rs"]
mod tests;
