//! `sesame batch` and `sesame export-sql` on the shipped demo: parity with the Score RPC's engine
//! path, the exported SQL run in DuckDB, an interrupted job resumed, and bad input refused.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use polars::prelude::*;
use sesame::batch::sql::{export_model_sql, Dialect};
use sesame::batch::{parts_dir, run_batch, BatchArgs};
use sesame::features::{Pipeline, Tables};
use sesame::model::binning::BinRule;
use sesame::model::Scorecard;
use sesame::scoring::{EngineConfig, ScoreInput, ScoringEngine};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn model_dir() -> PathBuf {
    root().join("models/default")
}

fn read(path: &Path) -> DataFrame {
    sesame::io::read_parquet(path).expect("output parquet reads")
}

fn strs(df: &DataFrame, col: &str) -> Vec<Option<String>> {
    df.column(col)
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .map(|v| v.map(str::to_string))
        .collect()
}

fn ints(df: &DataFrame, col: &str) -> Vec<Option<i32>> {
    df.column(col).unwrap().i32().unwrap().iter().collect()
}

fn floats(df: &DataFrame, col: &str) -> Vec<Option<f64>> {
    df.column(col).unwrap().f64().unwrap().iter().collect()
}

/// The demo's feature table as `sesame features` writes it.
fn demo_features() -> &'static DataFrame {
    static DF: OnceLock<DataFrame> = OnceLock::new();
    DF.get_or_init(|| {
        let p = Pipeline::load(&model_dir().join("pipeline.toml")).unwrap();
        let tables = Tables::open_dir(&p.spec, &root().join("datasets/demo")).unwrap();
        p.compute(&tables, NaiveDate::from_ymd_opt(2025, 12, 31).unwrap())
            .unwrap()
    })
}

/// Same shape, names, types and values, floats compared by their bits (NaN and -0.0 included).
fn assert_same_bits(a: &DataFrame, b: &DataFrame, what: &str) {
    assert_eq!(a.shape(), b.shape(), "{what}: shape");
    assert_eq!(
        a.get_column_names(),
        b.get_column_names(),
        "{what}: columns"
    );
    for (x, y) in a.columns().iter().zip(b.columns()) {
        assert_eq!(x.dtype(), y.dtype(), "{what}: type of {}", x.name());
        if let (Ok(xf), Ok(yf)) = (x.f64(), y.f64()) {
            let bits = |c: &Float64Chunked| -> Vec<Option<u64>> {
                c.iter().map(|v| v.map(f64::to_bits)).collect()
            };
            assert!(bits(xf) == bits(yf), "{what}: column {} differs", x.name());
        } else {
            assert!(x.equals_missing(y), "{what}: column {} differs", x.name());
        }
    }
}

#[test]
fn chunked_pipeline_equals_the_single_run_bit_for_bit() {
    let p = Pipeline::load(&model_dir().join("pipeline.toml")).unwrap();
    let tables = Tables::open_dir(&p.spec, &root().join("datasets/demo")).unwrap();
    let as_of = NaiveDate::from_ymd_opt(2025, 12, 31).unwrap();
    let whole = demo_features();
    // Uneven chunks (the last one short); graph features cross every chunk boundary.
    let mut calls = Vec::new();
    let chunked = p
        .compute_chunked(&tables, as_of, 3_000, |done, total| {
            calls.push((done, total))
        })
        .unwrap();
    assert_eq!(calls.len(), 14);
    assert_eq!(calls.last(), Some(&(14, 14)));
    assert_same_bits(whole, &chunked, "chunk 3000");
    // One chunk or none: the single run itself.
    let one = p
        .compute_chunked(&tables, as_of, 20_000, |_, _| {})
        .unwrap();
    assert_same_bits(whole, &one, "one chunk");
}

