//! The one median of the crate (baselines, the metric scaler, eval's
//! baselines and metrics), in a module of its own that depends on nothing,
//! so any module can use it without a cycle.

/// A float the median works on (f32 for losses, f64 for metric values).
pub trait Real: Copy + std::ops::Add<Output = Self> + std::ops::Div<Output = Self> {
    const TWO: Self;
    fn total_cmp(&self, other: &Self) -> std::cmp::Ordering;
}

impl Real for f32 {
    const TWO: f32 = 2.0;
    fn total_cmp(&self, other: &f32) -> std::cmp::Ordering {
        f32::total_cmp(self, other)
    }
}

impl Real for f64 {
    const TWO: f64 = 2.0;
    fn total_cmp(&self, other: &f64) -> std::cmp::Ordering {
        f64::total_cmp(self, other)
    }
}

/// The median of a non-empty slice, sorting it in place: the middle value,
/// or the mean of the middle two for an even count.
pub fn median<T: Real>(v: &mut [T]) -> T {
    v.sort_by(T::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / T::TWO
    }
}
