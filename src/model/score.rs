//! Per-event scoring: the loss of each event's own tokens, given the events
//! before it.
//!
//! Two engines compute the same numbers. [`Engine::Native`] (the default) is a
//! hand-written forward over a copy of the weights: at this model's size
//! (d 32, 2 layers) a libtorch call is mostly per-op dispatch, and a batched
//! call moves padding and full-vocabulary logits it does not need (here, one
//! 64-token event: about 340 us through libtorch, 80 us native, one thread).
//! The native forward runs each event through register-tiled SIMD kernels,
//! computes the last block and the head only at the positions that predict
//! the event's own tokens, never pads, and splits a batch across threads by
//! events rather than inside each op. [`Engine::Libtorch`] is the tch forward
//! ([`Gpt::forward_hidden`] + [`Gpt::head`]) and the reference the native one
//! is tested against (within 1e-4 per token).

use super::gpt::Gpt;
use super::{EventLoss, GptConfig, ScoreItem};
use std::cell::RefCell;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tch::{Kind, Tensor};

/// Which forward computes the losses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Engine {
    /// The hand-written forward, on the best instruction set the CPU has.
    #[default]
    Native,
    /// The hand-written forward on a given instruction set (tests, benchmarks).
    NativeAt(Simd),
    Libtorch,
}

static THREADS: AtomicUsize = AtomicUsize::new(0);

/// Threads for scoring and training: libtorch's intra-op pool and the native
/// scorer's split of a batch. Call it once at start-up (the CLI does);
/// until then the native scorer uses every available core, like libtorch.
///
/// libtorch's pool (libgomp) spins while it waits: when other processes
/// keep the cores busy, a training step measured here went from 61 ms to
/// 930 ms. Starting the process with `OMP_WAIT_POLICY=PASSIVE` avoids that
/// (libgomp reads it when it loads, so it cannot be set from here). The
/// native scorer uses plain threads and is not affected.
pub fn set_threads(n: usize) {
    let n = n.max(1);
    THREADS.store(n, Ordering::Relaxed);
    tch::set_num_threads(n as i32);
}

/// Threads the native scorer splits a batch across.
pub fn threads() -> usize {
    match THREADS.load(Ordering::Relaxed) {
        0 => {
            // Asking the OS reads cgroup files: once is enough.
            static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
            *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        }
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
    match engine {
        Engine::Native => gpt.scorer().score(items, batch),
        Engine::NativeAt(simd) => Scorer {
            simd: simd.usable(),
            ..gpt.scorer()
        }
        .score(items, batch),
        Engine::Libtorch => run(items, batch, gpt.config(), |jobs, chunk, losses| {
            tch::no_grad(|| run_libtorch(gpt, jobs, chunk, losses))
        }),
    }
}

/// The native scorer on its own: a copy of the weights in the kernel's
/// layout, cheap to clone and shareable across threads (a [`Gpt`] is
/// neither), so a scoring service can hold one per model and swap it.
#[derive(Clone)]
pub struct Scorer {
    w: Arc<NativeWeights>,
    simd: Simd,
}

impl Scorer {
    pub(super) fn new(w: Arc<NativeWeights>) -> Scorer {
        Scorer {
            w,
            simd: Simd::detect(),
        }
    }

    pub fn config(&self) -> &GptConfig {
        &self.w.cfg
    }

    /// As [`score`].
    pub fn score(&self, items: &[ScoreItem], batch: usize) -> Vec<EventLoss> {
        run(items, batch, &self.w.cfg, |jobs, chunk, losses| {
            run_native(&self.w, self.simd, jobs, chunk, losses)
        })
    }
}

/// Plans the forwards, runs them `batch` at a time, longest first (so a
/// batch holds sequences of similar length), and gathers each item's losses.
fn run(
    items: &[ScoreItem],
    batch: usize,
    cfg: &GptConfig,
    mut forward: impl FnMut(&[Job], &[usize], &mut [Vec<f32>]),
) -> Vec<EventLoss> {
    let jobs = plan(items, cfg);
    let mut losses: Vec<Vec<f32>> = vec![Vec::new(); jobs.len()];
    let mut order: Vec<usize> = (0..jobs.len()).collect();
    order.sort_by_key(|&j| std::cmp::Reverse(jobs[j].seq.len()));
    for chunk in order.chunks(batch.max(1)) {
        forward(&jobs, chunk, &mut losses);
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
            let e = if q == c {
                n.min((q + stride).max(bs))
            } else {
                n.min(q + stride)
            };
            let a = e.saturating_sub(bs);
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
    let t = chunk
        .iter()
        .map(|&j| jobs[j].seq.len() - 1)
        .max()
        .unwrap_or(0);
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

/// The instruction set the native forward runs on. [`Simd::detect`] picks
/// the best the CPU has; a weaker one can be asked for (tests compare all
/// of them with libtorch), a stronger one falls back to what exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Simd {
    Scalar,
    Avx2,
    Avx512,
}

impl Simd {
    /// The best level this CPU has (detected once).
    pub fn detect() -> Simd {
        static BEST: std::sync::OnceLock<Simd> = std::sync::OnceLock::new();
        *BEST.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            {
                use std::arch::is_x86_feature_detected as has;
                if has!("avx512f") && has!("avx2") && has!("fma") {
                    return Simd::Avx512;
                }
                if has!("avx2") && has!("fma") {
                    return Simd::Avx2;
                }
            }
            Simd::Scalar
        })
    }

    fn usable(self) -> Simd {
        self.min(Simd::detect())
    }
}

