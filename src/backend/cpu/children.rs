//! The exact CPU twin of kernels/accept.cu `sample_children`: each parent's children drawn
//! without replacement by the acceptance kernels' inverse CDF ([`super::block_cdf`]: the same
//! vocabulary ownership, reduction tree and ownership-order CDF as `accept_block`'s draws) over
//! its distribution with the children drawn before excluded, so for equal inputs the tokens are
//! the kernel's, bit for bit.

use super::block_cdf::{inverse_cdf, THREADS};
use crate::backend::ops::{check_parts, ChildDraws, NO_TOKEN};
use crate::error::{Error, Result};

/// The CPU backend's `sample_children`: for parent `i`, up to `width` distinct tokens from row
/// `rows[i]` of `probs` into `tokens[first[i] + j]`; [`NO_TOKEN`] once the remaining mass is
/// zero or for a row beyond `probs`; writes beyond `tokens` are skipped.
pub fn sample_children(probs: &[f32], words: &[u32], draws: ChildDraws, tokens: &mut [u32]) -> Result<()> {
    let (vocab, width) = (draws.vocab, draws.width);
    check_parts("sample_children", words.len(), &[(draws.rows_at, draws.parents), (draws.first_at, draws.parents), (draws.uniforms_at, draws.parents * width)])?;
    if vocab == 0 || !probs.len().is_multiple_of(vocab) {
        return Err(Error::Backend(format!("sample_children: {} probabilities of vocab {vocab}", probs.len())));
    }
    let uniforms: &[f32] = bytemuck::cast_slice(&words[draws.uniforms_at..][..draws.parents * width]);
    for i in 0..draws.parents {
        let row = words[draws.rows_at + i] as usize;
        let first = words[draws.first_at + i] as usize;
        let dist = probs.get(row * vocab..(row + 1) * vocab);
        let mut drawn: Vec<u32> = Vec::with_capacity(width);
        for j in 0..width.min(THREADS) {
            let exhausted = drawn.last() == Some(&NO_TOKEN);
            let token = match dist {
                Some(w) if !exhausted => inverse_cdf(w, &drawn, uniforms[i * width + j]).map_or(NO_TOKEN, |y| y as u32),
                _ => NO_TOKEN,
            };
            drawn.push(token);
            if let Some(slot) = tokens.get_mut(first + j) {
                *slot = token;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Packed;

    fn draw(probs: &[f32], vocab: usize, width: usize, rows: &[u32], uniforms: &[f32], tokens: usize) -> Vec<u32> {
        let mut packed = Packed::default();
        let first: Vec<u32> = (0..rows.len() as u32).map(|i| i * width as u32).collect();
        let draws = ChildDraws::pack(&mut packed, vocab, width, rows, &first, uniforms).unwrap();
        let mut out = vec![7; tokens];
        sample_children(probs, packed.words(), draws, &mut out).unwrap();
        out
    }

    #[test]
    fn children_are_distinct_follow_the_uniforms_and_stop_at_the_support() {
        // Row 0 has support {1, 3}; row 1 is all on token 0.
        let probs = [0.0, 0.25, 0.0, 0.75, 1.0, 0.0, 0.0, 0.0];
        // u = 0.1 falls on token 1 (mass 0.25 first); then only token 3 is left.
        assert_eq!(draw(&probs, 4, 3, &[0], &[0.1, 0.0, 0.5], 3), vec![1, 3, NO_TOKEN]);
        assert_eq!(draw(&probs, 4, 2, &[0], &[0.9, 0.9], 2), vec![3, 1]);
        assert_eq!(draw(&probs, 4, 2, &[1, 0], &[0.5, 0.5, 0.5, 0.5], 4), vec![0, NO_TOKEN, 3, 1]);
        // A row beyond the distributions, and writes beyond the tokens, are harmless.
        assert_eq!(draw(&probs, 4, 2, &[5], &[0.5, 0.5], 1), vec![NO_TOKEN]);
    }

    #[test]
    fn nan_rows_draw_nothing() {
        assert_eq!(draw(&[f32::NAN, 0.5], 2, 2, &[0], &[0.5, 0.5], 2), vec![1, NO_TOKEN]);
        assert_eq!(draw(&[f32::NAN; 2], 2, 1, &[0], &[0.5], 1), vec![NO_TOKEN]);
    }
}
