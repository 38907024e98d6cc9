//! Feature pipeline semantics on small hand-made tables: windows, missing values, as-of
//! leakage, graph features, online/batch parity and the refusal of bad pipeline files.

use chrono::NaiveDate;
use polars::prelude::*;
use sesame::features::{FeatureError, Pipeline, PipelineSpec, Tables};

const AS_OF: (i32, u32, u32) = (2025, 12, 31);

fn as_of() -> NaiveDate {
    NaiveDate::from_ymd_opt(AS_OF.0, AS_OF.1, AS_OF.2).unwrap()
}

fn day(y: i32, m: u32, d: u32) -> i32 {
    (NaiveDate::from_ymd_opt(y, m, d).unwrap() - NaiveDate::from_ymd_opt(1970, 1, 1).unwrap())
        .num_days() as i32
}

fn ms(y: i32, m: u32, d: u32, hour: i64) -> i64 {
    day(y, m, d) as i64 * 86_400_000 + hour * 3_600_000
}

fn dates(name: &str, v: Vec<Option<i32>>) -> Column {
    Column::new(name.into(), v).cast(&DataType::Date).unwrap()
}

fn times(name: &str, v: Vec<i64>) -> Column {
    Column::new(name.into(), v)
        .cast(&DataType::Datetime(TimeUnit::Milliseconds, None))
        .unwrap()
}

const PIPELINE: &str = r#"
[pipeline]
name = "test"
version = "1"

[tables.transactions]
time = "ts"
derive = [{ name = "dpd", kind = "days_past_due", due = "due_date", paid = "paid_date" }]

[tables.behaviors]
time = "ts"
derive = [{ name = "hour", kind = "hour_of_day", column = "ts" }]

[tables.relations]
time = "since"
edges = { from = "src", to = "dst" }

[[feature]]
name = "age"
dimension = "identity"
description = "Age"
type = "int"
kind = "attribute"
column = "age"

[[feature]]
name = "tenure_days"
dimension = "identity"
description = "Days since sign-up"
type = "float"
kind = "attribute"
column = "signup_date"
transform = "days_since"

[[feature]]
name = "purchases_90d"
dimension = "transaction"
description = "Purchases in 90 days"
type = "int"
kind = "aggregate"
table = "transactions"
agg = "count"
window_days = 90
filter = [{ column = "kind", op = "eq", value = "purchase" }]

[[feature]]
name = "spend_90d"
dimension = "transaction"
description = "Spend in 90 days"
type = "float"
kind = "aggregate"
table = "transactions"
column = "amount"
agg = "sum"
window_days = 90
filter = [{ column = "kind", op = "eq", value = "purchase" }]

[[feature]]
name = "dpd_max"
dimension = "transaction"
description = "Worst days past due"
type = "float"
kind = "aggregate"
table = "transactions"
column = "dpd"
agg = "max"
filter = [{ column = "kind", op = "in", value = ["loan_repayment", "utility_bill"] }]

[[feature]]
name = "late_count"
dimension = "transaction"
description = "Late bills"
type = "int"
kind = "aggregate"
table = "transactions"
agg = "count"
filter = [{ column = "kind", op = "in", value = ["loan_repayment", "utility_bill"] }, { column = "dpd", op = "ge", value = 1 }]

[[feature]]
name = "bill_count"
dimension = "transaction"
description = "Bills"
type = "int"
kind = "aggregate"
table = "transactions"
agg = "count"
filter = [{ column = "kind", op = "in", value = ["loan_repayment", "utility_bill"] }]

[[feature]]
name = "late_share"
dimension = "transaction"
description = "Late share"
type = "float"
kind = "ratio"
numerator = "late_count"
denominator = "bill_count"

[[feature]]
name = "night_logins"
dimension = "behavior"
description = "Night logins"
type = "int"
kind = "aggregate"
table = "behaviors"
agg = "count"
filter = [{ column = "event", op = "eq", value = "login" }, { column = "hour", op = "lt", value = 6 }]

