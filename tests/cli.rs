//! The `spire` binary: the README's generate command, --random-tiny, inspect, bench --json, and
//! error messages that say what to do.

use std::process::Command;

fn spire(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_spire")).args(args).current_dir(env!("CARGO_MANIFEST_DIR")).output().expect("run spire")
}

fn out_path(name: &str) -> String {
    std::env::temp_dir().join(format!("spire-cli-{}-{name}", std::process::id())).display().to_string()
}

#[test]
fn generate_with_demo_weights_writes_a_png() {
    let out = out_path("demo.png");
    let run = spire(&["generate", "--weights", "weights/demo", "--class", "3", "--seed", "1", "--out", &out]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
}

#[test]
fn same_seed_gives_the_same_png() {
    let (a, b) = (out_path("a.png"), out_path("b.png"));
    for out in [&a, &b] {
        let run = spire(&["generate", "--random-tiny", "--class", "1", "--seed", "9", "--spec", "vanilla", "--out", out]);
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        assert!(String::from_utf8_lossy(&run.stderr).contains("RANDOM weights"), "--random-tiny must be labelled");
    }
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
}

#[test]
fn inspect_lists_models_and_parameters() {
    let run = spire(&["inspect", "weights/demo"]);
    assert!(run.status.success());
    let text = String::from_utf8_lossy(&run.stdout);
    assert!(text.contains("gpt.safetensors") && text.contains("parameters"), "{text}");
}

#[test]
fn bench_json_reports_every_mode_against_ar() {
    let run = spire(&["bench", "--random-tiny", "--images", "2", "--modes", "vanilla,cool", "--json"]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let rows: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let modes: Vec<&str> = rows.as_array().unwrap().iter().map(|r| r["mode"].as_str().unwrap()).collect();
    assert_eq!(modes, ["ar", "vanilla", "cool"]);
    for key in ["latency_ms_per_image", "tokens_per_target_forward", "mean_accepted_length", "acceptance_rate", "speedup_vs_ar"] {
        assert!(rows[1][key].is_number(), "missing {key}");
    }
}

#[test]
fn bench_sweeps_chain_lengths_over_rounds() {
    let run = spire(&["bench", "--random-tiny", "--images", "2", "--modes", "vanilla", "--draft-lens", "1,3", "--rounds", "2", "--json"]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let rows: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let rows: Vec<(&str, &str)> = rows.as_array().unwrap().iter().map(|r| (r["mode"].as_str().unwrap(), r["draft"].as_str().unwrap())).collect();
    assert_eq!(rows, [("ar", "-"), ("vanilla", "1"), ("vanilla", "3")]);
    let run = spire(&["bench", "--random-tiny", "--draft-lens", "2", "--tree", "2,1"]);
    assert!(String::from_utf8_lossy(&run.stderr).contains("cannot be combined with --tree"));
}

#[test]
fn errors_say_what_is_wrong_and_exit_nonzero() {
    let run = spire(&["generate", "--weights", "weights/demo", "--class", "12"]);
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("class id 12 out of range"));
    let run = spire(&["generate", "--weights", "no/such/dir"]);
    assert!(String::from_utf8_lossy(&run.stderr).contains("no/such/dir/config.json"));
    let run = spire(&["generate", "--random-tiny", "--device", "cuda"]);
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("--device cpu"));
}

#[test]
fn a_mar_directory_generates_with_cspd_and_benches_against_plain_mar() {
    let out = out_path("mar.png");
    let run = spire(&["generate", "--weights", "tests/data/mar_tiny", "--spec", "cspd", "--gamma", "8", "--class", "3", "--out", &out]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(String::from_utf8_lossy(&run.stderr).contains("acceptance"), "{}", String::from_utf8_lossy(&run.stderr));
    assert_eq!(&std::fs::read(&out).unwrap()[..8], b"\x89PNG\r\n\x1a\n");

    // A batch of two gives the images of two batches of one.
    let grid = |batch: &str, name: &str| {
        let out = out_path(name);
        let run = spire(&["generate", "--weights", "tests/data/mar_tiny", "--spec", "cspd", "--gamma", "4", "--class", "3,5", "--batch", batch, "--out", &out]);
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        std::fs::read(&out).unwrap()
    };
    assert_eq!(grid("2", "mar_b2.png"), grid("1", "mar_b1.png"), "--batch changed the images");

    let run = spire(&["bench", "--weights", "tests/data/mar_tiny", "--images", "2", "--gamma", "4,8", "--batch", "1,2", "--self-draft", "--json"]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let rows: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let rows = rows.as_array().unwrap();
    let columns = |key: &str| rows.iter().map(|r| r[key].clone()).collect::<Vec<_>>();
    assert_eq!(columns("mode"), ["mar", "cspd", "cspd", "mar", "cspd", "cspd"]);
    assert_eq!(columns("gamma"), [serde_json::Value::Null, 4.into(), 8.into(), serde_json::Value::Null, 4.into(), 8.into()]);
    assert_eq!(columns("batch"), [1, 1, 1, 2, 2, 2].map(serde_json::Value::from));
    assert!(rows.iter().filter(|r| r["mode"] == "cspd").all(|r| r["acceptance_rate"] == 1.0 && r["speedup_vs_mar"].is_number()), "self-speculation accepts everything: {rows:?}");

    for (args, message) in [
        (&["generate", "--weights", "tests/data/mar_tiny", "--spec", "vanilla"][..], "decodes with `none` or `cspd`"),
        (&["generate", "--weights", "weights/demo", "--spec", "cspd"][..], "needs a MAR weights directory"),
        (&["bench", "--weights", "weights/demo", "--gamma", "4"][..], "--gamma applies to MAR weights directories only"),
    ] {
        let run = spire(args);
        assert!(!run.status.success() && String::from_utf8_lossy(&run.stderr).contains(message), "{args:?}: {}", String::from_utf8_lossy(&run.stderr));
    }
}

#[test]
fn eval_prints_the_table_and_writes_json_and_plot() {
    let (json, plot) = (out_path("eval.json"), out_path("eval.png"));
    let run = spire(&["eval", "--weights", "weights/demo", "-n", "20", "--modes", "vanilla,cool", "--sweep", "delta=1.5,3", "--resamples", "20", "--json", &json, "--plot", &plot]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let table = String::from_utf8_lossy(&run.stdout);
    assert!(table.contains("FID - AR") && table.contains("cool delta=3"), "{table}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let settings: Vec<&str> = report["rows"].as_array().unwrap().iter().map(|r| r["setting"].as_str().unwrap()).collect();
    assert_eq!(settings, ["test split", "ar", "vanilla", "cool delta=1.5", "cool delta=3"]);
    for key in ["fid", "fid_interval", "accuracy", "accuracy_interval", "precision", "recall"] {
        assert!(!report["rows"][2][key].is_null(), "missing {key}");
    }
    assert!(report["rows"][2]["speed"]["speedup_vs_ar"].is_number());
    assert_eq!(&std::fs::read(&plot).unwrap()[..8], b"\x89PNG\r\n\x1a\n");
}

#[test]
fn eval_on_a_mar_directory_sweeps_cspd_gamma_against_plain_mar() {
    let (json, plot) = (out_path("eval-mar.json"), out_path("eval-mar.png"));
    // Self-speculation: every draft accepted and plain MAR's images, so FID - MAR is exactly 0.
    // mar_tiny has no evaluation network: weights/demo's scores its images, resized to 32x32.
    let run = spire(&["eval", "--weights", "tests/data/mar_tiny", "-n", "10", "--batch", "10", "--sweep", "gamma=4,8", "--self-draft", "--resamples", "20", "--json", &json, "--plot", &plot]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let table = String::from_utf8_lossy(&run.stdout);
    assert!(table.contains("FID - MAR") && table.contains("cspd gamma=8") && table.contains("leviathan_rollback"), "{table}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["baseline"], "mar");
    let rows = report["rows"].as_array().unwrap();
    let settings: Vec<&str> = rows.iter().map(|r| r["setting"].as_str().unwrap()).collect();
    assert_eq!(settings, ["test split", "mar", "cspd gamma=4", "cspd gamma=8"]);
    assert_eq!(rows[1]["speed"]["tokens_per_target_forward"], 1.0);
    for row in &rows[2..] {
        let speed = &row["speed"];
        assert_eq!(speed["acceptance_rate"], 1.0, "{row}");
        assert!(speed["tokens_per_target_forward"].as_f64().unwrap() > 1.0 && speed["speedup_vs_ar"].is_number(), "{row}");
        assert_eq!(row["fid_minus_ar"][0], 0.0, "self-speculation gives plain MAR's images: {row}");
        for key in ["fid", "fid_interval", "accuracy", "accuracy_interval", "precision", "recall"] {
            assert!(!row[key].is_null(), "missing {key}");
        }
    }
    assert_eq!(&std::fs::read(&plot).unwrap()[..8], b"\x89PNG\r\n\x1a\n");

    let plot = out_path("eval-mar-refused.png");
    for (args, message) in [
        (&["--delta", "2"][..], "--delta sets LlamaGen's speculative rules"),
        (&["--modes", "vanilla"][..], "decodes with `none` or `cspd`"),
        (&["--top-k", "5"][..], "--top-k and --top-p"),
        (&["--gamma", "4,8"][..], "--sweep gamma=4,8,16,32"),
        (&["--sweep", "delta=1,2"][..], "--sweep delta=1"),
        (&["--eval-net", "no/such/dir"][..], "no/such/dir/eval_net.json"),
    ] {
        let run = spire(&[&["eval", "--weights", "tests/data/mar_tiny", "-n", "10", "--plot", &plot][..], args].concat());
        assert!(!run.status.success() && String::from_utf8_lossy(&run.stderr).contains(message), "{args:?}: {}", String::from_utf8_lossy(&run.stderr));
    }
    let run = spire(&["eval", "--weights", "weights/demo", "--sweep", "gamma=4,8", "--plot", &plot]);
    assert!(String::from_utf8_lossy(&run.stderr).contains("--sweep gamma=4"), "{}", String::from_utf8_lossy(&run.stderr));
}

#[test]
fn eval_refuses_bad_outputs_and_missing_networks_before_generating() {
    let run = spire(&["eval", "--weights", "weights/demo", "--plot", "no/such/dir/frontier.png"]);
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("choose another --plot"), "{}", String::from_utf8_lossy(&run.stderr));
    let run = spire(&["eval", "--random-tiny", "-n", "10", "--plot", &out_path("tiny.png")]);
    assert!(String::from_utf8_lossy(&run.stderr).contains("eval_net.json"), "{}", String::from_utf8_lossy(&run.stderr));
    let run = spire(&["eval", "--weights", "weights/demo", "--modes", "cool", "--sweep", "omega=2", "--plot", &out_path("bad.png")]);
    assert!(String::from_utf8_lossy(&run.stderr).contains("changes none of the modes cool"));
}

#[test]
fn generate_out_dir_writes_one_png_per_image() {
    let dir = out_path("out-dir");
    let run = spire(&["generate", "--random-tiny", "--class", "0,1", "--samples", "2", "--out-dir", &dir]);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let mut names: Vec<String> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["000000_class0.png", "000001_class0.png", "000002_class1.png", "000003_class1.png"]);
}
