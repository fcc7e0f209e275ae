//! The element-wise steps of the native forward: LayerNorm, the causal
//! softmax, GELU, the cross-entropy and the predictive entropy, with the exp
//! and erf they need.
//! Plain loops over whole 8-lane chunks, which the compiler vectorises
//! reliably when each sits in a small function of its own compiled for
//! AVX2+FMA (inside one large function it did not); `dispatch!` picks that
//! build or the portable one. Nothing here is unsafe.

use super::kernels::{dispatch, Arith};
use std::ops::Range;

dispatch! {
    /// LayerNorm (eps 1e-5, as torch) of rows of `x` into `out`, stride `ld`.
    pub(super) fn layer_norm(
        x: &[f32],
        out: &mut [f32],
        ld: usize,
        c: usize,
        rows: Range<usize>,
        g_b: &(Vec<f32>, Vec<f32>),
    ) {
        let (g, b) = (&g_b.0[..c], &g_b.1[..c]);
        for r in rows {
            let xr = &x[r * ld..][..c];
            let mean = lane_sum(xr) / c as f32;
            let mut acc = [0.0f32; 8];
            let ch = xr.chunks_exact(8);
            for (l, &v) in ch.remainder().iter().enumerate() {
                acc[l] += (v - mean) * (v - mean);
            }
            for ch in ch {
                for l in 0..8 {
                    acc[l] += (ch[l] - mean) * (ch[l] - mean);
                }
            }
            let rstd = 1.0 / (acc.iter().sum::<f32>() / c as f32 + 1e-5).sqrt();
            for (((o, &v), &g), &b) in out[r * ld..][..c].iter_mut().zip(xr).zip(g).zip(b) {
                *o = (v - mean) * rstd * g + b;
            }
        }
    }
}

dispatch! {
    /// Causal softmax down the columns of `st` ([key][query]) for queries
    /// from c0 (a multiple of 16), 8 queries per vector: column i becomes
    /// exp(st[j, i] - max) for keys j <= i and 0 for j > i, as far as the next
    /// product reads (its 16-query tile); inv[i] is 1 / the column's sum.
    pub(super) fn softmax_columns(st: &mut [f32], tq: usize, c0: usize, n: usize, inv: &mut [f32]) {
        for b0 in (c0..n).step_by(8) {
            // Keys before b0 are visible to all 8 queries; from b0 on (the
            // diagonal block) key j is visible to query b0 + l when j <= b0 + l.
            let jend = (b0 + 8).min(n);
            let mut max = [f32::NEG_INFINITY; 8];
            for j in 0..b0 {
                let row: &[f32; 8] = st[j * tq + b0..][..8].try_into().unwrap();
                for l in 0..8 {
                    max[l] = if row[l] > max[l] { row[l] } else { max[l] };
                }
            }
            for j in b0..jend {
                let row: &[f32; 8] = st[j * tq + b0..][..8].try_into().unwrap();
                for l in 0..8 {
                    let v = if j <= b0 + l {
                        row[l]
                    } else {
                        f32::NEG_INFINITY
                    };
                    max[l] = if v > max[l] { v } else { max[l] };
                }
            }
            let mut sum = [0.0f32; 8];
            for j in 0..b0 {
                let row: &mut [f32; 8] = (&mut st[j * tq + b0..][..8]).try_into().unwrap();
                for l in 0..8 {
                    row[l] = exp::<A>(row[l] - max[l]);
                    sum[l] += row[l];
                }
            }
            for j in b0..jend {
                let row: &mut [f32; 8] = (&mut st[j * tq + b0..][..8]).try_into().unwrap();
                for l in 0..8 {
                    let e = exp::<A>(row[l] - max[l]);
                    row[l] = if j <= b0 + l { e } else { 0.0 };
                    sum[l] += row[l];
                }
            }
            for l in 0..8 {
                inv[b0 + l] = 1.0 / sum[l];
            }
            if b0.is_multiple_of(16) {
                for j in jend..(b0 + 16).min(n) {
                    st[j * tq + b0..][..8].fill(0.0);
                }
            }
        }
    }
}

dispatch! {
    pub(super) fn gelu(s: &mut [f32]) {
        for v in s.iter_mut() {
            *v = gelu1::<A>(*v);
        }
    }
}