#[test]
fn chunked_batch_equals_the_unchunked_batch_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let run = |chunk_users: usize| {
        let out = dir.path().join(format!("scores-{chunk_users}.parquet"));
        let mut args = BatchArgs::new(&model_dir(), &root().join("datasets/demo"), &out);
        args.scenario = Some("cash_loan".into());
        args.rules = root().join("rules");
        args.chunk_users = chunk_users;
        run_batch(&args).unwrap();
        read(&out)
    };
    let whole = run(0);
    assert_eq!(whole.height(), 20_000);
    assert_same_bits(&whole, &run(4_000), "batch chunked by 4000");
}

#[test]
fn batch_equals_the_score_rpc_engine_path() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("scores.parquet");
    let mut args = BatchArgs::new(&model_dir(), &root().join("datasets/demo"), &out);
    args.scenario = Some("cash_loan".into());
    args.rules = root().join("rules");
    args.part_size = 7_000; // several parts, the last one short
    let summary = run_batch(&args).unwrap();
    assert_eq!(summary.parts, 3);
    assert!(!parts_dir(&out).exists(), "parts directory removed");
    let df = read(&out);
    assert_eq!(df.height(), 20_000);
    assert_eq!(summary.rows, 20_000);
    assert_eq!(summary.bands.values().sum::<u64>(), 20_000);
    assert_eq!(summary.decisions.values().sum::<u64>(), 20_000);

    let engine = ScoringEngine::load(EngineConfig::demo(root())).unwrap();
    let users = strs(&df, "user_id");
    let (score, band, pd) = (ints(&df, "score"), strs(&df, "band"), floats(&df, "pd"));
    let (decision, params) = (strs(&df, "decision"), strs(&df, "params"));
    let dims = [
        "transaction",
        "behavior",
        "relationship",
        "identity",
        "capacity",
    ];
    let dim_cols: Vec<Vec<Option<i32>>> = dims
        .iter()
        .map(|d| ints(&df, &format!("dim_{d}")))
        .collect();
    let reasons: Vec<Vec<Option<String>>> =
        (1..=4).map(|k| strs(&df, &format!("reason_{k}"))).collect();
    let mut decisions_seen = std::collections::BTreeSet::new();
    let n_checked = 2_500;
    for i in (0..df.height()).step_by(df.height() / n_checked) {
        let user = users[i].clone().unwrap();
        let o = engine
            .score(&ScoreInput {
                request_id: format!("parity-{i}"),
                user_id: user.clone(),
                scenario: "cash_loan".into(),
                partner_id: "batch".into(),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(score[i], Some(o.score), "{user}");
        assert_eq!(band[i].as_deref(), Some(o.band.as_str()), "{user}");
        assert_eq!(pd[i], Some(o.probability_of_default), "{user}");
        for (d, col) in dims.iter().zip(&dim_cols) {
            let want = o
                .dimension_scores
                .iter()
                .find(|(x, _)| x.as_str() == *d)
                .map(|(_, s)| *s);
            assert_eq!(col[i], want, "{user} dim {d}");
        }
        for (k, col) in reasons.iter().enumerate() {
            assert_eq!(
                col[i].as_deref(),
                o.reasons.get(k).map(|r| r.code.as_str()),
                "{user} reason {}",
                k + 1
            );
        }
        assert_eq!(decision[i].as_deref(), Some(o.decision.as_str()), "{user}");
        assert_eq!(
            params[i].clone().unwrap(),
            serde_json::to_string(&o.params).unwrap(),
            "{user}"
        );
        decisions_seen.insert(o.decision.as_str());
    }
    // The comparison covers more than one outcome of the rules.
    assert!(decisions_seen.len() >= 2, "{decisions_seen:?}");
}

/// The demo features with adversarial values in the first rows: every numeric split value
/// exactly, NaN, ±inf, nulls, and an unseen category, so the SQL's bin boundaries are tested.
fn adversarial_features(sc: &Scorecard) -> DataFrame {
    let mut df = demo_features().clone();
    let n = df.height();
    let k = 4_000.min(n);
    for (j, f) in sc.features.iter().enumerate() {
        let name = f.meta.name.as_str();
        let col = df.column(name).unwrap().clone();
        let new: Column = match &f.binning.rule {
            BinRule::Numeric { splits } => {
                let c = col.cast(&DataType::Float64).unwrap();
                let mut v: Vec<Option<f64>> = c.f64().unwrap().iter().collect();
                for (i, x) in v.iter_mut().take(k).enumerate() {
                    let r = (i + j) % (splits.len() + 6);
                    *x = match r {
                        0 => None,
                        1 => Some(f64::NAN),
                        2 => Some(f64::INFINITY),
                        3 => Some(f64::NEG_INFINITY),
                        4 => Some(-1e9),
                        5 => Some(1e12),
                        _ => Some(splits[r - 6]),
                    };
                }
                Column::new(name.into(), v)
            }
            BinRule::Categorical { categories } => {
                let c = col.cast(&DataType::String).unwrap();
                let mut v: Vec<Option<String>> = c
                    .str()
                    .unwrap()
                    .iter()
                    .map(|s| s.map(str::to_string))
                    .collect();
                for (i, x) in v.iter_mut().take(k).enumerate() {
                    let r = (i + j) % (categories.len() + 2);
                    *x = match r {
                        0 => None,
                        1 => Some("never-seen-in-training".into()),
                        _ => Some(categories[r - 2].value.clone()),
                    };
                }
                Column::new(name.into(), v)
            }
        };
        df.replace(name, new).unwrap();
    }
    df
}

#[test]
fn exported_sql_in_duckdb_matches_the_batch() {
    let probe = Command::new("python3")
        .args(["-c", "import duckdb"])
        .stderr(Stdio::null())
        .status();
    if !matches!(probe, Ok(s) if s.success()) {
        println!("skipping: duckdb not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sc = Scorecard::load(&model_dir()).unwrap();
    let features = dir.path().join("features.parquet");
    let mut df = adversarial_features(&sc);
    sesame::io::write_parquet_atomic(&mut df, &features).unwrap();
    let out = dir.path().join("scores.parquet");
    let summary = run_batch(&BatchArgs::new(&model_dir(), &features, &out)).unwrap();
    assert!(summary.rows >= 10_000);
    let ansi = dir.path().join("ansi.sql");
    let duck = dir.path().join("duckdb.sql");
    let pg = dir.path().join("postgres.sql");
    for (path, dialect) in [
        (&ansi, Dialect::Ansi),
        (&duck, Dialect::Duckdb),
        (&pg, Dialect::Postgres),
    ] {
        std::fs::write(
            path,
            export_model_sql(&model_dir(), dialect, "features").unwrap(),
        )
        .unwrap();
    }
    let script = r#"
import sys, duckdb
feats, scores = sys.argv[1], sys.argv[2]
con = duckdb.connect()
con.execute(f"CREATE VIEW features AS SELECT * FROM read_parquet('{feats}')")
con.execute(f"CREATE VIEW batch AS SELECT * FROM read_parquet('{scores}')")
for path in sys.argv[3:]:
    con.execute("CREATE OR REPLACE TABLE sql_scores AS " + open(path).read())
    n, bad_score, bad_band, bad_pd, missing = con.execute('''
        SELECT count(*),
               count(*) FILTER (WHERE s.score IS DISTINCT FROM b.score),
               count(*) FILTER (WHERE s.band IS DISTINCT FROM b.band),
               count(*) FILTER (WHERE abs(s.pd - b.pd) > 1e-12 * greatest(abs(b.pd), 1e-300) OR s.pd IS NULL),
               count(*) FILTER (WHERE s.user_id IS NULL)
        FROM batch b LEFT JOIN sql_scores s ON s.user_id = b.user_id''').fetchone()
    print(path.rsplit('/', 1)[-1], n, bad_score, bad_band, bad_pd, missing)
"#;
    let res = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&features)
        .arg(&out)
        .args([&ansi, &duck, &pg])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&res.stdout);
    assert!(
        res.status.success(),
        "duckdb run failed: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{stdout}");
    for line in lines {
        let f: Vec<&str> = line.split_whitespace().collect();
        let n: usize = f[1].parse().unwrap();
        assert_eq!(n, summary.rows, "{line}");
        assert!(n >= 10_000);
        assert_eq!(
            &f[2..],
            ["0", "0", "0", "0"],
            "mismatches (score band pd missing): {line}"
        );
    }
}

fn sesame() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sesame"));
    c.current_dir(root());
    c
}

