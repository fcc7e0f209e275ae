//! The network: a nanoGPT-style decoder in tch. Token and learned position
//! embeddings, `n_layer` pre-LayerNorm blocks (causal self-attention, then a
//! 4x GELU MLP, each added back to the residual stream), a final LayerNorm and
//! an LM head that reuses the token embedding. Parameter names follow
//! nanoGPT's `model.py` (`transformer.h.0.attn.c_attn.weight`, ...) so the
//! PyTorch reference (scripts/bench_ref.py) reads the same way.
//!
//! This is the training and reference forward. Scoring runs the same
//! arithmetic through a hand-written kernel over a copy of these weights
//! (the model's `score` module, which reads them through `Gpt::parts`),
//! because per-op dispatch dominates at this size. Nothing here depends on
//! scoring or training: both build on this.

use super::GptConfig;
use anyhow::{bail, Result};
use tch::nn::{self, Init};
use tch::{Device, Kind, Tensor};

/// Sizes past these are refused rather than allocated: a config read from a
/// file must not be able to ask for gigabytes.
const MAX_VOCAB: usize = 1 << 20;
const MAX_EMBD: usize = 4096;
const MAX_LAYER: usize = 64;
const MAX_BLOCK: usize = 1 << 16;

struct LayerNorm {
    w: Tensor,
    b: Tensor,
}

struct Linear {
    w: Tensor, // (out, in), as torch.nn.Linear
    b: Tensor, // (out)
}

struct Block {
    ln_1: LayerNorm,
    c_attn: Linear, // C -> 3C: q, k, v
    c_proj: Linear, // C -> C
    ln_2: LayerNorm,
    c_fc: Linear,     // C -> 4C
    mlp_proj: Linear, // 4C -> C
}

/// The model and its weights. Weights change only through training (which
/// takes `&mut Gpt`) or by loading a checkpoint; a native scorer made
/// earlier keeps the weights it copied.
pub struct Gpt {
    vs: nn::VarStore,
    net: Net,
}

/// The forward over handles onto the store's variables. Training runs one
/// per thread on a shard of the batch ([`Net::shallow_clone`]): the handles
/// share the variables, so each shard's gradients are the variables'.
pub(super) struct Net {
    cfg: GptConfig,
    wte: Tensor, // (V, C), also the LM head
    wpe: Tensor, // (block_size, C)
    blocks: Vec<Block>,
    ln_f: LayerNorm,
}

/// Group 0 of the optimizer gets weight decay (matrices and embeddings),
/// group 1 does not (biases and LayerNorm gains), as in nanoGPT.
pub(super) const DECAY_GROUP: usize = 0;
pub(super) const NO_DECAY_GROUP: usize = 1;

impl GptConfig {
    /// Refuses shapes the network cannot be built with, or that would not fit
    /// in memory, with the reason.
    pub fn validate(&self) -> Result<()> {
        let c = self;
        if c.vocab_size == 0 || c.n_embd == 0 || c.n_layer == 0 || c.n_head == 0 {
            bail!("model config {c:?}: every size must be positive");
        }
        if c.block_size < 2 {
            bail!("model config {c:?}: block_size must be at least 2");
        }
        if !c.n_embd.is_multiple_of(c.n_head) {
            bail!("model config {c:?}: n_embd must be a multiple of n_head");
        }
        if c.vocab_size > MAX_VOCAB
            || c.n_embd > MAX_EMBD
            || c.n_layer > MAX_LAYER
            || c.block_size > MAX_BLOCK
        {
            bail!("model config {c:?}: larger than this build accepts");
        }
        Ok(())
    }
}

impl Gpt {
    /// A freshly initialised model. Initialisation is nanoGPT's: normal(0,
    /// 0.02) everywhere, residual projections scaled by 1/sqrt(2 n_layer) so
    /// the residual stream's variance does not grow with depth. Seeds torch's
    /// global generator (the only randomness here).
    pub fn new(cfg: GptConfig, seed: u64) -> Result<Gpt> {
        cfg.validate()?;
        tch::manual_seed(seed as i64);
        let vs = nn::VarStore::new(Device::Cpu);
        let (c, v) = (cfg.n_embd as i64, cfg.vocab_size as i64);
        let std = 0.02;
        let proj_std = 0.02 / (2.0 * cfg.n_layer as f64).sqrt();
        let decay = vs.root().set_group(DECAY_GROUP);
        let plain = vs.root().set_group(NO_DECAY_GROUP);
        let ln = |name: &str| LayerNorm {
            w: at(&plain, name).var("weight", &[c], Init::Const(1.0)),
            b: at(&plain, name).var("bias", &[c], Init::Const(0.0)),
        };
        let linear = |name: &str, n_in: i64, n_out: i64, stdev: f64| Linear {
            w: at(&decay, name).var("weight", &[n_out, n_in], Init::Randn { mean: 0.0, stdev }),
            b: at(&plain, name).var("bias", &[n_out], Init::Const(0.0)),
        };
        let t = "transformer";
        let normal = Init::Randn {
            mean: 0.0,
            stdev: std,
        };
        let wte = at(&decay, "transformer.wte").var("weight", &[v, c], normal);
        let wpe = at(&decay, "transformer.wpe").var("weight", &[cfg.block_size as i64, c], normal);
        let blocks = (0..cfg.n_layer)
            .map(|i| {
                let p = format!("{t}.h.{i}");
                Block {
                    ln_1: ln(&format!("{p}.ln_1")),
                    c_attn: linear(&format!("{p}.attn.c_attn"), c, 3 * c, std),
                    c_proj: linear(&format!("{p}.attn.c_proj"), c, c, proj_std),
                    ln_2: ln(&format!("{p}.ln_2")),
                    c_fc: linear(&format!("{p}.mlp.c_fc"), c, 4 * c, std),
                    mlp_proj: linear(&format!("{p}.mlp.c_proj"), 4 * c, c, proj_std),
                }
            })
            .collect();
        let ln_f = ln(&format!("{t}.ln_f"));
        Ok(Gpt {
            vs,
            net: Net {
                cfg,
                wte,
                wpe,
                blocks,
                ln_f,
            },
        })
    }

