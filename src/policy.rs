//! The alert policy: what the operator decides about alerting, given to
//! the scorer through the runtime context and replayed by `proprio eval`
//! (the decision itself is `scorer::decide`).

/// What the operator decides: how rare a normal event's evidence must be to
/// alert, and how much recent history the evidence weighs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// Share of normal events whose score alone would reach the alert
    /// level, for a model whose training has covered a day: the level is
    /// `-log10 risk` (1e-4: 4). A younger model is held to a share of it
    /// ([`Policy::for_model`]).
    pub risk: f64,
    /// Evidence window, event time.
    pub evidence_window_ms: i64,
    /// Evidence is the mean of this many highest scores in the window.
    pub evidence_k: usize,
}

impl Policy {
    pub const DEFAULT_RISK: f64 = 1e-4;
    /// Telemetry a model's training must have covered to be held to the
    /// configured risk: a day, the cycle a system's normal repeats over.
    pub const FULL_CYCLE_MS: i64 = 24 * 3_600_000;
    /// The youngest model's share of the configured risk (1e-4 / 30 =
    /// 3.3e-6, level 5.5).
    pub const YOUNGEST_SHARE: f64 = 1.0 / 30.0;
    pub const DEFAULT_EVIDENCE_WINDOW_MS: i64 = 60_000;
    pub const DEFAULT_EVIDENCE_K: usize = 2;

    /// The score level an alert needs.
    pub fn level(&self) -> f32 {
        crate::tail::level_of_risk(self.risk)
    }

    /// The policy for a model whose training has covered `seen_ms` of
    /// telemetry (None: unknown, as for older checkpoints): the risk scaled
    /// by the share of a day covered, between [`Policy::YOUNGEST_SHARE`]
    /// and 1.
    ///
    /// Why: a model that has not yet seen the daily cycle meets normal
    /// novelty (the day's load rising past what a night showed) that its
    /// calibration cannot know. Measured (docs/EVAL.md, session 6): at risk
    /// 3e-4 a model trained on a day raised no false incident on a
    /// fault-free day and caught 17 of 30 faults on a mixed one (9 at
    /// 1e-5), while a model trained on 3 hours raised 24 false alerts an
    /// hour; at 3e-5 it raised none.
    pub fn for_model(&self, seen_ms: Option<i64>) -> Policy {
        Policy {
            risk: self.risk * Self::share(seen_ms),
            ..*self
        }
    }

    /// How far above the configured level a model of that age is held:
    /// `-log10` of its share of the risk (0 from a day on, 1.48 for the
    /// youngest). What a rarity that does not come from the model (a
    /// failure signature's count) is lifted by, so that it meets the
    /// configured risk whatever the model's age.
    pub fn age_margin(seen_ms: Option<i64>) -> f32 {
        crate::tail::level_of_risk(Self::share(seen_ms))
    }

    fn share(seen_ms: Option<i64>) -> f64 {
        seen_ms.map_or(Self::YOUNGEST_SHARE, |s| {
            (s as f64 / Self::FULL_CYCLE_MS as f64).clamp(Self::YOUNGEST_SHARE, 1.0)
        })
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            risk: Self::DEFAULT_RISK,
            evidence_window_ms: Self::DEFAULT_EVIDENCE_WINDOW_MS,
            evidence_k: Self::DEFAULT_EVIDENCE_K,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_young_model_is_held_to_its_share_of_a_day() {
        let p = Policy {
            risk: 3e-4,
            ..Policy::default()
        };
        let hour = 3_600_000;
        let r = |seen| p.for_model(seen).risk;
        assert_eq!(r(Some(24 * hour)), 3e-4);
        assert_eq!(r(Some(48 * hour)), 3e-4, "never looser than configured");
        assert!((r(Some(3 * hour)) - 3.75e-5).abs() < 1e-12);
        // Younger than 48 minutes, or unknown: a 30th, 1e-5 (level 5).
        assert!((r(Some(hour / 2)) - 1e-5).abs() < 1e-12);
        assert!((r(None) - 1e-5).abs() < 1e-12);
        assert!((p.for_model(None).level() - 5.0).abs() < 1e-4);
        // The margin is the level's rise, whatever the configured risk.
        for seen in [None, Some(hour / 2), Some(3 * hour), Some(24 * hour)] {
            let rise = p.for_model(seen).level() - p.level();
            assert!((Policy::age_margin(seen) - rise).abs() < 1e-4, "{seen:?}");
        }
        assert_eq!(Policy::age_margin(Some(48 * hour)), 0.0);
        // Only the risk changes.
        assert_eq!(p.for_model(None).evidence_k, p.evidence_k);
    }
}
