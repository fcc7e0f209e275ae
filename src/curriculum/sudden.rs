//! A value against its series' last few values (rendering scheme 4): the
//! local line through them, extrapolated to the value's time, in the
//! series' step-to-step noise.
//!
//! Why: [`super::Scaler`]'s level and spread come from a window of
//! 32 admitted values (2.7 h of a 5-minute series), whose median lags a
//! daily cycle and whose spread holds the cycle's slope. On the metrics
//! benchmark's gaussian series the cycle moves 7-20 noise scales across
//! that window, so a spike of 6-12 noise scales reads `0` or `+1`, like
//! the day's ordinary swing. A line through the last [`Recent::LOCAL`]
//! values follows the cycle, and the spread of steps from one value to the
//! next hardly sees it: there the spike is 4 to 16 spreads. Slow changes
//! (a drift, a cycle) it follows by design; the window's word still reads
//! those.

use crate::median::median;
use std::collections::VecDeque;

/// The last values of one series, with their times.
#[derive(Debug, Clone, Default)]
pub(super) struct Recent {
    values: VecDeque<(i64, f64)>,
}

impl Recent {
    /// Values kept: their steps are the noise.
    pub const KEPT: usize = 32;
    /// Values the local line goes through.
    pub const LOCAL: usize = 8;
    /// A value this many median intervals after the previous one is not
    /// read: the line says nothing that far ahead (a gap in the series).
    pub const MAX_GAP: i64 = 4;

    /// How many spreads `x` at `ts` sits off the line, or none while the
    /// series is too short or the value comes after a gap.
    #[cfg(test)]
    pub fn z(&self, ts: i64, x: f64, rel_floor: f64, abs_floor: f64) -> Option<f64> {
        let (level, spread) = self.line(ts, self.usual_gap()?, rel_floor, abs_floor)?;
        Some((x - level) / spread)
    }

    /// The line's value at `ts` and the spread around it, for a series
    /// whose values come `usual_gap` apart ([`Recent::usual_gap`]).
    pub fn line(
        &self,
        ts: i64,
        usual_gap: i64,
        rel_floor: f64,
        abs_floor: f64,
    ) -> Option<(f64, f64)> {
        let n = self.values.len();
        if n < Self::LOCAL + 4 {
            return None;
        }
        let last = self.values[n - 1];
        // Saturating: times come off the wire.
        if ts.saturating_sub(last.0) > Self::MAX_GAP.saturating_mul(usual_gap) {
            return None;
        }
        let local: Vec<(i64, f64)> = self.values.iter().skip(n - Self::LOCAL).copied().collect();
        let (_, level) = fit(&local, ts);
        // The noise: steps between neighbours, robustly; the mean
        // absolute step as a floor so a mostly-flat series (a counter at
        // 0 with an occasional 1) does not divide by nothing.
        let mut steps: Vec<f64> = self
            .values
            .iter()
            .zip(self.values.iter().skip(1))
            .map(|(a, b)| b.1 - a.1)
            .collect();
        let mid = median(&mut steps);
        let mut dev: Vec<f64> = steps.iter().map(|d| (d - mid).abs()).collect();
        let mean_dev = dev.iter().sum::<f64>() / dev.len() as f64;
        let mad = median(&mut dev);
        let spread = (1.4826 * mad).max(1.2533 * mean_dev) / std::f64::consts::SQRT_2;
        let spread = spread.max(rel_floor * level.abs()).max(abs_floor);
        Some((level, spread))
    }

