//! The digest the trainer publishes: the model in service, and the alerts
//! of the last 24 h in a few words.

use crate::bus::Bus;
use crate::contract::alert::Alert;
use crate::contract::digest::{Digest, DigestState, Problem};
use crate::contract::{STREAM_ALERTS, SUBJECT_RAISE_ALL};
use crate::freshness::HOUR_MS;
use anyhow::Result;

/// The digest: the model in service (version, validation loss), counts and the highest-scoring
/// distinct problems from the alerts of the last 24 h.
pub(super) async fn build_digest(
    bus: &Bus,
    model: Option<(&str, f32)>,
    now_ms: i64,
) -> Result<Digest> {
    let since = now_ms - 24 * HOUR_MS;
    // Streamed, not collected: a day of alerts can be millions (an alert
    // storm), and the digest only needs a count and the best few problems.
    let mut count = 0u64;
    let mut best: std::collections::HashMap<(String, String), f32> = Default::default();
    bus.scan_since(STREAM_ALERTS, SUBJECT_RAISE_ALL, since, |m, _| {
        let Ok(a) = Alert::decode(&m.payload) else {
            return;
        };
        count += 1;
        let what = problem_words(&a);
        let e = best.entry((a.source.clone(), what)).or_insert(f32::MIN);
        *e = e.max(a.score);
        if best.len() > 20_000 {
            // Bounded: keep the highest-scoring half.
            let mut scores: Vec<f32> = best.values().copied().collect();
            let mid = scores.len() / 2;
            let (_, cut, _) = scores.select_nth_unstable_by(mid, |x, y| y.total_cmp(x));
            let cut = *cut;
            best.retain(|_, v| *v >= cut);
        }
    })
    .await?;
    let mut recent: Vec<Problem> = best
        .into_iter()
        .map(|((source, what), score)| Problem {
            source,
            what,
            score,
        })
        .collect();
    recent.sort_by(|a, b| b.score.total_cmp(&a.score));
    recent.truncate(3);
    Ok(Digest {
        state: if model.is_some() {
            DigestState::Trained
        } else {
            DigestState::Warming
        },
        loss: model.map(|(_, loss)| loss).filter(|l| l.is_finite()),
        anomalies_24h: count,
        recent,
        model: model.map(|(version, _)| version.to_string()),
        ts: now_ms,
    })
}

/// An alert in words: its diagnosis, or what surprised the model.
fn problem_words(a: &Alert) -> String {
    if let Some(d) = &a.diagnosis {
        return d.clone();
    }
    let span: String = strip_specials(&a.span.text);
    let span = span.trim();
    if span.is_empty() {
        format!("unusual {}", a.kind)
    } else {
        format!("unusual {} '{}'", a.kind, span)
    }
}

fn strip_specials(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("<|") {
        out.push_str(&rest[..i]);
        match rest[i..].find("|>") {
            Some(j) => {
                out.push(' ');
                rest = &rest[i + j + 2..];
            }
            None => {
                rest = &rest[i..];
                break;
            }
        }
    }
    out.push_str(rest);
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}
