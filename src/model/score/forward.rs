//! The native forward of one window, in the order of nanoGPT's
//! `GPT.forward` (embeddings, blocks of attention then MLP, final LayerNorm,
//! head), over [`NativeWeights`] and the kernels. What makes it cheap is
//! what it leaves out: the last block and the head run only at the positions
//! whose loss is asked for, and the activations live in per-thread buffers
//! that grow once and are reused.

use super::elementwise::{cross_entropy, gelu, layer_norm, softmax_columns};
use super::kernels::{att_v, linear, round_up, rows_of, scores, Simd, Strided, MR, NR};
use super::plan::{Job, Window};
use super::weights::NativeWeights;
use std::cell::RefCell;

/// Activations of one forward, reused across calls on a thread. Row strides
/// are the padded widths of the layers that write them; the attention
/// buffers are query-major (one column per query) so its softmax runs down
/// columns, 8 queries per vector, with no per-row reductions.
#[derive(Default)]
struct Scratch {
    x: Vec<f32>,   // (T, C) residual stream
    h: Vec<f32>,   // (T, C) LayerNorm output
    qkv: Vec<f32>, // (T, 3C) queries (pre-scaled), keys, values
    qt: Vec<f32>,  // (hs, Tq) one head's queries, transposed
    st: Vec<f32>,  // (T, Tq) one head's scores, then attention weights: [key][query]
    inv: Vec<f32>, // (Tq) 1 / softmax denominators
    yt: Vec<f32>,  // (C, Tq) attention output, transposed
    f: Vec<f32>,   // (T, 4C) MLP hidden, then (T, V) logits
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// The forward of one window, `seq[..n]` as input: the loss of `seq[p + 1]`
/// and the entropy of the prediction for p in `first..n`, in this thread's
/// buffers.
pub(super) fn forward(w: &NativeWeights, simd: Simd, job: &Job) -> Window {
    let n = job.seq.len() - 1;
    SCRATCH.with(|s| {
        window(
            w,
            simd,
            &job.seq,
            0,
            n,
            job.first,
            None,
            &mut s.borrow_mut(),
        )
    })
}

/// The forward of a key's sequence over its cached keys and values: `kv`
/// holds, per layer, rows of keys then values (2C each) for the positions
/// `..past`; positions `past..seq.len()` are computed (every token, the
/// last one too, since the key's next event attends to it) and their rows
/// appended to `kv` (rows past `past` dropped first). Scores positions
/// `first..seq.len() - 1` as [`forward`] does.
pub(super) fn forward_cached(
    w: &NativeWeights,
    simd: Simd,
    seq: &[u32],
    past: usize,
    first: usize,
    kv: &mut [Vec<f32>],
) -> Window {
    let n = seq.len();
    SCRATCH.with(|s| window(w, simd, seq, past, n, first, Some(kv), &mut s.borrow_mut()))
}

/// [`forward`] in given buffers, for positions `g..n` of `seq` (those before
/// `g` only as the keys and values in `kv`). Every block computes rows from
/// `g`; the last one computes queries, MLP and head only for the rows from
/// `first` on (earlier rows there only supply keys and values). Rows are
/// cut in tiles of [`MR`] from `g`, so a cached prefix of any length needs
/// no recomputation.
#[allow(clippy::too_many_arguments)]
fn window(
    w: &NativeWeights,
    simd: Simd,
    seq: &[u32],
    g: usize,
    n: usize,
    first: usize,
    mut kv: Option<&mut [Vec<f32>]>,
    s: &mut Scratch,
) -> Window {
    let cfg = &w.cfg;
    let (c, nh) = (cfg.n_embd, cfg.n_head);
    let hs = c / nh;
    let ns = seq.len() - 1; // positions first..ns are scored
    let end = g + round_up(n - g, MR); // rows g..end are computed
    let tq = round_up(end, 16); // query columns; every buffer has tq rows
    let (lc, l3, l4, lv) = (
        round_up(c, NR),
        round_up(3 * c, NR),
        round_up(4 * c, NR),
        w.head.np,
    );
    let grow = |b: &mut Vec<f32>, len: usize| {
        if b.len() < len {
            b.resize(len, 0.0);
        }
    };
    grow(&mut s.x, tq * lc);
    grow(&mut s.h, tq * lc);
    grow(&mut s.qkv, tq * l3);
    grow(&mut s.qt, hs * tq);
    grow(&mut s.st, tq * tq);
    grow(&mut s.inv, tq);
    grow(&mut s.yt, c * tq);
    grow(&mut s.f, tq * l4.max(lv));

    s.x[n * lc..end * lc].fill(0.0);
    for (p, &tok) in seq[..n].iter().enumerate().skip(g) {
        let (te, pe) = (&w.wte[tok as usize * c..][..c], &w.wpe[p * c..][..c]);
        for (x, (a, b)) in s.x[p * lc..][..c].iter_mut().zip(te.iter().zip(pe)) {
            *x = a + b; // (T, C)
        }
    }
    let last = g + (first - g) / MR * MR;
    for (l, blk) in w.blocks.iter().enumerate() {
        let r0 = if l + 1 == w.blocks.len() { last } else { g };
        let (rows, c0) = (r0..end, r0 - r0 % 16); // rows to compute; first query column
        layer_norm(simd, &s.x, &mut s.h, lc, c, g..end, &blk.ln_1);
        linear::<false>(simd, rows_of(&s.h, lc), g..end, &blk.c_attn, &mut s.qkv, l3); // (T, 3C)
        if let Some(kv) = kv.as_deref_mut() {
            // Keys and values before g from the cache, the new ones into it.
            let cache = &mut kv[l];
            for p in 0..g {
                s.qkv[p * l3 + c..][..2 * c].copy_from_slice(&cache[p * 2 * c..][..2 * c]);
            }
            cache.truncate(g * 2 * c);
            for p in g..n {
                cache.extend_from_slice(&s.qkv[p * l3 + c..][..2 * c]);
            }
        }
        for hd in 0..nh {
            let (q0, k0, v0) = (hd * hs, c + hd * hs, 2 * c + hd * hs);
            for p in c0..end {
                for d in 0..hs {
                    s.qt[d * tq + p] = s.qkv[p * l3 + q0 + d]; // (hs, T)
                }
            }
            let keys = rows_of(&s.qkv[k0..], l3);
            scores(simd, keys, n, hs, &s.qt, tq, c0, &mut s.st); // (T keys, T queries)
            softmax_columns(simd, &mut s.st, tq, c0, n, &mut s.inv);
            let values = Strided {
                d: &s.qkv[v0..],
                si: 1,
                sk: l3,
            }; // v^T
            att_v(simd, values, hs, &s.st, tq, c0, n, &mut s.yt[q0 * tq..]); // (hs, T)
            for yt in s.yt[q0 * tq..(q0 + hs) * tq].chunks_exact_mut(tq) {
                for (y, inv) in yt[c0..].iter_mut().zip(&s.inv[c0..tq]) {
                    *y *= inv;
                }
            }
        }
        let yt = Strided {
            d: &s.yt,
            si: 1,
            sk: tq,
        };
        linear::<true>(simd, yt, rows.clone(), &blk.c_proj, &mut s.x, lc); // x += y W
        layer_norm(simd, &s.x, &mut s.h, lc, c, rows.clone(), &blk.ln_2);
        linear::<false>(
            simd,
            rows_of(&s.h, lc),
            rows.clone(),
            &blk.c_fc,
            &mut s.f,
            l4,
        ); // (T, 4C)
        gelu(simd, &mut s.f[r0 * l4..end * l4]);
        linear::<true>(simd, rows_of(&s.f, l4), rows, &blk.mlp_proj, &mut s.x, lc);
        // x += gelu(.) W
    }
    layer_norm(simd, &s.x, &mut s.h, lc, c, last..end, &w.ln_f);
    linear::<false>(simd, rows_of(&s.h, lc), last..end, &w.head, &mut s.f, lv); // (T, V)
                                                                                // |logit| <= |LN_f(x)| * the largest token embedding's norm.
    for p in first..ns {
        s.inv[p] = s.h[p * lc..][..c].iter().map(|v| v * v).sum::<f32>().sqrt() * w.wte_norm;
    }
    let mut out = Window {
        losses: vec![0.0; ns - first],
        entropies: vec![0.0; ns - first],
    };
    let (l, h) = (&mut out.losses, &mut out.entropies);
    cross_entropy(simd, &s.f, lv, &seq[first + 1..], first, &s.inv, l, h);
    out
}
