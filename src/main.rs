use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "sesame", about = "Sesame credit scoring")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Train a WoE scorecard (and a challenger) from a CSV/Parquet file.
    Train(sesame::model::cli::TrainArgs),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().cmd {
        Cmd::Train(a) => sesame::model::cli::run_train(a),
    }
}
