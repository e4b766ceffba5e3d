//! LlamaGen's logits processing: classifier-free guidance on raw logits, then temperature, then
//! top-k, then top-p, then softmax. The result is the distribution tokens are drawn from, and the
//! `p` / `q` that speculative verification compares.

use crate::error::{Error, Result};

/// Sampling settings (LlamaGen's c2i defaults: temperature 1, top-k 0 = off, top-p 1 = off).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplingParams {
    /// Softmax temperature; 0 means greedy (arg-max).
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens (0 = all).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose mass reaches `top_p` (1 = all).
    pub top_p: f32,
    /// Classifier-free guidance scale (<= 1 = no guidance, no unconditional pass).
    pub cfg_scale: f32,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self { temperature: 1.0, top_k: 0, top_p: 1.0, cfg_scale: 1.0 }
    }
}

impl SamplingParams {
    /// Whether an unconditional (null-class) branch must be run (LlamaGen: only for scale > 1).
    pub fn uses_cfg(&self) -> bool {
        self.cfg_scale > 1.0
    }

    /// Reject settings that cannot work, with a message saying what to use instead.
    pub fn validate(&self) -> Result<()> {
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err(Error::InvalidRequest(format!("temperature {} must be >= 0", self.temperature)));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::InvalidRequest(format!("top-p {} must be in (0, 1]", self.top_p)));
        }
        if !self.cfg_scale.is_finite() {
            return Err(Error::InvalidRequest("cfg scale must be finite".into()));
        }
        Ok(())
    }

    /// The token distribution for conditional logits `cond` and, with CFG, unconditional logits
    /// `uncond`. Non-finite logits are an [`Error::NonFiniteLogits`] naming `context`.
    pub fn distribution(&self, cond: &[f32], uncond: Option<&[f32]>, context: &str) -> Result<Vec<f32>> {
        let mut logits: Vec<f32> = match uncond {
            Some(u) if self.uses_cfg() => cond.iter().zip(u).map(|(&c, &u)| u + (c - u) * self.cfg_scale).collect(),
            _ => cond.to_vec(),
        };
        if logits.iter().any(|v| !v.is_finite()) {
            return Err(Error::NonFiniteLogits { context: context.to_string() });
        }
        if self.temperature == 0.0 {
            let best = argmax(&logits);
            let mut one_hot = vec![0.0; logits.len()];
            one_hot[best] = 1.0;
            return Ok(one_hot);
        }
        logits.iter_mut().for_each(|l| *l /= self.temperature);
        if self.top_k > 0 && self.top_k < logits.len() {
            let mut sorted = logits.clone();
            sorted.sort_unstable_by(|a, b| b.total_cmp(a));
            let threshold = sorted[self.top_k - 1];
            logits.iter_mut().filter(|l| **l < threshold).for_each(|l| *l = f32::NEG_INFINITY);
        }
        let mut probs = crate::sampling::dist::softmax(&logits);
        if self.top_p < 1.0 {
            apply_top_p(&mut probs, self.top_p);
        }
        Ok(probs)
    }
}

/// Index of the largest value (first on ties).
pub fn argmax(values: &[f32]) -> usize {
    values.iter().enumerate().fold(0, |best, (i, &v)| if v > values[best] { i } else { best })
}

/// Nucleus filtering: zero every token outside the smallest most-likely set whose mass exceeds
/// `top_p` (the most likely token always stays), then renormalise.
fn apply_top_p(probs: &mut [f32], top_p: f32) {
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
    let mut cumulative = 0f64;
    let mut keep = order.len();
    for (rank, &i) in order.iter().enumerate() {
        cumulative += probs[i] as f64;
        if cumulative > top_p as f64 {
            keep = rank + 1;
            break;
        }
    }
    for &i in &order[keep..] {
        probs[i] = 0.0;
    }
    crate::sampling::dist::normalize(probs);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cfg_mixes_raw_logits() {
        let p = SamplingParams { cfg_scale: 2.0, ..Default::default() };
        let d = p.distribution(&[1.0, 0.0], Some(&[0.0, 0.0]), "t").unwrap();
        let expected = 1.0 / (1.0 + (-2f32).exp());
        assert!((d[0] - expected).abs() < 1e-6);
    }

    #[test]
    fn top_k_and_top_p_keep_the_head() {
        let p = SamplingParams { top_k: 2, ..Default::default() };
        let d = p.distribution(&[3.0, 2.0, 1.0], None, "t").unwrap();
        assert_eq!(d[2], 0.0);
        let p = SamplingParams { top_p: 0.5, ..Default::default() };
        let d = p.distribution(&[3.0, 0.0, 0.0], None, "t").unwrap();
        assert_eq!(d, vec![1.0, 0.0, 0.0]);
    }

    #[test]
    fn greedy_and_nan() {
        let p = SamplingParams { temperature: 0.0, ..Default::default() };
        assert_eq!(p.distribution(&[0.0, 5.0, 1.0], None, "t").unwrap(), vec![0.0, 1.0, 0.0]);
        let err = SamplingParams::default().distribution(&[f32::NAN, 0.0], None, "token 3").unwrap_err();
        assert!(err.to_string().contains("token 3"));
    }
}
