//! The labelled metric series of the benchmark, generated from a seed.
//!
//! Every series is one (source, metric) sampled every `interval_s` seconds
//! on a shared grid (each source a few seconds off it, as exporters are).
//! Its noise shape is one of [`Shape`]; most follow a daily cycle (peak in
//! the afternoon, UTC); some have gaps (missing samples, never labelled).
//! The first `train_days` are anomaly-free; the anomalies ([`AnomalyKind`])
//! are injected in the test part only, at most one per slot of the test
//! span, so windows never overlap.
//!
//! Determinism: each series draws from its own stream
//! ([`Rng::stream`] named by the seed and the series), and every sample
//! draws the same numbers whatever the anomalies do to it (counts come
//! from inverting the Poisson CDF at a drawn uniform), so a series with
//! its anomalies differs from the same series without them only where an
//! anomaly acts: what the label test checks.
//!
//! Magnitudes are in units of the series' own noise scale (`scale`): a
//! spike of 6-12 scales, a level shift of 4-8, a drift reaching 8-14 over
//! 4-10 h, noise 3-5 times wider for 2-6 h, a flat-line (the exporter
//! repeating its last value) for 1-4 h. Shapes where a type is
//! meaningless do not get it (a flat-line on a constant or mostly-zero
//! series changes nothing).

use crate::sim::Rng;
use std::f64::consts::TAU;

const DAY_MS: i64 = 86_400_000;
const HOUR_MS: i64 = 3_600_000;

/// How a series is noisy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    /// Level plus gaussian noise.
    Gaussian,
    /// Level plus Student-t noise (3 degrees of freedom): rare big excursions are normal.
    HeavyTailed,
    /// Level times log-normal noise: the spread grows with the level.
    Multiplicative,
    /// Poisson counts; with a small rate, mostly zero.
    Counts,
    /// One value, always (a configured size, a replica count).
    Constant,
}

/// What an anomaly does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyKind {
    Spike,
    ShiftUp,
    ShiftDown,
    Drift,
    Variance,
    FlatLine,
}

impl Shape {
    pub const ALL: [Shape; 5] = [
        Shape::Gaussian,
        Shape::HeavyTailed,
        Shape::Multiplicative,
        Shape::Counts,
        Shape::Constant,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Shape::Gaussian => "gaussian",
            Shape::HeavyTailed => "heavy_tailed",
            Shape::Multiplicative => "multiplicative",
            Shape::Counts => "counts",
            Shape::Constant => "constant",
        }
    }
}

impl AnomalyKind {
    pub const ALL: [AnomalyKind; 6] = [
        AnomalyKind::Spike,
        AnomalyKind::ShiftUp,
        AnomalyKind::ShiftDown,
        AnomalyKind::Drift,
        AnomalyKind::Variance,
        AnomalyKind::FlatLine,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AnomalyKind::Spike => "spike",
            AnomalyKind::ShiftUp => "shift_up",
            AnomalyKind::ShiftDown => "shift_down",
            AnomalyKind::Drift => "drift",
            AnomalyKind::Variance => "variance",
            AnomalyKind::FlatLine => "flat_line",
        }
    }

    /// A level shift persists after its window (the new normal).
    fn persists(self) -> bool {
        matches!(self, AnomalyKind::ShiftUp | AnomalyKind::ShiftDown)
    }
}

/// One labelled anomaly: where it acts and the window a detection counts in.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Window {
    pub kind: AnomalyKind,
    /// The anomaly acts from `start_ms` to `end_ms` (a shift: from `start_ms` on).
    pub start_ms: i64,
    pub end_ms: i64,
    /// The labelled window: [`Window::LEAD_MS`] before the start to
    /// [`Window::TAIL_MS`] after the end (a shift: after its start).
    pub from_ms: i64,
    pub to_ms: i64,
    /// Size in noise scales (spike, shift, drift), or the noise factor (variance).
    pub magnitude: f64,
}

impl Window {
    /// NAB centres its windows on the anomaly; here a short lead before
    /// it (a detector cannot see the future, but the first anomalous
    /// sample may land anywhere in a sampling interval) and a longer tail
    /// after it, the time a detector with a trailing view needs.
    pub const LEAD_MS: i64 = 15 * 60_000;
    pub const TAIL_MS: i64 = HOUR_MS;
    /// A shift has no end; its window covers its first two hours.
    pub const SHIFT_MS: i64 = 2 * HOUR_MS;

