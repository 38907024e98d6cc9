//! Integration tests of `sesame datasets`: determinism, table invariants, signal, bad
//! arguments and the Taiwan loader.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::NaiveDate;
use polars::prelude::*;
use sesame::datasets::{auc, generate, load_taiwan, GenerateConfig};

const MS_PER_DAY: i64 = 86_400_000;
const TABLES: [&str; 7] = [
    "users",
    "transactions",
    "behaviors",
    "relations",
    "judgments",
    "labels",
    "oracle",
];

fn read(dir: &Path, table: &str) -> DataFrame {
    let path = dir.join(format!("{table}.parquet"));
    let f = File::open(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    ParquetReader::new(f)
        .finish()
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn i64s(df: &DataFrame, col: &str) -> Vec<Option<i64>> {
    df.column(col)
        .unwrap()
        .cast(&DataType::Int64)
        .unwrap()
        .i64()
        .unwrap()
        .iter()
        .collect()
}
fn f64s(df: &DataFrame, col: &str) -> Vec<Option<f64>> {
    df.column(col).unwrap().f64().unwrap().iter().collect()
}
fn strs(df: &DataFrame, col: &str) -> Vec<Option<String>> {
    df.column(col)
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .map(|s| s.map(str::to_string))
        .collect()
}
fn bools(df: &DataFrame, col: &str) -> Vec<bool> {
    df.column(col)
        .unwrap()
        .bool()
        .unwrap()
        .iter()
        .map(|b| b.expect("no nulls"))
        .collect()
}
fn day(d: NaiveDate) -> i64 {
    (d - NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()).num_days()
}

fn gen(users: u64, seed: u64, dir: &Path) -> sesame::datasets::GenerateSummary {
    generate(&GenerateConfig::new(users, seed, dir)).expect("generation succeeds")
}

#[test]
fn same_seed_gives_byte_identical_files_and_other_seeds_differ() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );
    gen(300, 7, &a);
    gen(300, 7, &b);
    gen(300, 8, &c);
    for t in TABLES {
        let fa = std::fs::read(a.join(format!("{t}.parquet"))).unwrap();
        let fb = std::fs::read(b.join(format!("{t}.parquet"))).unwrap();
        let fc = std::fs::read(c.join(format!("{t}.parquet"))).unwrap();
        assert!(!fa.is_empty(), "{t} is empty");
        assert_eq!(fa, fb, "{t} differs between two runs with the same seed");
        assert_ne!(fa, fc, "{t} is identical for different seeds");
    }
}

#[test]
fn content_does_not_depend_on_chunk_size() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    gen(500, 3, &a);
    let mut cfg = GenerateConfig::new(500, 3, &b);
    cfg.chunk_users = 37;
    generate(&cfg).unwrap();
    for t in TABLES {
        let (da, db) = (read(&a, t), read(&b, t));
        assert_eq!(da.get_column_names(), db.get_column_names(), "{t}");
        assert_eq!(da.height(), db.height(), "{t}");
        for (ca, cb) in da.columns().iter().zip(db.columns()) {
            assert!(
                ca.equals_missing(cb),
                "{t}.{} content depends on chunking",
                ca.name()
            );
        }
    }
}