[[feature]]
name = "devices"
dimension = "behavior"
description = "Distinct devices"
type = "int"
kind = "aggregate"
table = "behaviors"
column = "device_id"
agg = "n_unique"

[[feature]]
name = "days_since_login"
dimension = "behavior"
description = "Days since last login"
type = "float"
kind = "aggregate"
table = "behaviors"
agg = "days_since_last"
filter = [{ column = "event", op = "eq", value = "login" }]

[[feature]]
name = "degree"
dimension = "relationship"
description = "Connections"
type = "int"
kind = "aggregate"
table = "relations"
agg = "count"

[[feature]]
name = "late_neighbors_share"
dimension = "relationship"
description = "Share of neighbours with a late bill"
type = "float"
kind = "neighbors"
table = "relations"
agg = "share"
filter = [{ column = "late_count", op = "ge", value = 1 }]

[[feature]]
name = "neighbors_age_mean"
dimension = "relationship"
description = "Mean age of neighbours"
type = "float"
kind = "neighbors"
table = "relations"
agg = "mean"
of = "age"

[[feature]]
name = "two_hop_late"
dimension = "relationship"
description = "Two-hop neighbours with a late bill"
type = "int"
kind = "two_hop"
table = "relations"
filter = [{ column = "late_count", op = "ge", value = 1 }]

[[feature]]
name = "device_sharers"
dimension = "relationship"
description = "Other users on my devices"
type = "int"
kind = "shared"
table = "behaviors"
column = "device_id"
"#;

