//! The `spire` command line: generate images, inspect weights, benchmark decoding modes.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
