//! `sesame batch`: scores a whole population with the service's own code path
//! ([`crate::scoring::engine::decide_rows`]: the bundle's scorecard, then the rule set), in parts
//! of a bounded number of users.
//!
//! Each part is written atomically to `<out>.parts/part-NNNNN.parquet`; the final file is
//! assembled from the parts into a temporary file beside `--out` and renamed into place, then the
//! parts directory is removed. A killed job therefore never leaves a partial `--out`, and a re-run
//! with `--resume` skips the parts already written (the directory carries a manifest of the job,
//! so parts of a different job are never mixed in).

pub mod sql;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use chrono::NaiveDate;
use polars::prelude::*;

use crate::domain::Dimension;
use crate::features::{to_dataset, Tables};
use crate::model::scorecard::N_REASONS;
use crate::model::ReasonText;
use crate::rules::RuleSet;
use crate::scoring::bundle::ModelBundle;
use crate::scoring::engine::{check_scenario, decide_rows};
use crate::scoring::ScoreOutcome;

pub const DEFAULT_AS_OF: &str = crate::datasets::DEMO_AS_OF;
pub const DEFAULT_PART_SIZE: usize = 100_000;
pub use crate::features::chunked::DEFAULT_CHUNK_USERS;
const MANIFEST: &str = "manifest.txt";

#[derive(clap::Args, Debug, Clone)]
pub struct BatchArgs {
    /// Model directory (`pipeline.toml` + `scorecard.json`).
    #[arg(long)]
    pub model: PathBuf,
    /// Raw tables (a directory, run through the model's pipeline) or a feature table
    /// (`.parquet` / `.csv`, as `sesame features` writes it, `user_id` included).
    #[arg(long)]
    pub data: PathBuf,
    /// Output Parquet file.
    #[arg(long)]
    pub out: PathBuf,
    /// Also decide with this scenario's rules (adds `decision` and `params`).
    #[arg(long)]
    pub scenario: Option<String>,
    /// Features as of this date (YYYY-MM-DD), for raw tables.
    #[arg(long, default_value = DEFAULT_AS_OF)]
    pub as_of: String,
    /// Rule directory (used with --scenario).
    #[arg(long, default_value = "rules")]
    pub rules: PathBuf,
    /// Keep the parts already written by an interrupted run of the same job.
    #[arg(long)]
    pub resume: bool,
    /// Users per part.
    #[arg(long, default_value_t = DEFAULT_PART_SIZE)]
    pub part_size: usize,
    /// Raw tables: compute the features this many users at a time (own-row features, then graph
    /// features), which bounds the pipeline's memory; the result is identical. 0: the whole
    /// population at once.
    #[arg(long, default_value_t = DEFAULT_CHUNK_USERS)]
    pub chunk_users: usize,
    /// Test hook: sleep this long after each part (to interrupt a job reliably).
    #[arg(long, default_value_t = 0, hide = true)]
    pub part_delay_ms: u64,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

impl BatchArgs {
    /// Defaults for library callers (tests): everything but the three paths as the CLI defaults.
    pub fn new(model: &Path, data: &Path, out: &Path) -> BatchArgs {
        BatchArgs {
            model: model.to_path_buf(),
            data: data.to_path_buf(),
            out: out.to_path_buf(),
            scenario: None,
            as_of: DEFAULT_AS_OF.into(),
            rules: PathBuf::from("rules"),
            resume: false,
            part_size: DEFAULT_PART_SIZE,
            chunk_users: DEFAULT_CHUNK_USERS,
            part_delay_ms: 0,
            quiet: true,
        }
    }
}

/// What a finished job reports.
#[derive(Debug, Clone, Default)]
pub struct BatchSummary {
    pub rows: usize,
    pub parts: usize,
    /// Parts found done by an earlier run (`--resume`).
    pub resumed_parts: usize,
    pub bands: BTreeMap<String, u64>,
    pub decisions: BTreeMap<String, u64>,
    /// Wall time in all, and of the feature table (pipeline run or file read) alone.
    pub seconds: f64,
    pub feature_seconds: f64,
}

impl std::fmt::Display for BatchSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "scored {} users in {:.1}s ({:.0} rows/s; features {:.1}s), {} parts ({} resumed)",
            self.rows,
            self.seconds,
            self.rows as f64 / self.seconds.max(1e-9),
            self.feature_seconds,
            self.parts,
            self.resumed_parts
        )?;
        let share = |n: u64| 100.0 * n as f64 / (self.rows.max(1)) as f64;
        let bands: Vec<String> = self
            .bands
            .iter()
            .map(|(b, n)| format!("{b} {n} ({:.1}%)", share(*n)))
            .collect();
        write!(f, "bands: {}", bands.join(", "))?;
        if !self.decisions.is_empty() {
            let d: Vec<String> = self
                .decisions
                .iter()
                .map(|(b, n)| format!("{b} {n} ({:.1}%)", share(*n)))
                .collect();
            write!(f, "\ndecisions: {}", d.join(", "))?;
        }
        Ok(())
    }
}

