//! `sesame evaluate`: metrics against scikit-learn, exact reproduction of the committed
//! champion's recorded held-out metrics, the report files, `--fail-below`, and clean failures.

use std::path::{Path, PathBuf};

use sesame::eval::cli::{
    run_evaluate, EvaluateArgs, Split, DEFAULT_AS_OF, REPORT_HTML, REPORT_JSON,
};
use sesame::eval::metrics;
use sesame::eval::report::parse_thresholds;
use sesame::model::Scorecard;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn args(out: PathBuf) -> EvaluateArgs {
    EvaluateArgs {
        model: root().join("models/default"),
        data: root().join("datasets/demo"),
        target: None,
        bad_value: None,
        as_of: DEFAULT_AS_OF.into(),
        split: Split::Test,
        split_key: None,
        compare: None,
        fail_below: None,
        out,
        chunk_users: sesame::features::chunked::DEFAULT_CHUNK_USERS,
    }
}

/// Reference values computed once with scikit-learn 1.x:
/// ```python
/// y = [0,1,0,1,1,0,0,1,0,1,0,0]
/// p = [0.1,0.4,0.35,0.8,0.4,0.4,0.2,0.65,0.65,0.9,0.05,0.35]
/// roc_auc_score(y, p)                      # 0.9
/// fpr, tpr, _ = roc_curve(y, p); max(tpr - fpr)   # 0.7142857142857143
/// log_loss(y, p)                           # 0.4494899490518302
/// brier_score_loss(y, p)                   # 0.14770833333333333
/// ```
#[test]
fn metrics_match_scikit_learn_on_a_vector_with_ties() {
    let y: [u8; 12] = [0, 1, 0, 1, 1, 0, 0, 1, 0, 1, 0, 0];
    let p = [
        0.1, 0.4, 0.35, 0.8, 0.4, 0.4, 0.2, 0.65, 0.65, 0.9, 0.05, 0.35,
    ];
    let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
    let auc = metrics::auc(&p, &y).expect("auc");
    assert!(close(auc, 0.9), "auc {auc}");
    let ks = metrics::ks(&p, &y).expect("ks");
    assert!(close(ks, 0.7142857142857143), "ks {ks}");
    let ll = metrics::log_loss(&p, &y).expect("log loss");
    assert!(close(ll, 0.4494899490518302), "log loss {ll}");
    let br = metrics::brier(&p, &y).expect("brier");
    assert!(close(br, 0.14770833333333333), "brier {br}");
    let gini = metrics::gini(&p, &y).expect("gini");
    assert!(close(gini, 0.8), "gini {gini}");
}

#[test]
fn held_out_rows_reproduce_the_recorded_metrics_and_write_the_report() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("report");
    let report =
        run_evaluate(&args(out.clone())).expect("evaluate models/default on datasets/demo");
    let recorded = Scorecard::load(&root().join("models/default"))
        .unwrap()
        .metrics
        .test
        .expect("models/default records test metrics");
    // bit for bit: same rows, same order, same scoring
    assert_eq!(report.model.n, recorded.n);
    assert_eq!(report.model.auc.to_bits(), recorded.auc.to_bits());
    assert_eq!(report.model.ks.to_bits(), recorded.ks.to_bits());
    assert_eq!(report.model.log_loss.to_bits(), recorded.log_loss.to_bits());
    assert_eq!(report.model.brier.to_bits(), recorded.brier.to_bits());

    // report.json carries the same numbers
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join(REPORT_JSON)).unwrap()).unwrap();
    assert_eq!(json["auc"].as_f64(), Some(recorded.auc));
    assert_eq!(json["ks"].as_f64(), Some(recorded.ks));
    assert_eq!(json["n"].as_u64(), Some(recorded.n as u64));
    for k in ["gini", "log_loss", "brier", "bad_rate", "psi"] {
        assert!(
            json[k].as_f64().is_some_and(f64::is_finite),
            "report.json lacks {k}"
        );
    }
    // held-out rows come from the training population: the score distribution is stable
    let psi = json["psi"].as_f64().unwrap();
    assert!(psi < 0.1, "psi {psi}");
    let bands = json["bands"].as_array().unwrap();
    assert_eq!(bands.len(), 5);
    let band_total: u64 = bands.iter().map(|b| b["count"].as_u64().unwrap()).sum();
    assert_eq!(band_total, recorded.n as u64);
    // bad rate falls from the poor band to the excellent one
    let first = bands[0]["bad_rate"].as_f64().unwrap();
    let last = bands[4]["bad_rate"].as_f64().unwrap();
    assert!(first > last, "poor {first} vs excellent {last}");
    // cut-offs: approving everyone at 350, approval falls as the cut-off rises
    let cut = json["cutoffs"].as_array().unwrap();
    assert_eq!(cut[0]["cutoff"].as_i64(), Some(350));
    assert_eq!(cut[0]["approval_rate"].as_f64(), Some(1.0));
    let rates: Vec<f64> = cut
        .iter()
        .map(|c| c["approval_rate"].as_f64().unwrap())
        .collect();
    assert!(rates.windows(2).all(|w| w[1] <= w[0]));
    // IV from the artifact, CSI from the data: one row per scorecard feature
    let sc = Scorecard::load(&root().join("models/default")).unwrap();
    let feats = json["features"].as_array().unwrap();
    assert_eq!(feats.len(), sc.features.len());
    assert_eq!(feats[0]["iv"].as_f64(), Some(sc.features[0].binning.iv));
    assert!(feats
        .iter()
        .all(|f| f["csi"].as_f64().is_some_and(|c| (0.0..0.1).contains(&c))));
    assert!(json.get("compare").is_none());

    // report.html: four plots with axis labels and legends, nothing fetched from the network
    let html = std::fs::read_to_string(out.join(REPORT_HTML)).unwrap();
    assert_eq!(html.matches("<svg").count(), 4);
    assert_eq!(html.matches("class=\"x-label\"").count(), 4);
    assert_eq!(html.matches("class=\"y-label\"").count(), 4);
    assert_eq!(html.matches("class=\"legend\"").count(), 4);
    for label in [
        "False positive rate",
        "True positive rate",
        "Observed bad rate",
        "Mean predicted PD",
    ] {
        assert!(html.contains(label), "html lacks '{label}'");
    }
    assert!(!html.contains("http://") && !html.contains("https://"));
    assert!(!html.contains("<script"));
}

