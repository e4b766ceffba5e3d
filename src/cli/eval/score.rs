//! Scoring sets of images for `spire eval`, the same for every model family: the evaluation
//! network's features, its classes, and the quality against the shipped real-data reference.

use std::path::Path;

use anyhow::Context;

use crate::eval::net::EvalNet;
use crate::eval::quality::{score, Quality, Scoring};
use crate::eval::reference::RealReference;
use crate::Image;

/// The evaluation network with its real-data reference.
pub struct Scorer {
    net: EvalNet,
    reference: RealReference,
    scoring: Scoring,
}

impl Scorer {
    /// Load the network of `dir` (its `eval_net.json`) and its reference, with `resamples`
    /// bootstrap resamples per interval.
    pub fn load(dir: &Path, resamples: usize) -> anyhow::Result<Self> {
        let net = EvalNet::load(dir)?;
        let reference = RealReference::load(&net.reference_path(), net.config().feature_dim).context("loading the real-data reference of the evaluation network")?;
        Ok(Self { net, reference, scoring: Scoring { resamples, ..Scoring::default() } })
    }

    /// The network's accuracy on the test split, measured at export.
    pub fn test_accuracy(&self) -> f64 {
        self.net.config().test_accuracy
    }

    /// The first `n` test-split images (fewer if the reference holds fewer) against the
    /// training split, the best a model can do at this sample size: how many, and their quality.
    pub fn test_split(&self, n: usize) -> (usize, Quality) {
        let n = n.min(self.reference.test_sample.len());
        let test = &self.reference.test_sample[..n];
        (n, self.score_features(test, &self.reference.test_labels[..n]))
    }

    /// The quality of `images`, generated for `classes`.
    pub fn score(&self, images: &[Image], classes: &[u32]) -> Quality {
        self.score_features(&self.net.features_batch(images), classes)
    }

    fn score_features(&self, features: &[Vec<f32>], classes: &[u32]) -> Quality {
        let predicted: Vec<u32> = features.iter().map(|f| self.net.classify(f) as u32).collect();
        score(features, classes, &predicted, &self.reference.train, &self.reference.train_sample, self.scoring)
    }
}