pub fn batch_cli(args: BatchArgs) -> anyhow::Result<()> {
    let summary = run_batch(&args)?;
    println!("{summary}");
    println!("wrote {}", args.out.display());
    Ok(())
}

/// The parts directory of an output file.
pub fn parts_dir(out: &Path) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    out.with_file_name(format!("{name}.parts"))
}

fn part_path(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("part-{i:05}.parquet"))
}

/// Runs a batch job. Every input problem is reported before anything is written.
pub fn run_batch(args: &BatchArgs) -> anyhow::Result<BatchSummary> {
    let started = Instant::now();
    if args.part_size == 0 {
        bail!("--part-size must be at least 1");
    }
    if !args.model.is_dir() {
        bail!("model directory {} does not exist", args.model.display());
    }
    let bundle = ModelBundle::load(&args.model).map_err(anyhow::Error::msg)?;
    let as_of = crate::io::parse_date("--as-of", &args.as_of)?;
    let spec = &bundle.pipeline.spec;
    let rules = match &args.scenario {
        Some(s) => {
            let rules = RuleSet::load(&args.rules, &spec.feature_metas())
                .map_err(|e| anyhow::anyhow!("rules refused: {e}"))?;
            check_scenario(&rules, s)?;
            Some(rules)
        }
        // No scenario: no rule is evaluated (as for a Score request without one).
        None => None,
    };
    let features_started = Instant::now();
    let df = load_features(&bundle, &args.data, as_of, args.chunk_users, args.quiet)?;
    let feature_seconds = features_started.elapsed().as_secs_f64();
    let n = df.height();
    if n == 0 {
        bail!("{}: no users to score", args.data.display());
    }
    let n_parts = n.div_ceil(args.part_size);

    // The job's identity: a resumed run must be the same job, part for part.
    let manifest = format!(
        "model_version={}\npipeline={}\nscenario={}\nrules={}\nas_of={as_of}\ndata={}\nrows={n}\npart_size={}\n",
        bundle.version(),
        bundle.pipeline.hash(),
        args.scenario.as_deref().unwrap_or(""),
        rules.as_ref().map(|r| r.version.as_str()).unwrap_or(""),
        std::fs::canonicalize(&args.data)
            .unwrap_or_else(|_| args.data.clone())
            .display(),
        args.part_size
    );
    let dir = parts_dir(&args.out);
    prepare_parts_dir(&dir, &manifest, args.resume)?;

    let dims: Vec<Dimension> = Dimension::ALL
        .iter()
        .copied()
        .filter(|d| {
            bundle
                .scorecard
                .features
                .iter()
                .any(|f| f.meta.dimension == *d)
        })
        .collect();
    let pb = if args.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(n as u64)
    };
    pb.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} users  {per_sec}  ETA {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut resumed = 0;
    for i in 0..n_parts {
        let offset = i * args.part_size;
        let len = args.part_size.min(n - offset);
        let path = part_path(&dir, i);
        if path.is_file() {
            resumed += 1;
            pb.inc(len as u64);
            continue;
        }
        let part = df.slice(offset as i64, len);
        let mut out = score_part(
            &bundle,
            rules.as_ref(),
            args.scenario.as_deref(),
            as_of,
            &part,
            &dims,
        )?;
        crate::io::write_parquet_atomic(&mut out, &path)?;
        crate::features::chunked::debug_rss(&format!("scored part {i}"));
        pb.inc(len as u64);
        if args.part_delay_ms > 0 {
            std::thread::sleep(Duration::from_millis(args.part_delay_ms));
        }
    }
    pb.finish_and_clear();
    drop(df);

    let mut summary = assemble(&dir, n_parts, &args.out)?;
    crate::features::chunked::debug_rss("assembled the output");
    if summary.rows != n {
        bail!(
            "assembled {} rows from {} but the input has {n}; output not written",
            summary.rows,
            dir.display()
        );
    }
    std::fs::remove_dir_all(&dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    summary.parts = n_parts;
    summary.resumed_parts = resumed;
    summary.seconds = started.elapsed().as_secs_f64();
    summary.feature_seconds = feature_seconds;
    Ok(summary)
}

/// Raw tables through the model's pipeline, or a feature table read as is; either way every
/// pipeline feature and the key must be there.
fn load_features(
    bundle: &ModelBundle,
    data: &Path,
    as_of: NaiveDate,
    chunk_users: usize,
    quiet: bool,
) -> anyhow::Result<DataFrame> {
    let spec = &bundle.pipeline.spec;
    let df = if data.is_dir() {
        let tables = Tables::open_dir(spec, data)?;
        crate::features::cli::compute_with_progress(
            &bundle.pipeline,
            &tables,
            as_of,
            chunk_users,
            quiet,
        )?
    } else if data.is_file() {
        let ext = data
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        match ext.as_str() {
            "parquet" | "pq" => crate::io::read_parquet(data)?,
            "csv" => CsvReadOptions::default()
                .with_has_header(true)
                .try_into_reader_with_file_path(Some(data.to_path_buf()))
                .and_then(|r| r.finish())
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", data.display()))?,
            _ => bail!(
                "{}: a feature table must be .parquet or .csv (or pass a directory of raw tables)",
                data.display()
            ),
        }
    } else {
        bail!("--data {} does not exist", data.display());
    };
    let mut lacking: Vec<&str> = Vec::new();
    if df.column(spec.key.as_str()).is_err() {
        lacking.push(spec.key.as_str());
    }
    for f in &spec.features {
        if df.column(f.meta.name.as_str()).is_err() {
            lacking.push(f.meta.name.as_str());
        }
    }
    if !lacking.is_empty() {
        bail!(
            "{}: the feature table lacks column(s) {} required by model {}",
            data.display(),
            lacking.join(", "),
            bundle.version()
        );
    }
    Ok(df)
}

fn prepare_parts_dir(dir: &Path, manifest: &str, resume: bool) -> anyhow::Result<()> {
    let mpath = dir.join(MANIFEST);
    // A directory without a manifest was killed before its first part: start it afresh.
    if resume && mpath.is_file() {
        let found = std::fs::read_to_string(&mpath)
            .with_context(|| format!("cannot read {}", mpath.display()))?;
        if found != manifest {
            bail!(
                "{} holds parts of a different job (model, data, scenario, rules or part size differ); remove it or run without --resume",
                dir.display()
            );
        }
        return Ok(());
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = crate::io::temp_beside(&mpath);
    std::fs::write(&tmp, manifest).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &mpath).with_context(|| format!("cannot write {}", mpath.display()))?;
    Ok(())
}

/// One part's output: the part cut into one slice per core, and each slice's rows converted,
/// scored and turned into output columns on its own thread, which also frees the outcomes (done
/// on the main thread, converting and freeing were a quarter of the scoring step).
fn score_part(
    bundle: &ModelBundle,
    rules: Option<&RuleSet>,
    scenario: Option<&str>,
    as_of: NaiveDate,
    part: &DataFrame,
    dims: &[Dimension],
) -> anyhow::Result<DataFrame> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 16);
    let n = part.height();
    let chunk = n.div_ceil(threads).max(1);
    let spec = &bundle.pipeline.spec;
    let frames = std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .step_by(chunk)
            .map(|lo| {
                let slice = part.slice(lo as i64, chunk.min(n - lo));
                s.spawn(move || -> anyhow::Result<DataFrame> {
                    let ds = to_dataset(&slice, spec)?;
                    // Each user's row is built just before it is scored and dropped after: rows
                    // of a whole part (86 values x 100k users, ~275 MB) made every lookup a
                    // cache miss.
                    let outcomes = decide_rows(
                        bundle,
                        rules,
                        scenario,
                        as_of,
                        (0..ds.n_rows()).map(|r| (ds.ids[r].as_str(), ds.row(r))),
                        // The output holds the reason codes, not their sentences.
                        ReasonText::Skip,
                    );
                    outcome_frame(&outcomes, dims, scenario.is_some())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| match h.join() {
                Ok(frame) => frame,
                Err(p) => std::panic::resume_unwind(p),
            })
            .collect::<anyhow::Result<Vec<DataFrame>>>()
    })?;
    let mut frames = frames.into_iter();
    let mut out = frames.next().ok_or_else(|| anyhow::anyhow!("empty part"))?;
    for f in frames {
        out.vstack_mut(&f)?;
    }
    Ok(out)
}