/// All invariants on one medium population (generated once: it is the slow part).
#[test]
fn generated_tables_satisfy_the_invariants() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pop");
    let summary = gen(5000, 42, &dir);
    let as_of = day(NaiveDate::from_ymd_opt(2025, 12, 31).unwrap());
    let as_of_ms = as_of * MS_PER_DAY;

    // users: unique sorted ids, ranges, ~15% undeclared income
    let users = read(&dir, "users");
    assert_eq!(users.height(), 5000);
    let ids: Vec<String> = strs(&users, "user_id")
        .into_iter()
        .map(|s| s.unwrap())
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "users not strictly sorted by user_id"
    );
    assert!(ids.iter().all(|s| s.len() == 13 && s.starts_with('U')));
    let id_set: HashSet<&str> = ids.iter().map(|s| s.as_str()).collect();
    assert!(i64s(&users, "city_tier")
        .iter()
        .all(|t| matches!(t, Some(1..=4))));
    assert!(i64s(&users, "signup_date")
        .iter()
        .all(|d| d.unwrap() < as_of));
    assert!(i64s(&users, "age")
        .iter()
        .all(|a| matches!(a, Some(18..=70))));
    let bands = i64s(&users, "income_band");
    assert!(bands.iter().flatten().all(|b| (1..=6).contains(b)));
    let null_share = bands.iter().filter(|b| b.is_none()).count() as f64 / 5000.0;
    assert!(
        (0.10..0.20).contains(&null_share),
        "income_band null share {null_share}"
    );
    let edu_ok = [
        "below_high_school",
        "high_school",
        "college",
        "bachelor",
        "master_plus",
    ];
    assert!(strs(&users, "education")
        .iter()
        .all(|e| edu_ok.contains(&e.as_deref().unwrap())));

    // transactions
    let tx = read(&dir, "transactions");
    assert_eq!(tx.height() as u64, summary.transactions);
    let per_user = tx.height() as f64 / 5000.0;
    assert!(
        (35.0..70.0).contains(&per_user),
        "{per_user} transactions per user"
    );
    let tx_user: Vec<String> = strs(&tx, "user_id")
        .into_iter()
        .map(|s| s.unwrap())
        .collect();
    let ts: Vec<i64> = i64s(&tx, "ts").into_iter().map(|t| t.unwrap()).collect();
    let kind: Vec<String> = strs(&tx, "kind").into_iter().map(|s| s.unwrap()).collect();
    let amount = f64s(&tx, "amount");
    let mc = strs(&tx, "merchant_category");
    let due = i64s(&tx, "due_date");
    let paid = i64s(&tx, "paid_date");
    let mut kinds_seen = HashSet::new();
    for i in 0..tx.height() {
        assert!(ts[i] < as_of_ms, "ts not before as-of at row {i}");
        assert!(amount[i].unwrap() > 0.0, "amount not positive at row {i}");
        assert!(
            id_set.contains(tx_user[i].as_str()),
            "unknown user {}",
            tx_user[i]
        );
        if i > 0 {
            assert!(
                (&tx_user[i - 1], ts[i - 1]) <= (&tx_user[i], ts[i]),
                "transactions not sorted at row {i}"
            );
        }
        let k = kind[i].as_str();
        kinds_seen.insert(k.to_string());
        assert_eq!(
            mc[i].is_some(),
            k == "purchase" || k == "refund",
            "merchant_category on {k}"
        );
        let billed = k == "utility_bill" || k == "loan_repayment";
        assert_eq!(due[i].is_some(), billed, "due_date on {k}");
        if let Some(d) = due[i] {
            assert_eq!(
                ts[i],
                d * MS_PER_DAY + MS_PER_DAY / 2,
                "bill ts is not its due date at noon"
            );
        } else {
            assert!(paid[i].is_none(), "paid_date without due_date on {k}");
        }
        if let Some(p) = paid[i] {
            assert!(p < as_of, "paid_date {p} not before as-of");
        }
    }
    assert_eq!(kinds_seen.len(), 8, "kinds seen: {kinds_seen:?}");
    // Repayments follow their disbursement; some are late and some unpaid.
    let late = (0..tx.height())
        .filter(|&i| matches!((due[i], paid[i]), (Some(d), Some(p)) if p > d))
        .count();
    let unpaid = (0..tx.height())
        .filter(|&i| due[i].is_some() && paid[i].is_none())
        .count();
    assert!(late > 0 && unpaid > 0, "late={late} unpaid={unpaid}");

    // behaviors
    let bh = read(&dir, "behaviors");
    let per_user = bh.height() as f64 / 5000.0;
    assert!(
        (15.0..35.0).contains(&per_user),
        "{per_user} behaviour events per user"
    );
    assert!(i64s(&bh, "ts").iter().all(|t| t.unwrap() < as_of_ms));
    let ev_ok = [
        "login",
        "device_change",
        "address_change",
        "password_reset",
        "failed_login",
        "phone_change",
    ];
    assert!(strs(&bh, "event")
        .iter()
        .all(|e| ev_ok.contains(&e.as_deref().unwrap())));

    // relations: no self loops, src < dst, each pair once, since < as-of, known users
    let rel = read(&dir, "relations");
    assert!(rel.height() > 5000, "only {} relations", rel.height());
    let src = strs(&rel, "src");
    let dst = strs(&rel, "dst");
    let since = i64s(&rel, "since");
    let rkind = strs(&rel, "kind");
    let mut pairs = HashSet::new();
    for i in 0..rel.height() {
        let (s, d) = (src[i].as_deref().unwrap(), dst[i].as_deref().unwrap());
        assert_ne!(s, d, "self loop");
        assert!(s < d, "edge not oriented src < dst");
        assert!(pairs.insert((s, d)), "duplicate edge {s}-{d}");
        assert!(id_set.contains(s) && id_set.contains(d));
        assert!(since[i].unwrap() < as_of);
    }
    // Fraud rings: shared_device edges whose endpoints really share a device in behaviors.
    let devices: HashMap<String, HashSet<String>> = {
        let mut m: HashMap<String, HashSet<String>> = HashMap::new();
        for (u, d) in strs(&bh, "user_id").into_iter().zip(strs(&bh, "device_id")) {
            m.entry(u.unwrap()).or_default().insert(d.unwrap());
        }
        m
    };
    let shared: Vec<usize> = (0..rel.height())
        .filter(|&i| rkind[i].as_deref() == Some("shared_device"))
        .collect();
    assert!(!shared.is_empty(), "no fraud-ring edges");
    let really_shared = shared
        .iter()
        .filter(|&&i| {
            let (a, b) = (
                devices.get(src[i].as_deref().unwrap()),
                devices.get(dst[i].as_deref().unwrap()),
            );
            matches!((a, b), (Some(a), Some(b)) if !a.is_disjoint(b))
        })
        .count();
    assert!(
        really_shared * 10 >= shared.len() * 9,
        "{really_shared}/{} shared_device edges share a device",
        shared.len()
    );

    // judgments: a few percent of users, concentrated in defaulters
    let jd = read(&dir, "judgments");
    assert!(i64s(&jd, "filed_date").iter().all(|d| d.unwrap() < as_of));
    assert!(strs(&jd, "status")
        .iter()
        .all(|s| matches!(s.as_deref(), Some("active" | "settled"))));
    let judged: HashSet<String> = strs(&jd, "user_id")
        .into_iter()
        .map(|s| s.unwrap())
        .collect();
    let share = judged.len() as f64 / 5000.0;
    assert!((0.01..0.08).contains(&share), "judged share {share}");
    let case_ids: Vec<_> = strs(&jd, "case_id");
    assert_eq!(
        case_ids.iter().collect::<HashSet<_>>().len(),
        case_ids.len(),
        "case ids not unique"
    );

    // labels and oracle: aligned with users; default rate and oracle AUC in range
    let labels = read(&dir, "labels");
    let oracle = read(&dir, "oracle");
    assert_eq!(strs(&labels, "user_id"), strs(&users, "user_id"));
    assert_eq!(strs(&oracle, "user_id"), strs(&users, "user_id"));
    let y = bools(&labels, "defaulted");
    let pd: Vec<f64> = f64s(&oracle, "true_pd")
        .into_iter()
        .map(|p| p.unwrap())
        .collect();
    assert!(pd.iter().all(|p| (0.0..=1.0).contains(p)));
    let rate = y.iter().filter(|&&b| b).count() as f64 / y.len() as f64;
    assert!((0.05..=0.12).contains(&rate), "default rate {rate}");
    let a = auc(&pd, &y).unwrap();
    assert!(a > 0.75 && a < 0.95, "oracle AUC {a}");
    assert!((a - summary.oracle_auc).abs() < 1e-12);

    // Signal: judged users and late payers default more often than the rest.
    let defaulted: HashMap<&str, bool> = ids
        .iter()
        .map(|s| s.as_str())
        .zip(y.iter().copied())
        .collect();
    let judged_rate =
        judged.iter().filter(|u| defaulted[u.as_str()]).count() as f64 / judged.len() as f64;
    assert!(
        judged_rate > 2.0 * rate,
        "judged default rate {judged_rate} vs overall {rate}"
    );
    let mut late_users = HashSet::new();
    for i in 0..tx.height() {
        if let (Some(d), p) = (due[i], paid[i]) {
            if p.is_none_or(|p| p > d + 30) {
                late_users.insert(tx_user[i].as_str());
            }
        }
    }
    let late_rate =
        late_users.iter().filter(|u| defaulted[**u]).count() as f64 / late_users.len() as f64;
    assert!(
        late_rate > 1.5 * rate,
        "30+ days late users default at {late_rate} vs overall {rate}"
    );
}