/// Users a..e. a: a thorough history; b: transactions but no bills or purchases in window;
/// c: nothing at all; d, e: graph neighbours of a (d is late), e shares a's device.
fn tables(with_future_rows: bool) -> Tables {
    let users = DataFrame::new(
        5,
        vec![
            Column::new("user_id".into(), ["a", "b", "c", "d", "e"]),
            Column::new("age".into(), [30i32, 40, 50, 20, 60]),
            dates(
                "signup_date",
                vec![
                    Some(day(2025, 12, 21)),
                    Some(day(2024, 12, 31)),
                    None,
                    Some(day(2020, 1, 1)),
                    Some(day(2021, 1, 1)),
                ],
            ),
        ],
    )
    .unwrap();

    let mut t_user = vec!["a", "a", "a", "a", "a", "b", "d"];
    let mut t_ts = vec![
        ms(2025, 12, 1, 12),  // purchase in window
        ms(2025, 8, 1, 12),   // purchase outside 90 days
        ms(2025, 12, 1, 12),  // bill due 12-01 paid 12-11: 10 days late
        ms(2025, 12, 20, 12), // bill due 12-20 paid after as-of: unpaid at as-of → 11 days
        ms(2025, 11, 1, 12),  // bill paid on time
        ms(2025, 5, 1, 12),   // b: an old purchase only
        ms(2025, 6, 1, 12),   // d: a bill 40 days late
    ];
    let mut t_kind = vec![
        "purchase",
        "purchase",
        "utility_bill",
        "loan_repayment",
        "utility_bill",
        "purchase",
        "loan_repayment",
    ];
    let mut t_amount = vec![100.0, 50.0, 30.0, 500.0, 30.0, 70.0, 300.0];
    let mut t_due = vec![
        None,
        None,
        Some(day(2025, 12, 1)),
        Some(day(2025, 12, 20)),
        Some(day(2025, 11, 1)),
        None,
        Some(day(2025, 6, 1)),
    ];
    let mut t_paid = vec![
        None,
        None,
        Some(day(2025, 12, 11)),
        Some(day(2026, 1, 5)),
        Some(day(2025, 10, 30)),
        None,
        Some(day(2025, 7, 11)),
    ];
    if with_future_rows {
        // Rows at or after as-of must change nothing.
        t_user.extend(["a", "b", "c", "a"]);
        t_ts.extend([
            ms(2025, 12, 31, 0),
            ms(2026, 1, 2, 3),
            ms(2026, 2, 1, 12),
            ms(2026, 1, 15, 12),
        ]);
        t_kind.extend(["purchase", "utility_bill", "purchase", "loan_repayment"]);
        t_amount.extend([999.0, 10.0, 5.0, 7.0]);
        t_due.extend([None, Some(day(2026, 1, 2)), None, Some(day(2026, 1, 15))]);
        t_paid.extend([None, None, None, Some(day(2026, 3, 1))]);
    }
    let n = t_user.len();
    let transactions = DataFrame::new(
        n,
        vec![
            Column::new("user_id".into(), t_user),
            times("ts", t_ts),
            Column::new("kind".into(), t_kind),
            Column::new("amount".into(), t_amount),
            dates("due_date", t_due),
            dates("paid_date", t_paid),
        ],
    )
    .unwrap();

    let mut b_user = vec!["a", "a", "a", "e", "d"];
    let mut b_ts = vec![
        ms(2025, 12, 30, 2),
        ms(2025, 12, 29, 14),
        ms(2025, 11, 1, 3),
        ms(2025, 10, 1, 10),
        ms(2025, 10, 1, 10),
    ];
    let mut b_event = vec!["login", "login", "password_reset", "login", "login"];
    let mut b_device = vec!["dev1", "dev2", "dev1", "dev1", "dev9"];
    if with_future_rows {
        b_user.extend(["a", "c"]);
        b_ts.extend([ms(2026, 1, 1, 1), ms(2026, 1, 1, 1)]);
        b_event.extend(["login", "login"]);
        b_device.extend(["dev7", "dev1"]);
    }
    let n = b_user.len();
    let behaviors = DataFrame::new(
        n,
        vec![
            Column::new("user_id".into(), b_user),
            times("ts", b_ts),
            Column::new("event".into(), b_event),
            Column::new("device_id".into(), b_device),
        ],
    )
    .unwrap();

    let mut src = vec!["a", "a", "d"];
    let mut dst = vec!["d", "e", "b"];
    let mut since = vec![
        Some(day(2024, 1, 1)),
        Some(day(2024, 1, 1)),
        Some(day(2024, 1, 1)),
    ];
    if with_future_rows {
        src.push("a");
        dst.push("c");
        since.push(Some(day(2026, 1, 1)));
    }
    let n = src.len();
    let relations = DataFrame::new(
        n,
        vec![
            Column::new("src".into(), src),
            Column::new("dst".into(), dst),
            Column::new("kind".into(), vec!["contact"; n]),
            dates("since", since),
        ],
    )
    .unwrap();

    Tables::from_frames([
        ("users".to_string(), users),
        ("transactions".to_string(), transactions),
        ("behaviors".to_string(), behaviors),
        ("relations".to_string(), relations),
    ])
}

fn pipeline() -> Pipeline {
    Pipeline::from_spec(PipelineSpec::from_toml(PIPELINE).expect("test pipeline is valid"))
}

fn value(df: &DataFrame, user: &str, feature: &str) -> Option<f64> {
    let ids = df.column("user_id").unwrap().str().unwrap().clone();
    let row = ids
        .iter()
        .position(|v| v == Some(user))
        .expect("user present");
    let c = df
        .column(feature)
        .unwrap()
        .cast(&DataType::Float64)
        .unwrap();
    c.f64().unwrap().get(row)
}

