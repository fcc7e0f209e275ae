//! Where a scorer replica's events come from: the one consumer of the
//! telemetry stream every replica shares, or, with `scorer.partitions` of
//! 2 or more, the partitions this replica holds ([`crate::bus::partition`]).

use crate::bus::partition::{member_name, PartitionCounts, PartitionFeed};
use crate::bus::{Bus, Feed, Pull};
use crate::contract::{CONSUMER_SCORER, STREAM_TELEMETRY};
use anyhow::Result;
use async_nats::jetstream;
use std::sync::Arc;
use tokio::time::Instant;

pub enum ScorerFeed {
    Shared(Feed),
    Partitioned(PartitionFeed),
}

impl ScorerFeed {
    pub async fn open(bus: &Bus, partitions: u32, counts: Arc<PartitionCounts>) -> Result<Self> {
        if partitions < 2 {
            let f = bus
                .feed(STREAM_TELEMETRY, CONSUMER_SCORER, &bus.telemetry_filter())
                .await?;
            return Ok(ScorerFeed::Shared(f));
        }
        let me = member_name();
        tracing::info!(member = %me, partitions, "scoring the partitions this replica is given");
        Ok(ScorerFeed::Partitioned(
            bus.partitioned(partitions, &me, counts).await?,
        ))
    }

    /// Membership and holdings, when a beat is due (between batches).
    pub async fn tend(&mut self) {
        if let ScorerFeed::Partitioned(p) = self {
            p.tend().await;
        }
    }

    /// When the next beat is due, so an idle scorer still tends; none for
    /// the shared consumer.
    pub fn due(&self) -> Option<Instant> {
        match self {
            ScorerFeed::Partitioned(p) => Some(p.due()),
            ScorerFeed::Shared(_) => None,
        }
    }

    /// On an orderly stop: partitions handed back at once.
    pub async fn leave(self) {
        if let ScorerFeed::Partitioned(p) = self {
            p.leave().await;
        }
    }
}

impl Pull for ScorerFeed {
    fn next(&mut self) -> impl std::future::Future<Output = jetstream::Message> + Send {
        async move {
            match self {
                ScorerFeed::Shared(f) => f.next().await,
                ScorerFeed::Partitioned(p) => p.next().await,
            }
        }
    }
}