    pub fn config(&self) -> &GptConfig {
        &self.net.cfg
    }

    /// Number of parameters (the head shares the token embedding).
    pub fn num_params(&self) -> usize {
        self.vs
            .trainable_variables()
            .iter()
            .map(|t| t.numel())
            .sum()
    }

    /// Logits for every position: idx (B, T) int64 -> (B, T, V). Panics (in
    /// libtorch) on ids outside the vocabulary or T > block_size: callers
    /// build idx themselves, scoring and training check both.
    pub fn forward(&self, idx: &Tensor) -> Tensor {
        self.net.forward(idx)
    }

    /// The residual stream after the last block, before the final LayerNorm:
    /// idx (B, T) -> (B, T, C). Scoring gathers only the positions it needs
    /// from this and applies [`Gpt::head`] there.
    pub fn forward_hidden(&self, idx: &Tensor) -> Tensor {
        self.net.forward_hidden(idx)
    }

    /// Final LayerNorm and the tied LM head: (..., C) -> (..., V).
    pub fn head(&self, hidden: &Tensor) -> Tensor {
        self.net.head(hidden)
    }

    pub(super) fn net(&self) -> &Net {
        &self.net
    }

    pub(super) fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    pub(super) fn var_store_mut(&mut self) -> &mut nn::VarStore {
        &mut self.vs
    }

    /// The named weights in nanoGPT's layout, for copying out of the store.
    pub(super) fn parts(&self) -> GptParts<'_> {
        let n = &self.net;
        GptParts {
            wte: &n.wte,
            wpe: &n.wpe,
            blocks: n
                .blocks
                .iter()
                .map(|b| BlockParts {
                    ln_1: (&b.ln_1.w, &b.ln_1.b),
                    c_attn: (&b.c_attn.w, &b.c_attn.b),
                    c_proj: (&b.c_proj.w, &b.c_proj.b),
                    ln_2: (&b.ln_2.w, &b.ln_2.b),
                    c_fc: (&b.c_fc.w, &b.c_fc.b),
                    mlp_proj: (&b.mlp_proj.w, &b.mlp_proj.b),
                })
                .collect(),
            ln_f: (&n.ln_f.w, &n.ln_f.b),
        }
    }
}

impl Net {
    /// As [`Gpt::forward`].
    pub(super) fn forward(&self, idx: &Tensor) -> Tensor {
        self.head(&self.forward_hidden(idx))
    }

    fn forward_hidden(&self, idx: &Tensor) -> Tensor {
        let (_b, t) = idx.size2().expect("idx must be (B, T)");
        let (nh, c) = (self.cfg.n_head as i64, self.cfg.n_embd as i64);
        let pos = Tensor::arange(t, (Kind::Int64, Device::Cpu)); // (T)
        let tok_emb = Tensor::embedding(&self.wte, idx, -1, false, false); // (B, T, C)
        let pos_emb = Tensor::embedding(&self.wpe, &pos, -1, false, false); // (T, C)
        let mut x = tok_emb + pos_emb; // (B, T, C)
        for blk in &self.blocks {
            x = &x + attention(&layer_norm(&x, &blk.ln_1, c), &blk.c_attn, &blk.c_proj, nh);
            let h = linear(&layer_norm(&x, &blk.ln_2, c), &blk.c_fc).gelu("none"); // (B, T, 4C)
            x = &x + linear(&h, &blk.mlp_proj); // (B, T, C)
        }
        x
    }

    fn head(&self, hidden: &Tensor) -> Tensor {
        let h = layer_norm(hidden, &self.ln_f, self.cfg.n_embd as i64); // (..., C)
        h.matmul(&self.wte.tr()) // (..., V)
    }

