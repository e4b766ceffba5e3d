//! `spire serve`: the HTTP service (`crate::server`) on the chosen device until Ctrl-C.

use anyhow::Context;
use clap::Args;

use crate::engine::{DEFAULT_MAX_BATCH, DEFAULT_QUEUE_CAPACITY};
use crate::Engine;

use crate::cli::device::{weights_dir, ModelArgs};

/// Arguments of `spire serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: String,
    /// Images decoded together at most.
    #[arg(long, default_value_t = DEFAULT_MAX_BATCH)]
    pub max_batch: usize,
    /// Requests that may wait for a batch before new ones get 503 (retry later).
    #[arg(long, default_value_t = DEFAULT_QUEUE_CAPACITY)]
    pub queue: usize,
}

/// Load the engine, listen, serve until Ctrl-C (requests in flight finish first).
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let dir = weights_dir(&args.model)?;
    let mut builder = Engine::builder(&dir).device(args.model.library_device()).kv_dtype(args.model.kv_dtype.into()).max_batch(args.max_batch).queue_capacity(args.queue);
    if let Some(blocks) = args.model.kv_blocks {
        builder = builder.kv_blocks(blocks);
    }
    let engine = builder.build().with_context(|| format!("loading weights from {}", dir.display()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&args.addr).await.with_context(|| format!("listening on {}", args.addr))?;
        eprintln!("spire: serving {} on http://{} ({}); POST /v1/images, GET /healthz, GET /metrics", dir.display(), listener.local_addr()?, engine.device());
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        crate::server::serve(engine, listener, shutdown).await.context("serving")
    })
}
