//! Normal telemetry for the living-loop tests, and waiting on the roles'
//! counters.

use proprio::harvester::HarvestStats;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Normal telemetry, built by hand as raw JSON (the wire contract, not our types):
/// `n` rounds of a pulse, a log line and a flux heartbeat from each of `sources`.
pub async fn publish_normal(client: &async_nats::Client, sources: usize, n: usize, t0: i64) {
    for i in 0..n {
        for s in 0..sources {
            let ts = t0 + (i as i64) * 1000 + s as i64;
            let cpu = 20 + ((i * 7 + s * 3) % 5);
            let pulse =
                format!(r#"{{"ts":{ts},"metrics":{{"cpu":{cpu},"mem_mb":512,"req_rate":40}}}}"#);
            let log = format!(
                r#"{{"ts":{},"level":"info","message":"GET /health 200 in {}ms req-{:x}"}}"#,
                ts + 1,
                3 + (i % 4),
                i * 7919 + s
            );
            let flux = format!(r#"{{"ts":{},"state":"healthy"}}"#, ts + 2);
            for (subject, payload) in [
                (format!("os.pulse.svc{s}"), pulse),
                (format!("os.log.svc{s}"), log),
                (format!("os.flux.svc{s}.heartbeat"), flux),
            ] {
                client.publish(subject, payload.into()).await.unwrap();
            }
        }
    }
    client.flush().await.unwrap();
}

/// Telemetry the harvester is done with (harvested or dropped on purpose).
pub fn handled(h: &HarvestStats) -> u64 {
    h.harvested.load(Ordering::Relaxed)
        + h.collapsed.load(Ordering::Relaxed)
        + h.sampled_out.load(Ordering::Relaxed)
}

/// Polls `f` every 50 ms; fails the test after `secs`.
pub async fn wait_until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
