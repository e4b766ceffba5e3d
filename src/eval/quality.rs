//! One generated set scored against the real reference: FID and class accuracy with bootstrap
//! intervals, precision and recall.

use rayon::prelude::*;
use serde::Serialize;

use super::bootstrap::{normal_interval, resamples, Interval};
use super::frechet::{FrechetReference, Gaussian};
use super::manifold::{precision_recall, PrecisionRecall, DEFAULT_K};

/// How sets are scored.
#[derive(Clone, Copy, Debug)]
pub struct Scoring {
    /// Bootstrap resamples per interval.
    pub resamples: usize,
    /// Seed of the resample indices (the same for every set of one size: paired resamples).
    pub seed: u64,
}

impl Default for Scoring {
    fn default() -> Self {
        Self { resamples: 200, seed: 0 }
    }
}

/// The quality of one generated set.
#[derive(Clone, Debug, Serialize)]
pub struct Quality {
    /// FID against the training split.
    pub fid: f64,
    /// Its 95% bootstrap interval.
    pub fid_interval: Interval,
    /// Fraction classified as the class requested.
    pub accuracy: f64,
    /// Its 95% bootstrap interval.
    pub accuracy_interval: Interval,
    /// k-NN precision and recall against the training sample.
    #[serde(flatten)]
    pub precision_recall: PrecisionRecall,
    /// FID on each bootstrap resample (for intervals of differences between sets).
    #[serde(skip)]
    pub fid_resampled: Vec<f64>,
}

impl Quality {
    /// The 95% interval of `self.fid - other.fid` from paired bootstrap resamples.
    pub fn fid_difference_interval(&self, other: &Quality) -> Interval {
        let differences: Vec<f64> = self.fid_resampled.iter().zip(&other.fid_resampled).map(|(a, b)| a - b).collect();
        normal_interval(self.fid - other.fid, &differences)
    }
}

/// Score `features` (at least two) whose images were requested as `classes` and were classified
/// as `predicted`, against the training split `train` and its feature sample `train_sample`.
pub fn score(features: &[Vec<f32>], classes: &[u32], predicted: &[u32], train: &FrechetReference, train_sample: &[Vec<f32>], scoring: Scoring) -> Quality {
    let fid_of = |indices: &[usize]| train.distance(&Gaussian::fit(&indices.iter().map(|&i| features[i].as_slice()).collect::<Vec<_>>()));
    let correct: Vec<f64> = classes.iter().zip(predicted).map(|(c, p)| f64::from(u8::from(c == p))).collect();
    let accuracy_of = |indices: &[usize]| indices.iter().map(|&i| correct[i]).sum::<f64>() / indices.len() as f64;
    let all: Vec<usize> = (0..features.len()).collect();
    let draws = resamples(features.len(), scoring.resamples, scoring.seed);
    let fid_resampled: Vec<f64> = draws.par_iter().map(|d| fid_of(d)).collect();
    let accuracy_resampled: Vec<f64> = draws.iter().map(|d| accuracy_of(d)).collect();
    let (fid, accuracy) = (fid_of(&all), accuracy_of(&all));
    Quality {
        fid,
        fid_interval: normal_interval(fid, &fid_resampled),
        accuracy,
        accuracy_interval: normal_interval(accuracy, &accuracy_resampled),
        precision_recall: precision_recall(train_sample, features, DEFAULT_K),
        fid_resampled,
    }
}
