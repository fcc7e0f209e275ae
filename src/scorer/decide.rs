//! The alert decision, one implementation for the live scorer and for
//! `proprio eval`'s replay, so eval measures the detector that runs.

use crate::event::Kind;
use std::collections::HashMap;

/// An event alerts when its score reaches the threshold (at or above).
pub fn crosses<T: PartialOrd>(score: T, threshold: T) -> bool {
    score >= threshold
}

/// Remembers the last alert per (source, kind); bounded.
pub struct Cooldown {
    last: HashMap<(String, Kind), i64>,
    window_ms: i64,
}

impl Cooldown {
    const MAX: usize = 10_000;

    /// At most one alert per (source, kind) per `window_ms` of event time.
    pub fn new(window_ms: i64) -> Cooldown {
        Cooldown {
            last: HashMap::new(),
            window_ms,
        }
    }

    /// True when an alert at `ts` may go out, and then records it.
    pub fn admit(&mut self, source: &str, kind: Kind, ts: i64) -> bool {
        if let Some(&t) = self.last.get(&(source.to_string(), kind)) {
            if ts >= t && ts - t < self.window_ms {
                return false;
            }
        }
        if self.last.len() >= Self::MAX {
            let w = self.window_ms;
            self.last.retain(|_, t| ts - *t < w);
        }
        self.last.insert((source.to_string(), kind), ts);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_the_threshold_alerts() {
        assert!(crosses(3.0, 3.0));
        assert!(!crosses(2.99, 3.0));
    }

    #[test]
    fn cooldown_is_per_source_and_kind_in_event_time() {
        let mut c = Cooldown::new(60_000);
        assert!(c.admit("a", Kind::Log, 0));
        assert!(!c.admit("a", Kind::Log, 59_999));
        assert!(c.admit("b", Kind::Log, 1));
        assert!(c.admit("a", Kind::Log, 60_000));
    }
}
