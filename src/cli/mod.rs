//! Command-line parsing and dispatch.

mod bench;
mod device;
mod eval;
mod generate;
mod inspect;
mod mar;
mod mar_args;
#[cfg(feature = "server")]
mod serve;
mod spec_args;

use clap::{Parser, Subcommand};

/// spire: autoregressive image generation (LlamaGen; MAR) accelerated by speculative decoding.
///
/// Quick start: `spire generate --weights weights/demo --class 3 --out dress.png`
/// generates one image with the shipped demo model on the CPU.
#[derive(Parser, Debug)]
#[command(name = "spire", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Generate images for one or more classes and write them as PNG (a MAR directory, with
    /// `"family": "mar"` in its config.json, uses the MAR generator: plain or `--spec cspd`).
    Generate(generate::GenerateArgs),
    /// List the models, tensors and parameter counts of a weights directory.
    Inspect(inspect::InspectArgs),
    /// Compare plain AR decoding with speculative modes on the same images: latency per image,
    /// target forwards, mean accepted length, acceptance rate and speedup, measured in one run
    /// (on a MAR directory: plain MAR against CSpD for each --gamma).
    Bench(bench::BenchArgs),
    /// The speed-quality frontier: AR and each speculative setting (with --sweep) generate N
    /// images, scored by the evaluation network (FID, class accuracy, precision/recall, bootstrap
    /// intervals); one table, optional JSON, and a PNG plot of FID against tokens per forward.
    Eval(eval::EvalArgs),
    /// Serve images over HTTP (POST /v1/images, GET /healthz, GET /metrics), batching
    /// concurrent requests.
    #[cfg(feature = "server")]
    Serve(serve::ServeArgs),
}

/// Print the library's `tracing` events at `SPIRE_LOG`'s level (error, warn (default), info,
/// debug, trace) on stderr.
fn init_logging() {
    let level = std::env::var("SPIRE_LOG").ok().and_then(|l| l.parse().ok()).unwrap_or(tracing::Level::WARN);
    let _ = tracing_subscriber::fmt().with_max_level(level).with_writer(std::io::stderr).try_init();
}

/// Parse the command line, run the command, and turn errors into a message and exit code 1.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Command::Generate(args) => generate::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Eval(args) => eval::run(args),
        #[cfg(feature = "server")]
        Command::Serve(args) => serve::run(args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", describe(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, skipping causes a message already quotes.
fn describe(error: &anyhow::Error) -> String {
    error.chain().skip(1).fold(error.to_string(), |message, cause| {
        let cause = cause.to_string();
        if message.contains(&cause) {
            message
        } else {
            format!("{message}: {cause}")
        }
    })
}
