//! Per-event scoring: the loss of each event's own tokens, given the events
//! before it.
//!
//! Two engines compute the same numbers. [`Engine::Native`] (the default) is a
//! hand-written forward over a copy of the weights: at this model's size
//! (d 32, 2 layers) libtorch spends most of a batch-1 call dispatching ~60
//! small ops, and a batched call moves padding and full-vocabulary logits it
//! does not need. The native forward runs each event as one tight loop nest,
//! computes the head and the softmax only at the positions that predict the
//! event's own tokens, never pads, and splits a batch across threads by
//! events rather than inside each op. [`Engine::Libtorch`] is the tch forward
//! ([`Gpt::forward_hidden`] + [`Gpt::head`]) and serves as the reference the
//! native one is tested against.

use super::gpt::Gpt;
use super::{EventLoss, GptConfig, ScoreItem};
use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use tch::{Kind, Tensor};

/// Which forward computes the losses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Engine {
    #[default]
    Native,
    Libtorch,
}

static THREADS: AtomicUsize = AtomicUsize::new(0);

/// Threads for scoring and training: libtorch's intra-op pool and the native
/// scorer's split of a batch. Call it once at start-up (the CLI does);
/// until then the native scorer uses every available core, like libtorch.
pub fn set_threads(n: usize) {
    let n = n.max(1);
    THREADS.store(n, Ordering::Relaxed);
    tch::set_num_threads(n as i32);
}

