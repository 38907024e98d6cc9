//! `sesame evaluate`: a model directory + labelled data → `report.json` + `report.html`.
//!
//! Data is either a directory of raw tables (the model's own `pipeline.toml` computes the
//! features as of `--as-of`, labels come from `labels.parquet`) or a flat CSV/Parquet file whose
//! columns are the model's features by name (with `--target`, `--bad-value`). `--split` applies
//! training's fixed split (train iff key % 10 < 7, key = `--split-key` column or the 0-based row
//! index), so `--split test` on the training data reproduces the recorded test metrics exactly.
//! The output directory is written atomically: nothing is written when anything fails before,
//! and `--fail-below` is checked only after the report is in place.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::domain::Dataset;
use crate::features::frame::{frame_to_dataset, integer_column, read_table, FrameOptions};
use crate::model::Scorecard;
use crate::scoring::bundle::ModelBundle;

use super::report::{evaluate_model, missed, parse_thresholds, render_html, ModelEval, Report};

pub const REPORT_JSON: &str = "report.json";
pub const REPORT_HTML: &str = "report.html";
pub const DEFAULT_AS_OF: &str = crate::datasets::DEMO_AS_OF;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Split {
    All,
    Test,
    Train,
}

impl Split {
    fn as_str(self) -> &'static str {
        match self {
            Split::All => "all",
            Split::Test => "test",
            Split::Train => "train",
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct EvaluateArgs {
    /// Model directory (scorecard.json; pipeline.toml for raw-table data).
    #[arg(long)]
    pub model: PathBuf,
    /// A directory of raw tables (+ labels.parquet), or a flat CSV/Parquet file of features.
    #[arg(long)]
    pub data: PathBuf,
    /// Target column (flat file: required; raw tables: the label column, default `defaulted`).
    #[arg(long)]
    pub target: Option<String>,
    /// Value of the target meaning bad, for non-binary targets.
    #[arg(long)]
    pub bad_value: Option<String>,
    /// Raw tables: compute the features as of this date (YYYY-MM-DD).
    #[arg(long, default_value = DEFAULT_AS_OF)]
    pub as_of: String,
    /// Which rows: all, or training's fixed train / test (held-out) part.
    #[arg(long, value_enum, default_value = "all")]
    pub split: Split,
    /// Integer column for the fixed split (as in training); default: row index.
    #[arg(long)]
    pub split_key: Option<String>,
    /// A second (challenger) model directory, reported side by side.
    #[arg(long)]
    pub compare: Option<PathBuf>,
    /// Exit non-zero (after writing the report) when a metric is below, e.g. auc=0.70,ks=0.3.
    #[arg(long)]
    pub fail_below: Option<String>,
    /// Output directory (report.json, report.html); replaced atomically.
    #[arg(long)]
    pub out: PathBuf,
    /// Raw tables: compute the features this many users at a time, as `sesame batch` does, which
    /// bounds the pipeline's memory; the report is identical. 0: the whole population at once.
    #[arg(long, default_value_t = crate::features::chunked::DEFAULT_CHUNK_USERS)]
    pub chunk_users: usize,
}

/// Evaluate, write the report directory, then enforce `--fail-below`.
pub fn run_evaluate(args: &EvaluateArgs) -> anyhow::Result<Report> {
    // parse the thresholds first: a typo must not cost a long evaluation
    let thresholds = args
        .fail_below
        .as_deref()
        .map(parse_thresholds)
        .transpose()?;
    let report = build_report(args)?;
    let json = serde_json::to_string_pretty(&report).context("serializing the report")?;
    let html = render_html(&report);
    write_dir_atomic(
        &args.out,
        &[(REPORT_JSON, json.as_str()), (REPORT_HTML, html.as_str())],
    )?;
    let line = |name: &str, m: &ModelEval| {
        println!(
            "{name:<10} {:<12} n={:<6} bad rate {:.4}  AUC {:.4}  KS {:.4}  Gini {:.4}  logloss {:.4}  Brier {:.4}  PSI {:.4}",
            m.model_version, m.n, m.bad_rate, m.auc, m.ks, m.gini, m.log_loss, m.brier, m.psi
        )
    };
    line("champion", &report.model);
    if let Some(c) = &report.compare {
        line("challenger", c);
    }
    println!("report written to {}", args.out.display());
    if let Some(t) = thresholds {
        let miss = missed(&report.model, &t);
        if !miss.is_empty() {
            anyhow::bail!(
                "--fail-below: {} on {} (report written to {})",
                miss.join(", "),
                args.model.display(),
                args.out.display()
            );
        }
    }
    Ok(report)
}

/// Everything but the writing.
pub fn build_report(args: &EvaluateArgs) -> anyhow::Result<Report> {
    let model = evaluate_dir(args, &args.model)?;
    let compare = args
        .compare
        .as_deref()
        .map(|dir| evaluate_dir(args, dir).with_context(|| format!("--compare {}", dir.display())))
        .transpose()?;
    Ok(Report {
        model_dir: args.model.display().to_string(),
        data: args.data.display().to_string(),
        split: args.split.as_str().to_string(),
        model,
        compare_model_dir: args.compare.as_ref().map(|p| p.display().to_string()),
        compare,
    })
}

fn evaluate_dir(args: &EvaluateArgs, dir: &Path) -> anyhow::Result<ModelEval> {
    let (scorecard, ds) = load(args, dir)?;
    evaluate_model(&scorecard, &ds).with_context(|| format!("evaluating {}", dir.display()))
}

/// The model and its evaluation rows (already split).
fn load(args: &EvaluateArgs, dir: &Path) -> anyhow::Result<(Scorecard, Dataset)> {
    if args.data.is_dir() {
        let bundle = ModelBundle::load(dir).map_err(|e| anyhow::anyhow!("--model: {e}"))?;
        let as_of = crate::io::parse_date("--as-of", &args.as_of)?;
        let target = args.target.clone().unwrap_or_else(|| "defaulted".into());
        let labels = args.data.join("labels.parquet");
        let (ds, joined) = crate::model::cli::pipeline_dataset(
            &bundle.pipeline,
            &args.data,
            as_of,
            &labels,
            &target,
            args.bad_value.as_deref(),
            args.chunk_users,
        )
        .with_context(|| format!("--data {}", args.data.display()))?;
        let ds = split(args, ds, &joined)?;
        Ok((bundle.scorecard, ds))
    } else {
        let scorecard =
            Scorecard::load(dir).with_context(|| format!("--model {}", dir.display()))?;
        let Some(target) = args.target.clone() else {
            anyhow::bail!("--target: required for a flat file (the column that marks bad rows)");
        };
        let df = read_table(&args.data)?;
        let opts = FrameOptions {
            target,
            bad_value: args.bad_value.clone(),
            exclude: args.split_key.iter().cloned().collect(),
            ..Default::default()
        };
        let ds = frame_to_dataset(&df, &opts)
            .with_context(|| format!("--data {}", args.data.display()))?;
        let ds = split(args, ds, &df)?;
        Ok((scorecard, ds))
    }
}

fn split(
    args: &EvaluateArgs,
    ds: Dataset,
    df: &polars::prelude::DataFrame,
) -> anyhow::Result<Dataset> {
    let keys: Vec<i64> = match &args.split_key {
        Some(k) => integer_column(df, k)?,
        None => (0..df.height() as i64).collect(),
    };
    let is_train = |i: usize| keys.get(i).is_some_and(|k| k.rem_euclid(10) < 7);
    Ok(match args.split {
        Split::All => ds,
        Split::Train => ds.filter_rows(is_train),
        Split::Test => ds.filter_rows(|i| !is_train(i)),
    })
}

/// Write `files` into `out` atomically: a temporary sibling directory renamed onto `out`
/// (an existing `out` is replaced only then).
pub fn write_dir_atomic(out: &Path, files: &[(&str, &str)]) -> anyhow::Result<()> {
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(".sesame-eval-")
        .tempdir_in(&parent)
        .with_context(|| format!("creating a temporary directory in {}", parent.display()))?;
    for (name, contents) in files {
        let p = tmp.path().join(name);
        std::fs::write(&p, contents).with_context(|| format!("writing {}", p.display()))?;
    }
    let old = parent.join(format!(
        ".{}.old-{}",
        out.file_name().and_then(|s| s.to_str()).unwrap_or("report"),
        std::process::id()
    ));
    let had_old = out.exists();
    if had_old {
        std::fs::rename(out, &old)
            .with_context(|| format!("moving the old {} aside", out.display()))?;
    }
    let tmp_path = tmp.keep();
    if let Err(e) = std::fs::rename(&tmp_path, out) {
        let _ = std::fs::remove_dir_all(&tmp_path);
        if had_old {
            let _ = std::fs::rename(&old, out);
        }
        return Err(anyhow::anyhow!("writing {}: {e}", out.display()));
    }
    if had_old {
        let _ = std::fs::remove_dir_all(&old);
    }
    Ok(())
}
