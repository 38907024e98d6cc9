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
    /// Target column (1 = bad, or see --bad-value).
    #[arg(long)]
    pub target: String,
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
}

pub fn run_train(args: TrainArgs) -> anyhow::Result<()> {
    let df = read_table(&args.data)?;
    let keys: Vec<i64> = match &args.split_key {
        Some(k) => integer_column(&df, k)?,
        None => (0..df.height() as i64).collect(),
    };
    let opts = FrameOptions {
        target: args.target.clone(),
        bad_value: args.bad_value.clone(),
        id_column: args.id_column.clone(),
        exclude: args.split_key.iter().cloned().collect(),
        ..Default::default()
    };
    let ds = frame_to_dataset(&df, &opts)?;
    let is_train = |i: usize| keys.get(i).is_some_and(|k| k.rem_euclid(10) < 7);
    let train = ds.filter_rows(is_train);
    let test = ds.filter_rows(|i| !is_train(i));
    let mut cfg = TrainConfig {
        created: args.created.clone(),
        ..Default::default()
    };
    if args.no_challenger {
        cfg.challenger = None;
    }
    let model = train_dataset(
        &train,
        if test.n_rows() > 0 { Some(&test) } else { None },
        &cfg,
    )
    .with_context(|| format!("training on {}", args.data.display()))?;
    // write first: a closed stdout (e.g. `| head`) must not cost the model
    write_model_dir(&args.out, &model)?;
    print_report(&model);
    println!("model written to {}", args.out.display());
    Ok(())
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
    println!("features by IV:");
    for c in sc.training.candidates.iter().take(25) {
        println!("  {:<32} IV {:.4}  {}", c.name, c.iv, c.status);
    }
}

/// Write scorecard.json (+ challenger.json) into `out` atomically (temporary sibling + rename).
pub fn write_model_dir(out: &Path, model: &TrainedModel) -> Result<(), ModelError> {
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
