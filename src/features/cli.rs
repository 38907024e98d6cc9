//! `sesame features`: the batch pipeline from raw tables to a feature table on disk.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;

use super::{Pipeline, Tables};

pub fn run_features(pipeline: &Path, data: &Path, as_of: &str, out: &Path) -> anyhow::Result<()> {
    let as_of = crate::io::parse_date("--as-of", as_of)?;
    let pipeline = Pipeline::load(pipeline)?;
    let tables = Tables::open_dir(&pipeline.spec, data)?;
    let started = Instant::now();
    // One polars query does the work; a spinner shows it is alive on long runs.
    let spinner = indicatif::ProgressBar::new_spinner().with_message(format!(
        "computing {} features",
        pipeline.spec.features.len()
    ));
    spinner.enable_steady_tick(Duration::from_millis(200));
    let mut df = pipeline
        .compute(&tables, as_of)
        .context("computing features")?;
    spinner.finish_and_clear();
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