    /// The side (1 or -1) on which the last [`Recent::TREND_RUN`] values
    /// all sit [`Recent::TREND_LEAST`] spreads or more off the line through
    /// the [`Recent::TREND_SPAN`] values before them, else 0; for a series
    /// whose values come `usual_gap` apart, with no gap among them.
    ///
    /// Why: a level shift or a drift of a series on a daily cycle reads
    /// `+1` against its window as the cycle's own slopes do, for as long;
    /// against the line through the two hours before, the slope is the
    /// cycle's and what is left is the shift. Measured offline over the
    /// metrics benchmark's test days (two sets of series): 10 and 11 runs
    /// began in 480 normal series-days, in 32 and 23 windows the live
    /// level missed.
    pub fn off_trend(&self, usual_gap: i64, rel_floor: f64, abs_floor: f64) -> i8 {
        let n = self.values.len();
        let (span, run) = (Self::TREND_SPAN, Self::TREND_RUN);
        if n < span + run {
            return 0;
        }
        let all: Vec<(i64, f64)> = self.values.iter().skip(n - span - run).copied().collect();
        let (before, last) = all.split_at(span);
        let reach = last[run - 1].0.saturating_sub(before[0].0);
        if reach > usual_gap.saturating_mul(2 * (span + run) as i64)
            || last[0].0.saturating_sub(before[span - 1].0)
                > Self::MAX_GAP.saturating_mul(usual_gap)
        {
            return 0;
        }
        let at = before[span - 1].0;
        let (slope, level) = fit(before, at);
        let line = |t: i64| level + slope * t.saturating_sub(at) as f64;
        let mut resid: Vec<f64> = before.iter().map(|(t, v)| v - line(*t)).collect();
        let mean_abs = resid.iter().map(|r| r.abs()).sum::<f64>() / span as f64;
        let mid = median(&mut resid);
        let mut dev: Vec<f64> = resid.iter().map(|r| (r - mid).abs()).collect();
        let mut values: Vec<f64> = before.iter().map(|p| p.1).collect();
        let spread = (1.4826 * median(&mut dev))
            .max(0.5 * 1.2533 * mean_abs)
            .max(rel_floor * median(&mut values).abs())
            .max(abs_floor);
        let z = |(t, v): &(i64, f64)| (v - line(*t)) / spread;
        if last.iter().all(|p| z(p) >= Self::TREND_LEAST) {
            1
        } else if last.iter().all(|p| z(p) <= -Self::TREND_LEAST) {
            -1
        } else {
            0
        }
    }

    /// Values the trend line goes through, values read against it, and
    /// how far off each must sit ([`Recent::off_trend`]).
    pub const TREND_SPAN: usize = 24;
    pub const TREND_RUN: usize = 8;
    pub const TREND_LEAST: f64 = 2.5;

    /// Spreads off the line quantised: 0 within [`Recent::LEAST`], then
    /// one bin per half doubling (1 for 4 to 5.7 spreads, 2 to 8, 3 to
    /// 11, ...), signed, at most [`Recent::MAX_BIN`]. Half doublings: a
    /// normal value's rare excursion and a spike of twice its size must
    /// not share a word, as they did at one bin per doubling (the
    /// benchmark's normal `!+2` scored as high as its spikes).
    pub fn bin(z: f64) -> i8 {
        let a = z.abs();
        if a < Self::LEAST {
            return 0;
        }
        let b = ((2.0 * a.log2()).floor() as i64 - 3).clamp(1, Self::MAX_BIN as i64) as i8;
        if z < 0.0 {
            -b
        } else {
            b
        }
    }

    /// The least distance off the line that is a word.
    pub const LEAST: f64 = 4.0;
    /// The largest bin: 2^6 = 64 spreads and beyond.
    pub const MAX_BIN: i8 = 9;

    /// The median time between the values kept, once there are two.
    /// Asked of every value of every series (whether it is slow), so on
    /// the stack, not the heap.
    pub fn usual_gap(&self) -> Option<i64> {
        let mut gaps = [0i64; Self::KEPT];
        let mut n = 0;
        for (a, b) in self.values.iter().zip(self.values.iter().skip(1)) {
            gaps[n] = b.0.saturating_sub(a.0);
            n += 1;
        }
        if n == 0 {
            return None;
        }
        let (_, mid, _) = gaps[..n].select_nth_unstable(n / 2);
        Some((*mid).max(1))
    }

    /// Learns `x` at `ts` (after it was read).
    pub fn push(&mut self, ts: i64, x: f64) {
        if self.values.len() >= Self::KEPT {
            self.values.pop_front();
        }
        self.values.push_back((ts, x));
    }
}

