//! `sesame train`: flat file → fixed split → scorecard (+ challenger) → model directory.
//!
//! Fixed split: a row is in train iff key mod 10 < 7 (Euclidean remainder), key = the
//! `--split-key` column if given, else the 0-based row index. The split column is not a feature.
//! The model directory is written atomically: everything goes into a temporary sibling
//! directory which is renamed onto `--out` at the end (an existing `--out` is replaced only
//! then); on any error no partial directory is left.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::features::frame::{frame_to_dataset, integer_column, read_table, FrameOptions};

use super::challenger::CHALLENGER_FILE;
use super::scorecard::write_atomic;
use super::train::{train_dataset, TrainConfig, TrainedModel};
use super::ModelError;

#[derive(Debug, Clone, clap::Args)]
pub struct TrainArgs {
    /// CSV or Parquet file with one row per applicant.
    #[arg(long)]
    pub data: PathBuf,
    /// Target column (1 = bad, or see --bad-value). Pipeline mode: the label column (default `defaulted`).
    #[arg(long)]
    pub target: Option<String>,
    /// Value of the target meaning bad, for non-binary targets.
    #[arg(long)]
    pub bad_value: Option<String>,
    /// Identifier column (not a feature).
    #[arg(long)]
    pub id_column: Option<String>,
    /// Integer column for the fixed split (train iff key % 10 < 7); default: row index.
    #[arg(long)]
    pub split_key: Option<String>,
    /// Model directory to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Fixed RFC 3339 creation time (reproducible artifacts).
    #[arg(long)]
    pub created: Option<String>,
    /// Skip the random-forest challenger.
    #[arg(long)]
    pub no_challenger: bool,
    /// Pipeline mode: compute the features with this pipeline from the raw tables in `--data`
    /// (a directory); the pipeline is copied into the model directory and its hash recorded.
    #[arg(long)]
    pub pipeline: Option<PathBuf>,
    /// Pipeline mode: features as of this date (YYYY-MM-DD).
    #[arg(long)]
    pub as_of: Option<String>,
    /// Pipeline mode: labels table keyed like the pipeline (default `<data>/labels.parquet`).
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Model version recorded in the artifact.
    #[arg(long)]
    pub model_version: Option<String>,
    /// Pipeline mode: compute the features this many users at a time, as `sesame batch` does,
    /// which bounds the pipeline's memory; the features, and so the model, are identical.
    /// 0: the whole population at once.
    #[arg(long, default_value_t = crate::features::chunked::DEFAULT_CHUNK_USERS)]
    pub chunk_users: usize,
}

pub fn run_train(args: TrainArgs) -> anyhow::Result<()> {
    if args.pipeline.is_some() {
        return run_train_pipeline(args);
    }
    let Some(target) = args.target.clone() else {
        anyhow::bail!("--target: required for a flat file (the column that marks bad rows)");
    };
    let df = read_table(&args.data)?;
    let keys: Vec<i64> = match &args.split_key {
        Some(k) => integer_column(&df, k)?,
        None => (0..df.height() as i64).collect(),
    };
    let opts = FrameOptions {
        target,
        bad_value: args.bad_value.clone(),
        id_column: args.id_column.clone(),
        exclude: args.split_key.iter().cloned().collect(),
        ..Default::default()
    };
    let ds = frame_to_dataset(&df, &opts)?;
    let is_train = |i: usize| keys.get(i).is_some_and(|k| k.rem_euclid(10) < 7);
    let train = ds.filter_rows(is_train);
    let test = ds.filter_rows(|i| !is_train(i));
    let cfg = train_config(&args, None);
    let model = train_dataset(
        &train,
        if test.n_rows() > 0 { Some(&test) } else { None },
        &cfg,
    )
    .with_context(|| format!("training on {}", args.data.display()))?;
    // write first: a closed stdout (e.g. `| head`) must not cost the model
    write_model_dir(&args.out, &model, &[])?;
    print_report(&model);
    println!("model written to {}", args.out.display());
    Ok(())
}

