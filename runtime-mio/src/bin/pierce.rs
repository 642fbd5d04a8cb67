//! `pierce`: run a Pierce server, check this host's NAT, or try peer-to-peer messaging.
//! Everything lives in `pierce_mio::cli`; `pierce --help` lists the subcommands.

/// Counts allocations for the stats line (`pierce server --stats-every`).
#[global_allocator]
static ALLOCATOR: pierce_mio::CountingAllocator = pierce_mio::CountingAllocator;

fn main() -> std::process::ExitCode {
    pierce_mio::cli::main()
}
