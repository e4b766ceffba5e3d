//! The HTTP service (feature `server`, on by default; `spire serve`): an [`Engine`] behind axum.
//!
//! - `POST /v1/images`: a JSON [`ImageRequestJson`] (class, seed, sampling and speculative
//!   settings, deadline; unknown fields refused) answered with the PNG (`image/png`, with
//!   `x-spire-*` headers for the statistics) or, with `"format": "json"`, an
//!   [`ImageResponseJson`] (the PNG in base64, the tokens, the statistics). Errors are JSON
//!   `{"error": "..."}`: 400 for a bad body or request (the message names the field), 503 with
//!   `retry-after` when the queue or the KV pool is full, 504 past the deadline, 500 otherwise.
//!   A client that disconnects cancels its request (its KV blocks are freed at the next step).
//! - `GET /healthz`: `ok` and the device.
//! - `GET /metrics`: the engine's metrics in the Prometheus text format.

mod json;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine as _;

pub use json::{DrafterName, ImageRequestJson, ImageResponseJson, ResponseFormat, RuleName, SpeculativeJson, StatsJson};

use crate::engine::{Engine, Generated};
use crate::error::Error;

/// The service's routes over `engine`, to serve alone ([`serve`]) or to merge into an app.
///
/// ```
/// let engine = spire::Engine::load("weights/demo")?;
/// let app: axum::Router = spire::server::router(engine).route("/", axum::routing::get(|| async { "mine" }));
/// # let _ = app;
/// # Ok::<(), spire::Error>(())
/// ```
pub fn router(engine: Engine) -> Router {
    Router::new().route("/v1/images", post(create_image)).route("/healthz", get(healthz)).route("/metrics", get(metrics)).with_state(engine)
}

/// Serve `engine` on `listener` until `shutdown` resolves (then finish the requests in flight).
pub async fn serve(engine: Engine, listener: tokio::net::TcpListener, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    axum::serve(listener, router(engine)).with_graceful_shutdown(shutdown).await
}

/// A JSON error response.
fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message.to_string() }))).into_response()
}

/// The status an engine error maps to.
fn engine_error(e: Error) -> Response {
    let status = match &e {
        Error::InvalidRequest(_) => StatusCode::BAD_REQUEST,
        Error::Busy { .. } | Error::KvCacheExhausted { .. } | Error::Cancelled(_) => StatusCode::SERVICE_UNAVAILABLE,
        Error::DeadlineExceeded { .. } => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let mut response = error(status, &e);
    if e.is_retryable() {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// `POST /v1/images`.
async fn create_image(State(engine): State<Engine>, body: Bytes) -> Response {
    let parsed: ImageRequestJson = match serde_json::from_slice(&body) {
        Ok(parsed) => parsed,
        Err(e) => return error(StatusCode::BAD_REQUEST, format_args!("bad request body: {e}")),
    };
    let handle = match engine.submit(parsed.request()) {
        Ok(handle) => handle,
        Err(e) => return engine_error(e),
    };
    // Dropping this future (the client went away) drops the handle, which cancels the request.
    match handle.result().await {
        Ok(generated) => image_response(&generated, parsed.format),
        Err(e) => engine_error(e),
    }
}

/// The PNG, or the JSON with it, of a generated image.
fn image_response(generated: &Generated, format: ResponseFormat) -> Response {
    let png = match generated.image.png_bytes() {
        Ok(png) => png,
        Err(e) => return engine_error(e),
    };
    let stats = StatsJson::from(&generated.stats);
    match format {
        ResponseFormat::Json => axum::Json(ImageResponseJson {
            png_base64: base64::engine::general_purpose::STANDARD.encode(&png),
            width: generated.image.width,
            height: generated.image.height,
            tokens: generated.tokens.clone(),
            stats,
        })
        .into_response(),
        ResponseFormat::Png => {
            let headers = [
                (header::CONTENT_TYPE, "image/png".to_string()),
                (header::HeaderName::from_static("x-spire-target-forwards"), stats.target_forwards.to_string()),
                (header::HeaderName::from_static("x-spire-tokens-per-forward"), format!("{:.3}", stats.tokens_per_target_forward)),
                (header::HeaderName::from_static("x-spire-elapsed-ms"), format!("{:.1}", stats.elapsed_ms)),
            ];
            (headers, png).into_response()
        }
    }
}

/// `GET /healthz`.
async fn healthz(State(engine): State<Engine>) -> Response {
    format!("ok {}\n", engine.device()).into_response()
}

/// `GET /metrics`.
async fn metrics(State(engine): State<Engine>) -> Response {
    match engine.metrics_text() {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(e) => engine_error(e),
    }
}
