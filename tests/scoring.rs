//! The engine over the shipped demo: models/default + datasets/demo + rules/. Checks the
//! online/batch parity of features and scores on the real demo population.

use std::path::Path;
use std::sync::OnceLock;

use chrono::NaiveDate;
use sesame::domain::{Band, FeatureValue, SCORE_MAX, SCORE_MIN};
use sesame::features::{to_dataset, Pipeline, Tables};
use sesame::scoring::{
    ApplicantData, EngineConfig, IdentityFacts, ScoreInput, ScoringEngine, ScoringError,
    TransactionRow,
};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn engine() -> &'static ScoringEngine {
    static ENGINE: OnceLock<ScoringEngine> = OnceLock::new();
    ENGINE
        .get_or_init(|| ScoringEngine::load(EngineConfig::demo(root())).expect("demo engine loads"))
}

fn as_of() -> NaiveDate {
    NaiveDate::from_ymd_opt(2025, 12, 31).unwrap()
}

fn pipeline() -> Pipeline {
    Pipeline::load(&root().join("models/default/pipeline.toml")).unwrap()
}

fn demo_tables(p: &Pipeline) -> Tables {
    Tables::open_dir(&p.spec, &root().join("datasets/demo"))
        .unwrap()
        .collect_all()
        .unwrap()
}

fn request(user: &str, scenario: &str) -> ScoreInput {
    ScoreInput {
        request_id: format!("req-{user}"),
        user_id: user.into(),
        scenario: scenario.into(),
        partner_id: "test".into(),
        ..Default::default()
    }
}

fn same(a: &FeatureValue, b: &FeatureValue) -> bool {
    match (a, b) {
        (FeatureValue::Num(x), FeatureValue::Num(y)) => {
            x == y || (x - y).abs() <= 1e-9 * x.abs().max(y.abs())
        }
        _ => a == b,
    }
}

#[test]
fn online_features_equal_batch_rows_for_1000_users() {
    let p = pipeline();
    let tables = demo_tables(&p);
    let batch = to_dataset(&p.compute(&tables, as_of()).unwrap(), &p.spec).unwrap();
    assert_eq!(batch.n_rows(), 20_000);
    // Every 20th user: 1,000 users, asked for ten at a time and some alone.
    let users: Vec<usize> = (0..batch.n_rows()).step_by(20).collect();
    assert_eq!(users.len(), 1000);
    let mut checked = 0;
    for chunk in users.chunks(10) {
        let ids: Vec<String> = chunk.iter().map(|&i| batch.ids[i].clone()).collect();
        let online = to_dataset(
            &p.compute_for_users(&tables, as_of(), &ids).unwrap(),
            &p.spec,
        )
        .unwrap();
        assert_eq!(online.ids, ids);
        for (k, &i) in chunk.iter().enumerate() {
            let (a, b) = (online.row(k), batch.row(i));
            for (j, (x, y)) in a.iter().zip(&b).enumerate() {
                assert!(
                    same(x, y),
                    "user {} feature {}: online {x:?} batch {y:?}",
                    ids[k],
                    p.spec.features[j].meta.name
                );
            }
            checked += 1;
        }
    }
    for &i in users.iter().take(25) {
        let id = batch.ids[i].clone();
        let online = to_dataset(
            &p.compute_for_users(&tables, as_of(), &[id]).unwrap(),
            &p.spec,
        )
        .unwrap();
        assert!(online
            .row(0)
            .iter()
            .zip(batch.row(i))
            .all(|(x, y)| same(x, &y)));
    }
    assert_eq!(checked, 1000);
}

#[test]
fn score_rpc_path_equals_batch_path_for_1000_users() {
    let p = pipeline();
    let batch = to_dataset(&p.compute(&demo_tables(&p), as_of()).unwrap(), &p.spec).unwrap();
    let rows: Vec<(String, Vec<FeatureValue>)> = (0..batch.n_rows())
        .step_by(20)
        .map(|i| (batch.ids[i].clone(), batch.row(i)))
        .collect();
    let outcomes = engine()
        .score_rows(
            Some("cash_loan"),
            rows.iter().map(|(u, r)| (u.as_str(), r.as_slice())),
        )
        .unwrap();
    assert_eq!(outcomes.len(), 1000);
    for ((user, _), batch_outcome) in rows.iter().zip(&outcomes) {
        let online = engine().score(&request(user, "cash_loan")).unwrap();
        assert_eq!(online.score, batch_outcome.score, "{user}");
        assert_eq!(online.band, batch_outcome.band);
        assert_eq!(
            online.probability_of_default,
            batch_outcome.probability_of_default
        );
        assert_eq!(online.reasons, batch_outcome.reasons);
        assert_eq!(online.dimension_scores, batch_outcome.dimension_scores);
    }
}

