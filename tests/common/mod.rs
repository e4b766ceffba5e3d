//! Helpers shared by integration tests: temp dirs, tiny random models, statistics, golden files.
#![allow(dead_code)]

pub mod devices;
pub mod golden;
pub mod stats;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use spire::model::gpt_tensor_shapes;
use spire::weights::synthetic::{random_tensors, write_safetensors};
use spire::weights::{DType, GptConfig};

/// A fresh, empty directory under the system temp dir.
pub fn temp_dir(tag: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("spire-test-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// The tiny LlamaGen-architecture target config of `--random-tiny` (dim 32, 2 layers, 4x4 grid).
pub fn tiny_gpt_config() -> GptConfig {
    spire::engine::random_tiny::tiny_config().gpt
}

/// Write random weights for `config` into `dir/config.file`, leaving out tensor `skip`.
pub fn write_gpt(dir: &std::path::Path, config: &GptConfig, dtype: DType, seed: u64, skip: Option<&str>) -> PathBuf {
    let shapes: Vec<_> = gpt_tensor_shapes(config).into_iter().filter(|(n, _)| Some(n.as_str()) != skip).collect();
    let path = dir.join(&config.file);
    write_safetensors(&path, &random_tensors(&shapes, seed), dtype).expect("write weights");
    path
}