    pub fn contains(&self, ts: i64) -> bool {
        ts >= self.from_ms && ts <= self.to_ms
    }
}

/// One (source, metric) series.
#[derive(Debug, Clone)]
pub struct Series {
    pub source: String,
    pub metric: String,
    pub shape: Shape,
    /// Sample times (ms) and values, missing samples left out.
    pub ts: Vec<i64>,
    pub values: Vec<f64>,
    /// In time order, all in the test part.
    pub windows: Vec<Window>,
}

impl Series {
    /// The window holding `ts`, if any.
    pub fn window_of(&self, ts: i64) -> Option<usize> {
        self.windows.iter().position(|w| w.contains(ts))
    }
}

/// What to generate.
#[derive(Debug, Clone, Copy)]
pub struct GenConfig {
    pub series: usize,
    pub interval_s: u64,
    pub days: f64,
    /// Anomaly-free days at the start (training and calibration).
    pub train_days: f64,
    pub seed: u64,
    pub start_ms: i64,
}

impl GenConfig {
    pub fn interval_ms(&self) -> i64 {
        self.interval_s as i64 * 1000
    }
    pub fn end_ms(&self) -> i64 {
        self.start_ms + (self.days * DAY_MS as f64) as i64
    }
    pub fn test_start_ms(&self) -> i64 {
        self.start_ms + (self.train_days * DAY_MS as f64) as i64
    }
}

/// The metric of each kind of series: name, shape, whether it follows the daily cycle.
const KINDS: [(&str, Shape, bool); 8] = [
    ("cpu_pct", Shape::Gaussian, true),
    ("req_rate", Shape::Multiplicative, true),
    ("latency_p99_ms", Shape::HeavyTailed, true),
    ("error_count", Shape::Counts, true),
    ("replicas", Shape::Constant, false),
    ("mem_mb", Shape::Gaussian, false),
    ("queue_depth", Shape::Counts, true),
    ("gc_pause_ms", Shape::HeavyTailed, false),
];

/// Metrics per source.
pub const PER_SOURCE: usize = 4;

/// Every series of the benchmark.
pub fn generate(cfg: &GenConfig) -> Vec<Series> {
    (0..cfg.series).map(|i| series(cfg, i, true)).collect()
}

/// Series `i`: source `i / 4`, one of the eight kinds; `anomalies: false`
/// gives the same series without its anomalies (same draws).
pub fn series(cfg: &GenConfig, i: usize, anomalies: bool) -> Series {
    let src = i / PER_SOURCE;
    // Even sources carry kinds 0, 2, 4, 6; odd ones 1, 3, 5, 7.
    let (metric, shape, seasonal) = KINDS[(src + 2 * (i % PER_SOURCE)) % KINDS.len()];
    let source = format!("host-{src:03}");
    let mut r = Rng::stream(cfg.seed, &format!("metricbench/{source}/{metric}"));
    let p = Params::draw(&mut r, shape, seasonal);
    let offset_ms = (Rng::stream(cfg.seed, &source).below(60) as i64) * 1000;
    let windows = place_windows(cfg, &mut r, shape, &p);
    let gaps = place_gaps(cfg, &mut r, &windows);
    let n = ((cfg.end_ms() - cfg.start_ms) / cfg.interval_ms()).max(0) as usize;
    let (mut ts, mut values) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let mut last = p.base;
    for k in 0..n {
        let t = cfg.start_ms + k as i64 * cfg.interval_ms() + offset_ms;
        // The same draws for every sample, anomalies or not.
        let d = [r.normal(), r.normal(), r.normal(), r.normal(), r.f64()];
        let active: Vec<&Window> = if anomalies {
            windows
                .iter()
                .filter(|w| t >= w.start_ms && (w.kind.persists() || t <= w.end_ms))
                .collect()
        } else {
            Vec::new()
        };
        let mut v = p.sample(t, &d, &active);
        if active.iter().any(|w| w.kind == AnomalyKind::FlatLine) {
            v = last;
        }
        last = v;
        if gaps.iter().any(|&(a, b)| t >= a && t < b) {
            continue;
        }
        ts.push(t);
        values.push(v);
    }
    Series {
        source,
        metric: metric.to_string(),
        shape,
        ts,
        values,
        windows: if anomalies { windows } else { Vec::new() },
    }
}