#[test]
fn killed_job_leaves_no_output_and_resumes_to_the_same_rows() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("scores.parquet");
    let parts = parts_dir(&out);
    let job = |c: &mut Command, out: &Path, part_size: &str| {
        c.args([
            "batch",
            "--model",
            "models/default",
            "--data",
            "datasets/demo",
        ])
        .args(["--scenario", "rental_deposit_free", "--quiet"])
        .args(["--part-size", part_size])
        .arg("--out")
        .arg(out);
    };
    let common = |c: &mut Command, out: &Path| job(c, out, "2000");
    let mut c = sesame();
    common(&mut c, &out);
    let mut child = c
        .args(["--part-delay-ms", "400"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let first = parts.join("part-00000.parquet");
    let started = Instant::now();
    while !first.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no part written"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "job ended before a part was written"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!out.exists(), "a killed job left {}", out.display());
    let done = std::fs::read_dir(&parts)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .map(|e| e.file_name().to_string_lossy().starts_with("part-"))
                .unwrap_or(false)
        })
        .count();
    assert!((1..10).contains(&done), "{done} parts done before the kill");

    // Parts of another job (here: another part size) are never mixed in.
    let mut c = sesame();
    job(&mut c, &out, "3000");
    let res = c.arg("--resume").output().unwrap();
    assert!(!res.status.success());
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(stderr.contains("parts of a different job"), "{stderr}");
    assert!(!out.exists() && first.exists());

    let mut c = sesame();
    common(&mut c, &out);
    let res = c.arg("--resume").output().unwrap();
    let stdout = String::from_utf8_lossy(&res.stdout);
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    assert!(
        stdout.contains(&format!("10 parts ({done} resumed)")),
        "{stdout}"
    );
    assert!(!parts.exists());

    let whole = dir.path().join("whole.parquet");
    let mut c = sesame();
    common(&mut c, &whole);
    let res = c.output().unwrap();
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let (a, b) = (read(&out), read(&whole));
    assert_eq!(a.height(), 20_000);
    assert!(
        a.equals_missing(&b),
        "resumed output differs from an uninterrupted run"
    );
}

