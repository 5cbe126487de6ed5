//! The `cairn` binary: the command line (with `serve --config`'s file
//! merged in), logging, then the command.

use clap::Parser;

/// mimalloc instead of the system allocator: the data path allocates small
/// buffers per request on several threads, where glibc's malloc showed up at
/// about a tenth of the nodes' profile.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args = match cairn::cli::config::with_config_file(std::env::args_os().collect(), |name| {
        std::env::var(name).ok()
    }) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(2);
        }
    };
    let cli = cairn::cli::Cli::parse_from(args);
    cairn::cli::init_logging(cli.log_format);
    if let Err(e) = cairn::cli::run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