#[test]
fn windows_dpd_and_missing_values_follow_the_spec() {
    let df = pipeline().compute(&tables(false), as_of()).unwrap();
    assert_eq!(df.height(), 5);
    // a: one purchase in 90 days (the August one is outside), spend 100.
    assert_eq!(value(&df, "a", "purchases_90d"), Some(1.0));
    assert_eq!(value(&df, "a", "spend_90d"), Some(100.0));
    // Bill paid 10 days late; instalment paid after as-of counts as open: 2025-12-31 − 12-20 = 11.
    assert_eq!(value(&df, "a", "dpd_max"), Some(11.0));
    assert_eq!(value(&df, "a", "late_count"), Some(2.0));
    assert_eq!(value(&df, "a", "bill_count"), Some(3.0));
    assert!((value(&df, "a", "late_share").unwrap() - 2.0 / 3.0).abs() < 1e-12);
    assert_eq!(value(&df, "a", "tenure_days"), Some(10.0));
    // b has transactions but nothing matching: counts/sums are 0, max and the ratio are missing.
    assert_eq!(value(&df, "b", "purchases_90d"), Some(0.0));
    assert_eq!(value(&df, "b", "spend_90d"), Some(0.0));
    assert_eq!(value(&df, "b", "dpd_max"), None);
    assert_eq!(value(&df, "b", "late_share"), None);
    // c has no rows anywhere: missing, not zero.
    assert_eq!(value(&df, "c", "purchases_90d"), None);
    assert_eq!(value(&df, "c", "spend_90d"), None);
    assert_eq!(value(&df, "c", "devices"), None);
    assert_eq!(value(&df, "c", "tenure_days"), None);
    assert_eq!(value(&df, "c", "degree"), None);
}

#[test]
fn behavior_and_graph_features() {
    let df = pipeline().compute(&tables(false), as_of()).unwrap();
    assert_eq!(value(&df, "a", "night_logins"), Some(1.0)); // 02:00 login; the 03:00 event is a reset
    assert_eq!(value(&df, "a", "devices"), Some(2.0));
    assert!((value(&df, "a", "days_since_login").unwrap() - 22.0 / 24.0).abs() < 1e-12);
    assert_eq!(value(&df, "a", "degree"), Some(2.0));
    assert_eq!(value(&df, "b", "degree"), Some(1.0)); // edges are undirected
                                                      // a's neighbours: d (late) and e (not) → share 0.5; mean age (20 + 60) / 2.
    assert_eq!(value(&df, "a", "late_neighbors_share"), Some(0.5));
    assert_eq!(value(&df, "a", "neighbors_age_mean"), Some(40.0));
    // Two hops from b: b–d–a; a is late (its own bills) → 1.
    assert_eq!(value(&df, "b", "two_hop_late"), Some(1.0));
    // Two hops from a: a–d–b, a–e: none of them (b) late → 0; c has no edges → missing.
    assert_eq!(value(&df, "a", "two_hop_late"), Some(0.0));
    assert_eq!(value(&df, "c", "two_hop_late"), None);
    // e used dev1 like a.
    assert_eq!(value(&df, "a", "device_sharers"), Some(1.0));
    assert_eq!(value(&df, "e", "device_sharers"), Some(1.0));
    assert_eq!(value(&df, "d", "device_sharers"), Some(0.0));
}

#[test]
fn rows_at_or_after_as_of_change_no_feature() {
    let p = pipeline();
    let before = p.compute(&tables(false), as_of()).unwrap();
    let after = p.compute(&tables(true), as_of()).unwrap();
    assert!(before.equals_missing(&after), "leak:\n{before}\n{after}");
}

