//! `spire inspect DIR`: what a weights directory holds.

use std::path::PathBuf;

use clap::Args;

use crate::weights::{ModelConfig, WeightFile};

/// Arguments of `spire inspect`.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Weights directory (config.json + safetensors files).
    pub dir: PathBuf,
    /// Print every tensor, not only a per-file summary.
    #[arg(long)]
    pub tensors: bool,
}

/// Print the configuration and a per-file tensor summary.
pub fn run(args: InspectArgs) -> anyhow::Result<()> {
    let config = ModelConfig::load(&args.dir)?;
    println!("{}", serde_json::to_string_pretty(&config)?);
    let files = std::iter::once(("gpt", &config.gpt.file))
        .chain(config.draft.as_ref().map(|d| ("draft", &d.file)))
        .chain(config.draft_head.as_ref().map(|d| ("draft_head", &d.file)))
        .chain(config.vq.as_ref().map(|v| ("vq", &v.file)));
    for (section, file) in files {
        let weights = WeightFile::open(&args.dir.join(file))?;
        let mut params = 0usize;
        for name in weights.names() {
            let t = weights.tensor(name)?;
            params += t.len();
            if args.tensors {
                println!("  {name:<55} {:>5?} {:?}", t.dtype, t.shape);
            }
        }
        println!("{section:<11} {file:<24} {:>5} tensors {:>12} parameters", weights.names().len(), params);
    }
    Ok(())
}