/// Theil-Sen through `points`: the median of the pairwise slopes, and the
/// line's value at `ts` (the median of the points carried there along
/// it); a spike or two among the points moves neither.
fn fit(points: &[(i64, f64)], ts: i64) -> (f64, f64) {
    let mut slopes = Vec::with_capacity(points.len() * points.len().saturating_sub(1) / 2);
    for (i, a) in points.iter().enumerate() {
        for b in &points[i + 1..] {
            if b.0 != a.0 {
                slopes.push((b.1 - a.1) / b.0.saturating_sub(a.0) as f64);
            }
        }
    }
    let slope = if slopes.is_empty() {
        0.0
    } else {
        median(&mut slopes)
    };
    let mut at: Vec<f64> = points
        .iter()
        .map(|(t, v)| v + slope * ts.saturating_sub(*t) as f64)
        .collect();
    (slope, median(&mut at))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::TAU;

    const MIN: i64 = 60_000;

    /// A 5-minute series on a daily cycle of +/-40 % around 50 with a
    /// noise of 1 (2 %), a deterministic stand-in for gaussian noise.
    fn cyclic(i: usize) -> f64 {
        let t = i as f64 * 5.0 / 60.0;
        let noise = [0.3, -1.1, 0.8, -0.2, 1.4, -0.7, 0.1, -1.3, 0.9, -0.4][i % 10];
        50.0 * (1.0 + 0.4 * (TAU * t / 24.0).cos()) + noise
    }

    #[test]
    fn the_line_follows_a_daily_cycle_and_a_spike_stands_off_it() {
        let mut r = Recent::default();
        let mut worst: f64 = 0.0;
        for i in 0..600 {
            let ts = i as i64 * 5 * MIN;
            if let Some(z) = r.z(ts, cyclic(i), 0.0, 1e-9) {
                worst = worst.max(z.abs());
            }
            r.push(ts, cyclic(i));
        }
        assert!(worst < 4.0, "the cycle alone reads {worst} spreads");
        // A spike of 8 noise scales, anywhere on the cycle.
        let ts = 600 * 5 * MIN;
        let z = r.z(ts, cyclic(600) + 8.0, 0.0, 1e-9).unwrap();
        assert!(z > 4.0, "{z}");
    }

    #[test]
    fn a_shift_holds_off_the_trend_of_a_cycle_and_the_cycle_never_does() {
        let mut r = Recent::default();
        let gap = 5 * MIN;
        for i in 0..600 {
            r.push(i as i64 * gap, cyclic(i));
            assert_eq!(r.off_trend(gap, 0.0, 1e-9), 0, "the cycle at {i}");
        }
        // 6 noise scales down, on the cycle's slope: off from the 8th value.
        let mut sides = Vec::new();
        for i in 600..610 {
            r.push(i as i64 * gap, cyclic(i) - 6.0);
            sides.push(r.off_trend(gap, 0.0, 1e-9));
        }
        let run = Recent::TREND_RUN;
        assert!(sides[..run - 1].iter().all(|s| *s == 0), "{sides:?}");
        assert!(sides[run - 1..].iter().all(|s| *s == -1), "{sides:?}");
        // Not across a gap.
        r.push(700 * gap, cyclic(700) - 6.0);
        assert_eq!(r.off_trend(gap, 0.0, 1e-9), 0);
    }

    #[test]
    fn short_series_and_gaps_are_not_read() {
        let mut r = Recent::default();
        for i in 0..Recent::LOCAL + 4 {
            assert_eq!(r.z(i as i64 * MIN, 1.0, 0.02, 1e-9), None);
            r.push(i as i64 * MIN, 1.0);
        }
        let n = (Recent::LOCAL + 4) as i64;
        assert!(r.z(n * MIN, 1.0, 0.02, 1e-9).is_some());
        r.push(n * MIN, 1.0);
        assert_eq!(r.z((n + 10) * MIN, 1.0, 0.02, 1e-9), None);
    }

    #[test]
    fn a_mostly_zero_counter_is_not_divided_by_nothing() {
        let mut r = Recent::default();
        for i in 0..32 {
            let x = if i % 10 == 3 { 1.0 } else { 0.0 };
            r.push(i as i64 * MIN, x);
        }
        // An occasional 1 is a few spreads, 20 far more.
        let one = r.z(32 * MIN, 1.0, 0.02, 1e-9).unwrap();
        let many = r.z(32 * MIN, 20.0, 0.02, 1e-9).unwrap();
        assert!(one < 16.0 && many > 64.0, "{one} {many}");
    }
}
