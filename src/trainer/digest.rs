//! The digest the trainer publishes: the model in service, and the
//! incidents of the last 24 h in a few words: their root causes, what
//! happened and how far it spread. Raw alerts never reach it: a lone noisy
//! alert is not an incident, so it cannot crowd out a real one.

use crate::bus::Bus;
use crate::contract::alert::strip_specials;
use crate::contract::digest::{Digest, DigestState, Problem};
use crate::contract::incident::{Incident, IncidentState};
use crate::contract::{STREAM_INCIDENTS, SUBJECT_INCIDENTS_ALL};
use crate::freshness::HOUR_MS;
use anyhow::Result;
use std::collections::HashMap;

/// Most incidents the digest keeps in mind while reading a day of them.
const MAX_INCIDENTS: usize = 10_000;

/// The digest: the baseline's state, the model in service (version,
/// validation loss), the count of incidents of the last 24 h and the most
/// important of them: open ones first, then by score.
pub(super) async fn build_digest(
    bus: &Bus,
    state: DigestState,
    model: Option<(&str, f32)>,
    now_ms: i64,
) -> Result<Digest> {
    let since = now_ms - 24 * HOUR_MS;
    // Each incident is published as it opens, grows and resolves; its last
    // message is its state. Streamed, bounded in incidents.
    let mut latest: HashMap<String, Incident> = HashMap::new();
    bus.scan_since(STREAM_INCIDENTS, SUBJECT_INCIDENTS_ALL, since, |m, _| {
        let Ok(i) = Incident::decode(&m.payload) else {
            return;
        };
        if latest.len() >= MAX_INCIDENTS && !latest.contains_key(&i.id) {
            // Forget the resolved, lowest-scoring half.
            let mut scores: Vec<f32> = latest.values().map(|i| i.score).collect();
            let mid = scores.len() / 2;
            let cut = *scores.select_nth_unstable_by(mid, |x, y| x.total_cmp(y)).1;
            latest.retain(|_, i| i.state == IncidentState::Open || i.score > cut);
        }
        latest.insert(i.id.clone(), i);
    })
    .await?;
    let mut incidents: Vec<Incident> = latest.into_values().collect();
    let count = incidents.len() as u64;
    incidents.sort_by(|a, b| {
        let open = |i: &Incident| i.state == IncidentState::Open;
        open(b)
            .cmp(&open(a))
            .then(b.score.total_cmp(&a.score))
            .then(a.id.cmp(&b.id))
    });
    let recent = incidents.iter().take(3).filter_map(problem_of).collect();
    Ok(Digest {
        state,
        loss: model.map(|(_, loss)| loss).filter(|l| l.is_finite()),
        anomalies_24h: count,
        recent,
        model: model.map(|(version, _)| version.to_string()),
        ts: now_ms,
    })
}

/// An incident in words: its root cause, what it said, and its blast radius
/// when it spread.
fn problem_of(i: &Incident) -> Option<Problem> {
    let root = i.root()?;
    let what = strip_specials(&root.what);
    let spread = i.sources.len().max(1) - 1;
    let what = match spread {
        0 => what,
        1 => format!("{what}, +1 service"),
        n => format!("{what}, +{n} services"),
    };
    Some(Problem {
        source: root.source.clone(),
        what,
        score: i.score,
    })
}
