//! The `sesame` command line. Thin: parse arguments, call the library, report errors on one line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "sesame",
    version,
    about = "Sesame credit scoring: features, training, serving, batch, evaluation"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Compute a pipeline's feature table (one row per user) as of a date.
    Features {
        /// Pipeline file (TOML).
        #[arg(long)]
        pipeline: PathBuf,
        /// Directory with the raw tables (Parquet).
        #[arg(long)]
        data: PathBuf,
        /// Compute as of this date (YYYY-MM-DD); nothing at or after it is read.
        #[arg(long)]
        as_of: String,
        /// Output Parquet file.
        #[arg(long)]
        out: PathBuf,
    },
    /// Serve the gRPC API (health, reflection, CreditScoring, Admin) and /metrics.
    Serve(sesame::server::ServeArgs),
    /// Load-test a running server: Score and Ping throughput and latency.
    Bench(sesame::service::bench::BenchArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("SESAME_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Features {
            pipeline,
            data,
            as_of,
            out,
        } => sesame::features::cli::run_features(&pipeline, &data, &as_of, &out),
        Command::Serve(args) => sesame::server::serve_cli(args),
        Command::Bench(args) => sesame::service::bench::bench_cli(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