/// Rows are processed 4 at a time (2 for AVX2 layer products), so every
/// row count is padded to a multiple of 4; padding rows start at zero and
/// their results are never read.
const MR: usize = 4;
/// Layer outputs are computed in tiles 32 columns wide: with 4 rows
/// (AVX-512) or 2 rows (AVX2) that is 8 accumulator registers, the best of
/// the shapes measured here (about 110 GFLOP/s on one Zen 4 core; the
/// compiler's own vectorisation of the same loops reached 70).
const NR: usize = 32;
/// The attention scores' tile is narrower, so less is computed above the
/// causal diagonal.
const NA: usize = 16;

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
    head: Mat,     // wte transposed: (C, V padded), padding columns' bias -1e30
    wte_norm: f32, // the largest token embedding's L2 norm
}

impl NativeWeights {
    pub(super) fn from_gpt(gpt: &Gpt) -> NativeWeights {
        let p = gpt.parts();
        let cfg = *gpt.config();
        let ln = |(w, b): (&Tensor, &Tensor)| (to_vec(w), to_vec(b));
        // Attention's 1/sqrt(head size) folded into the query projection.
        let scale = 1.0 / ((cfg.n_embd / cfg.n_head) as f32).sqrt();
        let c_attn = |(w, b): (&Tensor, &Tensor)| {
            let mut m = Mat::from_torch(w, Some(b));
            for kk in 0..m.k {
                m.w[kk * m.np..][..cfg.n_embd]
                    .iter_mut()
                    .for_each(|v| *v *= scale);
            }
            m.b[..cfg.n_embd].iter_mut().for_each(|v| *v *= scale);
            m
        };
        // Padding logits at -1e30 drop out of the softmax without a mask.
        let mut head = Mat::from_torch(p.wte, None);
        head.b[cfg.vocab_size..].fill(-1e30);
        let wte = to_vec(p.wte);
        let wte_norm = wte
            .chunks_exact(cfg.n_embd)
            .map(|e| e.iter().map(|v| v * v).sum::<f32>().sqrt())
            .fold(0.0, f32::max);
        NativeWeights {
            cfg,
            wte_norm,
            wte,
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
            head,
        }
    }
}

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