/// A series' level and noise.
struct Params {
    shape: Shape,
    base: f64,
    /// Noise: σ (gaussian, Student-t), log-σ (multiplicative).
    noise: f64,
    /// Daily cycle: relative amplitude and the hour of the peak.
    amp: f64,
    peak_h: f64,
    /// One noise scale in the series' units at its base level (anomaly sizes).
    scale: f64,
}

impl Params {
    fn draw(r: &mut Rng, shape: Shape, seasonal: bool) -> Params {
        let amp = if seasonal { r.range(0.2, 0.6) } else { 0.0 };
        let peak_h = r.range(12.0, 17.0);
        let (base, noise, scale) = match shape {
            Shape::Gaussian => {
                let b = r.range(20.0, 60.0);
                let s = b * r.range(0.02, 0.06);
                (b, s, s)
            }
            Shape::HeavyTailed => {
                let b = r.range(40.0, 300.0);
                let s = b * r.range(0.03, 0.08);
                (b, s, s)
            }
            Shape::Multiplicative => {
                let b = r.range(50.0, 800.0);
                let s = r.range(0.03, 0.10);
                (b, s, b * s)
            }
            Shape::Counts => {
                // Half mostly zero (rate < 0.5), half busier.
                let b = if r.chance(0.5) {
                    r.range(0.05, 0.5)
                } else {
                    r.range(3.0, 15.0)
                };
                (b, 0.0, b.max(1.0).sqrt())
            }
            Shape::Constant => {
                let b: f64 = *r.pick(&[2.0, 3.0, 4.0, 8.0, 512.0, 1024.0]).unwrap_or(&4.0);
                (b, 0.0, (0.05 * b).max(1.0))
            }
        };
        Params {
            shape,
            base,
            noise,
            amp,
            peak_h,
            scale,
        }
    }

    /// The daily factor at `t`.
    fn cycle(&self, t: i64) -> f64 {
        let h = (t.rem_euclid(DAY_MS)) as f64 / HOUR_MS as f64;
        1.0 + self.amp * (TAU * (h - self.peak_h) / 24.0).cos()
    }

    /// One sample at `t` from draws `d` (four normals, one uniform), with the
    /// anomalies acting at `t`.
    fn sample(&self, t: i64, d: &[f64; 5], active: &[&Window]) -> f64 {
        let mut level = self.base * self.cycle(t);
        let mut widen = 1.0;
        let mut add = 0.0;
        for w in active {
            let m = w.magnitude;
            match w.kind {
                AnomalyKind::Spike => add += m * self.scale,
                AnomalyKind::ShiftUp => level += m * self.scale,
                AnomalyKind::ShiftDown => level -= m * self.scale,
                AnomalyKind::Drift => {
                    let f = (t - w.start_ms) as f64 / (w.end_ms - w.start_ms).max(1) as f64;
                    level += m * self.scale * f.clamp(0.0, 1.0);
                }
                AnomalyKind::Variance => widen = m,
                AnomalyKind::FlatLine => {}
            }
        }
        let v = match self.shape {
            Shape::Gaussian => level + widen * self.noise * d[0],
            Shape::HeavyTailed => {
                let chi = (d[1] * d[1] + d[2] * d[2] + d[3] * d[3]) / 3.0;
                level + widen * self.noise * d[0] / chi.max(1e-6).sqrt()
            }
            Shape::Multiplicative => level * (widen * self.noise * d[0]).exp(),
            Shape::Counts => poisson_inv(level.max(0.0), d[4]) as f64,
            // A constant gets noise only from a variance anomaly.
            Shape::Constant => level + (widen - 1.0) * self.scale * d[0],
        };
        let v = (v + add).max(0.0);
        match self.shape {
            Shape::Counts | Shape::Constant => v.round(),
            _ => (v * 100.0).round() / 100.0,
        }
    }
}

