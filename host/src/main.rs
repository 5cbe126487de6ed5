//! The `cairn` binary: logging, then the command line.

use clap::Parser;

/// mimalloc instead of the system allocator: the data path allocates small
/// buffers per request on several threads, where glibc's malloc showed up at
/// about a tenth of the nodes' profile.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = cairn::cli::run(cairn::cli::Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