fn run_native(w: &NativeWeights, simd: Simd, jobs: &[Job], chunk: &[usize], out: &mut [Vec<f32>]) {
    let threads = threads().min(chunk.len());
    let one = |j: usize| SCRATCH.with(|s| forward(w, simd, &jobs[j], &mut s.borrow_mut()));
    if threads <= 1 {
        for &j in chunk {
            out[j] = one(j);
        }
        return;
    }
    // Deal the (length-sorted) jobs round-robin so each thread gets a
    // similar mix of long and short ones.
    let results: Vec<Vec<(usize, Vec<f32>)>> = std::thread::scope(|sc| {
        let handles: Vec<_> = (1..threads)
            .map(|t| {
                sc.spawn(move || {
                    chunk
                        .iter()
                        .skip(t)
                        .step_by(threads)
                        .map(|&j| (j, one(j)))
                        .collect()
                })
            })
            .collect();
        let mut all = vec![chunk
            .iter()
            .step_by(threads)
            .map(|&j| (j, one(j)))
            .collect()];
        // A panicking worker would be a bug in the kernel; its jobs are then
        // left without losses rather than taking the caller down.
        all.extend(handles.into_iter().filter_map(|h| h.join().ok()));
        all
    });
    for (j, l) in results.into_iter().flatten() {
        out[j] = l;
    }
}

/// A matrix operand read by broadcasting single elements: element (i, k)
/// is at `i * si + k * sk`, so a row-major or a transposed buffer serves
/// without copying.
#[derive(Clone, Copy)]
struct Strided<'a> {
    d: &'a [f32],
    si: usize,
    sk: usize,
}

fn rows_of(d: &[f32], ld: usize) -> Strided<'_> {
    Strided { d, si: ld, sk: 1 }
}