#[test]
fn a_score_has_everything_a_partner_reads() {
    let user = engine().status();
    assert!(user.store_users >= 20_000);
    let p = pipeline();
    let first = to_dataset(&p.compute(&demo_tables(&p), as_of()).unwrap(), &p.spec)
        .unwrap()
        .ids[0]
        .clone();
    for scenario in ["rental_deposit_free", "cash_loan"] {
        let o = engine().score(&request(&first, scenario)).unwrap();
        assert_eq!(o.request_id, format!("req-{first}"));
        assert!((SCORE_MIN..=SCORE_MAX).contains(&o.score));
        assert_eq!(o.band, Band::of(o.score));
        assert!(o.probability_of_default > 0.0 && o.probability_of_default < 1.0);
        assert!(!o.dimension_scores.is_empty());
        assert!(o.reasons.len() <= 4);
        assert!(o
            .reasons
            .windows(2)
            .all(|w| w[0].points_lost >= w[1].points_lost));
        assert_eq!(o.model_version, "demo-1.2.1");
        assert_eq!(o.features_as_of, as_of());
    }
}

#[test]
fn caller_mistakes_are_named_errors() {
    let e = engine().score(&request("", "cash_loan")).unwrap_err();
    assert!(
        matches!(&e, ScoringError::InvalidArgument { field, .. } if field == "user_id"),
        "{e}"
    );
    let e = engine()
        .score(&request("U000000000000", "moon_loan"))
        .unwrap_err();
    assert!(
        matches!(&e, ScoringError::InvalidArgument { field, .. } if field == "scenario"),
        "{e}"
    );
    let e = engine()
        .score(&request("nobody-here", "cash_loan"))
        .unwrap_err();
    assert!(matches!(e, ScoringError::NotFound(_)), "{e}");
    let mut r = request("nobody-here", "cash_loan");
    r.model_version = Some("v-does-not-exist".into());
    let e = engine().score(&r).unwrap_err();
    assert!(
        matches!(&e, ScoringError::InvalidArgument { field, .. } if field == "model_version"),
        "{e}"
    );
}

#[test]
fn inline_applicant_is_scored_by_the_same_pipeline() {
    let mut r = request("new-applicant-1", "rental_deposit_free");
    let ts = |d: u32| {
        NaiveDate::from_ymd_opt(2025, 11, d)
            .unwrap()
            .and_hms_opt(12, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp_millis()
    };
    r.applicant = Some(ApplicantData {
        identity: Some(IdentityFacts {
            age: Some(31),
            income_band: Some(4),
            real_name_verified: Some(true),
            ..Default::default()
        }),
        transactions: (1..=20)
            .map(|d| TransactionRow {
                ts_ms: ts(d),
                kind: "purchase".into(),
                amount: 120.0,
                merchant_category: Some("grocery".into()),
                due_date: None,
                paid_date: None,
            })
            .collect(),
        ..Default::default()
    });
    let o = engine().score(&r).unwrap();
    assert!((SCORE_MIN..=SCORE_MAX).contains(&o.score));
    // The same applicant with late, unpaid instalments scores lower.
    let mut late = r.clone();
    late.user_id = "new-applicant-2".into();
    if let Some(a) = late.applicant.as_mut() {
        for d in 1..=3 {
            a.transactions.push(TransactionRow {
                ts_ms: ts(d),
                kind: "loan_repayment".into(),
                amount: 800.0,
                merchant_category: None,
                due_date: NaiveDate::from_ymd_opt(2025, 11, d),
                paid_date: None,
            });
        }
    }
    let worse = engine().score(&late).unwrap();
    assert!(
        worse.score < o.score,
        "late {} vs clean {}",
        worse.score,
        o.score
    );
}

/// Every Score call's future holds the engine call's, and is copied at each await level and
/// into the heap: the Redis store's ~2.5 KB future inline made all of them that size (in process
/// too), ~10 % of Score throughput. Boxed, the engine's stays small.
#[test]
fn the_engine_call_future_stays_small() {
    let input = request("U-any", "cash_loan");
    let future = engine().score_async(&input);
    let bytes = std::mem::size_of_val(&future);
    assert!(bytes <= 512, "score_async's future is {bytes} bytes");
}
