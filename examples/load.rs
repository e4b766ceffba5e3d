//! Load generator for the HTTP service: starts `spire::server` in-process on an ephemeral port
//! with a weights directory (or targets `--url` of a running `spire serve`), then for each
//! concurrency level keeps that many requests in flight until `--requests` are done, and prints
//! images/s and the p50/p99 latency per level.
//!
//! `cargo run --release --example load -- [--weights weights/demo] [--url http://host:port]
//! [--requests 64] [--levels 1,4,16,64] [--mode ar|vanilla|cool]`

use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Command-line options (`--key value`).
struct Options {
    weights: String,
    url: Option<String>,
    requests: usize,
    levels: Vec<usize>,
    mode: String,
}

fn options() -> Result<Options, Box<dyn std::error::Error>> {
    let mut o = Options { weights: "weights/demo".into(), url: None, requests: 64, levels: vec![1, 4, 16, 64], mode: "ar".into() };
    let mut args = std::env::args().skip(1);
    while let Some(key) = args.next() {
        let value = args.next().ok_or_else(|| format!("{key} needs a value"))?;
        match key.as_str() {
            "--weights" => o.weights = value,
            "--url" => o.url = Some(value),
            "--requests" => o.requests = value.parse()?,
            "--levels" => o.levels = value.split(',').map(str::parse).collect::<Result<_, _>>()?,
            "--mode" => o.mode = value,
            other => return Err(format!("unknown option {other}").into()),
        }
    }
    Ok(o)
}

/// The body of request `i` in `mode`.
fn body(i: usize, mode: &str) -> Value {
    let mut body = json!({ "class": i % 10, "seed": i });
    match mode {
        "vanilla" => body["speculative"] = json!({ "rule": "vanilla" }),
        "cool" => body["speculative"] = json!({ "rule": "cool", "drafter": "head", "tree": [2, 2, 1] }),
        _ => {}
    }
    body
}

/// The `q`-quantile of sorted `values`.
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let o = options()?;
    let base = match &o.url {
        Some(url) => url.clone(),
        None => {
            let engine = spire::Engine::builder(&o.weights).max_batch(*o.levels.iter().max().unwrap_or(&16)).build()?;
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let url = format!("http://{}", listener.local_addr()?);
            tokio::spawn(spire::server::serve(engine, listener, std::future::pending()));
            url
        }
    };
    let url = format!("{base}/v1/images");
    let client = reqwest::Client::new();
    println!("{:>11} {:>9} {:>9} {:>10} {:>10}", "concurrency", "requests", "images/s", "p50 ms", "p99 ms");
    for &level in &o.levels {
        let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let start = Instant::now();
        let workers: Vec<_> = (0..level)
            .map(|_| {
                let (client, url, next, mode, total) = (client.clone(), url.clone(), next.clone(), o.mode.clone(), o.requests);
                tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= total {
                            return Ok::<_, reqwest::Error>(latencies);
                        }
                        let sent = Instant::now();
                        let response = client.post(&url).json(&body(i, &mode)).send().await?.error_for_status()?;
                        response.bytes().await?;
                        latencies.push(sent.elapsed());
                    }
                })
            })
            .collect();
        let mut latencies = Vec::new();
        for worker in workers {
            latencies.extend(worker.await??);
        }
        let wall = start.elapsed();
        latencies.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!("{level:>11} {:>9} {:>9.2} {:>10.1} {:>10.1}", latencies.len(), latencies.len() as f64 / wall.as_secs_f64(), ms(quantile(&latencies, 0.5)), ms(quantile(&latencies, 0.99)));
    }
    Ok(())
}