/// The population run in chunks (its graph step joins on integer ids, not on the keys) equals
/// the single run, also with edges to users outside the base table, edges missing an end, and
/// a base table out of key order.
#[test]
fn chunked_run_equals_one_run_with_outside_edges_in_any_base_order() {
    let p = pipeline();
    let mut t = tables(false);
    let src: [Option<&str>; 6] = [
        Some("a"),
        Some("a"),
        Some("d"),
        Some("x"),
        Some("b"),
        Some("x"),
    ];
    let dst: [Option<&str>; 6] = [Some("d"), Some("e"), Some("b"), Some("c"), None, Some("a")];
    let relations = DataFrame::new(
        6,
        vec![
            Column::new("src".into(), src),
            Column::new("dst".into(), dst),
            Column::new("kind".into(), vec!["contact"; 6]),
            dates("since", vec![Some(day(2024, 1, 1)); 6]),
        ],
    )
    .unwrap();
    t.insert("relations", relations);
    let one = p.compute(&t, as_of()).unwrap();
    // Two users a chunk: three own-rows chunks, and the graph step in chunks of ten.
    let chunked = p.compute_chunked(&t, as_of(), 2, |_, _| {}).unwrap();
    assert!(
        one.equals_missing(&chunked),
        "one run:\n{one}\nchunked:\n{chunked}"
    );
    // A base table out of key order: the chunks' values are put back in its order.
    let mut t_reversed = t.clone();
    let users = t.get("users").unwrap().collect().unwrap().reverse();
    t_reversed.insert("users", users);
    let reversed = p
        .compute_chunked(&t_reversed, as_of(), 2, |_, _| {})
        .unwrap();
    assert_eq!(
        reversed.column("user_id").unwrap().str().unwrap().get(0),
        Some("e")
    );
    assert!(one.reverse().equals_missing(&reversed), "{reversed}");
    // c's only neighbour, x, is outside the population, and c reaches a (late) through x; b
    // reaches a through d (b's other edge has no far end).
    assert_eq!(value(&chunked, "c", "two_hop_late"), Some(1.0));
    assert_eq!(value(&chunked, "b", "two_hop_late"), Some(1.0));
    assert_eq!(value(&chunked, "c", "degree"), Some(1.0));
}

#[test]
fn online_path_equals_batch_row_for_every_user() {
    let p = pipeline();
    let t = tables(false);
    let batch = p.compute(&t, as_of()).unwrap();
    for user in ["a", "b", "c", "d", "e"] {
        let one = p
            .compute_for_users(&t, as_of(), &[user.to_string()])
            .unwrap();
        assert_eq!(one.height(), 1);
        for f in &p.spec.features {
            assert_eq!(
                value(&one, user, &f.meta.name),
                value(&batch, user, &f.meta.name),
                "{user} {}",
                f.meta.name
            );
        }
    }
    let none = p
        .compute_for_users(&t, as_of(), &["nobody".to_string()])
        .unwrap();
    assert_eq!(none.height(), 0);
}

fn spec_error(toml_text: &str) -> String {
    match PipelineSpec::from_toml(toml_text) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("pipeline should be refused"),
    }
}

const HEAD: &str =
    "[pipeline]\nname = \"t\"\nversion = \"1\"\n[tables.transactions]\ntime = \"ts\"\n";

fn feature(body: &str) -> String {
    format!("{HEAD}[[feature]]\nname = \"f1\"\ndimension = \"transaction\"\ndescription = \"d\"\ntype = \"int\"\n{body}\n")
}

#[test]
fn bad_pipeline_files_are_refused_naming_the_feature() {
    let e = spec_error(&feature(
        "kind = \"aggregate\"\ntable = \"nope\"\nagg = \"count\"",
    ));
    assert!(
        e.contains("f1") && e.contains("unknown table 'nope'"),
        "{e}"
    );
    let e = spec_error(&feature(
        "kind = \"aggregate\"\ntable = \"transactions\"\nagg = \"median_of_fun\"",
    ));
    assert!(e.contains("f1") && e.contains("unknown aggregation"), "{e}");
    let e = spec_error(&feature(
        "kind = \"aggregate\"\ntable = \"transactions\"\nagg = \"count\"\nwindow_days = 0",
    ));
    assert!(
        e.contains("f1") && e.contains("window_days must be > 0"),
        "{e}"
    );
    let dup = format!(
        "{}\n[[feature]]\nname = \"f1\"\ndimension = \"behavior\"\ndescription = \"d\"\ntype = \"int\"\nkind = \"aggregate\"\ntable = \"transactions\"\nagg = \"count\"\n",
        feature("kind = \"aggregate\"\ntable = \"transactions\"\nagg = \"count\"")
    );
    let e = spec_error(&dup);
    assert!(e.contains("f1") && e.contains("duplicate"), "{e}");
    let e = spec_error(&feature(
        "kind = \"ratio\"\nnumerator = \"x\"\ndenominator = \"y\"",
    ));
    assert!(e.contains("f1") && e.contains("unknown feature 'x'"), "{e}");
    let e = spec_error(&feature(
        "kind = \"aggregate\"\ntable = \"transactions\"\nagg = \"count\"\ndimension2 = 3",
    ));
    assert!(e.contains("dimension2"), "{e}");
}

