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
    // 20,000 users: 7 own-rows chunks of 3,000, then 2 graph chunks of 15,000.
    let mut calls = Vec::new();
    let chunked = p
        .compute_chunked(&tables, as_of, 3_000, |done, total| {
            calls.push((done, total))
        })
        .unwrap();
    assert_eq!(calls.len(), 9);
    assert_eq!(calls.last(), Some(&(9, 9)));
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

/// The adversarial feature table, its batch scores, and the exported query in one dialect.
struct SqlCase {
    dir: tempfile::TempDir,
    scorecard: Scorecard,
    features: PathBuf,
    scores: PathBuf,
    rows: usize,
}

impl SqlCase {
    fn new() -> SqlCase {
        let dir = tempfile::tempdir().unwrap();
        let scorecard = Scorecard::load(&model_dir()).unwrap();
        let features = dir.path().join("features.parquet");
        let mut df = adversarial_features(&scorecard);
        sesame::io::write_parquet_atomic(&mut df, &features).unwrap();
        let scores = dir.path().join("scores.parquet");
        let summary = run_batch(&BatchArgs::new(&model_dir(), &features, &scores)).unwrap();
        assert!(summary.rows >= 10_000);
        SqlCase {
            dir,
            scorecard,
            features,
            scores,
            rows: summary.rows,
        }
    }

    fn query_file(&self, dialect: Dialect) -> PathBuf {
        let path = self.dir.path().join(format!("{dialect:?}.sql"));
        std::fs::write(
            &path,
            export_model_sql(&model_dir(), dialect, "features").unwrap(),
        )
        .unwrap();
        path
    }

    /// Checks one engine's line `<name> <rows> <bad score> <bad band> <bad pd> <missing>`.
    fn assert_same_scores(&self, line: &str) {
        let f: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(f.len(), 6, "{line}");
        let n: usize = f[1].parse().unwrap();
        assert_eq!(n, self.rows, "{line}");
        assert_eq!(
            &f[2..],
            ["0", "0", "0", "0"],
            "mismatches (score band pd missing): {line}"
        );
    }
}

/// Rows, and rows whose score, band or pd differ or that the query lost, joining the query's
/// output `sql_scores` to the batch's `batch`. The same SQL in DuckDB and PostgreSQL.
const COMPARE_SQL: &str = "SELECT count(*),
       count(*) FILTER (WHERE s.score IS DISTINCT FROM b.score),
       count(*) FILTER (WHERE s.band IS DISTINCT FROM b.band),
       count(*) FILTER (WHERE abs(s.pd - b.pd) > 1e-12 * greatest(abs(b.pd), 1e-300) OR s.pd IS NULL),
       count(*) FILTER (WHERE s.user_id IS NULL)
FROM batch b LEFT JOIN sql_scores s ON s.user_id = b.user_id";

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
    let case = SqlCase::new();
    let queries = [Dialect::Ansi, Dialect::Duckdb, Dialect::Postgres].map(|d| case.query_file(d));
    let script = r#"
import sys, duckdb
feats, scores, compare = sys.argv[1], sys.argv[2], sys.argv[3]
con = duckdb.connect()
con.execute(f"CREATE VIEW features AS SELECT * FROM read_parquet('{feats}')")
con.execute(f"CREATE VIEW batch AS SELECT * FROM read_parquet('{scores}')")
for path in sys.argv[4:]:
    con.execute("CREATE OR REPLACE TABLE sql_scores AS " + open(path).read())
    print(path.rsplit('/', 1)[-1], *con.execute(compare).fetchone())
"#;
    let res = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&case.features)
        .arg(&case.scores)
        .arg(COMPARE_SQL)
        .args(&queries)
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
        case.assert_same_scores(line);
    }
}

/// A throwaway PostgreSQL server on a Unix socket inside `dir` (no TCP port), stopped on drop.
/// As root it runs as the `postgres` account: the server refuses to run as root.
struct TempPostgres {
    bin: PathBuf,
    data: PathBuf,
    run_as: Option<&'static str>,
}

