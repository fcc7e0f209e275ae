//! The alert policy: what the operator decides about alerting, given to
//! the scorer through the runtime context and replayed by `proprio eval`
//! (the decision itself is `scorer::decide`).

/// What the operator decides: how rare a normal event's evidence must be to
/// alert, and how much recent history the evidence weighs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// Share of normal events whose score alone would reach the alert
    /// level: the level is `-log10 risk` (1e-5: 5.0).
    pub risk: f64,
    /// Evidence window, event time.
    pub evidence_window_ms: i64,
    /// Evidence is the mean of this many highest scores in the window.
    pub evidence_k: usize,
}

impl Policy {
    pub const DEFAULT_RISK: f64 = 1e-5;
    pub const DEFAULT_EVIDENCE_WINDOW_MS: i64 = 60_000;
    pub const DEFAULT_EVIDENCE_K: usize = 2;

    /// The score level an alert needs.
    pub fn level(&self) -> f32 {
        crate::tail::level_of_risk(self.risk)
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
