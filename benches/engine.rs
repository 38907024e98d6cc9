//! In-process cost of one Score: the whole engine call, the scorecard alone and the rules alone,
//! on demo users. `cargo bench --bench engine` (a few seconds). Prints ns per call and the share of
//! a Score call spent in rule evaluation.

use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use sesame::domain::FeatureValue;
use sesame::model::ReasonText;
use sesame::rules::{RuleInput, VelocityCounts};
use sesame::scoring::{EngineConfig, ScoreInput, ScoringEngine};

fn per_call(n: usize, mut f: impl FnMut(usize)) -> f64 {
    for i in 0..n / 10 {
        f(i);
    }
    let t = Instant::now();
    for i in 0..n {
        f(i);
    }
    t.elapsed().as_nanos() as f64 / n as f64
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let engine = ScoringEngine::load(EngineConfig::demo(root)).expect("demo engine");
    let users: Vec<String> = engine.stored_user_ids(2000);
    let inputs: Vec<ScoreInput> = users
        .iter()
        .enumerate()
        .map(|(i, u)| ScoreInput {
            request_id: format!("r{i}"),
            user_id: u.clone(),
            scenario: if i % 2 == 0 {
                "cash_loan".into()
            } else {
                "rental_deposit_free".into()
            },
            partner_id: format!("p{}", i % 7),
            ..Default::default()
        })
        .collect();
    let n = 50_000;
    let score = per_call(n, |i| {
        black_box(engine.score(&inputs[i % inputs.len()]).ok());
    });
    let champion = engine.champion();
    let rule_set = engine.rules();
    let rows: Vec<Vec<FeatureValue>> = users
        .iter()
        .map(|u| engine.stored_features(u).unwrap_or_default())
        .collect();
    let scorecard = per_call(n, |i| {
        black_box(champion.score(&rows[i % rows.len()], ReasonText::Write));
    });
    let results: Vec<_> = rows
        .iter()
        .map(|r| champion.score(r, ReasonText::Write))
        .collect();
    let rules = per_call(n, |i| {
        let k = i % rows.len();
        let r = &results[k];
        black_box(rule_set.evaluate(&RuleInput {
            scenario: &inputs[k].scenario,
            partner: &inputs[k].partner_id,
            user_id: &inputs[k].user_id,
            score: r.score,
            band: r.band,
            pd: r.pd,
            dimension_scores: &r.dimension_scores,
            feature_values: &rows[k],
            velocity: VelocityCounts::default(),
        }));
    });
    println!(
        "engine.score          {score:>9.0} ns/call  ({:.0} calls/s on one core)",
        1e9 / score
    );
    println!("  scorecard + reasons {scorecard:>9.0} ns/call");
    println!(
        "  rules (all policies){rules:>9.0} ns/call  = {:.1}% of a Score call",
        100.0 * rules / score
    );
}