impl TempPostgres {
    /// `Err` says why it cannot run here (the caller skips).
    fn start(dir: &Path) -> Result<TempPostgres, String> {
        let bin = postgres_bin_dir().ok_or("PostgreSQL's initdb and pg_ctl not found")?;
        let id = |args: &[&str]| -> Result<u32, String> {
            let o = Command::new("id")
                .args(args)
                .output()
                .map_err(|e| e.to_string())?;
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse()
                .map_err(|_| format!("`id {}` gave no number", args.join(" ")))
        };
        let data = dir.join("pg");
        std::fs::create_dir(&data).map_err(|e| e.to_string())?;
        let run_as = if id(&["-u"])? == 0 {
            let (uid, gid) = (id(&["-u", "postgres"])?, id(&["-g", "postgres"])?);
            std::os::unix::fs::chown(&data, Some(uid), Some(gid)).map_err(|e| e.to_string())?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| e.to_string())?;
            Some("postgres")
        } else {
            None
        };
        let pg = TempPostgres { bin, data, run_as };
        let data = pg.data.display().to_string();
        pg.tool("initdb", &["-D", &data, "-A", "trust", "-U", "sesame"])?;
        let options = format!("-k {data} -c listen_addresses=''");
        let log = format!("{data}/server.log");
        pg.tool(
            "pg_ctl",
            &["-D", &data, "-o", &options, "-l", &log, "-w", "start"],
        )?;
        Ok(pg)
    }

    fn tool(&self, name: &str, args: &[&str]) -> Result<(), String> {
        let exe = self.bin.join(name);
        let mut c = match self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&exe);
                c
            }
            None => Command::new(&exe),
        };
        let o = c
            .args(args)
            .current_dir(&self.data)
            .output()
            .map_err(|e| format!("{name}: {e}"))?;
        if !o.status.success() {
            return Err(format!(
                "{name} failed: {}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ));
        }
        Ok(())
    }

    /// Runs one SQL command or one psql meta-command (as the client, so `\copy` reads this
    /// process's files); returns the rows, fields separated by a space.
    fn psql(&self, command: &str) -> String {
        let psql = self.bin.join("psql");
        let o = Command::new(if psql.is_file() {
            psql
        } else {
            PathBuf::from("psql")
        })
        .args(["-X", "-q", "-A", "-t", "-F", " ", "-v", "ON_ERROR_STOP=1"])
        .args(["-h", &self.data.display().to_string(), "-U", "sesame"])
        .args(["-d", "postgres", "-c", command])
        .output()
        .expect("psql runs");
        assert!(
            o.status.success(),
            "psql failed on {}: {}",
            &command[..command.len().min(200)],
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        let data = self.data.display().to_string();
        let _ = self.tool("pg_ctl", &["-D", &data, "-m", "immediate", "stop"]);
    }
}

/// Debian keeps the server tools under /usr/lib/postgresql/<major>/bin, off the PATH.
fn postgres_bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .collect();
    dirs.sort();
    dirs.reverse();
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    dirs.into_iter()
        .find(|d| d.join("initdb").is_file() && d.join("pg_ctl").is_file())
}

/// Writes `columns` of `df` as CSV with a header (floats in full, NaN and ±inf as text that
/// PostgreSQL reads back).
fn write_csv(df: &DataFrame, columns: &[&str], path: &Path) {
    let mut part = df.select(columns.iter().copied()).unwrap();
    let mut file = std::fs::File::create(path).unwrap();
    CsvWriter::new(&mut file)
        .include_header(true)
        .finish(&mut part)
        .unwrap();
}

#[test]
fn exported_sql_in_postgres_matches_the_batch() {
    let case = SqlCase::new();
    let pg = match TempPostgres::start(case.dir.path()) {
        Ok(pg) => pg,
        Err(why) => {
            println!("skipping: cannot start PostgreSQL here: {why}");
            return;
        }
    };
    let mut columns = vec!["user_id"];
    let mut ddl = vec!["user_id text".to_string()];
    for f in &case.scorecard.features {
        columns.push(f.meta.name.as_str());
        let ty = match f.binning.rule {
            BinRule::Numeric { .. } => "double precision",
            BinRule::Categorical { .. } => "text",
        };
        ddl.push(format!("\"{}\" {ty}", f.meta.name));
    }
    let features_csv = case.dir.path().join("features.csv");
    let scores_csv = case.dir.path().join("scores.csv");
    write_csv(&read(&case.features), &columns, &features_csv);
    let batch_columns = ["user_id", "score", "band", "pd"];
    write_csv(&read(&case.scores), &batch_columns, &scores_csv);
    pg.psql(&format!("CREATE TABLE features ({})", ddl.join(", ")));
    pg.psql("CREATE TABLE batch (user_id text, score integer, band text, pd double precision)");
    for (table, csv) in [("features", &features_csv), ("batch", &scores_csv)] {
        pg.psql(&format!(
            "\\copy {table} FROM '{}' CSV HEADER",
            csv.display()
        ));
    }
    let nan_rows = pg.psql("SELECT count(*) FROM features WHERE features::text LIKE '%NaN%'");
    assert!(
        nan_rows.trim().parse::<usize>().unwrap() > 0,
        "the adversarial NaN values reached PostgreSQL"
    );
    let query = std::fs::read_to_string(case.query_file(Dialect::Postgres)).unwrap();
    pg.psql(&format!(
        "CREATE TABLE sql_scores AS {}",
        query.trim().trim_end_matches(';')
    ));
    let line = pg.psql(COMPARE_SQL);
    case.assert_same_scores(&format!("postgres {}", line.trim()));
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