/// The smallest k with P(X <= k) >= u for X ~ Poisson(lambda).
fn poisson_inv(lambda: f64, u: f64) -> u64 {
    if lambda <= 0.0 {
        return 0;
    }
    let mut p = (-lambda).exp();
    let mut cdf = p;
    let mut k = 0u64;
    // Far beyond any rate here; the cap only guards against a bad draw.
    while cdf < u && k < 10_000 {
        k += 1;
        p *= lambda / k as f64;
        cdf += p;
        if p == 0.0 && cdf < u {
            // exp(-lambda) underflowed: fall back to the normal approximation.
            return (lambda + lambda.sqrt() * 2.0).round() as u64;
        }
    }
    k
}

/// The anomaly types a shape can show.
fn kinds_for(shape: Shape, base: f64) -> Vec<AnomalyKind> {
    use AnomalyKind::*;
    match shape {
        Shape::Gaussian | Shape::HeavyTailed | Shape::Multiplicative => AnomalyKind::ALL.to_vec(),
        // A mostly-zero series cannot go down or stay flat visibly.
        Shape::Counts if base < 1.0 => vec![Spike, ShiftUp, Drift],
        Shape::Counts => vec![Spike, ShiftUp, ShiftDown, Drift],
        Shape::Constant => vec![Spike, ShiftUp, ShiftDown, Drift, Variance],
    }
}

/// 0, 1 or 2 anomalies (15 %, 50 %, 35 %), each in its own slot of the
/// test span; a shift goes last, since it changes everything after it.
fn place_windows(cfg: &GenConfig, r: &mut Rng, shape: Shape, p: &Params) -> Vec<Window> {
    let u = r.f64();
    let n = if u < 0.15 {
        0
    } else if u < 0.65 {
        1
    } else {
        2
    };
    let allowed = kinds_for(shape, p.base);
    let mut kinds: Vec<AnomalyKind> = (0..n)
        .map(|_| *r.pick(&allowed).unwrap_or(&AnomalyKind::Spike))
        .collect();
    // At most one shift, and it goes last.
    if kinds.iter().filter(|k| k.persists()).count() > 1 {
        kinds[0] = AnomalyKind::Spike;
    }
    kinds.sort_by_key(|k| k.persists());
    let (t0, t1) = (cfg.test_start_ms() + HOUR_MS, cfg.end_ms() - 3 * HOUR_MS);
    if n == 0 || t1 <= t0 {
        return Vec::new();
    }
    let slot = (t1 - t0) / n as i64;
    let iv = cfg.interval_ms();
    let mut out = Vec::new();
    for (j, kind) in kinds.into_iter().enumerate() {
        let (lo, hi) = (t0 + j as i64 * slot, t0 + (j as i64 + 1) * slot);
        let hours = |r: &mut Rng, a: f64, b: f64| (r.range(a, b) * HOUR_MS as f64) as i64;
        let (dur, magnitude) = match kind {
            // 1-3 samples: any span of k intervals holds k grid points.
            AnomalyKind::Spike => (iv * r.int(1, 3) - 1, r.range(6.0, 12.0)),
            AnomalyKind::ShiftUp | AnomalyKind::ShiftDown => (0, r.range(4.0, 8.0)),
            AnomalyKind::Drift => (hours(r, 4.0, 10.0), r.range(8.0, 14.0)),
            AnomalyKind::Variance => (hours(r, 2.0, 6.0), r.range(3.0, 5.0)),
            AnomalyKind::FlatLine => (hours(r, 1.0, 4.0), 0.0),
        };
        // A downward shift must not push the level below zero.
        let magnitude = if kind == AnomalyKind::ShiftDown {
            magnitude.min(0.8 * p.base * (1.0 - p.amp) / p.scale)
        } else {
            magnitude
        };
        let span = if kind.persists() {
            Window::SHIFT_MS
        } else {
            dur + Window::TAIL_MS
        };
        let latest = (hi - span - Window::LEAD_MS).max(lo + Window::LEAD_MS);
        let start = r.int(lo + Window::LEAD_MS, latest);
        let end = start + dur;
        out.push(Window {
            kind,
            start_ms: start,
            end_ms: end,
            from_ms: start - Window::LEAD_MS,
            to_ms: if kind.persists() {
                start + Window::SHIFT_MS
            } else {
                end + Window::TAIL_MS
            },
            magnitude,
        });
    }
    out
}

