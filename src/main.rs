//! The `stackpilot` binary: a thin shell over the library.
fn main() -> std::process::ExitCode {
    stackpilot::cli::main()
}
