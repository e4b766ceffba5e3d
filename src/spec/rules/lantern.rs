//! LANTERN (arXiv 2410.03355) and LANTERN++: relaxed acceptance by pooling the target's mass over
//! a drafted token's latent neighbourhood (tokens whose VQ codebook vectors are close).

use rayon::prelude::*;

use super::{ratio_acceptance, AcceptanceRule, Vanilla};
use crate::error::{Error, Result};

/// For every token, its `k` nearest other tokens by Euclidean distance between raw codebook
/// vectors, nearest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LatentNeighbours {
    k: usize,
    table: Vec<u32>,
}

impl LatentNeighbours {
    /// Build the table from a `[vocab, dim]` codebook.
    pub fn from_codebook(codebook: &[f32], dim: usize, k: usize) -> Result<Self> {
        if dim == 0 || codebook.len() % dim != 0 {
            return Err(Error::InvalidRequest(format!("codebook of {} values is not a [vocab, {dim}] table", codebook.len())));
        }
        let vocab = codebook.len() / dim;
        let k = k.min(vocab.saturating_sub(1));
        let row = |i: usize| &codebook[i * dim..(i + 1) * dim];
        let table = (0..vocab)
            .into_par_iter()
            .flat_map_iter(|i| {
                let mut others: Vec<(f32, u32)> = (0..vocab)
                    .filter(|&j| j != i)
                    .map(|j| (row(i).iter().zip(row(j)).map(|(a, b)| (a - b) * (a - b)).sum::<f32>(), j as u32))
                    .collect();
                others.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                others.into_iter().take(k).map(|(_, j)| j)
            })
            .collect();
        Ok(Self { k, table })
    }

    /// Neighbours of `token`, nearest first.
    pub fn of(&self, token: usize) -> &[u32] {
        &self.table[token * self.k..(token + 1) * self.k]
    }
}

/// LANTERN: `p~(x) = p(x) + ` the largest nearest-first cumulative neighbour mass not above
/// `delta` (so the pooled distribution stays within `delta` of `p`); accept with
/// `min(1, p~(x)/q(x))`; resample from the standard `norm((p - q)+)` as the paper does.
#[derive(Clone, Debug, PartialEq)]
pub struct Lantern {
    neighbours: LatentNeighbours,
    delta: f32,
}

impl Lantern {
    /// LANTERN with neighbourhoods `neighbours` and total-variation budget `delta`.
    pub fn new(neighbours: LatentNeighbours, delta: f32) -> Self {
        Self { neighbours, delta }
    }

    /// The pooled target mass `p~(x)`.
    pub fn pooled(&self, p: &[f32], x: usize) -> f32 {
        let mut extra = 0f32;
        for &n in self.neighbours.of(x) {
            if extra + p[n as usize] > self.delta {
                break;
            }
            extra += p[n as usize];
        }
        p[x] + extra
    }
}

impl AcceptanceRule for Lantern {
    fn describe(&self) -> String {
        format!("lantern (k {}, delta {})", self.neighbours.k, self.delta)
    }

    fn accept_probability(&self, _depth: usize, p: &[f32], q: &[f32], x: usize) -> f32 {
        ratio_acceptance(self.pooled(p, x), q[x])
    }

    fn residual(&self, depth: usize, p: &[f32], q: &[f32]) -> Vec<f32> {
        Vanilla.residual(depth, p, q)
    }
}

/// LANTERN++: `p~(x) = min(lambda p(x), p(x) + sum of the k neighbours' mass)`, accept with
/// `min(1, p~(x)/q(x))`, resample from `norm((p - q)+)`.
#[derive(Clone, Debug, PartialEq)]
pub struct LanternPlusPlus {
    neighbours: LatentNeighbours,
    lambda: f32,
}

impl LanternPlusPlus {
    /// LANTERN++ with neighbourhoods `neighbours` and cap factor `lambda`.
    pub fn new(neighbours: LatentNeighbours, lambda: f32) -> Self {
        Self { neighbours, lambda }
    }

    /// The capped pooled target mass `p~(x)`.
    pub fn pooled(&self, p: &[f32], x: usize) -> f32 {
        let neighbourhood: f32 = self.neighbours.of(x).iter().map(|&n| p[n as usize]).sum();
        (p[x] + neighbourhood).min(self.lambda * p[x])
    }
}

impl AcceptanceRule for LanternPlusPlus {
    fn describe(&self) -> String {
        format!("lantern++ (k {}, lambda {})", self.neighbours.k, self.lambda)
    }

    fn accept_probability(&self, _depth: usize, p: &[f32], q: &[f32], x: usize) -> f32 {
        ratio_acceptance(self.pooled(p, x), q[x])
    }

    fn residual(&self, depth: usize, p: &[f32], q: &[f32]) -> Vec<f32> {
        Vanilla.residual(depth, p, q)
    }
}