dispatch! {
    /// For row `first + p` of the logits, in one pass over it:
    /// `loss[p]` = logsumexp(row) - row[targets[p]] (the cross-entropy) and
    /// `entropy[p]` = logsumexp(row) - sum_i softmax(row)_i row_i (the
    /// entropy of the predictive distribution), both from the same
    /// exponentials: with e_i = exp(row_i - max) and S their sum,
    /// H = ln S - sum_i e_i (row_i - max) / S.
    /// `bound[p]` bounds the row's logits in absolute value: below 80, exp
    /// cannot overflow or vanish, so the pass that finds the row's maximum is
    /// skipped (shifting by 0 instead changes nothing but rounding). Shifted
    /// logits are clamped at -87 where `exp` clamps, so the vocabulary's
    /// padding (-1e30) adds 1e-38 * -87 to the entropy's sum, not 1e-8.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn cross_entropy(
        logits: &[f32],
        lv: usize,
        targets: &[u32],
        first: usize,
        bound: &[f32],
        loss: &mut [f32],
        entropy: &mut [f32],
    ) {
        let rows = loss.iter_mut().zip(entropy.iter_mut()).zip(targets);
        for (p, ((o, h), &t)) in rows.enumerate() {
            let row = &logits[(first + p) * lv..][..lv];
            let max = if bound[first + p] < 80.0 {
                0.0
            } else {
                lane_max(row)
            };
            let (mut sum, mut dot) = ([0.0f32; 8], [0.0f32; 8]);
            for ch in row.chunks_exact(8) {
                for l in 0..8 {
                    let d = ch[l] - max;
                    let d = if d > -87.0 { d } else { -87.0 };
                    let e = exp::<A>(d);
                    sum[l] += e;
                    dot[l] = A::fma(e, d, dot[l]);
                }
            }
            let s = sum.iter().sum::<f32>();
            *o = max + s.ln() - row[t as usize];
            // Rounding can take a near-certain prediction's entropy below 0.
            *h = (s.ln() - dot.iter().sum::<f32>() / s).max(0.0);
        }
    }
}

/// A sum in 8 independent lanes, so the compiler may vectorise it (a plain
/// float sum must be added in order).
#[inline(always)]
fn lane_sum(s: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let ch = s.chunks_exact(8);
    for (l, v) in ch.remainder().iter().enumerate() {
        acc[l] += v;
    }
    for ch in ch {
        for l in 0..8 {
            acc[l] += ch[l];
        }
    }
    acc.iter().sum()
}

#[inline(always)]
fn lane_max(s: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let ch = s.chunks_exact(8);
    for (l, &v) in ch.remainder().iter().enumerate() {
        acc[l] = if v > acc[l] { v } else { acc[l] };
    }
    for ch in ch {
        for l in 0..8 {
            acc[l] = if ch[l] > acc[l] { ch[l] } else { acc[l] };
        }
    }
    acc.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x))
}

/// exp(x) for x <= 88 within 2e-7 relative (a few ulp), branch-free so
/// loops over it vectorise: 2^(x log2 e) = 2^n 2^f with n an integer and
/// |f| <= 1/2, 2^f by a degree-5 polynomial fitted at Chebyshev nodes,
/// 2^n built in the exponent bits.
#[inline(always)]
fn exp<A: Arith>(x: f32) -> f32 {
    const SHIFT: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
    let t = if x > -87.0 { x } else { -87.0 } * std::f32::consts::LOG2_E;
    let r = t + SHIFT;
    let f = t - (r - SHIFT);
    let mut p = 1.339_086_3e-3;
    p = A::fma(p, f, 9.676_032e-3);
    p = A::fma(p, f, 5.550_357e-2);
    p = A::fma(p, f, 2.402_210_7e-1);
    p = A::fma(p, f, 6.931_472e-1);
    p = A::fma(p, f, 1.000_000_1);
    // r's low mantissa bits hold n; move n + 127 into the exponent field.
    let bits = (r.to_bits().wrapping_sub(SHIFT.to_bits()).wrapping_add(127)) << 23;
    p * f32::from_bits(bits)
}

/// GELU with the exact erf, as torch's default `gelu(approximate="none")`.
#[inline(always)]
fn gelu1<A: Arith>(x: f32) -> f32 {
    0.5 * x * (1.0 + erf::<A>(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// erf(x) by Eigen's rational approximation (odd degree-13 over even
/// degree-8, x clamped to [-4, 4]); within 1e-7 of the exact value.
#[inline(always)]
fn erf<A: Arith>(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10;
    p = A::fma(x2, p, 2.770_681_4e-8);
    p = A::fma(x2, p, -2.101_024e-6);
    p = A::fma(x2, p, -5.692_506_4e-5);
    p = A::fma(x2, p, -7.349_906_3e-4);
    p = A::fma(x2, p, -2.9546e-3);
    p = A::fma(x2, p, -1.609_603_3e-2);
    let mut q = -1.456_607_2e-5;
    q = A::fma(x2, q, -2.133_740_6e-4);
    q = A::fma(x2, q, -1.682_827e-3);
    q = A::fma(x2, q, -7.373_329e-3);
    q = A::fma(x2, q, -1.426_473_9e-2);
    x * p / q
}
