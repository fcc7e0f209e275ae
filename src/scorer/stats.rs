//! The scorer's counters, read at each scrape of /metrics (and by tests).

use crate::bus::partition::PartitionCounts;
use crate::metrics::{self, Family, ReadAtScrape, Report};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Counters a test or the metrics endpoint can read.
#[derive(Debug, Default)]
pub struct ScorerStats {
    pub scored: AtomicU64,
    pub batches: AtomicU64,
    /// Events that arrived while there was no model yet.
    pub warming: AtomicU64,
    pub invalid: AtomicU64,
    /// Pulses repeating their key's last one, left unscored as the
    /// curriculum leaves them out ([`crate::curriculum::Repeats`]).
    pub collapsed: AtomicU64,
    pub alerts: AtomicU64,
    /// Alerts the stream had already stored (a redelivery, or another replica).
    pub duplicate_alerts: AtomicU64,
    pub cooled_down: AtomicU64,
    /// Events acknowledged unscored because they were older than `max_lag`.
    pub shed: AtomicU64,
    pub muted: AtomicU64,
    pub swaps: AtomicU64,
    /// Per partition, when the scorer is partitioned.
    pub partitions: std::sync::OnceLock<Arc<PartitionCounts>>,
}

impl ScorerStats {
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    /// Every event read, scored or left unscored for any reason.
    pub fn received(&self) -> u64 {
        let g = ScorerStats::get;
        g(&self.scored) + g(&self.warming) + g(&self.invalid) + g(&self.shed) + g(&self.collapsed)
    }
}

static SCORED: Family = Family::counter(
    "proprio_events_scored_total",
    "Events scored by the model",
    &[],
);
static UNSCORED: Family = Family::counter(
    "proprio_events_unscored_total",
    "Events the scorer did not score, by reason (warming: no model yet; invalid; shed: older than scorer.max_lag; collapsed: a pulse repeating its key's last one)",
    &["reason"],
);
static BATCHES: Family = Family::counter(
    "proprio_scoring_batches_total",
    "Scoring batches (forward passes)",
    &[],
);
static SWAPS: Family = Family::counter(
    "proprio_model_swaps_total",
    "Models the scorer switched to",
    &[],
);

impl ReadAtScrape for ScorerStats {
    fn report(&self, out: &mut Report) {
        let g = ScorerStats::get;
        out.add(&metrics::EVENTS_RECEIVED, &["scorer"], self.received());
        out.add(&SCORED, &[], g(&self.scored));
        out.add(&UNSCORED, &["warming"], g(&self.warming));
        out.add(&UNSCORED, &["invalid"], g(&self.invalid));
        out.add(&UNSCORED, &["shed"], g(&self.shed));
        out.add(&UNSCORED, &["collapsed"], g(&self.collapsed));
        out.add(&BATCHES, &[], g(&self.batches));
        out.add(&metrics::ALERTS_PUBLISHED, &["surprise"], g(&self.alerts));
        out.add(
            &metrics::ALERTS_SUPPRESSED,
            &["cooldown"],
            g(&self.cooled_down),
        );
        out.add(
            &metrics::ALERTS_SUPPRESSED,
            &["duplicate"],
            g(&self.duplicate_alerts),
        );
        out.add(&SWAPS, &[], g(&self.swaps));
        out.add(&metrics::ALERTS_SUPPRESSED, &["muted"], g(&self.muted));
        for (p, received, held) in self.partitions.get().map_or(Vec::new(), |c| c.snapshot()) {
            out.add(&PARTITION_EVENTS, &[p], received);
            out.add(&PARTITION_HELD, &[p], u64::from(held));
        }
    }
}

static PARTITION_EVENTS: Family = Family::counter(
    "proprio_scorer_partition_events_total",
    "Telemetry messages this scorer received, by partition (scorer.partitions of 2 or more)",
    &["partition"],
);
static PARTITION_HELD: Family = Family {
    gauge: true,
    ..Family::counter(
        "proprio_scorer_partition_held",
        "1 for each partition this scorer replica holds now",
        &["partition"],
    )
};
