//! A convolutional image decoder of the taming / LDM family run from its step list
//! ([`Step`]): the single executor of LlamaGen's VQ decoder and MAR's KL VAE decoder, which
//! differ only in their steps and tensor names.

use std::collections::HashMap;

use crate::error::Result;
use crate::model::vq::ops::{conv2d, group_norm, spatial_attention, swish, upsample2x, FeatureMap};
use crate::model::vq::plan::{step_tensor_shapes, Step};
use crate::weights::WeightFile;

/// A loaded decoder: its steps and their weights (converted to f32 once).
pub struct DecoderNet {
    plan: Vec<Step>,
    tensors: HashMap<String, Vec<f32>>,
    norm_groups: usize,
}

impl DecoderNet {
    /// Load every tensor `plan` uses from `file`, checking names and shapes; GroupNorms use
    /// `norm_groups` groups.
    pub fn load(file: &WeightFile, plan: Vec<Step>, norm_groups: usize) -> Result<Self> {
        let mut tensors = HashMap::new();
        for (name, shape) in step_tensor_shapes(&plan) {
            let values = file.tensor_with_shape(&name, &shape)?.to_f32().into_owned();
            tensors.insert(name, values);
        }
        Ok(Self { plan, tensors, norm_groups })
    }

    /// Run every step on `x`.
    pub fn run(&self, x: FeatureMap) -> FeatureMap {
        self.plan.iter().fold(x, |x, step| self.step(x, step))
    }

    fn tensor(&self, name: &str) -> &[f32] {
        // Every name the plan uses was loaded (and shape-checked) from the same plan.
        &self.tensors[name]
    }

    fn conv(&self, x: &FeatureMap, name: &str, out: usize, k: usize) -> FeatureMap {
        conv2d(x, self.tensor(&format!("{name}.weight")), self.tensor(&format!("{name}.bias")), out, k)
    }

    fn norm(&self, x: &FeatureMap, name: &str) -> FeatureMap {
        group_norm(x, self.norm_groups, self.tensor(&format!("{name}.weight")), self.tensor(&format!("{name}.bias")))
    }

    fn norm_swish(&self, x: &FeatureMap, name: &str) -> FeatureMap {
        let mut h = self.norm(x, name);
        swish(&mut h);
        h
    }

    fn step(&self, x: FeatureMap, step: &Step) -> FeatureMap {
        match step {
            Step::Conv { name, out, k, .. } => self.conv(&x, name, *out, *k),
            Step::Res { name, inp, out } => {
                let h = self.conv(&self.norm_swish(&x, &format!("{name}.norm1")), &format!("{name}.conv1"), *out, 3);
                let h = self.conv(&self.norm_swish(&h, &format!("{name}.norm2")), &format!("{name}.conv2"), *out, 3);
                let mut skip = if inp != out { self.conv(&x, &format!("{name}.nin_shortcut"), *out, 1) } else { x };
                skip.data.iter_mut().zip(&h.data).for_each(|(s, v)| *s += v);
                skip
            }
            Step::Attn { name, ch } => {
                let h = self.norm(&x, &format!("{name}.norm"));
                let [q, k, v] = ["q", "k", "v"].map(|p| self.conv(&h, &format!("{name}.{p}"), *ch, 1));
                let attended = self.conv(&spatial_attention(&q, &k, &v), &format!("{name}.proj_out"), *ch, 1);
                let mut out = x;
                out.data.iter_mut().zip(&attended.data).for_each(|(s, v)| *s += v);
                out
            }
            Step::Upsample { name, ch } => self.conv(&upsample2x(&x), &format!("{name}.conv"), *ch, 3),
            Step::NormSwish { name, .. } => self.norm_swish(&x, name),
        }
    }
}