    /// New handles onto the same variables, for another thread (a `Tensor`
    /// is Send but not Sync, so threads cannot share one handle).
    pub(super) fn shallow_clone(&self) -> Net {
        let ln = |l: &LayerNorm| LayerNorm {
            w: l.w.shallow_clone(),
            b: l.b.shallow_clone(),
        };
        let lin = |l: &Linear| Linear {
            w: l.w.shallow_clone(),
            b: l.b.shallow_clone(),
        };
        Net {
            cfg: self.cfg,
            wte: self.wte.shallow_clone(),
            wpe: self.wpe.shallow_clone(),
            blocks: self
                .blocks
                .iter()
                .map(|b| Block {
                    ln_1: ln(&b.ln_1),
                    c_attn: lin(&b.c_attn),
                    c_proj: lin(&b.c_proj),
                    ln_2: ln(&b.ln_2),
                    c_fc: lin(&b.c_fc),
                    mlp_proj: lin(&b.mlp_proj),
                })
                .collect(),
            ln_f: ln(&self.ln_f),
        }
    }
}

/// Borrowed views of the weights: (weight, bias) pairs, Linear weights (out, in).
pub(super) struct GptParts<'a> {
    pub wte: &'a Tensor,
    pub wpe: &'a Tensor,
    pub blocks: Vec<BlockParts<'a>>,
    pub ln_f: (&'a Tensor, &'a Tensor),
}

pub(super) struct BlockParts<'a> {
    pub ln_1: (&'a Tensor, &'a Tensor),
    pub c_attn: (&'a Tensor, &'a Tensor),
    pub c_proj: (&'a Tensor, &'a Tensor),
    pub ln_2: (&'a Tensor, &'a Tensor),
    pub c_fc: (&'a Tensor, &'a Tensor),
    pub mlp_proj: (&'a Tensor, &'a Tensor),
}

/// The store path of a dotted name such as `transformer.h.0.ln_1`.
fn at<'a>(root: &nn::Path<'a>, dotted: &str) -> nn::Path<'a> {
    let mut parts = dotted.split('.');
    let first = root.sub(parts.next().unwrap_or_default());
    parts.fold(first, |p, s| p.sub(s))
}

fn layer_norm(x: &Tensor, ln: &LayerNorm, c: i64) -> Tensor {
    x.layer_norm([c], Some(&ln.w), Some(&ln.b), 1e-5, false)
}

fn linear(x: &Tensor, l: &Linear) -> Tensor {
    x.linear(&l.w, Some(&l.b))
}

/// Query rows per block of [`attention`].
const QUERY_BLOCK: i64 = 32;

/// Causal multi-head self-attention: x (B, T, C) -> (B, T, C).
///
/// Written out (batched matmuls, softmax) rather than through
/// `scaled_dot_product_attention`: libtorch's CPU flash kernel costs about
/// the same per score whatever the head width, and with 8-wide heads its
/// backward was a third of a training step. Queries go in blocks of
/// [`QUERY_BLOCK`] rows, each against only the keys up to its last row, so
/// the masked upper triangle is mostly never computed (at T = 128, 5/8 of
/// the full score matrix). The same arithmetic as SDPA's: measured 17 ms
/// (SDPA) vs 14 ms per layer's forward and backward on a 16 x 128 shard,
/// one thread (PyTorch, same libtorch).
fn attention(x: &Tensor, c_attn: &Linear, c_proj: &Linear, nh: i64) -> Tensor {
    let (b, t, c) = x.size3().expect("x must be (B, T, C)");
    let hs = c / nh;
    let qkv = linear(x, c_attn).split(c, 2); // 3 x (B, T, C)
    let heads = |z: &Tensor| {
        z.view([b, t, nh, hs])
            .transpose(1, 2)
            .reshape([b * nh, t, hs])
    }; // (B*nh, T, hs)
    let (q, k, v) = (heads(&qkv[0]), heads(&qkv[1]), heads(&qkv[2]));
    let kt = k.transpose(1, 2); // (B*nh, hs, T)
    let scale = 1.0 / (hs as f64).sqrt();
    let blocks = (t / QUERY_BLOCK).max(1);
    let ys: Vec<Tensor> = (0..blocks)
        .map(|i| {
            let (start, end) = (i * t / blocks, (i + 1) * t / blocks);
            // -inf where the key comes after the query (key > start + row).
            let mask = Tensor::full(
                [end - start, end],
                f64::NEG_INFINITY,
                (Kind::Float, Device::Cpu),
            )
            .triu(start + 1);
            let att = mask.baddbmm(
                &q.narrow(1, start, end - start),
                &kt.narrow(2, 0, end),
                1.0,
                scale,
            ); // (B*nh, rows, end)
            att.softmax(-1, Kind::Float).bmm(&v.narrow(1, 0, end)) // (B*nh, rows, hs)
        })
        .collect();
    let y = Tensor::cat(&ys, 1) // (B*nh, T, hs)
        .view([b, nh, t, hs])
        .transpose(1, 2)
        .contiguous()
        .view([b, t, c]); // (B, T, C)
    linear(&y, c_proj)
}
