//! MAR's diffusion head, DiffLoss's `SimpleMLPAdaLN`: a timestep and condition embedding that
//! modulates a stack of AdaLN ResBlocks over one token, predicting ε and the LEARNED_RANGE
//! variance value v (spec §1.5). Written once over the backend; tensors under `diffloss.net.`.

use std::sync::Arc;

use crate::backend::{Activation, Backend};
use crate::error::{Error, Result};
use crate::model::modules::{LayerNorm, Linear};
use crate::weights::{MarConfig, WeightFile};

/// Width of the timestep sinusoid (`TimestepEmbedder.frequency_embedding_size`).
pub const FREQUENCY_DIM: usize = 256;
/// LayerNorm epsilon inside the head (fixed, not configurable).
const HEAD_NORM_EPS: f64 = 1e-6;
/// Tensor-name prefix of the head in a MAR checkpoint.
const PREFIX: &str = "diffloss.net.";

/// The timestep sinusoid in f64, cos first: `[cos(t f_k), sin(t f_k)]` with
/// `f_k = exp(-ln(10000) k / 128)`, `k = 0..128`.
pub fn timestep_sinusoid(t: f64) -> Vec<f64> {
    let half = FREQUENCY_DIM / 2;
    let args: Vec<f64> = (0..half).map(|k| t * (-(10000f64.ln()) * k as f64 / half as f64).exp()).collect();
    args.iter().map(|a| a.cos()).chain(args.iter().map(|a| a.sin())).collect()
}

/// One AdaLN ResBlock: `(shift, scale, gate) = adaLN(y)`;
/// `x += gate * mlp(in_ln(x) (1 + scale) + shift)`.
struct ResBlock<B: Backend> {
    in_ln: LayerNorm<B>,
    mlp0: Linear<B>,
    mlp2: Linear<B>,
    modulation: Linear<B>,
}

/// The intermediate activations of a head pass.
struct HeadScratch<B: Backend> {
    mods: B::Buf,
    normed: B::Buf,
    hidden: B::Buf,
    out: B::Buf,
}

/// A loaded `SimpleMLPAdaLN`.
pub struct DiffusionHead<B: Backend> {
    width: usize,
    token_dim: usize,
    time_mlp0: Linear<B>,
    time_mlp2: Linear<B>,
    cond_embed: Linear<B>,
    input_proj: Linear<B>,
    res_blocks: Vec<ResBlock<B>>,
    final_modulation: Linear<B>,
    final_linear: Linear<B>,
}