/// The output columns of one part.
fn outcome_frame(
    outcomes: &[ScoreOutcome],
    dims: &[Dimension],
    with_decision: bool,
) -> anyhow::Result<DataFrame> {
    let mut cols: Vec<Column> = vec![
        Column::new(
            "user_id".into(),
            outcomes
                .iter()
                .map(|o| o.user_id.as_str())
                .collect::<Vec<_>>(),
        ),
        Column::new(
            "score".into(),
            outcomes.iter().map(|o| o.score).collect::<Vec<i32>>(),
        ),
        Column::new(
            "band".into(),
            outcomes.iter().map(|o| o.band.as_str()).collect::<Vec<_>>(),
        ),
        Column::new(
            "pd".into(),
            outcomes
                .iter()
                .map(|o| o.probability_of_default)
                .collect::<Vec<f64>>(),
        ),
    ];
    for d in dims {
        let v: Vec<Option<i32>> = outcomes
            .iter()
            .map(|o| {
                o.dimension_scores
                    .iter()
                    .find(|(x, _)| x == d)
                    .map(|(_, s)| *s)
            })
            .collect();
        cols.push(Column::new(format!("dim_{}", d.as_str()).into(), v));
    }
    for k in 0..N_REASONS {
        let v: Vec<Option<&str>> = outcomes
            .iter()
            .map(|o| o.reasons.get(k).map(|r| r.code.as_str()))
            .collect();
        cols.push(Column::new(format!("reason_{}", k + 1).into(), v));
    }
    if with_decision {
        cols.push(Column::new(
            "decision".into(),
            outcomes
                .iter()
                .map(|o| o.decision.as_str())
                .collect::<Vec<_>>(),
        ));
        let params: Vec<String> = outcomes
            .iter()
            .map(|o| serde_json::to_string(&o.params))
            .collect::<Result<_, _>>()?;
        cols.push(Column::new("params".into(), params));
    }
    Ok(DataFrame::new(outcomes.len(), cols)?)
}

