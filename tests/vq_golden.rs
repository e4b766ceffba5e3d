//! The VQ decoder against golden outputs: the NumPy float64 reference on the tiny model
//! (tests/data/tiny) and the training code's export-time decode of the demo tokenizer.

use std::path::Path;

use spire::engine::Image;
use spire::model::vq::VqDecoder;
use spire::weights::{ModelConfig, WeightFile};

fn decoder(dir: &Path) -> (VqDecoder, usize) {
    let config = ModelConfig::load(dir).unwrap();
    let vq = config.vq.unwrap();
    (VqDecoder::load(&WeightFile::open(&dir.join(&vq.file)).unwrap(), &vq).unwrap(), config.gpt.grid_size())
}

fn max_relative_error(got: &[f32], want: &[f32]) -> f32 {
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    got.iter().zip(want).fold(0f32, |m, (a, b)| m.max((a - b).abs())) / scale
}

#[test]
fn tiny_decoder_matches_numpy_reference_pixels_and_bytes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tiny");
    let bytes = std::fs::read(dir.join("golden.safetensors")).unwrap();
    let golden = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let tokens: Vec<u32> = golden.tensor("tokens").unwrap().data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap()) as u32).collect();
    let pixels: Vec<f32> = golden.tensor("vq_pixels").unwrap().data().chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect();
    let rgb = golden.tensor("vq_rgb").unwrap().data().to_vec();

    let (vq, grid) = decoder(&dir);
    let out = vq.decode_pixels(&tokens, grid, grid).unwrap();
    assert_eq!((out.channels, out.height, out.width), (3, 8, 8));
    let err = max_relative_error(&out.data, &pixels);
    assert!(err < 1e-4, "VQ pixels: max relative error {err}");
    assert_eq!(Image::from_chw(out.channels, out.height, out.width, &out.data).rgb, rgb, "RGB bytes differ from the reference mapping");
}

#[test]
fn demo_decoder_matches_export_time_pixels() {
    #[derive(serde::Deserialize)]
    struct Golden {
        tokens: Vec<u32>,
        vq_pixels: Vec<Vec<Vec<f32>>>,
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/demo");
    let golden: Golden = serde_json::from_str(&std::fs::read_to_string(dir.join("golden.json")).unwrap()).unwrap();
    let (vq, grid) = decoder(&dir);
    let out = vq.decode_pixels(&golden.tokens, grid, grid).unwrap();
    let want: Vec<f32> = golden.vq_pixels.iter().flatten().flatten().copied().collect();
    let err = max_relative_error(&out.data, &want);
    assert!(err < 1e-3, "demo VQ pixels: max relative error {err}");
}

#[test]
fn out_of_range_token_and_wrong_grid_are_errors() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tiny");
    let (vq, grid) = decoder(&dir);
    let err = vq.decode(&[64; 16], grid, grid).unwrap_err().to_string();
    assert!(err.contains("token id 64"), "{err}");
    let err = vq.decode(&[0; 15], grid, grid).unwrap_err().to_string();
    assert!(err.contains("15 tokens"), "{err}");
}

#[test]
fn png_round_trip_keeps_size_and_pixels() {
    let image = Image { width: 3, height: 2, rgb: (0..18).map(|v| v as u8 * 10).collect() };
    let path = std::env::temp_dir().join(format!("spire-png-{}.png", std::process::id()));
    image.save_png(&path).unwrap();
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), (3, 2));
    assert_eq!(&buf[..info.buffer_size()], &image.rgb[..]);
    let grid = Image::grid(&[image.clone(), image], 2);
    assert_eq!((grid.width, grid.height), (8, 2));
}
