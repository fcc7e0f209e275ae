//! Incidents: one story instead of a wall of alerts.
//!
//! Alerts close in time and connected in the topology become one incident
//! (the [`engine`]), with its member sources ranked as root-cause suspects
//! ([`rank`]) over who depends on whom ([`topology`]: the registry plus the
//! calls graph and trace events show). The `incidents` role ([`role`])
//! feeds the engine from the alerts stream and stores each change: KV
//! `proprio-incidents` (the current state, what a restart rebuilds from)
//! and stream `PROPRIO_INCIDENTS` on `proprio.incident.<id>` (every open,
//! update and resolve). `proprio incidents` is `cli_incidents`. The role also watches the
//! topology for new dependencies ([`novelty`]) and raises them as alerts.

pub mod engine;
pub mod novelty;
pub mod rank;
mod role;
pub mod topology;

pub use engine::{Engine, EngineConfig, Verdict};
pub use novelty::{EdgeWatch, NewEdge};
pub use role::{load_all, IncidentStats, Incidents, IncidentsConfig};
pub use topology::Topology;
