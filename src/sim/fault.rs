//! Fault kinds and the ground-truth list written to FILE.faults.json.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The failure patterns the simulator can inject: the article's list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    LatencySpike,
    OomDeath,
    OomCascade,
    PortConflict,
    LocalhostTrap,
    CrashLoop,
    VramPressure,
    StartupOrder,
    NewDependency,
    ArchChange,
}

impl FaultKind {
    pub const ALL: [FaultKind; 10] = [
        FaultKind::LatencySpike,
        FaultKind::OomDeath,
        FaultKind::OomCascade,
        FaultKind::PortConflict,
        FaultKind::LocalhostTrap,
        FaultKind::CrashLoop,
        FaultKind::VramPressure,
        FaultKind::StartupOrder,
        FaultKind::NewDependency,
        FaultKind::ArchChange,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::LatencySpike => "latency_spike",
            FaultKind::OomDeath => "oom_death",
            FaultKind::OomCascade => "oom_cascade",
            FaultKind::PortConflict => "port_conflict",
            FaultKind::LocalhostTrap => "localhost_trap",
            FaultKind::CrashLoop => "crash_loop",
            FaultKind::VramPressure => "vram_pressure",
            FaultKind::StartupOrder => "startup_order",
            FaultKind::NewDependency => "new_dependency",
            FaultKind::ArchChange => "arch_change",
        }
    }

    pub fn parse(s: &str) -> Option<FaultKind> {
        FaultKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The kind a fault id names: ids are `<kind>-<n>`.
    pub fn of_id(id: &str) -> Option<FaultKind> {
        let (kind, n) = id.rsplit_once('-')?;
        n.parse::<u32>().ok()?;
        FaultKind::parse(kind)
    }

    /// How long the fault lasts when the run leaves room for it, in ms.
    pub(crate) fn nominal_ms(self) -> i64 {
        let min = 60_000;
        match self {
            FaultKind::LatencySpike => 20 * min,
            FaultKind::OomDeath => 30 * min,
            FaultKind::OomCascade => 25 * min,
            FaultKind::PortConflict => 6 * min,
            FaultKind::LocalhostTrap => 15 * min,
            FaultKind::CrashLoop => 12 * min,
            FaultKind::VramPressure => 20 * min,
            FaultKind::StartupOrder => 2 * min,
            FaultKind::NewDependency => 40 * min,
            FaultKind::ArchChange => 10 * min,
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which faults to inject: `all`, `none`, or a comma-separated list of kinds
/// (a kind may repeat).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultSpec {
    All,
    None,
    List(Vec<FaultKind>),
}

impl std::str::FromStr for FaultSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<FaultSpec, String> {
        match s.trim() {
            "all" => Ok(FaultSpec::All),
            "none" | "" => Ok(FaultSpec::None),
            list => {
                let mut kinds = Vec::new();
                for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                    let k = FaultKind::parse(part).ok_or_else(|| {
                        let valid: Vec<&str> = FaultKind::ALL.iter().map(|k| k.as_str()).collect();
                        format!(
                            "unknown fault kind {part:?}; expected all, none or a comma-separated list of: {}",
                            valid.join(", ")
                        )
                    })?;
                    kinds.push(k);
                }
                Ok(if kinds.is_empty() {
                    FaultSpec::None
                } else {
                    FaultSpec::List(kinds)
                })
            }
        }
    }
}

/// One injected fault: the ground truth an evaluation scores alerts against.
/// Every event the fault changed carries `label == id`, has `start_ms <= ts <=
/// end_ms`, and its source is in `sources`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    /// `<kind>-<n>`, n counting faults of that kind from 0.
    pub id: String,
    pub kind: FaultKind,
    pub start_ms: i64,
    pub end_ms: i64,
    /// Every source that publishes labelled events for this fault, sorted:
    /// it cannot tell where the fault began, `root` does.
    pub sources: Vec<String>,
    /// The service the fault hit first, the one a human would name as its
    /// root cause, so root-cause ranking can be scored: the OOM-killed
    /// service (oom_death), the first to die (oom_cascade), the slow one
    /// (latency_spike), the GPU worker (vram_pressure), the service whose
    /// deploy fails (port_conflict, crash_loop), the one pointed at localhost
    /// (localhost_trap), the one started before its dependency
    /// (startup_order), the one calling a new upstream (new_dependency), the
    /// one split in two (arch_change). It is one of `sources`, and it
    /// publishes the fault's earliest labelled event, except where a recorder
    /// announces the change that causes the fault first: the deploy
    /// recorder's `deploy` (port_conflict, crash_loop) or
    /// `architecture.change` (arch_change), the config recorder's
    /// `config.update` (localhost_trap); those chronicles name the root in
    /// their target. `None` only in faults files written before it existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
    /// arch_change only: the file (relative to the faults file's directory)
    /// holding the registry as it is after the change, so a test can hash it
    /// against the one before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_after: Option<String>,
}

impl Fault {
    /// Whether an alert on `source` at `ts_ms` belongs to this fault: see [`explains`].
    pub fn explains(&self, source: &str, ts_ms: i64, grace_ms: i64) -> bool {
        explains(
            (self.start_ms, self.end_ms),
            &self.sources,
            grace_ms,
            source,
            ts_ms,
        )
    }
}

/// The rule that ties an alert to a fault: the alert is on one of the
/// fault's `sources` and inside its window, `start..=end + grace_ms` (an
/// effect may be noticed shortly after the fault ends, a silence only once
/// it has lasted). Anything else is a false alert, even on a source that
/// some fault touches at another time. The same window as eval's
/// `--grace-s` judge.
pub fn explains(
    (start_ms, end_ms): (i64, i64),
    sources: &[String],
    grace_ms: i64,
    source: &str,
    ts_ms: i64,
) -> bool {
    ts_ms >= start_ms
        && ts_ms <= end_ms.saturating_add(grace_ms)
        && sources.iter().any(|s| s == source)
}