fn train_config(args: &TrainArgs, pipeline_hash: Option<String>) -> TrainConfig {
    let mut cfg = TrainConfig {
        created: args.created.clone(),
        pipeline_hash,
        ..Default::default()
    };
    if let Some(v) = &args.model_version {
        cfg.model_version = v.clone();
    }
    if args.no_challenger {
        cfg.challenger = None;
    }
    cfg
}

/// Pipeline mode: raw tables → the pipeline's features (the same code the service and batch
/// use) → labels joined by key → fixed split → scorecard; the pipeline file travels with the model.
fn run_train_pipeline(args: TrainArgs) -> anyhow::Result<()> {
    use crate::features::Pipeline;

    let pipeline_path = args.pipeline.clone().unwrap_or_default();
    let pipeline_text = std::fs::read_to_string(&pipeline_path)
        .with_context(|| format!("--pipeline: cannot read {}", pipeline_path.display()))?;
    let pipeline = Pipeline::load(&pipeline_path)?;
    let as_of = crate::io::parse_date("--as-of", args.as_of.as_deref().unwrap_or(""))?;
    let target = args.target.clone().unwrap_or_else(|| "defaulted".into());
    let labels_path = args
        .labels
        .clone()
        .unwrap_or_else(|| args.data.join("labels.parquet"));
    let started = std::time::Instant::now();
    let (ds, joined) = pipeline_dataset(
        &pipeline,
        &args.data,
        as_of,
        &labels_path,
        &target,
        args.bad_value.as_deref(),
        args.chunk_users,
    )?;
    let keys: Vec<i64> = match &args.split_key {
        Some(k) => integer_column(&joined, k)?,
        None => (0..joined.height() as i64).collect(),
    };
    // the polars frames are not needed any more: free them before training
    drop(joined);
    let is_train = |i: usize| keys.get(i).is_some_and(|k| k.rem_euclid(10) < 7);
    let train = ds.filter_rows(is_train);
    let test = ds.filter_rows(|i| !is_train(i));
    drop(ds);
    let feature_secs = started.elapsed().as_secs_f64();
    let cfg =
        train_config(&args, Some(pipeline.hash().to_string())).with_pipeline_hints(&pipeline.spec);
    let model = train_dataset(
        &train,
        if test.n_rows() > 0 { Some(&test) } else { None },
        &cfg,
    )
    .with_context(|| format!("training on {}", args.data.display()))?;
    write_model_dir(
        &args.out,
        &model,
        &[(crate::scoring::bundle::PIPELINE_FILE, &pipeline_text)],
    )?;
    print_report(&model);
    println!(
        "time: features {feature_secs:.1}s ({} rows), training {:.1}s",
        train.n_rows() + test.n_rows(),
        model.timings.iter().map(|t| t.1).sum::<f64>()
    );
    println!(
        "model written to {} (pipeline {} hash {})",
        args.out.display(),
        pipeline.spec.name,
        &pipeline.hash()[..12]
    );
    Ok(())
}

