//! Window scoring, after the Numenta Anomaly Benchmark's rules, and the
//! threshold every detector gets.
//!
//! **Threshold (no labels).** A detector's threshold θ is fixed on the
//! calibration part (anomaly-free, after training, before the test part)
//! to a false-alarm budget: with B = budget × series × calibration days, θ
//! is just above the (B+1)-th highest calibration score, so at most B
//! calibration samples would have alerted. The same rule for every
//! detector; proprio's live row alerts at the production level instead.
//!
//! **Alerts.** Every test sample whose score is at or above θ is an alert
//! (the live comparison, [`crate::scorer::decide::crosses`]).
//!
//! **Windows.** Per labelled window, the first alert inside it detects it
//! and earns a weight that falls linearly from 1 at the window's start to
//! 0.5 at its end (NAB uses a scaled sigmoid over a window centred on the
//! anomaly; ours start just before it, so a straight line says "earlier is
//! better" without a centre). Later alerts in the same window are ignored.
//! A window without an alert costs [`A_FN`] = 1. An alert outside every
//! window is a false alarm and costs [`A_FP`] = 0.11 (NAB's standard
//! profile; NAB also scales it by the distance after the last window, we
//! do not). A shift's later samples, after its window, are normal: alerts
//! there are false alarms (the detector should have adapted).
//!
//! **Score.** raw = Σ weights - A_FN · missed - A_FP · false alarms, then
//! normalised as NAB does: 100 · (raw - null) / (perfect - null), where
//! the null detector (no alert) scores null = -A_FN · windows and the
//! perfect one (an alert at each window's start, nothing else) scores
//! perfect = windows. So 0 = null, 100 = perfect, below 0 = worse than
//! silence.
//!
//! **AUROC.** Test samples inside a window against those outside, by the
//! detector's score ([`crate::eval::metrics::auroc`]).

use super::gen::{AnomalyKind, Series, Shape, Window};
use std::collections::BTreeMap;

/// Cost of a missed window.
pub const A_FN: f64 = 1.0;
/// Cost of a false alarm (NAB standard profile).
pub const A_FP: f64 = 0.11;

/// The weight of a first detection at `ts` inside `w`: 1 at its start, 0.5 at its end.
pub fn weight(w: &Window, ts: i64) -> f64 {
    let span = (w.to_ms - w.from_ms).max(1) as f64;
    1.0 - 0.5 * ((ts - w.from_ms) as f64 / span).clamp(0.0, 1.0)
}

/// Windows, detections and false alarms of one detector, summed over series.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Tally {
    pub windows: u64,
    pub detected: u64,
    pub weights: f64,
    pub false_alarms: u64,
    /// Per anomaly type: (windows, detected).
    pub by_kind: BTreeMap<AnomalyKind, (u64, u64)>,
    /// False alarms per noise shape of the series they fell on.
    pub false_by_shape: BTreeMap<Shape, u64>,
}

impl Tally {
    /// Adds one series: its windows and its alert times (any order).
    pub fn add(&mut self, windows: &[Window], alerts: &[i64]) {
        let mut alerts = alerts.to_vec();
        alerts.sort_unstable();
        let mut first: Vec<Option<i64>> = vec![None; windows.len()];
        for &a in &alerts {
            match windows.iter().position(|w| w.contains(a)) {
                Some(j) => {
                    first[j].get_or_insert(a);
                }
                None => self.false_alarms += 1,
            }
        }
        for (w, f) in windows.iter().zip(first) {
            self.windows += 1;
            let k = self.by_kind.entry(w.kind).or_default();
            k.0 += 1;
            if let Some(a) = f {
                self.detected += 1;
                self.weights += weight(w, a);
                k.1 += 1;
            }
        }
    }

    pub fn raw(&self) -> f64 {
        self.weights
            - A_FN * (self.windows - self.detected) as f64
            - A_FP * self.false_alarms as f64
    }

    /// 0 = the null detector, 100 = the perfect one; None without windows.
    pub fn normalised(&self) -> Option<f64> {
        let w = self.windows as f64;
        let (null, perfect) = (-A_FN * w, w);
        (self.windows > 0).then(|| 100.0 * (self.raw() - null) / (perfect - null))
    }

    pub fn recall(&self) -> Option<f64> {
        (self.windows > 0).then(|| self.detected as f64 / self.windows as f64)
    }
}

/// θ for a budget of `budget` alerts over the calibration `scores`: just
/// above the (budget+1)-th highest, so at most `budget` scores reach it.
/// NaN scores (unscored samples) are ignored; with no more than `budget`
/// scores every one may alert, and θ is the lowest.
pub fn budget_threshold(scores: &[f32], budget: usize) -> f32 {
    let mut v: Vec<f32> = scores.iter().copied().filter(|s| !s.is_nan()).collect();
    v.sort_by(|a, b| b.total_cmp(a));
    match v.get(budget) {
        Some(s) => s.next_up(),
        None => v.last().copied().unwrap_or(f32::INFINITY),
    }
}