#[test]
fn files_have_the_exact_schemas_even_when_tables_are_empty() {
    use sesame::datasets::schema;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("one");
    let s = gen(1, 5, &dir);
    assert_eq!((s.users, s.relations, s.judgments), (1, 0, 0));
    assert!(s.oracle_auc.is_nan());
    let expected = [
        ("users", schema::users()),
        ("transactions", schema::transactions()),
        ("behaviors", schema::behaviors()),
        ("relations", schema::relations()),
        ("judgments", schema::judgments()),
        ("labels", schema::labels()),
        ("oracle", schema::oracle()),
    ];
    for (t, want) in expected {
        let df = read(&dir, t);
        assert_eq!(df.schema().as_ref(), &want, "{t} schema");
    }
    assert_eq!(read(&dir, "users").height(), 1);
    assert_eq!(read(&dir, "judgments").height(), 0);
    assert_eq!(read(&dir, "relations").height(), 0);
}

fn sesame() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sesame"))
}

fn leftovers(parent: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(parent)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

#[test]
fn bad_arguments_fail_with_one_line_and_leave_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let cases: Vec<Vec<String>> = vec![
        vec!["--users".into(), "0".into()],
        vec![
            "--users".into(),
            "10".into(),
            "--as-of".into(),
            "2025-02-30".into(),
        ],
        vec![
            "--users".into(),
            "10".into(),
            "--as-of".into(),
            "yesterday".into(),
        ],
        vec!["--users".into(), "ten".into()],
    ];
    for args in cases {
        let o = sesame()
            .args(["datasets", "generate", "--out"])
            .arg(&out)
            .args(&args)
            .output()
            .expect("run sesame");
        assert!(!o.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "{args:?}: stderr not one line: {err}"
        );
        assert!(
            leftovers(tmp.path()).is_empty(),
            "{args:?} left {:?}",
            leftovers(tmp.path())
        );
    }
    // Parent directory missing.
    let o = sesame()
        .args(["datasets", "generate", "--users", "10", "--out"])
        .arg(tmp.path().join("missing/out"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(leftovers(tmp.path()).is_empty());
    // --out is an existing file, or a directory holding something else: refused, untouched.
    let file = tmp.path().join("file");
    std::fs::write(&file, "x").unwrap();
    assert!(generate(&GenerateConfig::new(10, 1, &file)).is_err());
    assert_eq!(std::fs::read(&file).unwrap(), b"x");
    let other = tmp.path().join("other");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("notes.txt"), "keep me").unwrap();
    assert!(generate(&GenerateConfig::new(10, 1, &other)).is_err());
    assert_eq!(std::fs::read(other.join("notes.txt")).unwrap(), b"keep me");
    let mut names: Vec<_> = leftovers(tmp.path())
        .into_iter()
        .map(|p| p.file_name().unwrap().to_owned())
        .collect();
    names.sort();
    assert_eq!(names, vec!["file", "other"], "partial output left behind");
}

#[test]
fn binary_generates_and_replaces_an_earlier_output() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("pop");
    for seed in ["1", "2"] {
        let o = sesame()
            .args([
                "datasets", "generate", "--users", "50", "--seed", seed, "--out",
            ])
            .arg(&out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(
            stdout.contains("oracle_auc=") && stdout.contains("default_rate="),
            "{stdout}"
        );
    }
    assert_eq!(read(&out, "users").height(), 50);
    assert_eq!(leftovers(tmp.path()), vec![out]);
}

#[test]
fn taiwan_loader_maps_the_uci_file() {
    let csv = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/datasets/taiwan-credit-default/UCI_Credit_Card.csv");
    if !csv.is_file() {
        println!("skipping: ../shared not present");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("taiwan");
    let s = load_taiwan(&csv, &out).expect("load");
    assert_eq!(s.users, 30_000);
    assert_eq!(s.defaults, 6636);
    assert!(
        (s.default_rate - 0.2212).abs() < 0.0005,
        "{}",
        s.default_rate
    );

    let users = read(&out, "users");
    assert_eq!(users.height(), 30_000);
    assert_eq!(
        users.schema().as_ref(),
        &sesame::datasets::schema::taiwan_users()
    );
    assert_eq!(
        read(&out, "transactions").schema().as_ref(),
        &sesame::datasets::schema::taiwan_transactions()
    );
    let ids = i64s(&users, "id");
    let uids = strs(&users, "user_id");
    assert!(ids
        .iter()
        .zip(&uids)
        .all(|(i, u)| Some(i.unwrap().to_string()) == *u));
    let ages = i64s(&users, "age");
    let missing_ages = ages.iter().filter(|a| a.is_none()).count();
    assert!(missing_ages < 10, "{missing_ages} missing ages");
    assert!(ages.iter().flatten().all(|a| (18..=100).contains(a)));
    let train = ids.iter().filter(|i| i.unwrap() % 10 < 7).count();
    assert_eq!(train, 21_000);
    let labels = read(&out, "labels");
    assert_eq!(
        bools(&labels, "defaulted").iter().filter(|&&b| b).count(),
        6636
    );

    let tx = read(&out, "transactions");
    let as_of = day(NaiveDate::from_ymd_opt(2005, 10, 1).unwrap());
    let kind = strs(&tx, "kind");
    let status = i64s(&tx, "repayment_status");
    let due = i64s(&tx, "due_date");
    let paid = i64s(&tx, "paid_date");
    let ts = i64s(&tx, "ts");
    let statements = kind
        .iter()
        .filter(|k| k.as_deref() == Some("card_statement"))
        .count();
    assert_eq!(statements, 6 * 30_000);
    for i in 0..tx.height() {
        assert!(ts[i].unwrap() < as_of * MS_PER_DAY);
        let is_statement = kind[i].as_deref() == Some("card_statement");
        assert_eq!(status[i].is_some(), is_statement);
        assert_eq!(due[i].is_some(), is_statement);
        if let (Some(s), Some(d)) = (status[i], due[i]) {
            match paid[i] {
                Some(p) => {
                    assert!(p < as_of);
                    assert_eq!(p > d, s >= 1, "status {s} vs paid {p} due {d}");
                }
                None => assert!(s >= 1, "unpaid with status {s}"),
            }
        }
    }
    // The first holder (ID 1) was 2 months late in September: still unpaid at as-of.
    let tx_uids = uids_of(&tx);
    let row = (0..tx.height())
        .rev()
        .find(|&i| tx_uids[i] == "1" && kind[i].as_deref() == Some("card_statement"))
        .unwrap();
    assert_eq!(status[row], Some(2));
    assert_eq!(paid[row], None);
}

fn uids_of(df: &DataFrame) -> Vec<String> {
    strs(df, "user_id")
        .into_iter()
        .map(|s| s.unwrap())
        .collect()
}
