//! The `[incidents]` section: how alerts are grouped into incidents, and
//! the engine those settings make for `run` and `proprio eval` alike.

use super::text;
use crate::incident::EngineConfig;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How alerts are grouped into incidents (see `incident::engine`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IncidentsSection {
    #[serde(with = "text::duration")]
    pub join_window: Duration,
    #[serde(with = "text::duration")]
    pub quiet: Duration,
    #[serde(deserialize_with = "text::number")]
    pub max_hops: usize,
    #[serde(deserialize_with = "text::number")]
    pub max_open: usize,
    /// The confirmation rule (see `incident::EngineConfig`).
    #[serde(with = "text::duration")]
    pub confirm_span: Duration,
    #[serde(deserialize_with = "text::number")]
    pub confirm_alerts: u32,
    #[serde(deserialize_with = "text::number")]
    pub confirm_score: f32,
    /// New dependencies between known services are alerted
    /// (`incident::novelty`), once a graph source has been heard from for
    /// `edge_warmup`.
    pub new_edges: bool,
    #[serde(with = "text::duration")]
    pub edge_warmup: Duration,
}

impl IncidentsSection {
    /// The incident engine these settings make (the topology's edge bound
    /// is not configurable): what `run` starts and `proprio eval` replays.
    pub fn engine(&self) -> EngineConfig {
        EngineConfig {
            join_window_ms: self.join_window.as_millis() as i64,
            quiet_ms: self.quiet.as_millis() as i64,
            max_hops: self.max_hops,
            max_open: self.max_open,
            confirm_span_ms: self.confirm_span.as_millis() as i64,
            confirm_alerts: self.confirm_alerts,
            confirm_score: self.confirm_score,
            ..Default::default()
        }
    }
}

impl Default for IncidentsSection {
    /// The incident engine's defaults (a test in `layers` holds the two equal).
    fn default() -> Self {
        let e = EngineConfig::default();
        let ms = |v: i64| Duration::from_millis(v as u64);
        IncidentsSection {
            join_window: ms(e.join_window_ms),
            quiet: ms(e.quiet_ms),
            max_hops: e.max_hops,
            max_open: e.max_open,
            confirm_span: ms(e.confirm_span_ms),
            confirm_alerts: e.confirm_alerts,
            confirm_score: e.confirm_score,
            new_edges: true,
            edge_warmup: ms(crate::incident::novelty::DEFAULT_WARMUP_MS),
        }
    }
}
