//! How events become forwards, shared by both engines: each item cut into
//! windows of at most `block_size` tokens, the windows run `batch` at a time,
//! longest first, and each item's token losses and entropies gathered back
//! in order.

use crate::model::{EventLoss, GptConfig, ScoreItem};

/// Plans the forwards, runs them `batch` at a time, longest first (so a
/// batch holds sequences of similar length), and gathers each item's losses.
pub(super) fn run(
    items: &[ScoreItem],
    batch: usize,
    cfg: &GptConfig,
    mut forward: impl FnMut(&[Job], &[usize], &mut [Window]),
) -> Vec<EventLoss> {
    let jobs = plan(items, cfg);
    let mut losses: Vec<Window> = vec![Window::default(); jobs.len()];
    let mut order: Vec<usize> = (0..jobs.len()).collect();
    order.sort_by_key(|&j| std::cmp::Reverse(jobs[j].seq.len()));
    for chunk in order.chunks(batch.max(1)) {
        forward(&jobs, chunk, &mut losses);
    }
    let mut out: Vec<EventLoss> = vec![EventLoss::default(); items.len()];
    for (job, w) in jobs.iter().zip(losses) {
        let e = &mut out[job.item];
        e.token_losses.extend(w.losses);
        e.token_entropies.extend(w.entropies);
    }
    for e in &mut out {
        if !e.token_losses.is_empty() {
            e.loss = e.token_losses.iter().sum::<f32>() / e.token_losses.len() as f32;
        }
    }
    out
}

/// What one forward returns for its scored positions, in order: the loss of
/// each target and the entropy (nats) of the distribution that predicted it.
#[derive(Debug, Clone, Default)]
pub(super) struct Window {
    pub losses: Vec<f32>,
    pub entropies: Vec<f32>,
}

/// One forward: the window `seq[..n]` is the input, `seq[p + 1]` the target
/// of position p, and positions `first..n` are the ones scored.
pub(super) struct Job {
    pub item: usize,
    pub seq: Vec<u32>,
    pub first: usize,
}

/// Cuts each item into forwards of at most `block_size` tokens. An event
/// that fits (with its context) is one forward. A longer one is scored in
/// windows: each scores the next `block_size / 2` positions with the
/// `block_size` tokens that end there as input (the last one with fewer, so
/// it starts on the same half-block grid as the others), so every token is
/// predicted from at least half a block of preceding text.
fn plan(items: &[ScoreItem], cfg: &GptConfig) -> Vec<Job> {
    let pad = pad_id(cfg);
    let bs = cfg.block_size;
    let stride = (bs / 2).max(1);
    let mut jobs = Vec::new();
    for (i, it) in items.iter().enumerate() {
        if it.event.len() < 2 {
            continue;
        }
        let s: Vec<u32> = it
            .context
            .iter()
            .chain(&it.event)
            .map(|&t| {
                if (t as usize) < cfg.vocab_size {
                    t
                } else {
                    pad
                }
            })
            .collect();
        let (c, n) = (it.context.len(), s.len() - 1); // positions c..n are scored
        let mut q = c;
        while q < n {
            let (e, a) = if q == c {
                let e = n.min((q + stride).max(bs));
                (e, e.saturating_sub(bs))
            } else {
                // On the half-block grid even where the event ends early:
                // that is where training windows start (`train::event_windows`).
                (n.min(q + stride), (q + stride).saturating_sub(bs))
            };
            jobs.push(Job {
                item: i,
                seq: s[a..=e].to_vec(),
                first: q - a,
            });
            q = e;
        }
    }
    jobs
}

pub(super) fn pad_id(cfg: &GptConfig) -> u32 {
    let pad = crate::tokenizer::tokenizer().special("<|PAD|>");
    if (pad as usize) < cfg.vocab_size {
        pad
    } else {
        0
    }
}