/// The forward of one window, `seq[..n]` as input: the loss of `seq[p + 1]`
/// for p in `first..n`. The last block computes queries, MLP and head only
/// for the rows from `first` on (earlier rows there only supply keys and
/// values).
fn forward(w: &NativeWeights, simd: Simd, job: &Job, s: &mut Scratch) -> Vec<f32> {
    let (seq, first) = (&job.seq[..], job.first);
    let cfg = &w.cfg;
    let (c, nh) = (cfg.n_embd, cfg.n_head);
    let hs = c / nh;
    let n = seq.len() - 1;
    let tp = round_up(n, MR); // rows
    let tq = round_up(tp, 16); // query columns
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
    grow(&mut s.x, tp * lc);
    grow(&mut s.h, tp * lc);
    grow(&mut s.qkv, tp * l3);
    grow(&mut s.qt, hs * tq);
    grow(&mut s.st, tp * tq);
    grow(&mut s.inv, tq);
    grow(&mut s.yt, c * tq);
    grow(&mut s.f, tp * l4.max(lv));

    s.x[n * lc..tp * lc].fill(0.0);
    for (p, &tok) in seq[..n].iter().enumerate() {
        let (te, pe) = (&w.wte[tok as usize * c..][..c], &w.wpe[p * c..][..c]);
        for (x, (a, b)) in s.x[p * lc..][..c].iter_mut().zip(te.iter().zip(pe)) {
            *x = a + b; // (T, C)
        }
    }
    let last = first - first % MR;
    for (l, blk) in w.blocks.iter().enumerate() {
        let r0 = if l + 1 == w.blocks.len() { last } else { 0 };
        let (rows, c0) = (r0..tp, r0 - r0 % 16); // rows to compute; first query column
        layer_norm(simd, &s.x, &mut s.h, lc, c, 0..tp, &blk.ln_1);
        linear::<false>(simd, rows_of(&s.h, lc), 0..tp, &blk.c_attn, &mut s.qkv, l3); // (T, 3C)
        for hd in 0..nh {
            let (q0, k0, v0) = (hd * hs, c + hd * hs, 2 * c + hd * hs);
            for p in c0..tp {
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
        gelu(simd, &mut s.f[r0 * l4..tp * l4]);
        linear::<true>(simd, rows_of(&s.f, l4), rows, &blk.mlp_proj, &mut s.x, lc);
        // x += gelu(.) W
    }
    layer_norm(simd, &s.x, &mut s.h, lc, c, last..tp, &w.ln_f);
    linear::<false>(simd, rows_of(&s.h, lc), last..tp, &w.head, &mut s.f, lv); // (T, V)
                                                                               // |logit| <= |LN_f(x)| * the largest token embedding's norm.
    for p in first..n {
        s.inv[p] = s.h[p * lc..][..c].iter().map(|v| v * v).sum::<f32>().sqrt() * w.wte_norm;
    }
    let mut out = vec![0.0; n - first];
    cross_entropy(simd, &s.f, lv, &seq[first + 1..], first, &s.inv, &mut out);
    out
}

// The matrix products. Each checks its extents once, then runs register
// tiles that read through raw pointers.

/// Whether `x` holds element (rows.end - 1, k - 1).
fn covers(x: Strided, rows_end: usize, k: usize) -> bool {
    rows_end == 0 || k == 0 || x.d.len() > (rows_end - 1) * x.si + (k - 1) * x.sk
}

/// out[r, ..np] = x[r, ..k] W + b (or `+=` when ACC: the residual adds), for
/// r in `rows` (a multiple of [`MR`]).
fn linear<const ACC: bool>(
    simd: Simd,
    x: Strided,
    rows: Range<usize>,
    m: &Mat,
    out: &mut [f32],
    ldo: usize,
) {
    let (k, np) = (m.k, m.np);
    if rows.is_empty() {
        return;
    }
    assert!(rows.len().is_multiple_of(MR) && np.is_multiple_of(NR) && ldo >= np);
    assert!(covers(x, rows.end, k) && out.len() >= (rows.end - 1) * ldo + np);
    assert!(m.w.len() >= k * np && m.b.len() >= np);
    let (xp, wp, bp, op) = (x.d.as_ptr(), m.w.as_ptr(), m.b.as_ptr(), out.as_mut_ptr());
    for j0 in (0..np).step_by(NR) {
        for r in rows.clone().step_by(MR) {
            // SAFETY: rows r..r+MR and columns j0..j0+NR lie inside the
            // extents asserted above.
            unsafe {
                let o = op.add(r * ldo + j0);
                tile::<ACC>(
                    simd,
                    NR,
                    xp.add(r * x.si),
                    x.si,
                    x.sk,
                    k,
                    wp.add(j0),
                    np,
                    bp.add(j0),
                    o,
                    ldo,
                );
            }
        }
    }
}

/// st[j, i] = k_j . q_i for keys j < n and queries i from c0, in the tiles
/// that hold some j <= i; `qt` holds the queries transposed (hs, tq).
#[allow(clippy::too_many_arguments)]
fn scores(
    simd: Simd,
    keys: Strided,
    n: usize,
    hs: usize,
    qt: &[f32],
    tq: usize,
    c0: usize,
    st: &mut [f32],
) {
    let tp = round_up(n, MR);
    assert!(tq.is_multiple_of(NA) && c0.is_multiple_of(NA) && tp <= tq);
    assert!(covers(keys, tp, hs) && qt.len() >= hs * tq && st.len() >= tp * tq);
    let (kp, qp, sp) = (keys.d.as_ptr(), qt.as_ptr(), st.as_mut_ptr());
    for i0 in (c0..tq).step_by(NA) {
        for j in (0..tp).step_by(MR).take_while(|&j| j < i0 + NA) {
            // SAFETY: inside the asserted extents.
            unsafe {
                let o = sp.add(j * tq + i0);
                tile::<false>(
                    simd,
                    NA,
                    kp.add(j * keys.si),
                    keys.si,
                    keys.sk,
                    hs,
                    qp.add(i0),
                    tq,
                    std::ptr::null(),
                    o,
                    tq,
                );
            }
        }
    }
}

/// yt[d, i] = sum over keys j of v[j, d] st[j, i] (unnormalised weights),
/// for queries i from c0, each 16-query tile reading only the keys it can
/// see; `values` is the head's values viewed as (hs, keys).
#[allow(clippy::too_many_arguments)]
fn att_v(
    simd: Simd,
    values: Strided,
    hs: usize,
    st: &[f32],
    tq: usize,
    c0: usize,
    n: usize,
    yt: &mut [f32],
) {
    assert!(tq.is_multiple_of(NA) && c0.is_multiple_of(NA) && n <= tq);
    assert!(covers(values, hs, n) && st.len() >= n * tq && yt.len() >= hs * tq);
    if !hs.is_multiple_of(MR) {
        for d in 0..hs {
            for i in c0..tq {
                let k = (i - i % NA + NA).min(n);
                yt[d * tq + i] = (0..k)
                    .map(|j| values.d[d * values.si + j * values.sk] * st[j * tq + i])
                    .sum();
            }
        }
        return;
    }
    let (vp, sp, yp) = (values.d.as_ptr(), st.as_ptr(), yt.as_mut_ptr());
    for i0 in (c0..tq).step_by(NA) {
        let k = (i0 + NA).min(n);
        for d in (0..hs).step_by(MR) {
            // SAFETY: inside the asserted extents.
            unsafe {
                let o = yp.add(d * tq + i0);
                tile::<false>(
                    simd,
                    NA,
                    vp.add(d * values.si),
                    values.si,
                    values.sk,
                    k,
                    sp.add(i0),
                    tq,
                    std::ptr::null(),
                    o,
                    tq,
                );
            }
        }
    }
}

/// One register tile: out[MR, width] (+ when ACC)= x[MR, ..k] w[..k, width]
/// + bias, on the best kernel `simd` allows; `width` is [`NR`] or [`NA`].
///
/// # Safety
/// x(i, kk) at `x + i * si + kk * sk` for i < MR, kk < k; w: k rows of
/// `width` at stride ldw; bias: `width` values or null; out: MR rows of
/// `width` at stride ldo; `simd` is a level the CPU has.
#[allow(clippy::too_many_arguments)]
unsafe fn tile<const ACC: bool>(
    simd: Simd,
    width: usize,
    x: *const f32,
    si: usize,
    sk: usize,
    k: usize,
    w: *const f32,
    ldw: usize,
    bias: *const f32,
    out: *mut f32,
    ldo: usize,
) {
    match (simd, width) {
        #[cfg(target_arch = "x86_64")]
        (Simd::Avx512, NR) => x86::tile512::<MR, 2, ACC>(x, si, sk, k, w, ldw, bias, out, ldo),
        #[cfg(target_arch = "x86_64")]
        (Simd::Avx512, _) => x86::tile512::<MR, 1, ACC>(x, si, sk, k, w, ldw, bias, out, ldo),
        #[cfg(target_arch = "x86_64")]
        (Simd::Avx2, NR) => {
            x86::tile256::<2, 4, ACC>(x, si, sk, k, w, ldw, bias, out, ldo);
            x86::tile256::<2, 4, ACC>(
                x.add(2 * si),
                si,
                sk,
                k,
                w,
                ldw,
                bias,
                out.add(2 * ldo),
                ldo,
            );
        }
        #[cfg(target_arch = "x86_64")]
        (Simd::Avx2, _) => x86::tile256::<MR, 2, ACC>(x, si, sk, k, w, ldw, bias, out, ldo),
        (_, NR) => tile_portable::<MR, NR, ACC>(x, si, sk, k, w, ldw, bias, out, ldo),
        _ => tile_portable::<MR, NA, ACC>(x, si, sk, k, w, ldw, bias, out, ldo),
    }
}

/// The portable register tile; contract as [`tile`].
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn tile_portable<const M: usize, const W: usize, const ACC: bool>(
    x: *const f32,
    si: usize,
    sk: usize,
    k: usize,
    w: *const f32,
    ldw: usize,
    bias: *const f32,
    out: *mut f32,
    ldo: usize,
) {
    let mut acc = [[0.0f32; W]; M];
    for (i, a) in acc.iter_mut().enumerate() {
        for (j, v) in a.iter_mut().enumerate() {
            *v = if bias.is_null() { 0.0 } else { *bias.add(j) }
                + if ACC { *out.add(i * ldo + j) } else { 0.0 };
        }
    }
    for kk in 0..k {
        for (i, a) in acc.iter_mut().enumerate() {
            let xi = *x.add(i * si + kk * sk);
            for (j, v) in a.iter_mut().enumerate() {
                *v += xi * *w.add(kk * ldw + j);
            }
        }
    }
    for (i, a) in acc.iter().enumerate() {
        for (j, v) in a.iter().enumerate() {
            *out.add(i * ldo + j) = *v;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// The AVX-512 register tile: M rows by NV vectors of 16 columns;
    /// contract as [`super::tile`].
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    pub unsafe fn tile512<const M: usize, const NV: usize, const ACC: bool>(
        x: *const f32,
        si: usize,
        sk: usize,
        k: usize,
        w: *const f32,
        ldw: usize,
        bias: *const f32,
        out: *mut f32,
        ldo: usize,
    ) {
        let mut c = [[_mm512_setzero_ps(); NV]; M];
        for (i, ci) in c.iter_mut().enumerate() {
            for (v, cv) in ci.iter_mut().enumerate() {
                if !bias.is_null() {
                    *cv = _mm512_loadu_ps(bias.add(16 * v));
                }
                if ACC {
                    *cv = _mm512_add_ps(*cv, _mm512_loadu_ps(out.add(i * ldo + 16 * v)));
                }
            }
        }
        for kk in 0..k {
            let mut wv = [_mm512_setzero_ps(); NV];
            for (v, wv) in wv.iter_mut().enumerate() {
                *wv = _mm512_loadu_ps(w.add(kk * ldw + 16 * v));
            }
            for (i, ci) in c.iter_mut().enumerate() {
                let a = _mm512_set1_ps(*x.add(i * si + kk * sk));
                for (cv, wv) in ci.iter_mut().zip(&wv) {
                    *cv = _mm512_fmadd_ps(a, *wv, *cv);
                }
            }
        }
        for (i, ci) in c.iter().enumerate() {
            for (v, cv) in ci.iter().enumerate() {
                _mm512_storeu_ps(out.add(i * ldo + 16 * v), *cv);
            }
        }
    }

    /// The AVX2 register tile: M rows by NV vectors of 8 columns; contract
    /// as [`super::tile`].
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn tile256<const M: usize, const NV: usize, const ACC: bool>(
        x: *const f32,
        si: usize,
        sk: usize,
        k: usize,
        w: *const f32,
        ldw: usize,
        bias: *const f32,
        out: *mut f32,
        ldo: usize,
    ) {
        let mut c = [[_mm256_setzero_ps(); NV]; M];
        for (i, ci) in c.iter_mut().enumerate() {
            for (v, cv) in ci.iter_mut().enumerate() {
                if !bias.is_null() {
                    *cv = _mm256_loadu_ps(bias.add(8 * v));
                }
                if ACC {
                    *cv = _mm256_add_ps(*cv, _mm256_loadu_ps(out.add(i * ldo + 8 * v)));
                }
            }
        }
        for kk in 0..k {
            let mut wv = [_mm256_setzero_ps(); NV];
            for (v, wv) in wv.iter_mut().enumerate() {
                *wv = _mm256_loadu_ps(w.add(kk * ldw + 8 * v));
            }
            for (i, ci) in c.iter_mut().enumerate() {
                let a = _mm256_set1_ps(*x.add(i * si + kk * sk));
                for (cv, wv) in ci.iter_mut().zip(&wv) {
                    *cv = _mm256_fmadd_ps(a, *wv, *cv);
                }
            }
        }
        for (i, ci) in c.iter().enumerate() {
            for (v, cv) in ci.iter().enumerate() {
                _mm256_storeu_ps(out.add(i * ldo + 8 * v), *cv);
            }
        }
    }
}

// The element-wise steps: plain loops over whole 8-lane chunks, which the
// compiler vectorises reliably when each sits in a small function of its
// own compiled for AVX2+FMA (inside one large function it did not).

/// Runs `$body` (generic over [`Arith`]) compiled for AVX2+FMA when `simd`
/// allows, else portably.
macro_rules! dispatch {
    ($simd:expr, fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {{
        #[inline(always)]
        fn generic<A: Arith>($($arg: $ty),*) $(-> $ret)? $body
        #[cfg(target_arch = "x86_64")]
        #[target_feature(enable = "avx2,fma")]
        fn fast($($arg: $ty),*) $(-> $ret)? {
            generic::<Fused>($($arg),*)
        }
        #[cfg(target_arch = "x86_64")]
        if $simd >= Simd::Avx2 {
            // SAFETY: `simd` is only ever a level the CPU has (Simd::usable).
            return unsafe { fast($($arg),*) };
        }
        generic::<Plain>($($arg),*)
    }};
}

/// LayerNorm (eps 1e-5, as torch) of rows of `x` into `out`, stride `ld`.
fn layer_norm(
    simd: Simd,
    x: &[f32],
    out: &mut [f32],
    ld: usize,
    c: usize,
    rows: Range<usize>,
    g_b: &(Vec<f32>, Vec<f32>),
) {
    dispatch!(
        simd,
        fn ln(
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
    )
}

/// Causal softmax down the columns of `st` ([key][query]) for queries
/// from c0 (a multiple of 16), 8 queries per vector: column i becomes
/// exp(st[j, i] - max) for keys j <= i and 0 for j > i, as far as the next
/// product reads (its 16-query tile); inv[i] is 1 / the column's sum.
fn softmax_columns(simd: Simd, st: &mut [f32], tq: usize, c0: usize, n: usize, inv: &mut [f32]) {
    dispatch!(
        simd,
        fn sm(st: &mut [f32], tq: usize, c0: usize, n: usize, inv: &mut [f32]) {
            for b0 in (c0..n).step_by(8) {
                // Keys before b0 are visible to all 8 queries; from b0 on (the
                // diagonal block) key j is visible to query b0 + l when j <= b0 + l.
                let jend = (b0 + 8).min(n);
                let mut max = [f32::NEG_INFINITY; 8];
                for j in 0..jend {
                    let row: &[f32; 8] = st[j * tq + b0..][..8].try_into().unwrap();
                    for l in 0..8 {
                        let v = if j < b0 || j <= b0 + l {
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
    )
}

fn gelu(simd: Simd, s: &mut [f32]) {
    dispatch!(
        simd,
        fn g(s: &mut [f32]) {
            for v in s.iter_mut() {
                *v = gelu1::<A>(*v);
            }
        }
    )
}

/// out[p] = logsumexp(logits[first + p]) - logits[first + p][targets[p]].
/// `bound[p]` bounds the row's logits in absolute value: below 80, exp
/// cannot overflow or vanish, so the pass that finds the row's maximum is
/// skipped (shifting by 0 instead changes nothing but rounding).
#[allow(clippy::too_many_arguments)]
fn cross_entropy(
    simd: Simd,
    logits: &[f32],
    lv: usize,
    targets: &[u32],
    first: usize,
    bound: &[f32],
    out: &mut [f32],
) {
    dispatch!(
        simd,
        fn ce(
            logits: &[f32],
            lv: usize,
            targets: &[u32],
            first: usize,
            bound: &[f32],
            out: &mut [f32],
        ) {
            for (p, (o, &t)) in out.iter_mut().zip(targets).enumerate() {
                let row = &logits[(first + p) * lv..][..lv];
                let max = if bound[first + p] < 80.0 {
                    0.0
                } else {
                    lane_max(row)
                };
                let mut acc = [0.0f32; 8];
                for ch in row.chunks_exact(8) {
                    for l in 0..8 {
                        acc[l] += exp::<A>(ch[l] - max);
                    }
                }
                *o = max + acc.iter().sum::<f32>().ln() - row[t as usize];
            }
        }
    )
}

/// Multiply-add: fused where the element-wise code is compiled for FMA, a
/// multiply then an add elsewhere (`mul_add` would be a slow library call).
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
