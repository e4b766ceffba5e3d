//! The diffusion process of MAR's head in float64: cosine betas over the training steps,
//! respacing to the sampling steps (`timestep_map`), and the per-step coefficients of the
//! LEARNED_RANGE, ε-predicting `p_mean_variance` (spec §1.5).

use crate::error::{Error, Result};

/// The cap on a cosine beta (`betas_for_alpha_bar`'s `max_beta`).
const MAX_BETA: f64 = 0.999;

/// `ᾱ(u) = cos((u + 0.008)/1.008 · π/2)²`, the cosine schedule's cumulative alpha at `u ∈ [0, 1]`.
fn cosine_alpha_bar(u: f64) -> f64 {
    ((u + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2).cos().powi(2)
}

/// Betas of the `steps`-step cosine process: `β_i = min(1 - ᾱ((i+1)/T)/ᾱ(i/T), 0.999)`.
pub fn cosine_betas(steps: usize) -> Vec<f64> {
    let t = steps as f64;
    (0..steps).map(|i| (1.0 - cosine_alpha_bar((i + 1) as f64 / t) / cosine_alpha_bar(i as f64 / t)).min(MAX_BETA)).collect()
}

/// The original timesteps kept when `num_timesteps` are respaced into `count` evenly spread
/// steps (one section of `space_timesteps`): `round(j (n - 1)/(count - 1))` with Python's
/// round-half-to-even, sorted and deduplicated.
pub fn space_timesteps(num_timesteps: usize, count: usize) -> Result<Vec<usize>> {
    if count == 0 || count > num_timesteps {
        return Err(Error::InvalidRequest(format!("cannot respace {num_timesteps} diffusion steps into {count}")));
    }
    let stride = if count == 1 { 1.0 } else { (num_timesteps - 1) as f64 / (count - 1) as f64 };
    let mut steps: Vec<usize> = (0..count).map(|j| (j as f64 * stride).round_ties_even() as usize).collect();
    steps.dedup();
    Ok(steps)
}

/// One step of the reverse process for one value: the Gaussian `p(x_{k-1} | x_k)` and the
/// predicted `x_0`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PosteriorStep {
    /// Mean `μ_k`.
    pub mean: f64,
    /// Log-variance `log σ²_k`.
    pub log_var: f64,
    /// Predicted `x̂_0`.
    pub x0: f64,
}

/// The respaced schedule, every array indexed by the respaced step `k = 0..K`.
#[derive(Clone, Debug, PartialEq)]
pub struct DiffusionSchedule {
    /// The original timestep of each respaced step (the head is called with it).
    pub timestep_map: Vec<usize>,
    /// `β'_k = 1 - ᾱ_{t_k}/ᾱ_{t_{k-1}}`.
    pub betas: Vec<f64>,
    /// `ᾱ'_k`.
    pub alphas_cumprod: Vec<f64>,
    /// `log σ̃²_k` of the posterior variance, entry 0 replaced by entry 1.
    pub posterior_log_variance_clipped: Vec<f64>,
    /// Posterior-mean coefficient of `x̂_0`.
    pub coef1: Vec<f64>,
    /// Posterior-mean coefficient of `x_k`.
    pub coef2: Vec<f64>,
    log_betas: Vec<f64>,
    sqrt_recip_alphas_cumprod: Vec<f64>,
    sqrt_recipm1_alphas_cumprod: Vec<f64>,
}