#[test]
fn unknown_column_is_refused_at_compute_naming_the_feature() {
    let text = PIPELINE.replace("column = \"amount\"", "column = \"amout\"");
    let p = Pipeline::from_spec(PipelineSpec::from_toml(&text).unwrap());
    let e = p.compute(&tables(false), as_of()).unwrap_err();
    assert!(
        matches!(&e, FeatureError::Spec { feature, .. } if feature == "spend_90d"),
        "{e}"
    );
    assert!(e.to_string().contains("amout"), "{e}");
}

#[test]
fn hash_ignores_formatting_and_tracks_definitions() {
    let a = PipelineSpec::from_toml(PIPELINE).unwrap();
    let b = PipelineSpec::from_toml(&format!("# a comment\n{PIPELINE}\n\n")).unwrap();
    let c =
        PipelineSpec::from_toml(&PIPELINE.replace("window_days = 90", "window_days = 91")).unwrap();
    assert_eq!(a.hash(), b.hash());
    assert_ne!(a.hash(), c.hash());
    assert_eq!(a.hash().len(), 64);
}

#[test]
fn flat_mode_passes_columns_through_typed_and_keeps_missing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("applicants.csv"),
        "user_id,income,job,age\nu1,5000,clerk,31\nu2,NA,,45\nu3,7000,driver,\n",
    )
    .unwrap();
    let listed = r#"
[pipeline]
name = "partner"
version = "1"
mode = "flat"
base_table = "applicants"
default_dimension = "capacity"
[tables.applicants]
file = "applicants.csv"
[[feature]]
name = "monthly_income"
dimension = "capacity"
description = "Declared monthly income"
type = "float"
kind = "column"
column = "income"
[[feature]]
name = "job"
dimension = "identity"
description = "Occupation"
type = "category"
kind = "column"
"#;
    let p = Pipeline::from_spec(PipelineSpec::from_toml(listed).unwrap());
    let tables = Tables::open_dir(&p.spec, dir.path()).unwrap();
    let ds = sesame::features::to_dataset(&p.compute(&tables, as_of()).unwrap(), &p.spec).unwrap();
    use sesame::domain::FeatureValue as V;
    assert_eq!(ds.ids, ["u1", "u2", "u3"]);
    assert_eq!(ds.row(0), vec![V::Num(5000.0), V::Cat("clerk".into())]);
    assert_eq!(ds.row(1), vec![V::Missing, V::Missing]);
    assert_eq!(ds.columns[0].meta.description, "Declared monthly income");

    // No column list: every column passes through, numbers numeric, text categorical.
    let all = listed.split("[[feature]]").next().unwrap();
    let p = Pipeline::from_spec(PipelineSpec::from_toml(all).unwrap());
    let ds = sesame::features::to_dataset(&p.compute(&tables, as_of()).unwrap(), &p.spec).unwrap();
    let names: Vec<&str> = ds.columns.iter().map(|c| c.meta.name.as_str()).collect();
    assert_eq!(names, ["income", "job", "age"]);
    assert_eq!(
        ds.row(2),
        vec![V::Num(7000.0), V::Cat("driver".into()), V::Missing]
    );
    assert!(ds
        .columns
        .iter()
        .all(|c| c.meta.dimension == sesame::domain::Dimension::Capacity));
}

