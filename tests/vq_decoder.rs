//! The VQ decoder on random weights written inside the test: output shape, determinism, dtype
//! handling, and load/decode errors that name what is wrong. (Golden outputs: `vq_golden.rs`.)

mod common;

use std::path::{Path, PathBuf};
use std::time::Instant;

use common::temp_dir;
use spire::engine::random_tiny::tiny_config;
use spire::model::vq::{vq_tensor_shapes, VqDecoder};
use spire::weights::synthetic::{random_tensors, write_safetensors, HostTensor};
use spire::weights::{DType, VqConfig, WeightFile};
use spire::Error;

/// The tiny VQ config: codebook 64x4, ch 8, ch_mult [1, 2] (so `conv_blocks.1.res.0` has a
/// `nin_shortcut`), one upsampling stage.
fn tiny_vq() -> VqConfig {
    tiny_config().vq.expect("the tiny config ships a VQ decoder")
}

/// Random weights for `cfg` with `edit` applied to the tensor list, written to a fresh temp dir.
fn write_vq(tag: &str, cfg: &VqConfig, dtype: DType, edit: impl FnOnce(&mut Vec<HostTensor>)) -> PathBuf {
    let mut tensors = random_tensors(&vq_tensor_shapes(cfg), 7);
    edit(&mut tensors);
    let path = temp_dir(tag).join(&cfg.file);
    write_safetensors(&path, &tensors, dtype).expect("write VQ weights");
    path
}

fn load(path: &Path, cfg: &VqConfig) -> spire::Result<VqDecoder> {
    VqDecoder::load(&WeightFile::open(path)?, cfg)
}

fn tokens(n: usize, vocab: usize) -> Vec<u32> {
    (0..n).map(|i| ((i * 37 + 5) % vocab) as u32).collect()
}

#[test]
fn decode_has_the_grid_shape_and_is_deterministic() {
    let cfg = tiny_vq();
    let path = write_vq("vq-shape", &cfg, DType::F32, |_| {});
    let vq = load(&path, &cfg).unwrap();
    assert_eq!(vq.upscale(), 2);
    // A non-square grid catches height/width mix-ups.
    let ids = tokens(3 * 5, cfg.codebook_size);
    let pixels = vq.decode_pixels(&ids, 3, 5).unwrap();
    assert_eq!((pixels.channels, pixels.height, pixels.width), (3, 6, 10));
    assert!(pixels.data.iter().all(|v| v.is_finite()));
    let image = vq.decode(&ids, 3, 5).unwrap();
    assert_eq!((image.width, image.height, image.rgb.len()), (10, 6, 10 * 6 * 3));
    assert_eq!(vq.decode(&ids, 3, 5).unwrap(), image, "decoding twice differs");
    assert_eq!(load(&path, &cfg).unwrap().decode(&ids, 3, 5).unwrap(), image, "a second load decodes differently");
    let other = tokens(3 * 5, cfg.codebook_size - 1);
    assert_ne!(vq.decode(&other, 3, 5).unwrap(), image, "different tokens gave the same image");
}

#[test]
fn f16_and_bf16_weights_decode_close_to_f32() {
    let cfg = tiny_vq();
    let ids = tokens(16, cfg.codebook_size);
    let decode = |tag, dtype| load(&write_vq(tag, &cfg, dtype, |_| {}), &cfg).unwrap().decode_pixels(&ids, 4, 4).unwrap();
    let want = decode("vq-f32", DType::F32);
    let scale = want.data.iter().fold(0f32, |m, v| m.max(v.abs()));
    for (tag, dtype, tol) in [("vq-f16", DType::F16, 1e-2), ("vq-bf16", DType::BF16, 5e-2)] {
        let got = decode(tag, dtype);
        let err = got.data.iter().zip(&want.data).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale;
        assert!(err < tol, "{dtype:?}: max relative error {err}");
    }
}

