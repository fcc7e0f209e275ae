//! Excess surprise: a token's loss minus the entropy the model expected at
//! that position.
//!
//! A token's loss mixes two things: how unpredictable that part of the
//! event is by nature (a pid, a duration, a request id: the model knows it
//! cannot guess them, its distribution is flat) and how wrong the model was
//! where it was sure (`killed` where it expected `heartbeat`). Normal events
//! are full of the first kind, so their mean loss drowns the second. The
//! excess `loss - H`, with H the entropy of the model's predictive
//! distribution at that position, is near 0 on average for what the model
//! describes well, whatever its entropy, and large only where the model was
//! confident and wrong.
//!
//! The forward pass here is libtorch's ([`Gpt::forward`]), since it needs
//! the whole distribution at each position, not only the target's
//! probability the native scorer returns.

use crate::model::gpt::Gpt;
use crate::model::ScoreItem;
use tch::{Kind, Tensor};

/// Per event: (token losses, entropies), entry i for event token i + 1,
/// like [`crate::model::EventLoss::token_losses`]. An event longer than the
/// model's block is scored on its first `block_size + 1` tokens; the context
/// is cut from the left to fit.
pub fn token_surprise(gpt: &Gpt, items: &[ScoreItem], batch: usize) -> Vec<(Vec<f32>, Vec<f32>)> {
    let bs = gpt.config().block_size;
    let pad = {
        let p = crate::tokenizer::tokenizer().special("<|PAD|>") as usize;
        if p < gpt.config().vocab_size {
            p as i64
        } else {
            0
        }
    };
    let mut out = vec![(Vec::new(), Vec::new()); items.len()];
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(items[i].context.len() + items[i].event.len()));
    tch::no_grad(|| {
        for chunk in order.chunks(batch.max(1)) {
            let seqs: Vec<(Vec<u32>, usize)> = chunk
                .iter()
                .map(|&i| {
                    let it = &items[i];
                    let ev = &it.event[..it.event.len().min(bs + 1)];
                    let room = bs + 1 - ev.len();
                    let ctx = &it.context[it.context.len().saturating_sub(room)..];
                    let mut s = ctx.to_vec();
                    s.extend_from_slice(ev);
                    (s, ctx.len())
                })
                .collect();
            let t = seqs
                .iter()
                .map(|(s, _)| s.len().saturating_sub(1))
                .max()
                .unwrap_or(0)
                .max(1);
            let b = chunk.len();
            let mut x = vec![pad; b * t];
            for (r, (s, _)) in seqs.iter().enumerate() {
                for p in 0..s.len().saturating_sub(1) {
                    x[r * t + p] = s[p] as i64;
                }
            }
            let shape = [b as i64, t as i64];
            // Only the positions that predict an event token go through the
            // head: the context's and the padding's logits are never needed.
            let mut flat: Vec<i64> = Vec::new();
            let mut target: Vec<i64> = Vec::new();
            for (r, (s, c)) in seqs.iter().enumerate() {
                for k in 1..s.len() - c {
                    let p = c + k - 1;
                    flat.push((r * t + p) as i64);
                    target.push(s[p + 1] as i64);
                }
            }
            if flat.is_empty() {
                continue;
            }
            let xt = Tensor::from_slice(&x).view(shape);
            let c_embd = gpt.config().n_embd as i64;
            let hidden = gpt.forward_hidden(&xt).view([-1, c_embd]);
            let picked = hidden.index_select(0, &Tensor::from_slice(&flat));
            let logp = gpt.head(&picked).log_softmax(-1, Kind::Float); // (N, V)
            let ent = -(logp.exp() * &logp).sum_dim_intlist(-1, false, Kind::Float);
            let lp = logp
                .gather(-1, &Tensor::from_slice(&target).unsqueeze(-1), false)
                .squeeze_dim(-1);
            let ent = Vec::<f32>::try_from(ent).unwrap_or_default();
            let lp = Vec::<f32>::try_from(lp).unwrap_or_default();
            let mut n = 0;
            for (&i, (s, c)) in chunk.iter().zip(&seqs) {
                let e = s.len() - c;
                let (mut l, mut h) = (Vec::with_capacity(e), Vec::with_capacity(e));
                for _ in 1..e {
                    l.push(-lp.get(n).copied().unwrap_or(f32::NAN));
                    h.push(ent.get(n).copied().unwrap_or(f32::NAN));
                    n += 1;
                }
                out[i] = (l, h);
            }
        }
    });
    out
}
