//! The demo's honest count: which alerts (or incidents) a fault explains,
//! and which faults they caught. One pure rule, [`crate::sim::explains`]:
//! on one of the fault's sources, inside its window plus [`GRACE_MS`].

use crate::sim::Fault;

/// How long after a fault's end an alert still belongs to it.
pub const GRACE_MS: i64 = 60_000;

/// An alert or an incident as the tally sees it: when (simulated unix ms)
/// and on which sources (an alert: its one source; an incident: its blast radius).
#[derive(Debug, Clone)]
pub struct Sighting {
    pub ts: i64,
    pub sources: Vec<String>,
}

/// What the faults make of a list of sightings.
#[derive(Debug, Clone, PartialEq)]
pub struct Tally {
    /// Per fault: the earliest sighting it explains (it caught the fault).
    pub first: Vec<Option<usize>>,
    /// Per sighting: whether some fault explains it.
    pub explained: Vec<bool>,
}

impl Tally {
    pub fn caught(&self) -> usize {
        self.first.iter().filter(|f| f.is_some()).count()
    }

    /// Sightings no fault explains.
    pub fn false_count(&self) -> usize {
        self.explained.iter().filter(|e| !**e).count()
    }
}

/// Matches `seen` against `faults` with [`crate::sim::explains`]: a
/// sighting is explained when one of its sources is a fault's source and
/// its time is inside that fault's window plus `grace_ms`; a fault is
/// caught only by such a sighting, its first one in time.
pub fn tally(seen: &[Sighting], faults: &[Fault], grace_ms: i64) -> Tally {
    let hit = |s: &Sighting, f: &Fault| s.sources.iter().any(|src| f.explains(src, s.ts, grace_ms));
    let first = faults
        .iter()
        .map(|f| {
            seen.iter()
                .enumerate()
                .filter(|(_, s)| hit(s, f))
                .min_by_key(|(i, s)| (s.ts, *i))
                .map(|(i, _)| i)
        })
        .collect();
    let explained = seen
        .iter()
        .map(|s| faults.iter().any(|f| hit(s, f)))
        .collect();
    Tally { first, explained }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::sim::FaultKind;

    /// A fault on `sources`, the first its root (also for the demo's incident tests).
    pub(in crate::demo) fn fault(id: &str, start: i64, end: i64, sources: &[&str]) -> Fault {
        Fault {
            id: id.into(),
            kind: FaultKind::ALL[0],
            start_ms: start,
            end_ms: end,
            sources: sources.iter().map(|s| s.to_string()).collect(),
            root: sources.first().map(|s| s.to_string()),
            registry_after: None,
        }
    }

    fn at(ts: i64, sources: &[&str]) -> Sighting {
        Sighting {
            ts,
            sources: sources.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn only_an_alert_in_the_window_on_a_fault_source_is_explained() {
        let faults = [
            fault("oom-0", 100_000, 200_000, &["db", "api"]),
            fault("crash-0", 500_000, 510_000, &["cache"]),
        ];
        let seen = [
            at(50_000, &["db"]),          // before the fault: false
            at(150_000, &["web"]),        // in the window, wrong source: false
            at(180_000, &["api"]),        // explains oom-0
            at(120_000, &["db"]),         // explains oom-0, earlier
            at(260_000, &["db"]),         // within the 60 s grace
            at(261_000, &["db"]),         // after the grace: false
            at(900_000, &["cache"]),      // a fault source, long after: false
            at(505_000, &["x", "cache"]), // an incident touching cache: explained
        ];
        let t = tally(&seen, &faults, GRACE_MS);
        assert_eq!(
            t.explained,
            [false, false, true, true, true, false, false, true]
        );
        assert_eq!(t.first, [Some(3), Some(7)]);
        assert_eq!((t.caught(), t.false_count()), (2, 4));
    }

    #[test]
    fn a_chance_alert_on_a_fault_source_catches_nothing() {
        let faults = [fault("oom-0", 100_000, 200_000, &["db"])];
        let t = tally(
            &[at(99_999, &["db"]), at(400_000, &["db"])],
            &faults,
            GRACE_MS,
        );
        assert_eq!((t.caught(), t.false_count()), (0, 2));
        let t = tally(&[], &faults, GRACE_MS);
        assert_eq!((t.caught(), t.false_count()), (0, 0));
    }
}
