//! Root-cause ranking: which member of an incident most likely started it.
//!
//! Each member source gets three parts in [0, 1]:
//! - upstream: the share of the other members that depend on it, directly
//!   or transitively (a failure propagates from what is depended on to what
//!   depends on it, so the source others hang from is the likelier cause);
//! - onset: 1 for the earliest first alert, down to 0 for the latest,
//!   by position (`1 - earlier / (n - 1)`, members with the same onset tied);
//! - evidence: half its strongest score over the incident's strongest,
//!   half its alert count over the most any member has.
//!
//! `rank = 0.45 * upstream + 0.35 * onset + 0.20 * evidence`; a lone member
//! ranks 1. Upstream outweighs onset because a dependent's symptom (a timeout
//! piling up) can be noticed before its cause's own telemetry says anything;
//! evidence only separates members the topology and the clock cannot. Ties:
//! earlier onset, then name.

use super::topology::Topology;
use crate::contract::incident::Suspect;

pub const W_UPSTREAM: f32 = 0.45;
pub const W_ONSET: f32 = 0.35;
pub const W_EVIDENCE: f32 = 0.20;

/// One source's part in an incident.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub source: String,
    /// Its first alert in the incident.
    pub onset_ts: i64,
    /// Its strongest alert's score.
    pub score: f32,
    pub alerts: u32,
    /// What its strongest alert said.
    pub what: String,
}

impl Member {
    pub fn suspect(&self, rank: f32) -> Suspect {
        Suspect {
            source: self.source.clone(),
            rank,
            onset_ts: self.onset_ts,
            score: self.score,
            alerts: self.alerts,
            what: self.what.clone(),
        }
    }

    pub fn of_suspect(s: &Suspect) -> Member {
        Member {
            source: s.source.clone(),
            onset_ts: s.onset_ts,
            score: s.score,
            alerts: s.alerts,
            what: s.what.clone(),
        }
    }
}

/// The members as suspects, highest rank first.
pub fn rank(members: &[Member], topo: &Topology) -> Vec<Suspect> {
    let n = members.len();
    if n == 1 {
        return vec![members[0].suspect(1.0)];
    }
    let others = (n.max(2) - 1) as f32;
    let max_score = members.iter().map(|m| m.score).fold(0.0f32, f32::max);
    let max_alerts = members.iter().map(|m| m.alerts).max().unwrap_or(1).max(1) as f32;
    // upstream[j] = what member j depends on, limited to members.
    let upstream: Vec<_> = members
        .iter()
        .map(|m| topo.upstream_of(&m.source))
        .collect();
    let mut out: Vec<Suspect> = members
        .iter()
        .map(|m| {
            let below = upstream
                .iter()
                .zip(members)
                .filter(|(up, o)| o.source != m.source && up.contains(&m.source))
                .count() as f32;
            let earlier = members.iter().filter(|o| o.onset_ts < m.onset_ts).count() as f32;
            let score = if max_score > 0.0 {
                (m.score.max(0.0) / max_score).min(1.0)
            } else {
                0.0
            };
            let evidence = 0.5 * score + 0.5 * m.alerts as f32 / max_alerts;
            let r = W_UPSTREAM * below / others
                + W_ONSET * (1.0 - earlier / others)
                + W_EVIDENCE * evidence;
            m.suspect(r.clamp(0.0, 1.0))
        })
        .collect();
    out.sort_by(|a, b| {
        b.rank
            .total_cmp(&a.rank)
            .then(a.onset_ts.cmp(&b.onset_ts))
            .then_with(|| a.source.cmp(&b.source))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(source: &str, onset_ts: i64, score: f32, alerts: u32) -> Member {
        Member {
            source: source.into(),
            onset_ts,
            score,
            alerts,
            what: String::new(),
        }
    }

    fn chain() -> Topology {
        let mut t = Topology::new(100);
        t.observe("A", "B");
        t.observe("B", "C");
        t
    }

    #[test]
    fn the_formula() {
        // C first and depended on by both: 0.45 * 1 + 0.35 * 1 + 0.2 * 1.
        let s = rank(
            &[m("A", 30, 4.0, 1), m("B", 20, 4.0, 1), m("C", 10, 4.0, 1)],
            &chain(),
        );
        let names: Vec<_> = s.iter().map(|s| s.source.as_str()).collect();
        assert_eq!(names, ["C", "B", "A"]);
        assert!((s[0].rank - 1.0).abs() < 1e-6, "{}", s[0].rank);
        // B: upstream of A only (0.5), second onset (0.5), full evidence.
        assert!((s[1].rank - (0.45 * 0.5 + 0.35 * 0.5 + 0.2)).abs() < 1e-6);
        assert!((s[2].rank - 0.2).abs() < 1e-6);
        assert_eq!(rank(&[m("X", 0, 1.0, 1)], &chain())[0].rank, 1.0);
    }

    #[test]
    fn upstream_outweighs_onset_and_evidence_breaks_ties() {
        // A's symptom is noticed first, but A depends on C.
        let s = rank(&[m("A", 10, 4.0, 1), m("C", 20, 4.0, 1)], &chain());
        assert_eq!(s[0].source, "C");
        // Unrelated, same onset: the stronger, more frequent one leads.
        let s = rank(&[m("P", 10, 3.0, 1), m("Q", 10, 6.0, 3)], &chain());
        assert_eq!(s[0].source, "Q");
        // All equal: earlier onset, then name.
        let s = rank(&[m("R", 10, 3.0, 1), m("P", 10, 3.0, 1)], &chain());
        assert_eq!(s[0].source, "P");
    }
}
