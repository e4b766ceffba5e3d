//! The HTTP service under load: 64 concurrent requests against a server on an ephemeral port with
//! the demo weights, mixing plain AR, a draft-model chain and a draft-head tree; some are
//! invalid, some are cancelled midway by the client disconnecting. Every valid response is the
//! PNG of the serial result for its seed, invalid ones get 400, and afterwards no request is in
//! flight and every KV block is back in the pool.
#![cfg(feature = "server")]

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use spire::engine::BackendEngine;
use spire::server::ImageRequestJson;
use spire::Engine;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/weights/demo");

/// What request `i` is.
enum Kind {
    Valid(Value),
    Invalid(String),
    Cancelled(Value),
}

fn kind(i: usize) -> Kind {
    let mut body = json!({ "class": i % 10, "seed": 1000 + i });
    match i % 3 {
        0 => {}
        1 => body["speculative"] = json!({ "rule": "vanilla", "draft_len": 4 }),
        _ => body["speculative"] = json!({ "rule": "cool", "drafter": "head", "tree": [2, 2, 1], "delta": 1.5 }),
    }
    match i % 8 {
        6 => Kind::Invalid(
            ["{\"class\": 99}", "{\"class\": 1, \"sed\": 3}", "{not json", "{\"class\": 1, \"temperature\": -1}", "{\"class\": 1, \"speculative\": {\"rule\": \"cool\", \"delta\": -2}}"][i % 5]
                .to_string(),
        ),
        7 => Kind::Cancelled(body),
        _ => Kind::Valid(body),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_concurrent_requests_with_cancellations_and_bad_input() {
    let engine = Engine::builder(DIR).max_batch(16).build().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1/images", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(spire::server::serve(engine.clone(), listener, async {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::new();
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move {
                let send = |body: String| client.post(&url).header("content-type", "application/json").body(body).send();
                match kind(i) {
                    Kind::Valid(body) => {
                        let response = send(body.to_string()).await.unwrap();
                        Some((response.status().as_u16(), response.bytes().await.unwrap().to_vec()))
                    }
                    Kind::Invalid(body) => {
                        let response = send(body).await.unwrap();
                        Some((response.status().as_u16(), response.bytes().await.unwrap().to_vec()))
                    }
                    Kind::Cancelled(body) => {
                        // The client gives up midway: its connection closes.
                        let _ = tokio::time::timeout(Duration::from_millis(300), send(body.to_string())).await;
                        None
                    }
                }
            })
        })
        .collect();
    let mut responses = Vec::new();
    for task in tasks {
        responses.push(task.await.unwrap());
    }

    // The serial results, one batch per setting (each image is the same alone or batched).
    let serial = BackendEngine::load(DIR).unwrap();
    let valid: Vec<(usize, Value)> = (0..64).filter_map(|i| if let Kind::Valid(body) = kind(i) { Some((i, body)) } else { None }).collect();
    let requests: Vec<spire::Request> = valid.iter().map(|(_, body)| serde_json::from_value::<ImageRequestJson>(body.clone()).unwrap().request()).collect();
    let expected = tokio::task::spawn_blocking(move || serial.generate_batch(&requests).unwrap()).await.unwrap();
    for ((i, _), image) in valid.iter().zip(expected) {
        let (status, body) = responses[*i].clone().unwrap();
        assert_eq!(status, 200, "request {i}: {}", String::from_utf8_lossy(&body));
        assert_eq!(body, image.png_bytes().unwrap(), "request {i}: not the serial image");
    }
    for i in (0..64).filter(|i| matches!(kind(*i), Kind::Invalid(_))) {
        let (status, body) = responses[i].clone().unwrap();
        let message: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(status, 400, "request {i}: {message}");
        assert!(message["error"].as_str().is_some_and(|m| !m.is_empty()), "request {i}: {message}");
    }

    // Everything drains: no request in flight, no KV block held.
    let start = Instant::now();
    while engine.stats().in_flight + engine.stats().queued > 0 && start.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stats = engine.stats();
    println!("{stats:?}");
    assert_eq!((stats.in_flight, stats.queued, stats.kv_blocks_in_use), (0, 0, 0), "{stats:?}");
    assert_eq!(stats.completed + stats.cancelled, (valid.len() + 8) as u64, "every valid or cancelled request ended one way or the other: {stats:?}");
    assert!(stats.cancelled > 0, "a client that disconnects cancels its request: {stats:?}");
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