/// Missing data: in 30 % of the series, 1-3 gaps of 15 min to 3 h, kept
/// clear of the windows (a gap does not hide an anomaly's onset).
fn place_gaps(cfg: &GenConfig, r: &mut Rng, windows: &[Window]) -> Vec<(i64, i64)> {
    if !r.chance(0.3) {
        return Vec::new();
    }
    let n = r.int(1, 3);
    let mut out = Vec::new();
    for _ in 0..n {
        let len = (r.range(0.25, 3.0) * HOUR_MS as f64) as i64;
        let a = r.int(
            cfg.start_ms + HOUR_MS,
            (cfg.end_ms() - len).max(cfg.start_ms),
        );
        let b = a + len;
        if windows.iter().all(|w| b < w.from_ms || a > w.to_ms) {
            out.push((a, b));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> GenConfig {
        GenConfig {
            series: 240,
            interval_s: 300,
            days: 4.0,
            train_days: 2.0,
            seed: 7,
            start_ms: 1_767_225_600_000,
        }
    }

    #[test]
    fn a_series_is_the_same_for_a_seed_and_differs_across_seeds() {
        let c = cfg();
        let a = series(&c, 5, true);
        let b = series(&c, 5, true);
        assert_eq!(
            (&a.ts, &a.values, &a.windows),
            (&b.ts, &b.values, &b.windows)
        );
        let other = series(&GenConfig { seed: 8, ..c }, 5, true);
        assert_ne!(a.values, other.values);
    }

    #[test]
    fn every_anomaly_acts_inside_its_window_and_only_there() {
        let c = cfg();
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..c.series {
            let with = series(&c, i, true);
            let without = series(&c, i, false);
            assert_eq!(with.ts, without.ts, "gaps do not depend on anomalies");
            for w in &with.windows {
                assert!(w.from_ms >= c.test_start_ms(), "{i}: window in training");
                assert!(w.to_ms <= c.end_ms(), "{i}: window past the end");
                seen.insert(w.kind);
            }
            for w in with.windows.windows(2) {
                assert!(w[0].to_ms < w[1].from_ms, "{i}: windows overlap");
            }
            // Where the values differ, the anomaly acting there has its
            // window around it (a shift: its onset is in the window).
            let mut onset: Vec<bool> = vec![false; with.windows.len()];
            for (k, &t) in with.ts.iter().enumerate() {
                if with.values[k] == without.values[k] {
                    continue;
                }
                let acting = with
                    .windows
                    .iter()
                    .rposition(|w| t >= w.start_ms)
                    .unwrap_or_else(|| panic!("{i}: a change at {t} before any anomaly"));
                let w = &with.windows[acting];
                if w.kind.persists() {
                    onset[acting] |= w.contains(t);
                } else {
                    assert!(w.contains(t), "{i}: {:?} acts outside its window", w.kind);
                    onset[acting] = true;
                }
            }
            for (w, seen_it) in with.windows.iter().zip(onset) {
                // A variance change on a steady count can leave values alone,
                // and a flat-line can repeat a value that happened anyway;
                // every other type changes something inside its window.
                if !matches!(w.kind, AnomalyKind::FlatLine | AnomalyKind::Variance) {
                    assert!(seen_it, "{i}: {:?} changed nothing in its window", w.kind);
                }
            }
        }
        assert_eq!(seen.len(), AnomalyKind::ALL.len(), "every type appears");
    }

    #[test]
    fn shapes_look_like_their_names() {
        let c = cfg();
        let all = generate(&c);
        let of = |s: Shape| all.iter().filter(move |x| x.shape == s);
        for s in of(Shape::Constant) {
            let train: Vec<f64> =
                s.ts.iter()
                    .zip(&s.values)
                    .filter(|(t, _)| **t < c.test_start_ms())
                    .map(|(_, v)| *v)
                    .collect();
            assert!(
                train.windows(2).all(|w| w[0] == w[1]),
                "{} constant",
                s.metric
            );
        }
        let zeros = of(Shape::Counts)
            .filter(|s| s.values.iter().filter(|v| **v == 0.0).count() * 2 > s.values.len())
            .count();
        assert!(zeros > 0, "some count series are mostly zero");
        let full = all.iter().map(|s| s.ts.len()).max().unwrap_or(0);
        assert!(
            all.iter().any(|s| s.ts.len() < full),
            "some series have gaps"
        );
        assert!(all
            .iter()
            .all(|s| s.values.iter().all(|v| v.is_finite() && *v >= 0.0)));
    }
}
