//! The `sesame` command line. Thin: parse arguments, call the library, report errors on one line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "sesame",
    version,
    about = "Sesame credit scoring: data, features, training, serving, batch, evaluation"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate the seeded demo population or load real data (Taiwan).
    #[command(subcommand)]
    Datasets(sesame::datasets::DatasetsCommand),
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
    /// Rule tools: build the blacklist from court judgments; check a rule directory.
    #[command(subcommand)]
    Rules(sesame::rules::cli::RulesCommand),
    /// Train a WoE scorecard (and a challenger) from a flat CSV/Parquet file or a pipeline's features.
    Train(sesame::model::cli::TrainArgs),
    /// Evaluate a model on labelled data: report.json + report.html (metrics, PSI/CSI, plots).
    Evaluate(sesame::eval::cli::EvaluateArgs),
    /// Serve the gRPC API (health, reflection, CreditScoring, Admin) and /metrics.
    Serve(sesame::server::ServeArgs),
    /// Score a whole population (raw tables or a feature table) to Parquet, with the service's code.
    Batch(sesame::batch::BatchArgs),
    /// Export the scorecard as one SQL query over a feature table (score, band, PD).
    ExportSql(sesame::batch::sql::ExportSqlArgs),
    /// Load-test a running server: Score and Ping throughput and latency.
    Bench(sesame::service::bench::BenchArgs),
    /// User consent tokens: `consent issue --user U --partner P --scenario S --ttl 1h`.
    #[command(subcommand)]
    Consent(sesame::security::ConsentCommand),
    /// The query audit log: --verify the hash chain, --user U, --partner P --since T.
    Audit(sesame::audit::cli::AuditArgs),
}

// mimalloc rather than the system allocator, as polars advises: polars allocates and frees
// column-sized buffers all the time, and glibc hands each large one back to the kernel, which
// then zeroes fresh pages for the next (a fifth of a population run's CPU went to that).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Population runs (batch, features, training, generation) keep freed memory for reuse instead of
/// returning it to the kernel, and back it with 2 MiB pages: a 1M-user batch ran in ~36 s instead
/// of ~57 s on 2 vCPUs, its peak memory 3.9 GB → 5.8 GB. mimalloc reads these options from the
/// environment once, before `main` (setting them later does not enable large pages), so such a
/// command re-executes itself once with them set. Options the operator set are kept. The server
/// keeps mimalloc's defaults: it is long-lived, and its memory should shrink after a reload.
fn tune_allocator_for_offline_jobs(command: &Command) {
    const TUNED: &str = "SESAME_ALLOCATOR_TUNED";
    let offline = matches!(
        command,
        Command::Batch(_)
            | Command::Features { .. }
            | Command::Train(_)
            | Command::Evaluate(_)
            | Command::Datasets(_)
    );
    if !offline || std::env::var_os(TUNED).is_some() {
        return;
    }
    let mut args = std::env::args_os();
    let arg0 = args.next();
    let rest: Vec<_> = args.collect();
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut command = std::process::Command::new(exe);
    command.args(rest).env(TUNED, "1");
    if let Some(arg0) = arg0 {
        std::os::unix::process::CommandExt::arg0(&mut command, arg0);
    }
    for (option, value) in [
        ("MIMALLOC_PURGE_DELAY", "-1"),
        ("MIMALLOC_ALLOW_LARGE_OS_PAGES", "1"),
    ] {
        if std::env::var_os(option).is_none() {
            command.env(option, value);
        }
    }
    // Returns only if the exec failed; the job then runs here, with the defaults.
    let _ = std::os::unix::process::CommandExt::exec(&mut command);
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SESAME_LOG")
                // Lifecycle events of the server (listening, engine loaded, reloads, shutdown)
                // at info so an operator sees them; per-call lines stay at debug.
                .unwrap_or_else(|_| {
                    "warn,sesame::server=info,sesame::service=info,sesame::scoring=info".into()
                }),
        )
        .with_writer(std::io::stderr)
        // No colour codes in log files and journals.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => {
            // --help / --version
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // clap's message spans several lines (details, usage, hint); keep it to one.
            let msg = e.to_string();
            let line: Vec<&str> = msg
                .lines()
                .map(str::trim)
                .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
                .filter(|l| !l.is_empty())
                .collect();
            eprintln!(
                "{}",
                if line.is_empty() {
                    "error: invalid arguments".to_string()
                } else {
                    line.join(" ")
                }
            );
            return ExitCode::from(2);
        }
    };
    tune_allocator_for_offline_jobs(&cli.command);
    let result = match cli.command {
        Command::Datasets(cmd) => sesame::datasets::run(cmd),
        Command::Features {
            pipeline,
            data,
            as_of,
            out,
        } => sesame::features::cli::run_features(&pipeline, &data, &as_of, &out),
        Command::Train(args) => sesame::model::cli::run_train(args),
        Command::Rules(cmd) => sesame::rules::cli::run(cmd),
        Command::Evaluate(args) => sesame::eval::cli::run_evaluate(&args).map(|_| ()),
        Command::Serve(args) => sesame::server::serve_cli(args),
        Command::Bench(args) => sesame::service::bench::bench_cli(args),
        Command::Batch(args) => sesame::batch::batch_cli(args),
        Command::ExportSql(args) => sesame::batch::sql::export_sql_cli(args),
        Command::Consent(cmd) => sesame::security::consent_cli(cmd),
        Command::Audit(args) => match sesame::audit::cli::audit_cli(args) {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::FAILURE,
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
