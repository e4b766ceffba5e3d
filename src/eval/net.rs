//! The evaluation network: a small CNN classifier of the demo's 32x32 images whose penultimate
//! layer (`fc1`, before its ReLU) is the feature space of FID and precision/recall (as
//! Inception's pool3 is on ImageNet).
//! Trained and exported by `tools/train/train_eval_net.py`; runs on the CPU ops of the VQ
//! decoder (`conv2d`) plus [`super::pool`].

use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::image::Image;
use crate::model::vq::ops::{conv2d, FeatureMap};
use crate::weights::WeightFile;

use super::pool::{max_pool2, relu, resize_bilinear};

/// `eval_net.json`: the network's shapes and where its weights and real-data reference live.
#[derive(Clone, Debug, Deserialize)]
pub struct EvalNetConfig {
    /// Weights file (safetensors), relative to the directory.
    pub file: String,
    /// Real-data reference statistics (safetensors), relative to the directory.
    pub reference: String,
    /// Input side in pixels (square RGB images).
    pub image_size: usize,
    /// Output channels of the three 3x3 convolutions (each followed by ReLU and 2x2 max-pooling).
    pub channels: Vec<usize>,
    /// Width of the feature layer (`fc1`, taken before its ReLU).
    pub feature_dim: usize,
    /// Classes of the classifier (`fc2`).
    pub num_classes: usize,
    /// Accuracy on the test split, measured at export.
    pub test_accuracy: f64,
}

/// A dense layer `y = W x + b`, `W [out, in]`.
struct Linear {
    weight: Vec<f32>,
    bias: Vec<f32>,
    inputs: usize,
}

impl Linear {
    fn apply(&self, x: &[f32]) -> Vec<f32> {
        self.weight.chunks(self.inputs).zip(&self.bias).map(|(row, b)| b + row.iter().zip(x).map(|(w, v)| w * v).sum::<f32>()).collect()
    }
}

/// A 3x3 convolution with its output width.
struct Conv {
    weight: Vec<f32>,
    bias: Vec<f32>,
    out_channels: usize,
}

/// The loaded evaluation network.
pub struct EvalNet {
    config: EvalNetConfig,
    dir: PathBuf,
    convs: Vec<Conv>,
    fc1: Linear,
    fc2: Linear,
}

/// The config file `spire eval` looks for in a weights directory.
pub const EVAL_NET_CONFIG: &str = "eval_net.json";

fn tensor(file: &WeightFile, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
    Ok(file.tensor_with_shape(name, shape)?.to_f32().into_owned())
}

impl EvalNet {
    /// Load `dir/eval_net.json` and its weights; a missing file is an error saying how to make one.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(EVAL_NET_CONFIG);
        let text = std::fs::read_to_string(&path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => Error::Config {
                path: path.clone(),
                reason: "no evaluation network here: `spire eval` needs eval_net.json and its weights (weights/demo ships them; \
                         tools/train/train_eval_net.py trains one)"
                    .into(),
            },
            _ => Error::Io { path: path.clone(), source },
        })?;
        let config: EvalNetConfig = serde_json::from_str(&text).map_err(|e| Error::Config { path: path.clone(), reason: e.to_string() })?;
        if config.channels.len() != 3 || config.image_size != 32 {
            return Err(Error::Config { path, reason: format!("expected 3 convolutions on 32x32 images, found {:?} on {}", config.channels, config.image_size) });
        }
        let file = WeightFile::open(&dir.join(&config.file))?;
        let mut convs = Vec::new();
        let mut inputs = 3;
        for (i, &out_channels) in config.channels.iter().enumerate() {
            let weight = tensor(&file, &format!("conv{}.weight", i + 1), &[out_channels, inputs, 3, 3])?;
            let bias = tensor(&file, &format!("conv{}.bias", i + 1), &[out_channels])?;
            convs.push(Conv { weight, bias, out_channels });
            inputs = out_channels;
        }
        let flat = inputs * (config.image_size >> 3).pow(2);
        let (features, classes) = (config.feature_dim, config.num_classes);
        let fc1 = Linear { weight: tensor(&file, "fc1.weight", &[features, flat])?, bias: tensor(&file, "fc1.bias", &[features])?, inputs: flat };
        let fc2 = Linear { weight: tensor(&file, "fc2.weight", &[classes, features])?, bias: tensor(&file, "fc2.bias", &[classes])?, inputs: features };
        Ok(Self { config, dir: dir.to_path_buf(), convs, fc1, fc2 })
    }

    /// The parsed `eval_net.json`.
    pub fn config(&self) -> &EvalNetConfig {
        &self.config
    }

    /// The path of the real-data reference file.
    pub fn reference_path(&self) -> PathBuf {
        self.dir.join(&self.config.reference)
    }

    /// The feature vector of one image (its pixels mapped to [-1, 1] as in training; an image of
    /// another size is first resized bilinearly to the network's input, as FID pipelines resize
    /// to Inception's).
    pub fn features(&self, image: &Image) -> Vec<f32> {
        let side = self.config.image_size;
        let plane = image.width * image.height;
        let mut x = FeatureMap::zeros(3, image.height, image.width);
        for (i, pixel) in image.rgb.chunks_exact(3).enumerate() {
            for (c, &v) in pixel.iter().enumerate() {
                x.data[c * plane + i] = v as f32 / 127.5 - 1.0;
            }
        }
        if (image.width, image.height) != (side, side) {
            x = resize_bilinear(&x, side, side);
        }
        for conv in &self.convs {
            let mut y = conv2d(&x, &conv.weight, &conv.bias, conv.out_channels, 3);
            relu(&mut y.data);
            x = max_pool2(&y);
        }
        self.fc1.apply(&x.data)
    }

    /// The features of many images, in parallel.
    pub fn features_batch(&self, images: &[Image]) -> Vec<Vec<f32>> {
        images.par_iter().map(|image| self.features(image)).collect()
    }

    /// Class logits from a feature vector: `fc2(relu(features))`.
    pub fn logits(&self, features: &[f32]) -> Vec<f32> {
        let mut hidden = features.to_vec();
        relu(&mut hidden);
        self.fc2.apply(&hidden)
    }

    /// The most likely class of a feature vector.
    pub fn classify(&self, features: &[f32]) -> usize {
        let logits = self.logits(features);
        (0..logits.len()).max_by(|&a, &b| logits[a].total_cmp(&logits[b])).unwrap_or(0)
    }
}
