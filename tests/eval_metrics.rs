//! `spire eval`'s metrics against NumPy/SciPy (tools/reference/eval_metrics_ref.py) and the
//! evaluation network's forward against PyTorch (tools/train/train_eval_net.py).

use std::path::Path;

use serde::Deserialize;
use spire::eval::bootstrap::{normal_interval, resamples};
use spire::eval::frechet::{FrechetReference, Gaussian};
use spire::eval::manifold::precision_recall;
use spire::eval::net::EvalNet;
use spire::eval::reference::RealReference;
use spire::Image;

#[derive(Deserialize)]
struct MetricsGolden {
    real: Vec<Vec<f32>>,
    fake: Vec<Vec<f32>>,
    k: usize,
    logits: Vec<Vec<f32>>,
    labels: Vec<usize>,
    fid: f64,
    fid_identical: f64,
    accuracy: f64,
    precision: f64,
    recall: f64,
    resamples: Vec<Vec<usize>>,
    fid_interval: [f64; 2],
    accuracy_interval: [f64; 2],
}

fn load<T: serde::de::DeserializeOwned>(name: &str) -> T {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn rows(set: &[Vec<f32>]) -> Vec<&[f32]> {
    set.iter().map(Vec::as_slice).collect()
}

fn close(a: f64, b: f64, tol: f64, what: &str) {
    assert!((a - b).abs() <= tol * (1.0 + b.abs()), "{what}: {a} vs reference {b}");
}

#[test]
fn metrics_match_numpy_and_scipy() {
    let g: MetricsGolden = load("eval_metrics_golden.json");
    let reference = FrechetReference::new(Gaussian::fit(&rows(&g.real)));
    let fid_of = |indices: &[usize]| reference.distance(&Gaussian::fit(&indices.iter().map(|&i| g.fake[i].as_slice()).collect::<Vec<_>>()));
    let all: Vec<usize> = (0..g.fake.len()).collect();
    close(fid_of(&all), g.fid, 1e-6, "FID");
    assert!(reference.distance(&Gaussian::fit(&rows(&g.real))).abs() < 1e-9 + g.fid_identical.abs() * 10.0, "FID of a set with itself");

    let correct: Vec<f64> = g.logits.iter().zip(&g.labels).map(|(l, &y)| f64::from(u8::from((0..l.len()).max_by(|&a, &b| l[a].total_cmp(&l[b])) == Some(y)))).collect();
    let accuracy_of = |indices: &[usize]| indices.iter().map(|&i| correct[i]).sum::<f64>() / indices.len() as f64;
    close(accuracy_of(&all), g.accuracy, 1e-12, "accuracy");

    let pr = precision_recall(&g.real, &g.fake, g.k);
    close(pr.precision, g.precision, 1e-12, "precision");
    close(pr.recall, g.recall, 1e-12, "recall");

    let fids: Vec<f64> = g.resamples.iter().map(|r| fid_of(r)).collect();
    let interval = normal_interval(g.fid, &fids);
    close(interval.lo, g.fid_interval[0], 1e-6, "FID interval low");
    close(interval.hi, g.fid_interval[1], 1e-6, "FID interval high");
    let accuracies: Vec<f64> = g.resamples.iter().map(|r| accuracy_of(r)).collect();
    let interval = normal_interval(g.accuracy, &accuracies);
    close(interval.lo, g.accuracy_interval[0], 1e-9, "accuracy interval low");
    close(interval.hi, g.accuracy_interval[1], 1e-9, "accuracy interval high");
}

#[test]
fn resamples_are_reproducible_and_in_range() {
    let a = resamples(50, 3, 7);
    assert_eq!(a, resamples(50, 3, 7));
    assert_ne!(a, resamples(50, 3, 8));
    assert!(a.iter().all(|r| r.len() == 50 && r.iter().all(|&i| i < 50)));
}

#[derive(Deserialize)]
struct NetGolden {
    pixels: Vec<Vec<Vec<u8>>>,
    labels: Vec<usize>,
    features: Vec<Vec<f32>>,
    logits: Vec<Vec<f32>>,
}

fn demo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/weights/demo"))
}

#[test]
fn eval_net_matches_pytorch() {
    let g: NetGolden = load("eval_net_golden.json");
    let net = EvalNet::load(demo()).unwrap();
    for (i, gray) in g.pixels.iter().enumerate() {
        let rgb = gray.iter().flatten().flat_map(|&v| [v, v, v]).collect();
        let features = net.features(&Image { width: 32, height: 32, rgb });
        for (a, b) in features.iter().zip(&g.features[i]) {
            close(*a as f64, *b as f64, 1e-4, "feature");
        }
        for (a, b) in net.logits(&features).iter().zip(&g.logits[i]) {
            close(*a as f64, *b as f64, 1e-4, "logit");
        }
        assert_eq!(net.classify(&features), g.labels[i], "image {i} is classified correctly");
    }
}

#[test]
fn shipped_reference_loads_and_the_test_split_is_close_to_train() {
    let net = EvalNet::load(demo()).unwrap();
    let reference = RealReference::load(&net.reference_path(), net.config().feature_dim).unwrap();
    assert_eq!(reference.test_sample.len(), reference.test_labels.len());
    let fid = reference.train.distance(&Gaussian::fit(&rows(&reference.test_sample)));
    assert!(fid < 3.0, "test split FID against train {fid} (sampling bias alone is about 1.8 at 2,000 images)");
    let correct = reference.test_sample.iter().zip(&reference.test_labels).filter(|(f, &y)| net.classify(f) == y as usize).count();
    assert!(correct as f64 / reference.test_labels.len() as f64 > 0.85);
}

#[test]
fn missing_eval_net_names_the_file_and_the_fix() {
    let err = EvalNet::load(Path::new("tests/data/tiny")).err().unwrap().to_string();
    assert!(err.contains("eval_net.json") && err.contains("train_eval_net.py"), "{err}");
}
