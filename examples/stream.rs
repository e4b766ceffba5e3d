//! Streaming a request's progress: tokens as the decoding steps commit them and a preview image
//! every 16 tokens, then the finished image; Ctrl-C-free cancellation is dropping the handle.
//! `cargo run --release --example stream -- [weights/demo] [class]`

use spire::{Engine, Progress, Request, SpecConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| "weights/demo".into());
    let class: u32 = args.next().map(|c| c.parse()).transpose()?.unwrap_or(3);
    let engine = Engine::load(&dir)?;
    let mut request = Request::new(class, 7);
    request.sampling.cfg_scale = 2.0;
    request.speculative = Some(SpecConfig::chain(spire::RuleConfig::Cool { delta: 1.5, nu: 0.7, mu: 0.0, schedule: spire::CoolSchedule::Floored }, spire::DrafterChoice::Model, 4));
    request.preview_every = 16;
    let mut handle = engine.submit(request)?;
    while let Some(event) = handle.blocking_progress() {
        match event {
            Progress::Tokens { new, done, total } => println!("{done:>3}/{total}: +{} tokens {new:?}", new.len()),
            Progress::Preview(image) => {
                let path = format!("preview-{class}.png");
                image.save_png(&path)?;
                println!("preview written to {path}");
            }
        }
    }
    let generated = handle.wait()?;
    generated.image.save_png("stream.png")?;
    println!("wrote stream.png: {:.2} tokens per target forward", generated.stats.tokens_per_target_forward());
    Ok(())
}
