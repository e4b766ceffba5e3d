//! The head's DDPM sampler with its noise given from outside (CSpD's
//! `p_sample_loop_with_noise`, spec §1.5 and §2.6): per token a start `x_T` and one `ε_k` per
//! step, so two models (draft and target) can run the same noise. It reports what the CSpD rules
//! need per token and channel: the final mean `μ_0` (which is the token: no noise is added at
//! the last step), its std `σ_0`, and `Σ_{k≥1} log σ_k`.

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::model::diffusion::{DiffusionHead, DiffusionSchedule};

/// The noise of one head run over `n` tokens of `C` channels.
#[derive(Clone, Copy, Debug)]
pub struct HeadNoise<'a> {
    /// `x_T`, `[n, C]`.
    pub start: &'a [f32],
    /// `ε_k` of token `i` at `[(i K + k) C..][..C]` (`[n, K, C]`, CSpD's `inter_noise` layout;
    /// `k = 0` is never used).
    pub steps: &'a [f32],
}

/// What a head run gives per token and channel (`[n, C]` each).
#[derive(Clone, Debug, PartialEq)]
pub struct HeadSample {
    /// The final mean `μ_0`, which is also the sampled token `x_0`.
    pub mu0: Vec<f64>,
    /// The final step's std `exp(log σ²_0 / 2)`, without the temperature.
    pub sigma0: Vec<f64>,
    /// `Σ_{k=1}^{K-1} log σ²_k / 2`, without the temperature.
    pub sum_log_sigma: Vec<f64>,
}

impl HeadSample {
    /// The sampled tokens as f32 (`x_0 = μ_0`).
    pub fn tokens(&self) -> Vec<f32> {
        self.mu0.iter().map(|&v| v as f32).collect()
    }

    /// The tokens `rows` of this run (tokens of `c` channels).
    pub fn rows(&self, rows: std::ops::Range<usize>, c: usize) -> HeadSample {
        let at = rows.start * c..rows.end * c;
        HeadSample { mu0: self.mu0[at.clone()].to_vec(), sigma0: self.sigma0[at.clone()].to_vec(), sum_log_sigma: self.sum_log_sigma[at].to_vec() }
    }
}

/// Run the `K`-step reverse process of `head` for tokens with conditions `z` (decoder outputs,
/// `[n, Dd]`, or `[2n, Dd]` with `guidance`, one scale per token: conditional rows first), from
/// `noise`:
/// `x_{k-1} = μ_k + exp(log σ²_k / 2) · temperature · ε_k` for `k > 0`, `x_0 = μ_0`. Every
/// step is one head pass over all tokens and both guidance halves; the chain itself is kept in
/// f64 on the host.
pub fn sample<B: Backend>(
    backend: &B,
    head: &DiffusionHead<B>,
    schedule: &DiffusionSchedule,
    z: &B::Buf,
    guidance: Option<&[f64]>,
    noise: HeadNoise,
    temperature: f64,
) -> Result<HeadSample> {
    let (c, k_steps) = (head.token_dim(), schedule.steps());
    let n = noise.start.len() / c;
    if noise.start.len() != n * c || noise.steps.len() != n * k_steps * c {
        return Err(Error::InvalidRequest(format!(
            "head noise: x_T has {} values and the steps {}, but {n} tokens of {c} channels over {k_steps} steps need {} and {}",
            noise.start.len(),
            noise.steps.len(),
            n * c,
            n * k_steps * c
        )));
    }
    let cond = head.embed_conditions(backend, z, if guidance.is_some() { 2 * n } else { n })?;
    let mut x: Vec<f64> = noise.start.iter().map(|&v| v as f64).collect();
    let mut out = HeadSample { mu0: vec![0.0; n * c], sigma0: vec![0.0; n * c], sum_log_sigma: vec![0.0; n * c] };
    for k in (0..k_steps).rev() {
        let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        let net = head.forward_guided(backend, &x32, &vec![schedule.timestep_map[k] as f64; n], &cond, guidance)?;
        for (i, (row, eps_v)) in x.chunks_mut(c).zip(net.chunks(2 * c)).enumerate() {
            for (ch, value) in row.iter_mut().enumerate() {
                let step = schedule.p_mean_variance(k, *value, eps_v[ch], eps_v[c + ch]);
                let sigma = (0.5 * step.log_var).exp();
                if k == 0 {
                    (out.mu0[i * c + ch], out.sigma0[i * c + ch]) = (step.mean, sigma);
                } else {
                    *value = step.mean + sigma * temperature * noise.steps[(i * k_steps + k) * c + ch] as f64;
                    out.sum_log_sigma[i * c + ch] += 0.5 * step.log_var;
                }
            }
        }
    }
    Ok(out)
}