#[test]
fn a_model_refuses_a_pipeline_it_was_not_trained_on() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    for f in ["scorecard.json", "pipeline.toml"] {
        std::fs::copy(root.join("models/default").join(f), dir.path().join(f)).unwrap();
    }
    assert!(sesame::scoring::bundle::ModelBundle::load(dir.path()).is_ok());
    // A comment does not change the pipeline; a definition does.
    let text = std::fs::read_to_string(dir.path().join("pipeline.toml")).unwrap();
    std::fs::write(
        dir.path().join("pipeline.toml"),
        format!("# reviewed\n{text}"),
    )
    .unwrap();
    assert!(sesame::scoring::bundle::ModelBundle::load(dir.path()).is_ok());
    std::fs::write(
        dir.path().join("pipeline.toml"),
        text.replace("window_days = 90", "window_days = 60"),
    )
    .unwrap();
    let e = sesame::scoring::bundle::ModelBundle::load(dir.path())
        .err()
        .expect("refused");
    assert!(e.contains("trained on pipeline"), "{e}");
}

/// `in` and `not_in` on text: short lists are compiled to equalities, long ones to polars'
/// `is_in`; both must count the same rows, and a null never matches either way.
#[test]
fn list_filters_match_members_and_never_a_null() {
    let many: Vec<String> = (4..16).map(|i| format!("\"k{i}\"")).collect();
    let feature = |name: &str, op: &str, values: &str| {
        format!(
            r#"
[[feature]]
name = "{name}"
dimension = "transaction"
description = "{name}"
type = "int"
kind = "aggregate"
table = "transactions"
agg = "count"
filter = [{{ column = "kind", op = "{op}", value = [{values}] }}]
"#
        )
    };
    let spec = format!(
        "[pipeline]\nname = \"lists\"\nversion = \"1\"\n\n[tables.transactions]\ntime = \"ts\"\n{}{}{}{}",
        feature("short_in", "in", "\"k1\", \"k2\""),
        feature("short_not_in", "not_in", "\"k1\", \"k2\""),
        feature("long_in", "in", &format!("\"k1\", \"k2\", {}", many.join(", "))),
        feature("long_not_in", "not_in", &format!("\"k1\", \"k2\", {}", many.join(", "))),
    );
    let pipeline = Pipeline::from_spec(PipelineSpec::from_toml(&spec).unwrap());
    let users = DataFrame::new(2, vec![Column::new("user_id".into(), ["a", "b"])]).unwrap();
    let kinds = [
        Some("k1"),
        Some("k2"),
        Some("k3"),
        None,
        Some("k10"),
        Some("k1"),
    ];
    let transactions = DataFrame::new(
        kinds.len(),
        vec![
            Column::new("user_id".into(), ["a", "a", "a", "a", "a", "b"]),
            times("ts", vec![ms(2025, 12, 1, 12); kinds.len()]),
            Column::new("kind".into(), kinds),
        ],
    )
    .unwrap();
    let tables = Tables::from_frames([
        ("users".to_string(), users),
        ("transactions".to_string(), transactions),
    ]);
    let df = pipeline.compute(&tables, as_of()).unwrap();
    // a: k1, k2, k3, null, k10 (the long list holds k1, k2 and k4..k15). b: k1.
    assert_eq!(value(&df, "a", "short_in"), Some(2.0));
    assert_eq!(value(&df, "a", "short_not_in"), Some(2.0));
    assert_eq!(value(&df, "a", "long_in"), Some(3.0));
    assert_eq!(value(&df, "a", "long_not_in"), Some(1.0));
    assert_eq!(value(&df, "b", "short_in"), Some(1.0));
    assert_eq!(value(&df, "b", "short_not_in"), Some(0.0));
}

