//! The detectors proprio is compared with, each over one series, causal
//! (a sample is scored from the samples before it), a score per sample,
//! higher = more anomalous. The first [`MIN_HISTORY`] samples of a series
//! (or those without a reference) score 0: every detector is warmed up on
//! the training part, where nothing is judged.
//!
//! - [`windowed_gaussian`], NAB's "windowed Gaussian": mean and standard
//!   deviation of the trailing window, the score is |z|. NAB reports the
//!   Gaussian tail probability of z, a monotone function of |z|, so the
//!   alerts at a calibrated threshold and the AUROC are the same. No floor
//!   beyond a tiny one: it is the naive baseline (a constant series makes
//!   any change look infinitely unlikely).
//! - [`robust_z`]: median and MAD of the trailing window, with the scale
//!   floored ([`robust_scale`]) so that a constant or all-zero window does
//!   not turn rounding noise into z = 1e12, while a real jump from a flat
//!   zero still scores high.
//! - [`seasonal`]: the expected value is the median of the same time of day
//!   on up to the 7 previous days (±2 samples around it), and the score is
//!   the residual over the robust scale of the series' own recent residuals
//!   (same floor): a busy afternoon is normal because yesterday's was too.

use super::gen::Series;

/// Samples a detector needs before it scores.
pub const MIN_HISTORY: usize = 12;

/// The scale floor's absolute part (in the series' units): a series that has
/// been exactly flat still has a scale, so a change of 0.01 is z = 1.
pub const ABS_FLOOR: f64 = 0.01;

/// Scores at most this high (a finite number for every detector).
const CAP: f64 = 1e6;

/// Median and floored robust scale of `v` (reordered):
/// scale = max(1.4826 MAD, 1.2533 mean |x - median|, 0.1 % of |median|,
/// [`ABS_FLOOR`]). The mean absolute deviation keeps a mostly-zero series
/// (MAD 0, a few ones) at the spread its ones give it; both factors make
/// the scale σ for gaussian noise.
pub fn robust_scale(v: &mut [f64]) -> (f64, f64) {
    if v.is_empty() {
        return (0.0, ABS_FLOOR);
    }
    let med = crate::baseline::median(v);
    let mut dev: Vec<f64> = v.iter().map(|x| (x - med).abs()).collect();
    let mean_ad = dev.iter().sum::<f64>() / dev.len() as f64;
    let mad = crate::baseline::median(&mut dev);
    let scale = (1.4826 * mad)
        .max(1.2533 * mean_ad)
        .max(1e-3 * med.abs())
        .max(ABS_FLOOR);
    (med, scale)
}

fn capped(z: f64) -> f32 {
    if z.is_finite() {
        z.min(CAP) as f32
    } else {
        CAP as f32
    }
}

/// NAB's windowed Gaussian over the trailing `window` samples.
pub fn windowed_gaussian(s: &Series, window: usize) -> Vec<f32> {
    let x = &s.values;
    (0..x.len())
        .map(|k| {
            if k < MIN_HISTORY {
                return 0.0;
            }
            let w = &x[k.saturating_sub(window)..k];
            let n = w.len() as f64;
            let mean = w.iter().sum::<f64>() / n;
            let var = w.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
            capped((x[k] - mean).abs() / var.sqrt().max(1e-9))
        })
        .collect()
}

/// Robust z over the trailing `window` samples, scale floored.
pub fn robust_z(s: &Series, window: usize) -> Vec<f32> {
    let x = &s.values;
    let mut buf = Vec::with_capacity(window);
    (0..x.len())
        .map(|k| {
            if k < MIN_HISTORY {
                return 0.0;
            }
            buf.clear();
            buf.extend_from_slice(&x[k.saturating_sub(window)..k]);
            let (med, scale) = robust_scale(&mut buf);
            capped((x[k] - med).abs() / scale)
        })
        .collect()
}

