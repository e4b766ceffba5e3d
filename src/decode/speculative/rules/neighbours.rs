//! LANTERN's latent neighbourhoods: for every VQ token, its nearest codebook entries.
//!
//! As in jadohu/LANTERN (`entrypoints/generate_codebook.py`): Euclidean distance between the raw
//! codebook vectors (`quantize.embedding.weight`, no l2 normalisation), the token itself
//! excluded, nearest first. Ties are broken by token index so the table is deterministic.

use rayon::prelude::*;

use crate::error::{Error, Result};

/// For every token, its `k` nearest other tokens in codebook space, nearest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LatentNeighbours {
    k: usize,
    vocab: usize,
    table: Vec<u32>,
}

impl LatentNeighbours {
    /// Build the table from a row-major `[codebook_size, dim]` codebook; `k` is clamped to
    /// `codebook_size - 1`. Non-finite entries are an error.
    pub fn from_codebook(codebook: &[f32], dim: usize, k: usize) -> Result<Self> {
        if dim == 0 || codebook.is_empty() || !codebook.len().is_multiple_of(dim) {
            return Err(Error::InvalidRequest(format!("codebook of {} values is not a [vocab, {dim}] table", codebook.len())));
        }
        if codebook.iter().any(|v| !v.is_finite()) {
            return Err(Error::NonFiniteLogits { context: "VQ codebook (LANTERN neighbourhoods)".into() });
        }
        let vocab = codebook.len() / dim;
        let k = k.min(vocab - 1);
        // Column-major copy, so the distances from one token to all others vectorise.
        let columns: Vec<f32> = (0..dim).flat_map(|d| (0..vocab).map(move |j| codebook[j * dim + d])).collect();
        let table = (0..vocab)
            .into_par_iter()
            .map_init(
                || (vec![0f32; vocab], Vec::with_capacity(vocab)),
                |(distance, keys): &mut (Vec<f32>, Vec<u64>), i| {
                    distance.fill(0.0);
                    for (d, column) in columns.chunks_exact(vocab).enumerate() {
                        let a = codebook[i * dim + d];
                        distance.iter_mut().zip(column).for_each(|(acc, &b)| *acc += (a - b) * (a - b));
                    }
                    // A non-negative f32's bits order like its value, so `(distance bits, index)`
                    // packed in a u64 orders by distance, then index, with integer comparisons.
                    keys.clear();
                    keys.extend(distance.iter().enumerate().filter(|&(j, _)| j != i).map(|(j, d)| (u64::from(d.to_bits()) << 32) | j as u64));
                    if k > 0 && k < keys.len() {
                        keys.select_nth_unstable(k - 1);
                    }
                    keys.truncate(k);
                    keys.sort_unstable();
                    keys.iter().map(|&key| key as u32).collect::<Vec<u32>>()
                },
            )
            .flatten_iter()
            .collect();
        Ok(Self { k, vocab, table })
    }

    /// Neighbours per token.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Number of tokens in the table (the codebook size).
    pub fn vocab(&self) -> usize {
        self.vocab
    }

    /// Neighbours of `token`, nearest first; empty for a token outside the table.
    pub fn of(&self, token: usize) -> &[u32] {
        let start = token.checked_mul(self.k);
        start.and_then(|s| self.table.get(s..s.checked_add(self.k)?)).unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_first_excluding_self() {
        // Points on a line at 0, 1, 3, 7.
        let table = LatentNeighbours::from_codebook(&[0.0, 1.0, 3.0, 7.0], 1, 2).unwrap();
        assert_eq!(table.of(0), &[1, 2]);
        assert_eq!(table.of(2), &[1, 0]);
        assert_eq!(table.of(3), &[2, 1]);
        assert_eq!(table.of(9), &[] as &[u32]);
        assert_eq!(table.vocab(), 4);
        let all = LatentNeighbours::from_codebook(&[0.0, 1.0, 3.0, 7.0], 1, 99).unwrap();
        assert_eq!(all.k(), 3);
        assert_eq!(all.of(1), &[0, 2, 3]);
    }

    #[test]
    fn rejects_bad_codebooks() {
        assert!(LatentNeighbours::from_codebook(&[0.0, 1.0, 3.0], 2, 1).is_err());
        assert!(matches!(LatentNeighbours::from_codebook(&[0.0, f32::NAN], 1, 1), Err(Error::NonFiniteLogits { .. })));
    }
}
