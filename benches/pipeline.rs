//! The feature pipeline against a hand-written polars floor, on a generated population.
//!
//! `cargo bench --bench pipeline` generates 100,000 users into a temporary directory (about a
//! minute in all on 2 cores); `SESAME_BENCH_DATA=/tmp/g1m cargo bench --bench pipeline` runs on an
//! existing population (e.g. `sesame datasets generate --users 1000000 --out /tmp/g1m`).
//! Prints wall time and peak RSS of (a) one `group_by(user_id).agg()` over the transactions — the
//! floor — and (b) the whole demo pipeline (62 features, one aggregate pass per table plus the
//! graph passes), and the ratio per aggregate pass.

use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::NaiveDate;
use polars::prelude::*;
use sesame::features::spec::Definition;
use sesame::features::{Pipeline, Tables};

/// Peak resident set since the last reset (Linux), in MiB.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l.to_string())
        })
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|k| k.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn reset_peak_rss() {
    // Writing 5 to clear_refs resets VmHWM to the current RSS.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn main() {
    let as_of = NaiveDate::from_ymd_opt(2025, 12, 31).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let _tmp;
    let data: PathBuf = match std::env::var("SESAME_BENCH_DATA") {
        Ok(d) => PathBuf::from(d),
        Err(_) => {
            _tmp = tempfile::tempdir().expect("temp dir");
            let out = _tmp.path().join("pop");
            let exe = std::env::var("CARGO_BIN_EXE_sesame").unwrap_or_else(|_| {
                root.join("target/release/sesame")
                    .to_string_lossy()
                    .into_owned()
            });
            let status = std::process::Command::new(exe)
                .args([
                    "datasets", "generate", "--users", "100000", "--quiet", "--out",
                ])
                .arg(&out)
                .status();
            if !matches!(status, Ok(s) if s.success()) {
                eprintln!("could not generate a population (build the binary first: cargo build --release)");
                std::process::exit(1);
            }
            out
        }
    };

    let pipeline = Pipeline::load(&root.join("pipelines/demo.toml")).expect("pipeline");

    // (a) The floor: one hand-written group-by over the transactions.
    reset_peak_rss();
    let t = Instant::now();
    let tx = data.join("transactions.parquet");
    let as_of_ms = (as_of - NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()).num_days() * 86_400_000;
    let floor = LazyFrame::scan_parquet(
        PlRefPath::new(tx.to_str().unwrap()),
        ScanArgsParquet::default(),
    )
    .unwrap()
    .filter(col("ts").cast(DataType::Int64).lt(lit(as_of_ms)))
    .group_by([col("user_id")])
    .agg([
        len().alias("n"),
        col("amount").sum().alias("amount_sum"),
        col("amount").mean().alias("amount_mean"),
        col("amount").max().alias("amount_max"),
    ])
    .collect()
    .expect("floor");
    let floor_s = t.elapsed().as_secs_f64();
    let floor_rss = peak_rss_mib();

    // (b) The pipeline.
    reset_peak_rss();
    let t = Instant::now();
    let tables = Tables::open_dir(&pipeline.spec, &data).expect("tables");
    let features = pipeline.compute(&tables, as_of).expect("pipeline");
    let pipe_s = t.elapsed().as_secs_f64();
    let pipe_rss = peak_rss_mib();

    let tables_aggregated =
        pipeline
            .spec
            .tables
            .iter()
            .filter(|t| {
                pipeline.spec.features.iter().any(
                    |f| matches!(&f.def, Definition::Aggregate { table, .. } if *table == t.name),
                )
            })
            .count();
    let graph_passes = pipeline
        .spec
        .features
        .iter()
        .filter(|f| {
            matches!(
                f.def,
                Definition::Neighbors { .. }
                    | Definition::TwoHop { .. }
                    | Definition::Shared { .. }
            )
        })
        .count();
    let passes = tables_aggregated + graph_passes;
    println!("data: {} ({} users)", data.display(), features.height());
    println!("floor    : group_by(user_id).agg(4 aggregates) over transactions: {floor_s:>7.2} s, peak RSS {floor_rss:>7.0} MiB ({} users)", floor.height());
    println!(
        "pipeline : {} features, {passes} passes ({tables_aggregated} table group-bys + {graph_passes} graph passes): {pipe_s:>7.2} s, peak RSS {pipe_rss:>7.0} MiB",
        pipeline.spec.features.len()
    );
    println!(
        "ratio    : total {:.2}x the floor; per aggregate pass {:.2}x",
        pipe_s / floor_s,
        pipe_s / passes as f64 / floor_s
    );
}