/// Same time of day on previous days; `interval_ms` is the series' grid,
/// `window` the number of recent residuals its scale comes from.
pub fn seasonal(s: &Series, interval_ms: i64, window: usize) -> Vec<f32> {
    const DAYS: i64 = 7;
    const NEAR: i64 = 2;
    let Some(&t0) = s.ts.first() else {
        return Vec::new();
    };
    let slot = |t: i64| ((t - t0) as f64 / interval_ms as f64).round() as i64;
    let last = s.ts.last().map_or(0, |&t| slot(t));
    let mut grid: Vec<Option<f64>> = vec![None; last as usize + 1];
    for (&t, &v) in s.ts.iter().zip(&s.values) {
        grid[slot(t) as usize] = Some(v);
    }
    let per_day = 86_400_000 / interval_ms;
    let mut residuals: Vec<f64> = Vec::new();
    let mut refs = Vec::new();
    let mut buf = Vec::with_capacity(window);
    let mut out = Vec::with_capacity(s.values.len());
    for (&t, &v) in s.ts.iter().zip(&s.values) {
        let k = slot(t);
        refs.clear();
        for d in 1..=DAYS {
            for j in -NEAR..=NEAR {
                let at = k - d * per_day + j;
                if at >= 0 {
                    if let Some(Some(r)) = grid.get(at as usize) {
                        refs.push(*r);
                    }
                }
            }
        }
        if refs.len() < 3 {
            out.push(0.0);
            continue;
        }
        let expected = crate::baseline::median(&mut refs);
        let r = v - expected;
        let score = if residuals.len() < MIN_HISTORY {
            0.0
        } else {
            buf.clear();
            buf.extend_from_slice(&residuals[residuals.len().saturating_sub(window)..]);
            let (med, scale) = robust_scale(&mut buf);
            // The relative floor follows the series' level, not the residuals'.
            let scale = scale.max(1e-3 * expected.abs());
            capped((r - med).abs() / scale)
        };
        out.push(score);
        residuals.push(r);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::gen::Shape;
    use super::*;

    fn series(values: Vec<f64>) -> Series {
        Series {
            source: "h".into(),
            metric: "m".into(),
            shape: Shape::Gaussian,
            ts: (0..values.len() as i64).map(|k| k * 300_000).collect(),
            values,
            windows: Vec::new(),
        }
    }

    #[test]
    fn robust_z_stays_finite_and_small_on_constant_and_zero_series() {
        for level in [0.0, 4.0, 512.0] {
            let mut v = vec![level; 100];
            v.push(level + 1e-9);
            let z = robust_z(&series(v), 288);
            assert!(
                z.iter().all(|z| *z < 1e-3),
                "{level}: noise is not news: {z:?}"
            );
            // The naive Gaussian has no floor: the same step is enormous.
            let mut v = vec![level; 100];
            v.push(level + 1e-6);
            let g = windowed_gaussian(&series(v), 288);
            assert!(*g.last().unwrap() > 100.0, "{level}: gaussian {g:?}");
        }
        // A real jump from a flat zero is still news.
        let mut v = vec![0.0; 100];
        v.push(3.0);
        let z = robust_z(&series(v), 288);
        assert!(*z.last().unwrap() >= 100.0, "{z:?}");
        assert!(z[..100].iter().all(|z| *z == 0.0));
    }

    #[test]
    fn robust_scale_floor_holds_for_mostly_zero_series() {
        // 10 % ones: MAD is 0, the mean deviation keeps a scale.
        let mut v: Vec<f64> = (0..100)
            .map(|k| if k % 10 == 0 { 1.0 } else { 0.0 })
            .collect();
        let (med, scale) = robust_scale(&mut v);
        assert_eq!(med, 0.0);
        assert!((scale - 0.12533).abs() < 1e-4, "{scale}");
        let (_, s) = robust_scale(&mut [7.0; 10]);
        assert_eq!(s, ABS_FLOOR);
        let (_, s) = robust_scale(&mut [5000.0; 10]);
        assert!((s - 5.0).abs() < 1e-9);
    }

    #[test]
    fn seasonal_expects_yesterdays_shape() {
        // A daily square wave: high in the second half of each day.
        let per_day = 288usize;
        let v: Vec<f64> = (0..3 * per_day)
            .map(|k| if k % per_day >= 144 { 100.0 } else { 10.0 } + (k % 3) as f64)
            .collect();
        let mut spiked = v.clone();
        let at = 2 * per_day + 50;
        spiked[at] += 300.0;
        let s = seasonal(&series(spiked), 300_000, 288);
        // A trailing 3 h window: mostly the low half of the day.
        let r = robust_z(&series(v), 36);
        // On day 3 the daily jump is expected (away from its edges, where
        // the ±2-sample reference straddles it), the spike is not.
        let day3 = 2 * per_day;
        let calm = (day3..3 * per_day)
            .filter(|&k| k != at && (k % per_day).abs_diff(144) > 3 && k % per_day > 3)
            .map(|k| s[k])
            .fold(0.0f32, f32::max);
        assert!(
            s[at] > 10.0 * calm.max(0.1),
            "spike {} vs calm {calm}",
            s[at]
        );
        assert!(
            r[day3 + 144] > 5.0,
            "the plain robust z finds the daily jump unusual"
        );
        assert!(
            s[day3 + 150] < 3.0,
            "the seasonal one does not: {}",
            s[day3 + 150]
        );
    }
}