/// Concatenates the parts into a temporary file beside `out` (one part in memory at a time),
/// tallies bands and decisions, and renames the file into place.
fn assemble(dir: &Path, n_parts: usize, out: &Path) -> anyhow::Result<BatchSummary> {
    if let Some(parent) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let tmp = crate::io::temp_beside(out);
    let result = (|| -> anyhow::Result<BatchSummary> {
        let mut summary = BatchSummary::default();
        let file = File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
        let mut writer = None;
        let mut pending = Some(file);
        for i in 0..n_parts {
            let path = part_path(dir, i);
            let mut df = crate::io::read_parquet(&path)?;
            df.rechunk_mut();
            tally(&df, "band", &mut summary.bands)?;
            if df.column("decision").is_ok() {
                tally(&df, "decision", &mut summary.decisions)?;
            }
            summary.rows += df.height();
            if writer.is_none() {
                let f = pending.take().context("internal: writer already started")?;
                writer = Some(
                    ParquetWriter::new(f)
                        .with_compression(ParquetCompression::Zstd(None))
                        .batched(&df.schema())
                        .map_err(|e| anyhow::anyhow!("writing {}: {e}", out.display()))?,
                );
            }
            if let Some(w) = writer.as_mut() {
                w.write_batch(&df)
                    .map_err(|e| anyhow::anyhow!("writing {}: {e}", out.display()))?;
            }
        }
        if let Some(w) = writer {
            w.finish()
                .map_err(|e| anyhow::anyhow!("writing {}: {e}", out.display()))?;
        }
        std::fs::rename(&tmp, out)
            .with_context(|| format!("cannot rename into {}", out.display()))?;
        Ok(summary)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn tally(df: &DataFrame, col: &str, into: &mut BTreeMap<String, u64>) -> anyhow::Result<()> {
    let c = df.column(col)?.str()?.clone();
    for v in c.iter().flatten() {
        *into.entry(v.to_string()).or_default() += 1;
    }
    Ok(())
}
