//! The native forward's copy of the weights. A [`Gpt`] keeps its weights in a
//! libtorch VarStore, laid out for torch's ops; the kernels want each Linear
//! transposed and padded to whole register tiles, attention's scale folded
//! into the queries and the vocabulary padded with logits that cannot win a
//! softmax. Copying once per model is what makes every scored event cheap.

use super::kernels::{round_up, Mat, NR};
use crate::model::gpt::Gpt;
use crate::model::GptConfig;
use tch::{Kind, Tensor};

pub(super) struct NativeBlock {
    pub ln_1: (Vec<f32>, Vec<f32>),
    pub c_attn: Mat,
    pub c_proj: Mat,
    pub ln_2: (Vec<f32>, Vec<f32>),
    pub c_fc: Mat,
    pub mlp_proj: Mat,
}

/// The weights, copied out of the VarStore into the layouts the kernel reads.
pub(super) struct NativeWeights {
    pub cfg: GptConfig,
    pub wte: Vec<f32>, // (V, C)
    pub wpe: Vec<f32>, // (block_size, C)
    pub blocks: Vec<NativeBlock>,
    pub ln_f: (Vec<f32>, Vec<f32>),
    pub head: Mat,     // wte transposed: (C, V padded), padding columns' bias -1e30
    pub wte_norm: f32, // the largest token embedding's L2 norm
}

impl NativeWeights {
    pub(super) fn from_gpt(gpt: &Gpt) -> NativeWeights {
        let p = gpt.parts();
        let cfg = *gpt.config();
        let ln = |(w, b): (&Tensor, &Tensor)| (to_vec(w), to_vec(b));
        // Attention's 1/sqrt(head size) folded into the query projection.
        let scale = 1.0 / ((cfg.n_embd / cfg.n_head) as f32).sqrt();
        let c_attn = |(w, b): (&Tensor, &Tensor)| {
            let mut m = mat_from_torch(w, Some(b));
            for kk in 0..m.k {
                m.w[kk * m.np..][..cfg.n_embd]
                    .iter_mut()
                    .for_each(|v| *v *= scale);
            }
            m.b[..cfg.n_embd].iter_mut().for_each(|v| *v *= scale);
            m
        };
        // Padding logits at -1e30 drop out of the softmax without a mask.
        let mut head = mat_from_torch(p.wte, None);
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
                    c_proj: mat_from_torch(b.c_proj.0, Some(b.c_proj.1)),
                    ln_2: ln(b.ln_2),
                    c_fc: mat_from_torch(b.c_fc.0, Some(b.c_fc.1)),
                    mlp_proj: mat_from_torch(b.mlp_proj.0, Some(b.mlp_proj.1)),
                })
                .collect(),
            ln_f: ln(p.ln_f),
            head,
        }
    }
}

/// A [`Mat`] from a torch Linear weight (n, k) and optional bias (n).
fn mat_from_torch(weight: &Tensor, bias: Option<&Tensor>) -> Mat {
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

fn to_vec(t: &Tensor) -> Vec<f32> {
    let t = t.detach().to_kind(Kind::Float).contiguous().view(-1);
    Vec::<f32>::try_from(&t).expect("a float tensor converts to Vec<f32>")
}
