//! `pierce`: run a Pierce server, check this host's NAT, or try peer-to-peer messaging.
//! Everything lives in `pierce_mio::cli`; `pierce --help` lists the subcommands.

fn main() -> std::process::ExitCode {
    pierce_mio::cli::main()
}