/// Neighbour features limited to some edge kinds: the other edges (and an edge of no kind) are
/// not followed; a user with no followed edge is missing, one whose followed neighbours match
/// nothing gets 0 (count, share, sum). Features over all edges see every neighbour.
#[test]
fn neighbour_features_follow_only_their_edge_kinds() {
    let neighbours = |name: &str, agg: &str, rest: &str| {
        format!(
            "\n[[feature]]\nname = \"{name}\"\ndimension = \"relationship\"\ndescription = \"{name}\"\ntype = \"float\"\nkind = \"neighbors\"\ntable = \"relations\"\nagg = \"{agg}\"\n{rest}\n"
        )
    };
    let attribute = |name: &str| {
        format!(
            "\n[[feature]]\nname = \"{name}\"\ndimension = \"identity\"\ndescription = \"{name}\"\ntype = \"int\"\nkind = \"attribute\"\ncolumn = \"{name}\"\n"
        )
    };
    let flagged = r#"filter = [{ column = "flag", op = "ge", value = 1 }]"#;
    let family = r#"edge_kinds = ["family"]"#;
    let spec = [
        "[pipeline]\nname = \"kinds\"\nversion = \"1\"\n\n[tables.relations]\nedges = { from = \"src\", to = \"dst\" }\n".to_string(),
        attribute("age"),
        attribute("flag"),
        neighbours("fam_count", "count", &format!("{family}\n{flagged}")),
        neighbours("fam_share", "share", &format!("{family}\n{flagged}")),
        neighbours("fam_age_mean", "mean", &format!("{family}\nof = \"age\"")),
        neighbours("fam_age_sum", "sum", &format!("{family}\nof = \"age\"\n{flagged}")),
        neighbours("all_count", "count", flagged),
        neighbours("all_age_max", "max", "of = \"age\""),
    ]
    .concat();
    let pipeline = Pipeline::from_spec(PipelineSpec::from_toml(&spec).unwrap());
    let users = DataFrame::new(
        6,
        vec![
            Column::new("user_id".into(), ["a", "b", "c", "d", "e", "f"]),
            Column::new("age".into(), [30i32, 40, 50, 20, 60, 70]),
            Column::new("flag".into(), [0i32, 1, 0, 1, 0, 0]),
        ],
    )
    .unwrap();
    let relations = DataFrame::new(
        5,
        vec![
            Column::new("src".into(), ["a", "a", "a", "e", "e"]),
            Column::new("dst".into(), ["b", "c", "d", "d", "c"]),
            Column::new(
                "kind".into(),
                [
                    Some("family"),
                    Some("family"),
                    Some("contact"),
                    Some("contact"),
                    None,
                ],
            ),
        ],
    )
    .unwrap();
    let tables = Tables::from_frames([
        ("users".to_string(), users),
        ("relations".to_string(), relations),
    ]);
    let df = pipeline.compute(&tables, as_of()).unwrap();
    let expect = [
        // user: fam_count, fam_share, fam_age_mean, fam_age_sum, all_count, all_age_max
        (
            "a",
            [
                Some(1.0),
                Some(0.5),
                Some(45.0),
                Some(40.0),
                Some(2.0),
                Some(50.0),
            ],
        ),
        (
            "b",
            [
                Some(0.0),
                Some(0.0),
                Some(30.0),
                Some(0.0),
                Some(0.0),
                Some(30.0),
            ],
        ),
        (
            "c",
            [
                Some(0.0),
                Some(0.0),
                Some(30.0),
                Some(0.0),
                Some(0.0),
                Some(60.0),
            ],
        ),
        ("d", [None, None, None, None, Some(0.0), Some(60.0)]),
        ("e", [None, None, None, None, Some(1.0), Some(50.0)]),
        ("f", [None, None, None, None, None, None]),
    ];
    let names = [
        "fam_count",
        "fam_share",
        "fam_age_mean",
        "fam_age_sum",
        "all_count",
        "all_age_max",
    ];
    for (user, values) in expect {
        for (name, want) in names.iter().zip(values) {
            assert_eq!(value(&df, user, name), want, "{user} {name}");
        }
    }
}
