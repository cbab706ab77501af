//! `ordo-bench` binary: parse arguments, run the comparison, stop every broker on Ctrl-C.

use std::process::ExitCode;

use clap::Parser;
use ordo_bench::cli::Args;

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let result = tokio::select! {
        result = ordo_bench::run(args) => result,
        // Dropping the run future drops every broker guard, which kills the processes.
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted; brokers stopped")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ordo-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
