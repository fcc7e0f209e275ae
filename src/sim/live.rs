//! Live mode: the simulation's events published on NATS, paced.

use crate::event::Event;
use anyhow::{Context, Result};
use std::io::Write;
use std::time::{Duration, Instant};

/// Above this speed-up pacing is pointless: publish as fast as the bus takes it.
const UNPACED: f64 = 1e6;

/// Publishes `events` (MessagePack, on `event.subject(root)`) at `speed`
/// times the simulated clock, optionally teeing each event's JSON line into
/// `tee`. Returns how many were published.
pub async fn publish(
    events: impl Iterator<Item = Event>,
    url: &str,
    root: &str,
    speed: f64,
    mut tee: Option<&mut dyn Write>,
) -> Result<u64> {
    anyhow::ensure!(
        speed > 0.0 && !speed.is_nan(),
        "--speed must be a positive number, got {speed}"
    );
    let client = crate::bus::connect_client(url)
        .await
        .with_context(|| format!("connecting to NATS at {}", crate::bus::redact_url(url)))?;
    let wall0 = Instant::now();
    let mut sim0: Option<i64> = None;
    let mut n = 0u64;
    for ev in events {
        if let Some(w) = tee.as_deref_mut() {
            serde_json::to_writer(&mut *w, &ev.to_wire())?;
            w.write_all(b"\n")?;
        }
        let first = *sim0.get_or_insert(ev.ts);
        if speed < UNPACED {
            let due = Duration::from_secs_f64(((ev.ts - first) as f64 / 1000.0 / speed).max(0.0));
            let elapsed = wall0.elapsed();
            if due > elapsed + Duration::from_millis(2) {
                tokio::time::sleep(due - elapsed).await;
            }
        }
        client
            .publish(ev.subject(root), ev.to_msgpack().into())
            .await
            .context("publishing to NATS")?;
        n += 1;
    }
    client.flush().await.context("flushing to NATS")?;
    Ok(n)
}