/// Threads the native scorer splits a batch across.
pub fn threads() -> usize {
    match THREADS.load(Ordering::Relaxed) {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

/// Tells glibc's allocator to keep freed memory instead of returning it to
/// the kernel on every call: each batch otherwise re-faults its pages in,
/// which costs libtorch 1.4-1.8x here. Same effect as starting the process
/// with `MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=<large>`. Process-wide,
/// hence a call the binary makes, not the library. Returns false where it
/// does not apply (not glibc) or was refused.
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::raw::c_int;
        extern "C" {
            fn mallopt(param: c_int, value: c_int) -> c_int;
        }
        const M_TRIM_THRESHOLD: c_int = -1;
        const M_MMAP_MAX: c_int = -4;
        // SAFETY: mallopt only changes allocator tunables; these two are
        // valid for any value and do not invalidate existing allocations.
        unsafe { mallopt(M_MMAP_MAX, 0) == 1 && mallopt(M_TRIM_THRESHOLD, c_int::MAX) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Scores each item: the mean cross-entropy of `event[1..]`, each token
/// conditioned on the context and the event's earlier tokens. Items are
/// processed `batch` at a time, longest first. Empty and one-token events
/// get loss 0 and no token losses; token ids outside the vocabulary are read
/// as PAD (the tokenizer never makes them).
pub fn score(gpt: &Gpt, items: &[ScoreItem], batch: usize) -> Vec<EventLoss> {
    score_with(gpt, items, batch, Engine::Native)
}

/// [`score`] with a chosen engine.
pub fn score_with(gpt: &Gpt, items: &[ScoreItem], batch: usize, engine: Engine) -> Vec<EventLoss> {
    let cfg = *gpt.config();
    let jobs = plan(items, &cfg);
    let mut losses: Vec<Vec<f32>> = vec![Vec::new(); jobs.len()];
    // Longest first, so a batch holds sequences of similar length.
    let mut order: Vec<usize> = (0..jobs.len()).collect();
    order.sort_by_key(|&j| std::cmp::Reverse(jobs[j].seq.len()));
    let batch = batch.max(1);
    match engine {
        Engine::Native => {
            let w = gpt.native();
            for chunk in order.chunks(batch) {
                run_native(&w, &jobs, chunk, &mut losses);
            }
        }
        Engine::Libtorch => tch::no_grad(|| {
            for chunk in order.chunks(batch) {
                run_libtorch(gpt, &jobs, chunk, &mut losses);
            }
        }),
    }
    let mut out: Vec<EventLoss> = vec![EventLoss::default(); items.len()];
    for (job, l) in jobs.iter().zip(losses) {
        out[job.item].token_losses.extend(l);
    }
    for e in &mut out {
        if !e.token_losses.is_empty() {
            e.loss = e.token_losses.iter().sum::<f32>() / e.token_losses.len() as f32;
        }
    }
    out
}

/// The contiguous span of `width` entries of `token_losses` (fewer if there
/// are fewer) with the highest mean: `(start, end, mean)`, end exclusive.
/// Indices are into `token_losses`, so the event's tokens are
/// `event[start + 1..end + 1]`. An empty slice gives `(0, 0, 0.0)`.
pub fn surprising_span(token_losses: &[f32], width: usize) -> (usize, usize, f32) {
    let n = token_losses.len();
    if n == 0 {
        return (0, 0, 0.0);
    }
    let w = width.clamp(1, n);
    let mut sum: f64 = token_losses[..w].iter().map(|&l| l as f64).sum();
    let (mut best, mut best_sum) = (0, sum);
    for s in 1..=n - w {
        sum += token_losses[s + w - 1] as f64 - token_losses[s - 1] as f64;
        if sum > best_sum {
            (best, best_sum) = (s, sum);
        }
    }
    (best, best + w, (best_sum / w as f64) as f32)
}

/// One forward: the window `seq[..n]` is the input, `seq[p + 1]` the target
/// of position p, and positions `first..n` are the ones scored.
struct Job {
    item: usize,
    seq: Vec<u32>,
    first: usize,
}

/// Cuts each item into forwards of at most `block_size` tokens. An event
/// that fits (with its context) is one forward. A longer one is scored in
/// windows: each scores the next `block_size / 2` positions with the
/// `block_size` tokens that end there as input, so every token is predicted
/// from at least half a block of preceding text.
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
            .map(|&t| if (t as usize) < cfg.vocab_size { t } else { pad })
            .collect();
        let (c, n) = (it.context.len(), s.len() - 1); // positions c..n are scored
        let mut q = c;
        while q < n {
            let e = if q == c { n.min((q + stride).max(bs)) } else { n.min(q + stride) };
            let a = e.saturating_sub(bs);
            jobs.push(Job { item: i, seq: s[a..=e].to_vec(), first: q - a });
            q = e;
        }
    }
    jobs
}

fn pad_id(cfg: &GptConfig) -> u32 {
    let pad = crate::tokenizer::tokenizer().special("<|PAD|>");
    if (pad as usize) < cfg.vocab_size {
        pad
    } else {
        0
    }
}

// ---------------------------------------------------------------- libtorch

fn run_libtorch(gpt: &Gpt, jobs: &[Job], chunk: &[usize], out: &mut [Vec<f32>]) {
    let pad = pad_id(gpt.config()) as i64;
    let t = chunk.iter().map(|&j| jobs[j].seq.len() - 1).max().unwrap_or(0);
    let b = chunk.len();
    let mut idx = vec![pad; b * t];
    let (mut rows, mut targets) = (Vec::new(), Vec::new());
    for (r, &j) in chunk.iter().enumerate() {
        let s = &jobs[j].seq;
        let n = s.len() - 1;
        for p in 0..n {
            idx[r * t + p] = s[p] as i64;
        }
        for p in jobs[j].first..n {
            rows.push((r * t + p) as i64);
            targets.push(s[p + 1] as i64);
        }
    }
    let idx = Tensor::from_slice(&idx).view([b as i64, t as i64]); // (B, T)
    let h = gpt.forward_hidden(&idx).view([(b * t) as i64, -1]); // (B*T, C)
    let h = h.index_select(0, &Tensor::from_slice(&rows)); // (N, C)
    let logits = gpt.head(&h); // (N, V)
    let ce = logits.cross_entropy_loss::<Tensor>(
        &Tensor::from_slice(&targets),
        None,
        tch::Reduction::None,
        -100,
        0.0,
    ); // (N)
    let ce = Vec::<f32>::try_from(ce.to_kind(Kind::Float)).unwrap_or_default();
    let mut at = 0;
    for &j in chunk {
        let k = jobs[j].seq.len() - 1 - jobs[j].first;
        out[j] = ce.get(at..at + k).map(<[f32]>::to_vec).unwrap_or_default();
        at += k;
    }
}

// ------------------------------------------------------------------ native

/// Columns are computed 16 at a time, rows 4 at a time with AVX2 (8
/// accumulator registers of 8 lanes, room left for the weights and the
/// broadcast input) and 8 at a time with AVX-512 (8 registers of 16 lanes).
const NR: usize = 16;

fn round_up(n: usize, m: usize) -> usize {
    n.div_ceil(m) * m
}

/// A Linear layer transposed for the kernel: `w[k * np + j]` is torch's
/// `weight[j][k]`, with the output width padded to a multiple of [`NR`] by
/// zero columns.
struct Mat {
    k: usize,
    np: usize,
    w: Vec<f32>,
    b: Vec<f32>,
}

impl Mat {
    /// From a torch Linear weight (n, k) and optional bias (n).
    fn from_torch(weight: &Tensor, bias: Option<&Tensor>) -> Mat {
        let (n, k) = weight.size2().expect("Linear weight is 2-D");
        let (n, k) = (n as usize, k as usize);
        let np = round_up(n, NR);
        let src = to_vec(weight);
        let mut w = vec![0.0; k * np];
        for j in 0..n {
            for kk in 0..k {
                w[kk * np + j] = src[j * k + kk];
            }
        }
        let mut b = vec![0.0; np];
        if let Some(bias) = bias {
            b[..n].copy_from_slice(&to_vec(bias));
        }
        Mat { k, np, w, b }
    }
}

fn to_vec(t: &Tensor) -> Vec<f32> {
    let t = t.detach().to_kind(Kind::Float).contiguous().view(-1);
    Vec::<f32>::try_from(&t).expect("a float tensor converts to Vec<f32>")
}

struct NativeBlock {
    ln_1: (Vec<f32>, Vec<f32>),
    c_attn: Mat,
    c_proj: Mat,
    ln_2: (Vec<f32>, Vec<f32>),
    c_fc: Mat,
    mlp_proj: Mat,
}

/// The weights, copied out of the VarStore into the layouts the kernel reads.
pub(super) struct NativeWeights {
    cfg: GptConfig,
    wte: Vec<f32>, // (V, C)
    wpe: Vec<f32>, // (block_size, C)
    blocks: Vec<NativeBlock>,
    ln_f: (Vec<f32>, Vec<f32>),
    head: Mat, // wte transposed: (C, Vp)
}

impl NativeWeights {
    pub(super) fn from_gpt(gpt: &Gpt) -> NativeWeights {
        let p = gpt.parts();
        let ln = |(w, b): (&Tensor, &Tensor)| (to_vec(w), to_vec(b));
        let cfg = gpt.config();
        // Attention's 1/sqrt(head size) folded into the query projection.
        let scale = 1.0 / ((cfg.n_embd / cfg.n_head) as f32).sqrt();
        let c_attn = |(w, b): (&Tensor, &Tensor)| {
            let mut m = Mat::from_torch(w, Some(b));
            for kk in 0..m.k {
                m.w[kk * m.np..][..cfg.n_embd].iter_mut().for_each(|v| *v *= scale);
            }
            m.b[..cfg.n_embd].iter_mut().for_each(|v| *v *= scale);
            m
        };
        NativeWeights {
            cfg: *gpt.config(),
            wte: to_vec(p.wte),
            wpe: to_vec(p.wpe),
            blocks: p
                .blocks
                .iter()
                .map(|b| NativeBlock {
                    ln_1: ln(b.ln_1),
                    c_attn: c_attn(b.c_attn),
                    c_proj: Mat::from_torch(b.c_proj.0, Some(b.c_proj.1)),
                    ln_2: ln(b.ln_2),
                    c_fc: Mat::from_torch(b.c_fc.0, Some(b.c_fc.1)),
                    mlp_proj: Mat::from_torch(b.mlp_proj.0, Some(b.mlp_proj.1)),
                })
                .collect(),
            ln_f: ln(p.ln_f),
            head: {
                let mut m = Mat::from_torch(p.wte, None);
                m.b[cfg.vocab_size..].fill(-1e30);
                m
            },
        }
    }
}

/// Activations of one forward, reused across calls on a thread. Row strides
/// are the padded widths of the layers that write them.
#[derive(Default)]
struct Scratch {
    x: Vec<f32>,   // (T, C) residual stream
    h: Vec<f32>,   // (T, C) LayerNorm output
    qkv: Vec<f32>, // (T, 3C) queries (pre-scaled), keys, values
    y: Vec<f32>,   // (T, C) attention output, heads side by side
    kt: Vec<f32>,  // (hs, T) one head's keys, transposed
    att: Vec<f32>, // (T, T) one head's attention weights
    inv: Vec<f32>, // (T) 1 / softmax denominators
    f: Vec<f32>,   // (T, 4C) MLP hidden, then (T, V) logits
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

fn run_native(w: &NativeWeights, jobs: &[Job], chunk: &[usize], out: &mut [Vec<f32>]) {
    let threads = threads().min(chunk.len());
    if threads <= 1 {
        for &j in chunk {
            out[j] = forward_job(w, &jobs[j]);
        }
        return;
    }
    // Deal the (length-sorted) jobs round-robin so each thread gets a
    // similar mix of long and short ones.
    let results: Vec<Vec<(usize, Vec<f32>)>> = std::thread::scope(|sc| {
        let handles: Vec<_> = (1..threads)
            .map(|t| {
                sc.spawn(move || {
                    chunk.iter().skip(t).step_by(threads).map(|&j| (j, forward_job(w, &jobs[j]))).collect()
                })
            })
            .collect();
        let mut all = vec![chunk.iter().step_by(threads).map(|&j| (j, forward_job(w, &jobs[j]))).collect()];
        // A panicking worker would be a bug in the kernel; its jobs are then
        // left without losses rather than taking the caller down.
        all.extend(handles.into_iter().filter_map(|h| h.join().ok()));
        all
    });
    for (j, l) in results.into_iter().flatten() {
        out[j] = l;
    }
}

fn forward_job(w: &NativeWeights, job: &Job) -> Vec<f32> {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        let n = job.seq.len() - 1;
        let mut out = vec![0.0; n - job.first];
        #[cfg(target_arch = "x86_64")]
        {
            if std::env::var_os("XISA512").is_some() && std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512vl") {
                // SAFETY: the CPU has the features the function is compiled for.
                unsafe { forward_avx512(w, &job.seq, job.first, &mut s, &mut out) };
                return out;
            }
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                // SAFETY: the CPU has the features the function is compiled for.
                unsafe { forward_avx2(w, &job.seq, job.first, &mut s, &mut out) };
                return out;
            }
        }
        forward::<Plain, 4>(w, &job.seq, job.first, &mut s, &mut out);
        out
    })
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn forward_avx2(w: &NativeWeights, seq: &[u32], first: usize, s: &mut Scratch, out: &mut [f32]) {
    forward::<Fused, 4>(w, seq, first, s, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
fn forward_avx512(w: &NativeWeights, seq: &[u32], first: usize, s: &mut Scratch, out: &mut [f32]) {
    forward::<Fused, 8>(w, seq, first, s, out)
}

/// Multiply-add, fused where the CPU has FMA (compiled inside
/// [`forward_avx2`]) and a plain multiply then add elsewhere, where
/// `mul_add` would be a slow library call.
trait Arith {
    fn fma(a: f32, b: f32, c: f32) -> f32;
}
struct Fused;
struct Plain;
impl Arith for Fused {
    #[inline(always)]
    fn fma(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
}
impl Arith for Plain {
    #[inline(always)]
    fn fma(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
}

/// The forward of one window, `seq[..n]` as input, writing the loss of
/// `seq[p + 1]` for p in `first..n` to `out`. Every matrix product goes
/// through [`gemm`]; rows are padded to a multiple of [`MR`] (zeros in, the
/// results ignored). The last block computes queries, MLP and head only for
/// the rows from `first` on: earlier positions there only supply keys and
/// values.
#[inline(always)]
fn forward<A: Arith, const MR: usize>(w: &NativeWeights, seq: &[u32], first: usize, s: &mut Scratch, out: &mut [f32]) {
    let cfg = &w.cfg;
    let (c, nh, v) = (cfg.n_embd, cfg.n_head, cfg.vocab_size);
    let hs = c / nh;
    let n = seq.len() - 1;
    let tp = round_up(n, MR); // rows
    let tk = round_up(n, NR); // key columns of the attention matrix
    let (lc, l3, l4, lv) = (w.blocks[0].c_proj.np, w.blocks[0].c_attn.np, w.blocks[0].c_fc.np, w.head.np);
    let grow = |b: &mut Vec<f32>, len: usize| {
        if b.len() < len {
            b.resize(len, 0.0);
        }
    };
    grow(&mut s.x, tp * lc);
    grow(&mut s.h, tp * lc);
    grow(&mut s.qkv, tp * l3);
    grow(&mut s.y, tp * lc);
    grow(&mut s.kt, hs * tk);
    grow(&mut s.att, tp * tk);
    grow(&mut s.inv, tp);
    grow(&mut s.f, tp * l4.max(lv));

    let mut tt = std::time::Instant::now();
    macro_rules! tick { ($i:expr) => { let now = std::time::Instant::now(); PROF.with(|p| { let mut p = p.borrow_mut(); p[$i] += (now - tt).as_secs_f64(); }); tt = now; } }
    s.x[n * lc..tp * lc].fill(0.0);
    for (p, &tok) in seq[..n].iter().enumerate() {
        let (te, pe) = (&w.wte[tok as usize * c..][..c], &w.wpe[p * c..][..c]);
        for (x, (a, b)) in s.x[p * lc..][..c].iter_mut().zip(te.iter().zip(pe)) {
            *x = a + b; // (T, C)
        }
    }
    tick!(0);
    for (l, blk) in w.blocks.iter().enumerate() {
        // Rows whose output is still needed: all, except in the last block.
        let r0 = if l + 1 == w.blocks.len() { first - first % MR } else { 0 };
        let rows = r0..tp;
        layer_norm(&s.x, &mut s.h, lc, 0..tp, c, &blk.ln_1);
        gemm::<A, MR, NR, false, FULL>(&s.h, lc, 0..tp, c, &blk.c_attn.w, l3, l3, Some(&blk.c_attn.b), &mut s.qkv, l3); // (T, 3C)
        tick!(1);
        for hd in 0..nh {
            let (q0, k0, v0) = (hd * hs, c + hd * hs, 2 * c + hd * hs);
            for p in 0..tp {
                for d in 0..hs {
                    s.kt[d * tk + p] = s.qkv[p * l3 + k0 + d];
                }
            }
            tick!(2);
            // att = q k^T, only the tiles on or below the diagonal: (T, T)
            gemm::<A, MR, NR, false, CAUSAL_COLS>(&s.qkv[q0..], l3, rows.clone(), hs, &s.kt, tk, tk, None, &mut s.att, tk);
            tick!(3);
            for i in r0..n {
                // Row i attends to keys 0..=i; the rest of its 8-lane chunk
                // is masked so the softmax runs in whole vectors.
                let row = &mut s.att[i * tk..][..tk];
                let m8 = round_up(i + 1, 8);
                row[i + 1..m8].fill(f32::NEG_INFINITY);
                let sum = softmax_unnormalised::<A>(&mut row[..m8]);
                s.inv[i] = 1.0 / sum;
                // The next gemm reads the whole row tile: no weight past i.
                row[i + 1..m8.max(i - i % MR + MR).min(tk)].fill(0.0);
            }
            tick!(4);
            // y = att v over the causal prefix: (T, hs)
            gemm_att_v::<A, MR>(&s.att, tk, rows.clone(), n, &s.qkv[v0..], l3, hs, &mut s.y[q0..], lc);
            for i in r0..n {
                for y in &mut s.y[i * lc + q0..][..hs] {
                    *y *= s.inv[i];
                }
            }
            tick!(5);
        }
        gemm::<A, MR, NR, true, FULL>(&s.y, lc, rows.clone(), c, &blk.c_proj.w, lc, lc, Some(&blk.c_proj.b), &mut s.x, lc); // x += y W
        layer_norm(&s.x, &mut s.h, lc, rows.clone(), c, &blk.ln_2);
        tick!(6);
        gemm::<A, MR, NR, false, FULL>(&s.h, lc, rows.clone(), c, &blk.c_fc.w, l4, l4, Some(&blk.c_fc.b), &mut s.f, l4); // (T, 4C)
        map8(&mut s.f[r0 * l4..tp * l4], gelu::<A>);
        tick!(7);
        gemm::<A, MR, NR, true, FULL>(&s.f, l4, rows, 4 * c, &blk.mlp_proj.w, lc, lc, Some(&blk.mlp_proj.b), &mut s.x, lc); // x += gelu(.) W
    }
    tick!(8);
    let r0 = first - first % MR;
    layer_norm(&s.x, &mut s.h, lc, r0..tp, c, &w.ln_f);
    // The padding columns' bias is -1e30: they drop out of the softmax.
    gemm::<A, MR, NR, false, FULL>(&s.h, lc, r0..tp, c, &w.head.w, lv, lv, Some(&w.head.b), &mut s.f, lv); // (T, V)
    tick!(9);
    for (p, o) in (first..n).zip(out.iter_mut()) {
        let logits = &s.f[p * lv..][..lv];
        let max = lane_max(logits);
        let lse = max + exp_sum::<A>(logits, max).ln();
        *o = lse - logits[seq[p + 1] as usize]; // cross-entropy
    }
    tick!(10);
    PROF.with(|p| { let mut p = p.borrow_mut(); p[11] += 1.0; if p[11] as usize % 10000 == 0 { let t: f64 = p[..11].iter().sum(); eprintln!("PROF us/event total {:.1}: {:?}", t / p[11] * 1e6, p[..11].iter().map(|x| (x / p[11] * 1e7).round() / 10.0).collect::<Vec<_>>()); } });
}
thread_local! { static PROF: RefCell<[f64; 12]> = RefCell::new([0.0; 12]); }

const FULL: u8 = 0;
/// Skip column tiles entirely above the diagonal (attention scores).
const CAUSAL_COLS: u8 = 1;

/// out[r, ..cols] = x[r, ..k] W (+ bias) for r in `rows`, or `+=` when ACC
/// (the residual adds). W is (k, cols) with row stride `ldw`; x and out have
/// row strides `ldx` and `ldo`; `rows` has a multiple of [`MR`] rows and
/// `cols` is a multiple of NR. The tile loop keeps an NR-wide panel of W in
/// L1 while the rows stream past, with MR x NR accumulators in registers.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn gemm<A: Arith, const MR: usize, const NRC: usize, const ACC: bool, const MODE: u8>(
    x: &[f32],
    ldx: usize,
    rows: std::ops::Range<usize>,
    k: usize,
    w: &[f32],
    ldw: usize,
    cols: usize,
    bias: Option<&[f32]>,
    out: &mut [f32],
    ldo: usize,
) {
    for j0 in (0..cols).step_by(NRC) {
        let b: [f32; NRC] = match bias {
            Some(b) => b[j0..j0 + NRC].try_into().unwrap(),
            None => [0.0; NRC],
        };
        for r in rows.clone().step_by(MR) {
            if MODE == CAUSAL_COLS && j0 >= r + MR {
                continue;
            }
            let xs: [&[f32]; MR] = std::array::from_fn(|i| &x[(r + i) * ldx..][..k]);
            let mut acc = [[0.0f32; NRC]; MR];
            for (i, a) in acc.iter_mut().enumerate() {
                let o: &[f32; NRC] = out[(r + i) * ldo + j0..][..NRC].try_into().unwrap();
                for j in 0..NRC {
                    a[j] = if ACC { o[j] + b[j] } else { b[j] };
                }
            }
            for kk in 0..k {
                let wr: &[f32; NRC] = w[kk * ldw + j0..][..NRC].try_into().unwrap();
                for (i, a) in acc.iter_mut().enumerate() {
                    let xi = xs[i][kk];
                    for j in 0..NRC {
                        a[j] = A::fma(xi, wr[j], a[j]);
                    }
                }
            }
            for (i, a) in acc.iter().enumerate() {
                out[(r + i) * ldo + j0..][..NRC].copy_from_slice(a);
            }
        }
    }
}

/// y[i, ..hs] = sum over j <= i of att[i, j] v[j, ..hs], for a head's
/// values v (row stride `ldv`). Row tile r..r+MR only reads the first r+MR
/// keys (and never past the `n` real ones); heads 8 wide use the 8-lane
/// kernel, others a plain loop.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn gemm_att_v<A: Arith, const MR: usize>(
    att: &[f32],
    lda: usize,
    rows: std::ops::Range<usize>,
    n: usize,
    v: &[f32],
    ldv: usize,
    hs: usize,
    y: &mut [f32],
    ldy: usize,
) {
    for r in rows.step_by(MR) {
        let k = (r + MR).min(n);
        if hs % 8 == 0 {
            for j0 in (0..hs).step_by(8) {
                gemm::<A, MR, 8, false, FULL>(&att[r * lda..], lda, 0..MR, k, &v[j0..], ldv, 8, None, &mut y[r * ldy + j0..], ldy);
            }
        } else {
            for i in r..r + MR {
                let yi = &mut y[i * ldy..][..hs];
                yi.fill(0.0);
                for j in 0..k {
                    let a = att[i * lda + j];
                    for (o, &vv) in yi.iter_mut().zip(&v[j * ldv..][..hs]) {
                        *o = A::fma(a, vv, *o);
                    }
                }
            }
        }
    }
}

/// LayerNorm (eps 1e-5, as torch) of rows of `x` into `out`, stride `ld`.
#[inline(always)]
fn layer_norm(x: &[f32], out: &mut [f32], ld: usize, rows: std::ops::Range<usize>, c: usize, (g, b): &(Vec<f32>, Vec<f32>)) {
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
        let var = acc.iter().sum::<f32>() / c as f32;
        let rstd = 1.0 / (var + 1e-5).sqrt();
        for (((o, &v), &g), &b) in out[r * ld..][..c].iter_mut().zip(xr).zip(g).zip(b) {
            *o = (v - mean) * rstd * g + b;
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

/// Replaces `s` by exp(s - max(s)) and returns its sum.
#[inline(always)]
fn softmax_unnormalised<A: Arith>(s: &mut [f32]) -> f32 {
    let max = lane_max(s);
    map8(s, |v| exp::<A>(v - max));
    lane_sum(s)
}

/// Applies `f` to every element, 8 at a time: a loop the compiler would
/// vectorise on its own handles 32 at a time and leaves short rows (most
/// attention rows) to a scalar tail.
#[inline(always)]
fn map8(s: &mut [f32], f: impl Fn(f32) -> f32) {
    let mut ch = s.chunks_exact_mut(8);
    for c in &mut ch {
        for v in c.iter_mut() {
            *v = f(*v);
        }
    }
    for v in ch.into_remainder() {
        *v = f(*v);
    }
}

/// Sum of exp(s - max), leaving `s` unchanged.
#[inline(always)]
fn exp_sum<A: Arith>(s: &[f32], max: f32) -> f32 {
    let mut acc = [0.0f32; 8];
    let ch = s.chunks_exact(8);
    for (l, v) in ch.remainder().iter().enumerate() {
        acc[l] += exp::<A>(v - max);
    }
    for ch in ch {
        for l in 0..8 {
            acc[l] += exp::<A>(ch[l] - max);
        }
    }
    acc.iter().sum()
}

/// exp(x) to about 2 ulp, branch-free so loops over it vectorise:
/// x = n ln2 + r with |r| <= ln2 / 2, exp(r) by its degree-6 Taylor
/// polynomial, 2^n built in the exponent bits.
#[inline(always)]
fn exp<A: Arith>(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const SHIFT: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
    let x = x.clamp(-87.0, 88.0);
    let t = A::fma(x, LOG2E, SHIFT);
    let n = t - SHIFT;
    let r = A::fma(-n, LN2_LO, A::fma(-n, LN2_HI, x));
    let mut p = 1.0 / 720.0;
    p = A::fma(p, r, 1.0 / 120.0);
    p = A::fma(p, r, 1.0 / 24.0);
    p = A::fma(p, r, 1.0 / 6.0);
    p = A::fma(p, r, 0.5);
    p = A::fma(p, r, 1.0);
    p = A::fma(p, r, 1.0);
    // t's low mantissa bits hold n; move n + 127 into the exponent field.
    let bits = (t.to_bits().wrapping_sub(SHIFT.to_bits()).wrapping_add(127)) << 23;
    p * f32::from_bits(bits)
}

/// GELU with the exact erf, as torch's default `gelu(approximate="none")`.
#[inline(always)]
fn gelu<A: Arith>(x: f32) -> f32 {
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
    p = A::fma(x2, p, -2.954_600e-3);
    p = A::fma(x2, p, -1.609_603_3e-2);
    let mut q = -1.456_607_2e-5;
    q = A::fma(x2, q, -2.133_740_6e-4);
    q = A::fma(x2, q, -1.682_827e-3);
    q = A::fma(x2, q, -7.373_329e-3);
    q = A::fma(x2, q, -1.426_473_9e-2);
    x * p / q
}
