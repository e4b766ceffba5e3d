//! MAR's generation schedule (spec §1.4): tokens are revealed from the end of a random order
//! backwards, the number still masked after each step follows a clamped cosine, and the
//! guidance scale is constant or grows linearly with the revealed fraction.

use crate::error::{Error, Result};

/// Tokens still masked after `step` of `num_iter` when `num_masked` are masked before it:
/// `floor(seq_len cos(π/2 (step+1)/num_iter))`, clamped to `[1, num_masked - 1]` with the
/// lower bound winning.
pub fn next_mask_len(step: usize, num_iter: usize, seq_len: usize, num_masked: usize) -> usize {
    let cosine = (seq_len as f64 * (std::f64::consts::FRAC_PI_2 * (step + 1) as f64 / num_iter as f64).cos()).floor();
    (cosine.max(0.0) as usize).min(num_masked.saturating_sub(1)).max(1)
}

/// The mask (true = unknown) of `order.len()` positions with `order[..mask_len]` masked.
pub fn mask_by_order(mask_len: usize, order: &[usize]) -> Vec<bool> {
    let mut mask = vec![false; order.len()];
    order[..mask_len.min(order.len())].iter().for_each(|&p| mask[p] = true);
    mask
}

/// The masks of one generation step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepMasks {
    /// The mask after the step.
    pub next: Vec<bool>,
    /// The positions the step predicts, ascending.
    pub predict: Vec<usize>,
    /// Tokens still masked after the step (clamped: at least 1, also after the last step).
    pub mask_len: usize,
}

/// The masks of `step` of `num_iter` from the current `mask`: the step predicts the positions
/// masked now but not after it, and the last step every position still masked.
pub fn step_masks(order: &[usize], step: usize, num_iter: usize, mask: &[bool]) -> StepMasks {
    let num_masked = mask.iter().filter(|&&m| m).count();
    let mask_len = next_mask_len(step, num_iter, order.len(), num_masked);
    let next = mask_by_order(mask_len, order);
    let last = step + 1 >= num_iter;
    let predict = (0..mask.len()).filter(|&p| mask[p] && (last || !next[p])).collect();
    StepMasks { next, predict, mask_len }
}

/// Tokens each of `num_iter` steps predicts for `seq_len` tokens (spec test U2).
pub fn tokens_per_step(num_iter: usize, seq_len: usize) -> Vec<usize> {
    let order: Vec<usize> = (0..seq_len).collect();
    let mut mask = vec![true; seq_len];
    (0..num_iter)
        .map(|step| {
            let masks = step_masks(&order, step, num_iter, &mask);
            mask = masks.next;
            masks.predict.len()
        })
        .collect()
}

/// How the guidance scale of a step follows the generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CfgSchedule {
    /// The requested scale at every step.
    Constant,
    /// `1 + (cfg - 1)(seq_len - mask_len)/seq_len` with `mask_len` the tokens still masked after
    /// the step (Muse; MAR's default).
    Linear,
}

impl CfgSchedule {
    /// The schedule named `name` (`constant` or `linear`).
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "constant" => Ok(CfgSchedule::Constant),
            "linear" => Ok(CfgSchedule::Linear),
            other => Err(Error::InvalidRequest(format!("unknown cfg schedule {other:?}; use \"constant\" or \"linear\""))),
        }
    }

    /// The guidance scale of a step after which `mask_len` of `seq_len` tokens are still masked.
    pub fn scale(self, cfg: f64, mask_len: usize, seq_len: usize) -> f64 {
        match self {
            CfgSchedule::Constant => cfg,
            CfgSchedule::Linear => 1.0 + (cfg - 1.0) * (seq_len - mask_len) as f64 / seq_len as f64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_token_per_step_with_as_many_steps_as_tokens() {
        assert_eq!(tokens_per_step(256, 256), vec![1; 256]);
        let n16 = tokens_per_step(16, 256);
        assert_eq!(&n16[..5], &[2, 3, 7, 8, 11]);
        assert_eq!(n16.iter().sum::<usize>(), 256);
        assert_eq!(&tokens_per_step(64, 256)[58..], &[6, 6, 7, 6, 6, 6]);
    }

    #[test]
    fn positions_are_revealed_from_the_end_of_the_order() {
        let order = [2, 0, 3, 1];
        let all = vec![true; 4];
        let first = step_masks(&order, 0, 2, &all);
        // floor(4 cos(π/4)) = 2 tokens stay masked: order[..2] = {2, 0}; 3 and 1 are predicted.
        assert_eq!((first.mask_len, first.predict.clone()), (2, vec![1, 3]));
        assert_eq!(first.next, vec![true, false, true, false]);
        let last = step_masks(&order, 1, 2, &first.next);
        assert_eq!((last.mask_len, last.predict), (1, vec![0, 2]), "the last step predicts everything left");
    }

    #[test]
    fn linear_guidance_grows_with_the_revealed_fraction() {
        assert_eq!(CfgSchedule::Linear.scale(3.0, 14, 16), 1.25);
        assert_eq!(CfgSchedule::Linear.scale(3.0, 1, 16), 2.875);
        assert_eq!(CfgSchedule::Constant.scale(3.0, 14, 16), 3.0);
        assert_eq!(CfgSchedule::parse("linear").unwrap(), CfgSchedule::Linear);
        assert!(CfgSchedule::parse("cosine").unwrap_err().to_string().contains("\"cosine\""));
    }
}