/// Pipeline mode data: raw tables in `data` → the pipeline's features as of `as_of` → labels
/// (`target` of `labels_path`, 1/true = bad unless `bad_value`) joined by key, in the feature
/// table's row order. Returns the dataset (with target) and the joined frame (for a split key).
/// Training and `sesame evaluate` share this so that both see the same rows in the same order.
/// The features come from the population run `sesame batch` uses, `chunk_users` users at a time
/// (0: one run), so a population too large for one run in memory can still be trained on; the
/// result does not depend on `chunk_users`.
pub fn pipeline_dataset(
    pipeline: &crate::features::Pipeline,
    data: &Path,
    as_of: chrono::NaiveDate,
    labels_path: &Path,
    target: &str,
    bad_value: Option<&str>,
    chunk_users: usize,
) -> anyhow::Result<(crate::domain::Dataset, polars::prelude::DataFrame)> {
    use crate::features::{to_dataset, Tables};
    use polars::prelude::*;

    let tables = Tables::open_dir(&pipeline.spec, data)?;
    let features =
        crate::features::cli::compute_with_progress(pipeline, &tables, as_of, chunk_users, false)?;
    let key = pipeline.spec.key.clone();
    let labels = read_table(labels_path)?;
    let labels = labels
        .lazy()
        .select([col(key.as_str()), col(target).alias("__target")])
        .collect()
        .map_err(|e| {
            anyhow::anyhow!(
                "--labels {}: needs columns '{key}' and '{target}': {e}",
                labels_path.display()
            )
        })?;
    let mut join = JoinArgs::new(JoinType::Inner);
    join.maintain_order = MaintainOrderJoin::Left;
    let joined = features
        .lazy()
        .join(
            labels.lazy(),
            [col(key.as_str())],
            [col(key.as_str())],
            join,
        )
        .collect()
        .map_err(|e| anyhow::anyhow!("joining labels: {e}"))?;
    let mut ds = to_dataset(&joined, &pipeline.spec)?;
    let target_col = joined
        .column("__target")
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let as_text = target_col
        .cast(&DataType::String)
        .map_err(|e| anyhow::anyhow!("target '{target}': {e}"))?;
    let mut y = Vec::with_capacity(joined.height());
    for (i, v) in as_text
        .str()
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .iter()
        .enumerate()
    {
        let v = v.ok_or_else(|| anyhow::anyhow!("target '{target}': missing on row {i}"))?;
        y.push(match (bad_value, v) {
            (Some(b), v) => u8::from(v == b),
            (None, "1" | "true") => 1,
            (None, "0" | "false") => 0,
            (None, other) => {
                anyhow::bail!("target '{target}': value '{other}' is not binary; pass --bad-value")
            }
        });
    }
    ds.target = Some(y);
    Ok((ds, joined))
}

fn print_report(m: &TrainedModel) {
    let sc = &m.scorecard;
    let line = |name: &str, s: &Option<crate::eval::metrics::Summary>| match s {
        Some(s) => println!(
            "{name:<18} n={:<6} AUC {:.4}  KS {:.4}  Gini {:.4}  logloss {:.4}",
            s.n, s.auc, s.ks, s.gini, s.log_loss
        ),
        None => println!("{name:<18} n/a"),
    };
    line("scorecard train", &sc.metrics.train);
    line("scorecard test", &sc.metrics.test);
    if let Some(c) = &sc.challenger {
        line("challenger train", &c.train);
        line("challenger test", &c.test);
    }
    println!(
        "alpha {} (validation grid {:?})",
        sc.training.alpha, sc.training.alpha_grid
    );
    let stages: Vec<String> = m
        .timings
        .iter()
        .map(|(stage, secs)| format!("{stage} {secs:.1}s"))
        .collect();
    println!("training stages: {}", stages.join(", "));
    println!("features by IV:");
    for c in sc.training.candidates.iter().take(25) {
        println!("  {:<32} IV {:.4}  {}", c.name, c.iv, c.status);
    }
}

/// Write scorecard.json (+ challenger.json) into `out` atomically (temporary sibling + rename).
pub fn write_model_dir(
    out: &Path,
    model: &TrainedModel,
    extra_files: &[(&str, &str)],
) -> Result<(), ModelError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ModelError::Io { path, source }
    };
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(io(&parent))?;
    let tmp = tempfile::Builder::new()
        .prefix(".sesame-model-")
        .tempdir_in(&parent)
        .map_err(io(&parent))?;
    model.scorecard.save(tmp.path())?;
    if let Some(f) = &model.challenger {
        write_atomic(tmp.path(), CHALLENGER_FILE, &f.to_json()?)?;
    }
    for (name, contents) in extra_files {
        write_atomic(tmp.path(), name, contents)?;
    }
    let old = parent.join(format!(
        ".{}.old-{}",
        out.file_name().and_then(|s| s.to_str()).unwrap_or("model"),
        std::process::id()
    ));
    let had_old = out.exists();
    if had_old {
        std::fs::rename(out, &old).map_err(io(out))?;
    }
    let tmp_path = tmp.keep();
    if let Err(source) = std::fs::rename(&tmp_path, out) {
        let _ = std::fs::remove_dir_all(&tmp_path);
        if had_old {
            let _ = std::fs::rename(&old, out);
        }
        return Err(ModelError::Io {
            path: out.to_path_buf(),
            source,
        });
    }
    if had_old {
        let _ = std::fs::remove_dir_all(&old);
    }
    Ok(())
}
