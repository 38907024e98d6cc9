//! `sesame features`: the batch pipeline from raw tables to a feature table on disk.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::NaiveDate;
use polars::prelude::DataFrame;

use super::chunked::DEFAULT_CHUNK_USERS;
use super::{Pipeline, Tables};

pub fn run_features(pipeline: &Path, data: &Path, as_of: &str, out: &Path) -> anyhow::Result<()> {
    let as_of = crate::io::parse_date("--as-of", as_of)?;
    let pipeline = Pipeline::load(pipeline)?;
    let tables = Tables::open_dir(&pipeline.spec, data)?;
    let started = Instant::now();
    let mut df = compute_with_progress(&pipeline, &tables, as_of, DEFAULT_CHUNK_USERS, false)?;
    crate::io::write_parquet_atomic(&mut df, out)?;
    println!(
        "wrote {} users x {} features to {} in {:.1}s (pipeline {} hash {})",
        df.height(),
        df.width().saturating_sub(1),
        out.display(),
        started.elapsed().as_secs_f64(),
        pipeline.spec.name,
        &pipeline.hash()[..12]
    );
    Ok(())
}

/// The population run of `sesame features` and `sesame batch`: [`Pipeline::compute_chunked`]
/// with a progress bar on stderr (hidden when `quiet`).
pub fn compute_with_progress(
    pipeline: &Pipeline,
    tables: &Tables,
    as_of: NaiveDate,
    chunk_users: usize,
    quiet: bool,
) -> anyhow::Result<DataFrame> {
    let bar = if quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new_spinner()
    };
    let n_features = pipeline.spec.features.len();
    bar.set_message(format!("computing {n_features} features"));
    bar.enable_steady_tick(Duration::from_millis(200));
    let mut styled = false;
    let df = pipeline
        .compute_chunked(tables, as_of, chunk_users, |done, total| {
            if !styled {
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{spinner} {msg} {bar:30} {pos}/{len} chunks  {elapsed}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                bar.set_length(total as u64);
                styled = true;
            }
            bar.set_position(done as u64);
            bar.set_message(if 2 * done < total {
                format!("{n_features} features: own rows, chunks of {chunk_users} users")
            } else {
                format!("{n_features} features: graph, chunks of {chunk_users} users")
            });
        })
        .context("computing features")?;
    bar.finish_and_clear();
    Ok(df)
}
