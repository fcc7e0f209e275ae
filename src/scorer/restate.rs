//! What the alert of a pulse that restates its key's last one says: that
//! pulse's score and explanation ([`super::decide::Decider::restated`]
//! decides it; the rendered line is the same, so is the reading of it).

use super::Scored;
use std::collections::HashMap;

/// Per key, its last scored pulse; bounded like [`super::Contexts`].
pub struct LastPulses {
    lines: HashMap<String, (i64, Scored)>,
    max_keys: usize,
}

impl LastPulses {
    pub fn new(max_keys: usize) -> LastPulses {
        LastPulses {
            lines: HashMap::new(),
            max_keys: max_keys.max(1),
        }
    }

    /// `s`, a pulse of `key` at `ts`, is what its repeats restate.
    pub fn keep(&mut self, key: &str, ts: i64, s: Scored) {
        if let Some(line) = self.lines.get_mut(key) {
            *line = (ts, s);
            return;
        }
        if self.lines.len() >= self.max_keys {
            // Forget the keys whose last pulse is oldest (half of them).
            super::keep_newer_half(&mut self.lines, |(t, _)| *t);
        }
        self.lines.insert(key.to_string(), (ts, s));
    }

    /// The last scored pulse of `key`, if still kept.
    pub fn get(&self, key: &str) -> Option<&Scored> {
        self.lines.get(key).map(|(_, s)| s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::alert::{BaselineOf, Span};

    fn scored(score: f32) -> Scored {
        Scored {
            loss: 1.0,
            surprise: 1.0,
            score,
            stat: None,
            baseline_of: BaselineOf::None,
            rendered: "x".into(),
            span: Span::default(),
        }
    }

    #[test]
    fn the_newest_keys_are_kept_within_the_bound() {
        let mut p = LastPulses::new(4);
        for (i, k) in ["a", "b", "c", "d"].iter().enumerate() {
            p.keep(k, i as i64, scored(i as f32));
        }
        p.keep("a", 10, scored(7.0));
        p.keep("e", 11, scored(8.0));
        assert!(p.lines.len() <= 4);
        assert_eq!(p.get("a").map(|s| s.score), Some(7.0));
        assert_eq!(p.get("e").map(|s| s.score), Some(8.0));
        assert!(p.get("b").is_none());
    }
}
