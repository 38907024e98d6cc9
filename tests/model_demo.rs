//! The committed champion (`models/default`) against the committed demo population: it loads as a
//! bundle, the documented training command reproduces it, its recorded test metrics are what
//! scoring the held-out rows gives, and it stays close to the generator's oracle.

use std::path::Path;

use chrono::NaiveDate;
use sesame::eval::metrics;
use sesame::features::{to_dataset, Pipeline, Tables};
use sesame::io::read_parquet;
use sesame::model::{train_dataset, Scorecard, TrainConfig};
use sesame::scoring::bundle::ModelBundle;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// (feature table with labels in pipeline order, oracle PD per row), rows ordered by user_id.
fn demo() -> (sesame::domain::Dataset, Vec<f64>) {
    let p = Pipeline::load(&root().join("pipelines/demo.toml")).unwrap();
    let tables = Tables::open_dir(&p.spec, &root().join("datasets/demo")).unwrap();
    let df = p
        .compute(&tables, NaiveDate::from_ymd_opt(2025, 12, 31).unwrap())
        .unwrap();
    let mut ds = to_dataset(&df, &p.spec).unwrap();
    let labels = read_parquet(&root().join("datasets/demo/labels.parquet")).unwrap();
    let oracle = read_parquet(&root().join("datasets/demo/oracle.parquet")).unwrap();
    let lab_ids: Vec<&str> = labels
        .column("user_id")
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .map(|v| v.unwrap())
        .collect();
    let ora_ids: Vec<&str> = oracle
        .column("user_id")
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .map(|v| v.unwrap())
        .collect();
    assert_eq!(
        lab_ids,
        ds.ids.iter().map(String::as_str).collect::<Vec<_>>(),
        "tables share the user order"
    );
    assert_eq!(ora_ids, lab_ids);
    let y: Vec<u8> = labels
        .column("defaulted")
        .unwrap()
        .bool()
        .unwrap()
        .iter()
        .map(|v| u8::from(v.unwrap()))
        .collect();
    let pd: Vec<f64> = oracle
        .column("true_pd")
        .unwrap()
        .f64()
        .unwrap()
        .iter()
        .map(|v| v.unwrap())
        .collect();
    ds.target = Some(y);
    (ds, pd)
}

#[test]
fn committed_champion_is_reproducible_and_near_the_oracle() {
    let dir = root().join("models/default");
    let bundle = ModelBundle::load(&dir).expect("models/default loads against its pipeline");
    let committed = Scorecard::load(&dir).unwrap();
    let (ds, oracle_pd) = demo();
    let is_train = |i: usize| i % 10 < 7;
    let train = ds.filter_rows(is_train);
    let test = ds.filter_rows(|i| !is_train(i));

    // The documented command (without the challenger, whose 60 trees take about a minute here;
    // `tests/model_shared.rs` checks that a retrained challenger is the same forest),
    // with the pipeline's binning hints as `sesame train --pipeline` applies them.
    let cfg = TrainConfig {
        created: Some(committed.created.clone()),
        model_version: committed.model_version.clone(),
        pipeline_hash: Some(bundle.pipeline.hash().to_string()),
        challenger: None,
        ..Default::default()
    }
    .with_pipeline_hints(&bundle.pipeline.spec);
    let retrained = train_dataset(&train, Some(&test), &cfg).unwrap().scorecard;
    assert_eq!(
        retrained.features, committed.features,
        "retraining changed bins or points"
    );
    assert_eq!(retrained.intercept, committed.intercept);

    // Recorded metrics = scoring the held-out rows now.
    let y = test.target.clone().unwrap();
    let pd: Vec<f64> = committed
        .score_dataset(&test)
        .unwrap()
        .iter()
        .map(|r| r.pd)
        .collect();
    let auc = metrics::auc(&pd, &y).unwrap();
    let recorded = committed.metrics.test.clone().unwrap();
    assert_eq!(auc, recorded.auc);
    assert_eq!(metrics::ks(&pd, &y).unwrap(), recorded.ks);

    let oracle: Vec<f64> = (0..ds.n_rows())
        .filter(|&i| !is_train(i))
        .map(|i| oracle_pd[i])
        .collect();
    let oracle_auc = metrics::auc(&oracle, &y).unwrap();
    eprintln!(
        "demo test AUC {auc:.4} vs oracle {oracle_auc:.4} = {:.1}%",
        100.0 * auc / oracle_auc
    );
    // Goal 97 % (issue #4); measured 97.9 % (demo-1.2.0: 0.7928 against 0.8094).
    assert!(
        auc >= 0.97 * oracle_auc,
        "test AUC {auc:.4} < 97% of the oracle's {oracle_auc:.4}"
    );
}