impl DiffusionSchedule {
    /// The cosine schedule of `diffusion_steps` training steps respaced to `sampling_steps`
    /// (at least 2: step 0's clipped variance is step 1's).
    pub fn cosine(sampling_steps: usize, diffusion_steps: usize) -> Result<Self> {
        if sampling_steps < 2 {
            return Err(Error::InvalidRequest(format!("the diffusion head needs at least 2 sampling steps, not {sampling_steps}")));
        }
        let timestep_map = space_timesteps(diffusion_steps, sampling_steps)?;
        let base: Vec<f64> = cosine_betas(diffusion_steps).iter().scan(1.0, |acc, b| {
            *acc *= 1.0 - b;
            Some(*acc)
        }).collect();
        let kept: Vec<f64> = timestep_map.iter().map(|&t| base[t]).collect();
        let betas: Vec<f64> = kept.iter().enumerate().map(|(k, a)| 1.0 - a / if k == 0 { 1.0 } else { kept[k - 1] }).collect();
        let alphas_cumprod: Vec<f64> = betas.iter().scan(1.0, |acc, b| {
            *acc *= 1.0 - b;
            Some(*acc)
        }).collect();
        let prev = |k: usize| if k == 0 { 1.0 } else { alphas_cumprod[k - 1] };
        let steps = 0..betas.len();
        let posterior_variance: Vec<f64> = steps.clone().map(|k| betas[k] * (1.0 - prev(k)) / (1.0 - alphas_cumprod[k])).collect();
        Ok(Self {
            posterior_log_variance_clipped: steps.clone().map(|k| posterior_variance[k.max(1)].ln()).collect(),
            coef1: steps.clone().map(|k| betas[k] * prev(k).sqrt() / (1.0 - alphas_cumprod[k])).collect(),
            coef2: steps.clone().map(|k| (1.0 - prev(k)) * (1.0 - betas[k]).sqrt() / (1.0 - alphas_cumprod[k])).collect(),
            log_betas: betas.iter().map(|b| b.ln()).collect(),
            sqrt_recip_alphas_cumprod: alphas_cumprod.iter().map(|a| (1.0 / a).sqrt()).collect(),
            sqrt_recipm1_alphas_cumprod: alphas_cumprod.iter().map(|a| (1.0 / a - 1.0).sqrt()).collect(),
            timestep_map,
            betas,
            alphas_cumprod,
        })
    }

    /// Number of respaced steps `K`.
    pub fn steps(&self) -> usize {
        self.betas.len()
    }

    /// `p_mean_variance` at respaced step `k` for one value `x` with the head's `eps` and
    /// variance value `v`: `log σ² = f log β' + (1 - f) log σ̃²_clipped` with `f = (v + 1)/2`,
    /// `x̂_0 = sqrt(1/ᾱ') x - sqrt(1/ᾱ' - 1) eps` (not clipped), `μ = coef1 x̂_0 + coef2 x`.
    pub fn p_mean_variance(&self, k: usize, x: f64, eps: f64, v: f64) -> PosteriorStep {
        let frac = (v + 1.0) / 2.0;
        let log_var = frac * self.log_betas[k] + (1.0 - frac) * self.posterior_log_variance_clipped[k];
        let x0 = self.sqrt_recip_alphas_cumprod[k] * x - self.sqrt_recipm1_alphas_cumprod[k] * eps;
        PosteriorStep { mean: self.coef1[k] * x0 + self.coef2[k] * x, log_var, x0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn respacing_rounds_half_to_even_like_python() {
        // 999/99 = 10.0909...: j = 6 gives 60.545 -> 61, the first uneven gap of the spec's map.
        let map = space_timesteps(1000, 100).unwrap();
        assert_eq!(&map[..8], &[0, 10, 20, 30, 40, 50, 61, 71]);
        assert_eq!(*map.last().unwrap(), 999);
        // 3 of 6: stride 2.5, and round(2.5) is 2 (half to even, where half-up would give 3).
        assert_eq!(space_timesteps(6, 3).unwrap(), vec![0, 2, 5]);
        // 4 of 6: stride 5/3: 0, 1.67, 3.33, 5.
        assert_eq!(space_timesteps(6, 4).unwrap(), vec![0, 2, 3, 5]);
        assert!(space_timesteps(10, 11).is_err());
    }

    #[test]
    fn a_respaced_schedule_needs_two_steps() {
        assert!(DiffusionSchedule::cosine(1, 1000).is_err());
        assert_eq!(DiffusionSchedule::cosine(2, 1000).unwrap().steps(), 2);
    }
}