fn refused(args: &[&str], out: &Path, expect: &str) {
    let res = sesame().args(args).arg("--out").arg(out).output().unwrap();
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(!res.status.success(), "{args:?} succeeded");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains(expect), "{stderr}");
    assert!(!out.exists(), "output written for {args:?}");
    assert!(!parts_dir(out).exists(), "parts written for {args:?}");
}

#[test]
fn bad_input_is_refused_with_one_error_and_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("scores.parquet");
    refused(
        &[
            "batch",
            "--model",
            "models/default",
            "--data",
            "datasets/demo",
            "--scenario",
            "space_loan",
        ],
        &out,
        "unknown scenario 'space_loan'",
    );
    refused(
        &[
            "batch",
            "--model",
            "models/no-such-model",
            "--data",
            "datasets/demo",
        ],
        &out,
        "models/no-such-model does not exist",
    );
    let mut df = demo_features().drop("age").unwrap();
    let lacking = dir.path().join("lacking.parquet");
    sesame::io::write_parquet_atomic(&mut df, &lacking).unwrap();
    refused(
        &[
            "batch",
            "--model",
            "models/default",
            "--data",
            lacking.to_str().unwrap(),
        ],
        &out,
        "lacks column(s) age",
    );
    refused(
        &["export-sql", "--model", "models/no-such-model"],
        &dir.path().join("q.sql"),
        "does not exist",
    );
}