impl<B: Backend> DiffusionHead<B> {
    /// Load the head of `config` (`diffloss_d` ResBlocks of width `diffloss_w`) from `file`.
    pub fn load(backend: &B, file: &Arc<WeightFile>, config: &MarConfig) -> Result<Self> {
        let (w, c) = (config.diffloss_w, config.token_dim());
        let linear = |name: &str, i, o| Linear::load(backend, file, &format!("{PREFIX}{name}"), i, o);
        let res_blocks = (0..config.diffloss_d)
            .map(|j| {
                Ok(ResBlock {
                    in_ln: LayerNorm::load(backend, file, &format!("{PREFIX}res_blocks.{j}.in_ln"), w, HEAD_NORM_EPS)?,
                    mlp0: linear(&format!("res_blocks.{j}.mlp.0"), w, w)?,
                    mlp2: linear(&format!("res_blocks.{j}.mlp.2"), w, w)?,
                    modulation: linear(&format!("res_blocks.{j}.adaLN_modulation.1"), w, 3 * w)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            width: w,
            token_dim: c,
            time_mlp0: linear("time_embed.mlp.0", FREQUENCY_DIM, w)?,
            time_mlp2: linear("time_embed.mlp.2", w, w)?,
            cond_embed: linear("cond_embed", config.decoder_embed_dim, w)?,
            input_proj: linear("input_proj", c, w)?,
            res_blocks,
            final_modulation: linear("final_layer.adaLN_modulation.1", w, 2 * w)?,
            final_linear: linear("final_layer.linear", w, 2 * c)?,
        })
    }

    /// Channels of a token (`C`); the head outputs `2C` per row (ε, then v).
    pub fn token_dim(&self) -> usize {
        self.token_dim
    }

    /// `cond_embed(z)` for `rows` rows of conditions `z` (`[rows, decoder_embed_dim]`): computed
    /// once per sampling run, every step reuses it.
    pub fn embed_conditions(&self, backend: &B, z: &B::Buf, rows: usize) -> Result<B::Buf> {
        let mut out = backend.zeros(0)?;
        self.cond_embed.forward(backend, z, rows, &mut out)?;
        Ok(out)
    }

    /// The net's output `[rows, 2C]` (ε, v) for `x` (`[rows, C]`) at the original timesteps
    /// `timesteps` (one per row) under embedded conditions `cond` (`[rows, W]`, from
    /// [`Self::embed_conditions`]).
    pub fn forward(&self, backend: &B, x: &B::Buf, timesteps: &[f64], cond: &B::Buf) -> Result<B::Buf> {
        let (rows, w) = (timesteps.len(), self.width);
        let empty = || backend.zeros(0);
        let mut s = HeadScratch::<B> { mods: empty()?, normed: empty()?, hidden: empty()?, out: empty()? };
        // y = time_embed(t) + cond_embed(z); only SiLU(y) is ever used.
        let sinusoids: Vec<f32> = timesteps.iter().flat_map(|&t| timestep_sinusoid(t)).map(|v| v as f32).collect();
        let mut y = empty()?;
        self.time_mlp0.forward(backend, &backend.upload(&sinusoids)?, rows, &mut s.hidden)?;
        backend.activate(&mut s.hidden, Activation::Silu)?;
        self.time_mlp2.forward(backend, &s.hidden, rows, &mut y)?;
        backend.add_assign(&mut y, cond)?;
        backend.activate(&mut y, Activation::Silu)?;
        let mut h = empty()?;
        self.input_proj.forward(backend, x, rows, &mut h)?;
        for block in &self.res_blocks {
            block.modulation.forward(backend, &y, rows, &mut s.mods)?;
            block.in_ln.forward(backend, &h, rows, &mut s.normed)?;
            backend.modulate(&mut s.normed, &s.mods, 3 * w, 0, w)?;
            block.mlp0.forward(backend, &s.normed, rows, &mut s.hidden)?;
            backend.activate(&mut s.hidden, Activation::Silu)?;
            block.mlp2.forward(backend, &s.hidden, rows, &mut s.normed)?;
            backend.add_gated(&mut h, &s.normed, &s.mods, 3 * w, 2 * w, w)?;
        }
        self.final_modulation.forward(backend, &y, rows, &mut s.mods)?;
        backend.resize(&mut s.normed, rows * w)?;
        backend.layer_norm(&h, None, HEAD_NORM_EPS as f32, w, &mut s.normed)?;
        backend.modulate(&mut s.normed, &s.mods, 2 * w, 0, w)?;
        self.final_linear.forward(backend, &s.normed, rows, &mut s.out)?;
        Ok(s.out)
    }

    /// `forward_with_cfg` on host tokens `x` (`[n, C]`): with `guidance` `Some(scales)` (one
    /// scale `s` per token), `cond` holds `2n` embedded conditions (the conditional rows, then the
    /// unconditional ones), both halves run in one pass and `ε = ε_u + s (ε_c - ε_u)`, while v is
    /// the conditional branch's; with `None`, `cond` holds `n` rows. Returns `[n, 2C]` (ε, v) in
    /// f64.
    pub fn forward_guided(&self, backend: &B, x: &[f32], timesteps: &[f64], cond: &B::Buf, guidance: Option<&[f64]>) -> Result<Vec<f64>> {
        let (n, c) = (timesteps.len(), self.token_dim);
        if x.len() != n * c {
            return Err(Error::InvalidRequest(format!("the diffusion head got {} values for {n} tokens of {c} channels", x.len())));
        }
        if let Some(scales) = guidance.filter(|scales| scales.len() != n) {
            return Err(Error::InvalidRequest(format!("the diffusion head got {} guidance scales for {n} tokens", scales.len())));
        }
        let raw = match guidance {
            None => backend.download(&self.forward(backend, &backend.upload(x)?, timesteps, cond)?)?,
            Some(_) => {
                let doubled = backend.upload(&[x, x].concat())?;
                backend.download(&self.forward(backend, &doubled, &[timesteps, timesteps].concat(), cond)?)?
            }
        };
        Ok(mix_guidance(&raw, n, c, guidance))
    }
}

/// The conditional rows of a head output `raw` (`[n or 2n, 2C]`) with each row's ε guided by
/// its scale against the unconditional rows `n..2n`, in f64.
fn mix_guidance(raw: &[f32], n: usize, c: usize, guidance: Option<&[f64]>) -> Vec<f64> {
    let mut out: Vec<f64> = raw[..n * 2 * c].iter().map(|&v| v as f64).collect();
    if let Some(scales) = guidance {
        for ((row, uncond), &scale) in out.chunks_mut(2 * c).zip(raw[n * 2 * c..].chunks(2 * c)).zip(scales) {
            for (e, &u) in row[..c].iter_mut().zip(&uncond[..c]) {
                *e = u as f64 + scale * (*e - u as f64);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sinusoid_is_cos_first() {
        let at0 = timestep_sinusoid(0.0);
        assert_eq!(at0.len(), FREQUENCY_DIM);
        assert!(at0[..128].iter().all(|&v| v == 1.0) && at0[128..].iter().all(|&v| v == 0.0));
        let at1 = timestep_sinusoid(1.0);
        assert_eq!((at1[0], at1[128]), (1f64.cos(), 1f64.sin()));
    }

    #[test]
    fn guidance_mixes_eps_and_keeps_the_conditional_variance() {
        // n = 1, C = 1: conditional row [eps 2, v 0.5], unconditional row [eps 1, v -0.5].
        let raw = [2.0, 0.5, 1.0, -0.5];
        assert_eq!(mix_guidance(&raw, 1, 1, Some(&[3.0])), vec![1.0 + 3.0 * (2.0 - 1.0), 0.5]);
        assert_eq!(mix_guidance(&raw[..2], 1, 1, None), vec![2.0, 0.5]);
        // n = 2: each row is guided by its own scale.
        let raw = [2.0, 0.5, 4.0, 0.25, 1.0, -0.5, 1.0, 0.3];
        assert_eq!(mix_guidance(&raw, 2, 1, Some(&[3.0, 2.0])), vec![4.0, 0.5, 7.0, 0.25]);
    }
}