/// Training and evaluation compute their features with the population run `sesame batch` uses
/// (`--chunk-users`); in chunks the rows, and so every number of the report, are those of one run.
#[test]
fn features_computed_in_chunks_give_the_same_report_as_one_run() {
    let tmp = tempfile::tempdir().unwrap();
    let report_with = |chunk_users: usize| {
        let out = tmp.path().join(format!("report-{chunk_users}"));
        let mut a = args(out.clone());
        a.chunk_users = chunk_users;
        run_evaluate(&a).expect("evaluate models/default on datasets/demo");
        serde_json::from_str::<serde_json::Value>(
            &std::fs::read_to_string(out.join(REPORT_JSON)).unwrap(),
        )
        .unwrap()
    };
    let one_run = report_with(0);
    // 20,000 demo users: seven own-rows chunks (the last one short), then graph chunks.
    let chunked = report_with(3_000);
    let recorded = Scorecard::load(&root().join("models/default"))
        .unwrap()
        .metrics
        .test
        .expect("models/default records test metrics");
    assert_eq!(
        chunked["auc"].as_f64().map(f64::to_bits),
        Some(recorded.auc.to_bits())
    );
    assert_eq!(
        chunked["ks"].as_f64().map(f64::to_bits),
        Some(recorded.ks.to_bits())
    );
    assert_eq!(one_run, chunked);
}

#[test]
fn compare_reports_both_models() {
    let tmp = tempfile::tempdir().unwrap();
    // the challenger: the champion retrained on other rows would take minutes; a copy of the
    // champion under another version is enough to check the plumbing
    let other = tmp.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let dir = root().join("models/default");
    std::fs::copy(dir.join("pipeline.toml"), other.join("pipeline.toml")).unwrap();
    let text = std::fs::read_to_string(dir.join("scorecard.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["model_version"] = "challenger-x".into();
    std::fs::write(other.join("scorecard.json"), v.to_string()).unwrap();

    let out = tmp.path().join("report");
    let mut a = args(out.clone());
    a.compare = Some(other);
    run_evaluate(&a).expect("evaluate with --compare");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join(REPORT_JSON)).unwrap()).unwrap();
    assert_eq!(
        json["compare"]["model_version"].as_str(),
        Some("challenger-x")
    );
    assert_eq!(json["compare"]["auc"], json["auc"]);
    assert_eq!(json["compare"]["bands"].as_array().map(Vec::len), Some(5));
    let html = std::fs::read_to_string(out.join(REPORT_HTML)).unwrap();
    assert!(html.contains("challenger challenger-x"));
    assert!(html.contains("champion demo-1.2.1"));
}

#[test]
fn fail_below_fails_after_writing_and_passes_when_met() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("strict");
    let mut a = args(out.clone());
    a.fail_below = Some("auc=0.99".into());
    let err = run_evaluate(&a).expect_err("auc 0.78 must miss 0.99");
    let msg = format!("{err:#}");
    assert!(msg.contains("auc") && msg.contains("0.99"), "{msg}");
    assert!(
        out.join(REPORT_JSON).exists(),
        "the report is written before failing"
    );

    let mut a = args(tmp.path().join("lenient"));
    a.fail_below = Some("auc=0.5,ks=0.3".into());
    run_evaluate(&a).expect("auc 0.78 and ks 0.44 pass auc=0.5,ks=0.3");

    // ks alone can fail too
    let mut a = args(tmp.path().join("ks"));
    a.fail_below = Some("ks=0.5".into());
    assert!(run_evaluate(&a).is_err());

    assert!(parse_thresholds("auc=0.7, ks=0.3").is_ok());
    assert!(parse_thresholds("roc=0.7").is_err());
    assert!(parse_thresholds("auc=high").is_err());
    assert!(parse_thresholds("").is_err());
}

#[test]
fn bad_target_column_is_a_clear_error_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    // raw tables: the labels table lacks the column
    let out = tmp.path().join("raw");
    let mut a = args(out.clone());
    a.target = Some("no_such_column".into());
    let msg = format!("{:#}", run_evaluate(&a).expect_err("unknown target"));
    assert!(msg.contains("no_such_column"), "{msg}");
    assert!(!out.exists());

    // flat file: the target column is absent
    let csv = tmp.path().join("flat.csv");
    std::fs::write(&csv, "late_share_365d,y\n0.1,0\n0.5,1\n").unwrap();
    let out = tmp.path().join("flat");
    let mut a = args(out.clone());
    a.data = csv;
    a.split = Split::All;
    a.target = Some("defaulted".into());
    let msg = format!("{:#}", run_evaluate(&a).expect_err("absent target"));
    assert!(msg.contains("defaulted"), "{msg}");
    assert!(!out.exists());
    // nothing left behind in the parent either (no temporary directories)
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .filter(|n| n != "flat.csv")
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
