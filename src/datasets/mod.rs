//! Datasets: a seeded synthetic population (`generate`) and a loader for the real
//! Taiwan credit-card default data (`taiwan`). Both write Parquet tables whose schemas
//! are fixed in [`schema`]; the feature pipeline reads them by these names and types.
//! See `datasets/README.md` for the generating process.

pub mod generate;
pub mod schema;
pub mod taiwan;
mod util;

use std::path::PathBuf;

use clap::{Args, Subcommand};

pub use generate::{generate, GenerateConfig, GenerateSummary};

/// The day the demo population is generated as of, and so the default as-of date of the
/// commands and of the demo server: one place, so that they cannot drift apart.
pub const DEMO_AS_OF: &str = "2025-12-31";

/// [`DEMO_AS_OF`] as a date.
pub fn demo_as_of() -> chrono::NaiveDate {
    chrono::NaiveDate::parse_from_str(DEMO_AS_OF, "%Y-%m-%d").unwrap_or_default()
}
pub use taiwan::{load_taiwan, TaiwanSummary};
pub use util::auc;

/// Everything that can go wrong while producing a dataset. Each message fits on one line.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("output directory {path}: {reason}")]
    Output { path: PathBuf, reason: String },
    #[error("i/o error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("parquet error writing {table}: {source}")]
    Polars {
        table: String,
        #[source]
        source: polars::error::PolarsError,
    },
    #[error("{path}, line {line}: {reason}")]
    Csv {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

impl DatasetError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DatasetError::Io {
            path: path.into(),
            source,
        }
    }
    pub(crate) fn polars(table: &str, source: polars::error::PolarsError) -> Self {
        DatasetError::Polars {
            table: table.to_string(),
            source,
        }
    }
}

/// `sesame datasets ...`
#[derive(Debug, Subcommand)]
pub enum DatasetsCommand {
    /// Generate a seeded synthetic population (users, transactions, behaviors, relations,
    /// judgments, labels, oracle) as Parquet tables.
    Generate(GenerateArgs),
    /// Convert the UCI Taiwan credit-card default CSV into the same table layout.
    Taiwan(TaiwanArgs),
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Number of users to generate (≥ 1).
    #[arg(long)]
    pub users: u64,
    /// Random seed; same seed and users give byte-identical files.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Output directory (created; its parent must exist). Written atomically.
    #[arg(long)]
    pub out: PathBuf,
    /// Observation date YYYY-MM-DD: all history is strictly before it, labels cover the 12 months after.
    #[arg(long = "as-of", default_value = DEMO_AS_OF)]
    pub as_of: String,
    /// Users per chunk for the event tables (memory vs. speed).
    #[arg(long, default_value_t = generate::DEFAULT_CHUNK_USERS)]
    pub chunk_users: usize,
    /// Do not draw a progress bar.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct TaiwanArgs {
    /// Path to UCI_Credit_Card.csv.
    #[arg(long)]
    pub csv: PathBuf,
    /// Output directory (created; its parent must exist). Written atomically.
    #[arg(long)]
    pub out: PathBuf,
}

/// Run one `datasets` subcommand and print its one-line summary.
pub fn run(cmd: DatasetsCommand) -> anyhow::Result<()> {
    match cmd {
        DatasetsCommand::Generate(a) => {
            let as_of = util::parse_date(&a.as_of)?;
            let cfg = GenerateConfig {
                users: a.users,
                seed: a.seed,
                out: a.out,
                as_of,
                chunk_users: a.chunk_users,
                progress: !a.quiet,
            };
            let s = generate(&cfg)?;
            println!("{s}");
        }
        DatasetsCommand::Taiwan(a) => {
            let s = load_taiwan(&a.csv, &a.out)?;
            println!("{s}");
        }
    }
    Ok(())
}