#[test]
fn missing_tensor_is_an_error_naming_tensor_and_file() {
    let cfg = tiny_vq();
    let name = "decoder.conv_blocks.1.res.0.nin_shortcut.weight";
    let path = write_vq("vq-missing", &cfg, DType::F32, |t| t.retain(|t| t.name != name));
    let err = load(&path, &cfg).err().expect("load must fail");
    assert!(matches!(err, Error::MissingTensor { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(name) && msg.contains(&path.display().to_string()), "{msg}");
}

#[test]
fn wrong_shape_is_an_error_naming_the_tensor() {
    let cfg = tiny_vq();
    let name = "decoder.mid.1.q.weight";
    let path = write_vq("vq-shape-err", &cfg, DType::F32, |tensors| {
        let t = tensors.iter_mut().find(|t| t.name == name).unwrap();
        t.shape = vec![t.shape[0], t.shape[1], 3, 3];
        t.values = vec![0.0; t.shape.iter().product()];
    });
    let err = load(&path, &cfg).err().expect("load must fail");
    assert!(matches!(&err, Error::ShapeMismatch { expected, found, .. } if expected == &[16, 16, 1, 1] && found == &[16, 16, 3, 3]), "{err:?}");
    assert!(err.to_string().contains(name), "{err}");
}

#[test]
fn truncated_file_is_a_corrupt_weights_error() {
    let cfg = tiny_vq();
    let path = write_vq("vq-truncated", &cfg, DType::F32, |_| {});
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = load(&path, &cfg).err().expect("load must fail");
    assert!(matches!(err, Error::CorruptWeights { .. }), "{err:?}");
    assert!(err.to_string().contains(&path.display().to_string()), "{err}");
}

#[test]
fn config_the_decoder_cannot_run_is_a_config_error() {
    let cfg = tiny_vq();
    let path = write_vq("vq-bad-config", &cfg, DType::F32, |_| {});
    for bad in [
        VqConfig { norm_groups: 3, ..cfg.clone() },
        VqConfig { norm_groups: 0, ..cfg.clone() },
        VqConfig { ch_mult: vec![1, 0], ..cfg.clone() },
        VqConfig { ch_mult: vec![], ..cfg.clone() },
        VqConfig { codebook_embed_dim: 0, ..cfg.clone() },
    ] {
        let err = load(&path, &bad).err().expect("load must fail");
        assert!(matches!(err, Error::Config { .. }), "{bad:?}: {err:?}");
    }
}

#[test]
fn bad_requests_are_invalid_request_errors() {
    let cfg = tiny_vq();
    let vq = load(&write_vq("vq-requests", &cfg, DType::F32, |_| {}), &cfg).unwrap();
    let mut ids = tokens(16, cfg.codebook_size);
    ids[9] = 1000;
    let cases: [(&[u32], usize, usize, &str); 4] = [
        (&ids, 4, 4, "token id 1000"),
        (&ids[..15], 4, 4, "15 tokens"),
        (&[], 0, 0, "empty"),
        (&ids, usize::MAX, 2, "16 tokens"),
    ];
    for (tokens, h, w, needle) in cases {
        let err = vq.decode(tokens, h, w).unwrap_err();
        assert!(matches!(err, Error::InvalidRequest(_)), "{err:?}");
        assert!(err.to_string().contains(needle), "{err}");
    }
}

/// The real VQ-16 (ch 128, ch_mult [1,1,2,2,4], z 256) on a 16x16 grid -> 256x256, random
/// weights. Slow in debug builds: `cargo test --release --test vq_decoder -- --ignored --nocapture`.
#[test]
#[ignore]
fn vq16_decode_time() {
    let cfg = VqConfig {
        file: "vq.safetensors".into(),
        codebook_size: 16384,
        codebook_embed_dim: 8,
        codebook_l2_norm: true,
        z_channels: 256,
        ch: 128,
        ch_mult: vec![1, 1, 2, 2, 4],
        num_res_blocks: 2,
        out_channels: 3,
        norm_groups: 32,
    };
    let path = write_vq("vq16", &cfg, DType::F16, |_| {});
    let start = Instant::now();
    let vq = load(&path, &cfg).unwrap();
    println!("VQ-16 load: {:.2?}", start.elapsed());
    let ids = tokens(256, cfg.codebook_size);
    for run in 0..3 {
        let start = Instant::now();
        let image = vq.decode(&ids, 16, 16).unwrap();
        println!("VQ-16 decode 16x16 -> {}x{} (run {run}): {:.2?}", image.width, image.height, start.elapsed());
    }
    // The random VQ-16 file is ~80 MB: do not leave it behind.
    std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
}
