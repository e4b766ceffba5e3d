//! The `spire` command line: generate images, inspect weights, benchmark decoding modes, serve.

fn main() -> std::process::ExitCode {
    spire::cli::main()
}