/// One detector's per-sample scores over every series (NaN: not scored).
pub struct Scored<'a> {
    pub series: &'a [Series],
    pub scores: &'a [Vec<f32>],
}

impl Scored<'_> {
    /// Scores of the samples in [from, to), pooled over series.
    pub fn between(&self, from: i64, to: i64) -> Vec<f32> {
        let mut out = Vec::new();
        for (s, sc) in self.series.iter().zip(self.scores) {
            for (&t, &v) in s.ts.iter().zip(sc) {
                if t >= from && t < to {
                    out.push(v);
                }
            }
        }
        out
    }

    /// The tally of the alerts at `thr` on the samples from `from` on.
    pub fn tally(&self, thr: f32, from: i64) -> Tally {
        let mut t = Tally::default();
        for (s, sc) in self.series.iter().zip(self.scores) {
            let alerts: Vec<i64> =
                s.ts.iter()
                    .zip(sc)
                    .filter(|(&ts, &v)| ts >= from && crate::scorer::decide::crosses(v, thr))
                    .map(|(&ts, _)| ts)
                    .collect();
            let before = t.false_alarms;
            t.add(&s.windows, &alerts);
            *t.false_by_shape.entry(s.shape).or_default() += t.false_alarms - before;
        }
        t
    }

    /// AUROC of samples inside windows against those outside, from `from` on.
    pub fn auroc(&self, from: i64) -> Option<f64> {
        let (mut v, mut y) = (Vec::new(), Vec::new());
        for (s, sc) in self.series.iter().zip(self.scores) {
            for (&t, &x) in s.ts.iter().zip(sc) {
                if t >= from && !x.is_nan() {
                    v.push(x);
                    y.push(s.window_of(t).is_some());
                }
            }
        }
        crate::eval::metrics::auroc(&v, &y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn win(from: i64, to: i64) -> Window {
        Window {
            kind: AnomalyKind::Spike,
            start_ms: from + 10,
            end_ms: from + 10,
            from_ms: from,
            to_ms: to,
            magnitude: 8.0,
        }
    }

    #[test]
    fn null_and_perfect_detectors_score_0_and_100() {
        let ws = [win(100, 200), win(500, 700)];
        let mut null = Tally::default();
        null.add(&ws, &[]);
        assert_eq!(null.normalised(), Some(0.0));
        assert_eq!(null.recall(), Some(0.0));
        let mut perfect = Tally::default();
        perfect.add(&ws, &[100, 500]);
        assert_eq!(perfect.normalised(), Some(100.0));
        assert_eq!(perfect.recall(), Some(1.0));
        assert_eq!(Tally::default().normalised(), None, "no window, no score");
    }

    #[test]
    fn only_the_first_detection_counts_and_earlier_is_better() {
        let ws = [win(0, 100)];
        let mut early = Tally::default();
        early.add(&ws, &[20, 30, 90]);
        let mut late = Tally::default();
        late.add(&ws, &[80]);
        assert_eq!(early.detected, 1);
        assert_eq!(
            early.false_alarms, 0,
            "later alerts in the window are ignored"
        );
        assert!((early.weights - 0.9).abs() < 1e-12, "{}", early.weights);
        assert!((late.weights - 0.6).abs() < 1e-12);
        assert!(early.normalised() > late.normalised());
        // At the window's end: still a detection, worth half.
        let mut end = Tally::default();
        end.add(&ws, &[100]);
        assert_eq!((end.detected, end.weights), (1, 0.5));
        assert_eq!(end.normalised(), Some(75.0));
    }

    #[test]
    fn false_alarms_cost_and_can_go_below_null() {
        let ws = [win(0, 100)];
        let mut one = Tally::default();
        one.add(&ws, &[0, 500]);
        assert_eq!(one.false_alarms, 1);
        assert!((one.normalised().unwrap() - 100.0 * (2.0 - A_FP) / 2.0).abs() < 1e-9);
        let mut noisy = Tally::default();
        let alerts: Vec<i64> = (0..20).map(|k| 1000 + k).collect();
        noisy.add(&ws, &alerts);
        assert!(
            noisy.normalised().unwrap() < 0.0,
            "20 false alarms, nothing found"
        );
        // A window with nothing in it but alerts elsewhere: missed and false.
        assert_eq!((noisy.detected, noisy.false_alarms), (0, 20));
    }

    #[test]
    fn the_budget_threshold_lets_at_most_budget_scores_through() {
        let s = [5.0, 1.0, 3.0, 3.0, f32::NAN, 2.0];
        let pass = |thr: f32| s.iter().filter(|v| **v >= thr).count();
        assert_eq!(pass(budget_threshold(&s, 0)), 0);
        assert_eq!(pass(budget_threshold(&s, 1)), 1);
        // Ties at the cut stay below it.
        assert_eq!(pass(budget_threshold(&s, 2)), 1);
        assert_eq!(pass(budget_threshold(&s, 3)), 3);
        assert_eq!(pass(budget_threshold(&s, 9)), 5);
        assert_eq!(budget_threshold(&[], 3), f32::INFINITY);
    }
}
