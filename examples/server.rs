//! A service embedding spire: the device comes from the environment at run time, the engine is
//! shared by every request (the scheduler batches them), and spire's routes are mounted into the
//! service's own axum app next to its own.
//! `SPIRE_DEVICE=cpu cargo run --release --example server`, then
//! `curl -X POST localhost:3000/v1/images -d '{"class": 3, "seed": 1}' -o dress.png`.

use axum::routing::get;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let device: spire::Device = std::env::var("SPIRE_DEVICE").unwrap_or_else(|_| "cpu".into()).parse()?;
    let engine = spire::Engine::builder("weights/demo").device(device).max_batch(16).build()?;
    let app = spire::server::router(engine).route("/", get(|| async { "my service, with spire at /v1/images\n" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
