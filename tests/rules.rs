//! The shipped policies, table-driven; shadow policies; refusal of bad rule files.

use std::path::Path;

use sesame::domain::{Band, Dimension, FeatureMeta, FeatureValue};
use sesame::features::PipelineSpec;
use sesame::rules::{Lists, RuleInput, RuleSet, VelocityCounts};
use sesame::scoring::Decision;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn features() -> Vec<FeatureMeta> {
    PipelineSpec::load(&root().join("pipelines/demo.toml"))
        .unwrap()
        .feature_metas()
}

fn shipped() -> RuleSet {
    RuleSet::load(&root().join("rules"), &features()).expect("shipped rules load")
}

/// A clean applicant; each case overrides a few values.
struct Case {
    name: &'static str,
    scenario: &'static str,
    score: i32,
    user: &'static str,
    set: &'static [(&'static str, f64)],
    velocity: u32,
    want: Decision,
    want_hits: &'static [&'static str],
    want_param: Option<(&'static str, &'static str)>,
}

fn run(set: &RuleSet, c: &Case) -> sesame::rules::Evaluation {
    let metas = features();
    let mut values: Vec<FeatureValue> = metas.iter().map(|_| FeatureValue::Num(0.0)).collect();
    for (name, v) in c.set {
        let i = metas
            .iter()
            .position(|m| m.name == *name)
            .unwrap_or_else(|| panic!("no feature {name}"));
        values[i] = if v.is_nan() {
            FeatureValue::Missing
        } else {
            FeatureValue::Num(*v)
        };
    }
    let dims = [
        (Dimension::Transaction, c.score),
        (Dimension::Behavior, 600),
    ];
    set.evaluate(&RuleInput {
        scenario: c.scenario,
        partner: "p1",
        user_id: c.user,
        score: c.score,
        band: Band::of(c.score),
        pd: 0.05,
        dimension_scores: &dims,
        feature_values: &values,
        velocity: VelocityCounts {
            partners_1h: c.velocity.min(1),
            partners_24h: c.velocity,
            partners_30d: c.velocity,
        },
    })
}

fn lists() -> Lists {
    Lists {
        blacklist: ["debtor".to_string()].into_iter().collect(),
        whitelist: Default::default(),
        watchlist: ["watched".to_string()].into_iter().collect(),
    }
}

fn with_lists() -> RuleSet {
    let mut files = Vec::new();
    for f in ["rental_deposit_free.toml", "cash_loan.toml", "fraud.toml"] {
        files.push((
            f.to_string(),
            std::fs::read_to_string(root().join("rules").join(f)).unwrap(),
        ));
    }
    RuleSet::from_sources(&files, &features(), lists()).unwrap()
}

const NAN: f64 = f64::NAN;

#[test]
fn every_shipped_rule_decides_as_written() {
    let cases = [
        Case {
            name: "rental: blacklisted",
            scenario: "rental_deposit_free",
            score: 800,
            user: "debtor",
            set: &[],
            velocity: 1,
            want: Decision::Reject,
            want_hits: &["RDF-001"],
            want_param: Some(("deposit_waived", "false")),
        },
        Case {
            name: "rental: 30+ dpd in 90 days",
            scenario: "rental_deposit_free",
            score: 800,
            user: "u",
            set: &[("dpd_max_90d", 31.0)],
            velocity: 1,
            want: Decision::Reject,
            want_hits: &["RDF-002"],
            want_param: None,
        },
        Case {
            name: "rental: missing dpd is not late",
            scenario: "rental_deposit_free",
            score: 700,
            user: "u",
            set: &[("dpd_max_90d", NAN)],
            velocity: 1,
            want: Decision::Approve,
            want_hits: &["RDF-003"],
            want_param: Some(("deposit_waived", "true")),
        },
        Case {
            name: "rental: 650 waives the deposit",
            scenario: "rental_deposit_free",
            score: 650,
            user: "u",
            set: &[],
            velocity: 1,
            want: Decision::Approve,
            want_hits: &["RDF-003"],
            want_param: Some(("deposit_waived", "true")),
        },
        Case {
            name: "rental: 649 clean → review",
            scenario: "rental_deposit_free",
            score: 649,
            user: "u",
            set: &[],
            velocity: 1,
            want: Decision::Review,
            want_hits: &["RDF-004"],
            want_param: None,
        },
        Case {
            name: "rental: 620 with a late payment → default",
            scenario: "rental_deposit_free",
            score: 620,
            user: "u",
            set: &[("late1_count_90d", 1.0)],
            velocity: 1,
            want: Decision::Reject,
            want_hits: &[],
            want_param: Some(("deposit_waived", "false")),
        },
        Case {
            name: "rental: 500 → default reject",
            scenario: "rental_deposit_free",
            score: 500,
            user: "u",
            set: &[],
            velocity: 1,
            want: Decision::Reject,
            want_hits: &[],
            want_param: None,
        },
        Case {
            name: "loan: blacklisted",
            scenario: "cash_loan",
            score: 900,
            user: "debtor",
            set: &[],
            velocity: 1,
            want: Decision::Reject,
            want_hits: &["CL-001"],
            want_param: Some(("credit_limit", "0")),
        },
        Case {
            name: "loan: unpaid with 60+ history",
            scenario: "cash_loan",
            score: 900,
            user: "u",
            set: &[("late60_count_all", 1.0), ("unpaid_count", 2.0)],
            velocity: 1,
            want: Decision::Reject,
            want_hits: &["CL-002"],
            want_param: None,
        },
        Case {
            name: "loan: 60+ history but nothing unpaid",
            scenario: "cash_loan",
            score: 760,
            user: "u",
            set: &[("late60_count_all", 1.0)],
            velocity: 1,
            want: Decision::Approve,
            want_hits: &["CL-003"],
            want_param: Some(("credit_limit", "50000")),
        },
        Case {
            name: "loan: 700 middle tier",
            scenario: "cash_loan",
            score: 700,
            user: "u",
            set: &[],
            velocity: 1,
            want: Decision::Approve,
            want_hits: &["CL-004"],
            want_param: Some(("credit_limit", "20000")),
        },
        Case {
            name: "loan: 620 entry tier",
            scenario: "cash_loan",
            score: 620,
            user: "u",
            set: &[],
            velocity: 1,
            want: Decision::Approve,
            want_hits: &["CL-005"],
            want_param: Some(("credit_limit", "5000")),
        },
        Case {
            name: "loan: 590 review",
            scenario: "cash_loan",
            score: 590,
            user: "u",
            set: &[],
            velocity: 1,
            want: Decision::Review,
            want_hits: &["CL-006"],
            want_param: None,
        },
        Case {
            name: "loan: 579 default reject",
            scenario: "cash_loan",
            score: 579,
            user: "u",
            set: &[],
            velocity: 1,
            want: Decision::Reject,
            want_hits: &[],
            want_param: Some(("credit_limit", "0")),
        },
        Case {
            name: "fraud: multi-lending",
            scenario: "cash_loan",
            score: 800,
            user: "u",
            set: &[],
            velocity: 5,
            want: Decision::Review,
            want_hits: &["CL-003", "FR-001"],
            want_param: Some(("credit_limit", "50000")),
        },
        Case {
            name: "fraud: 4 lenders is fine",
            scenario: "cash_loan",
            score: 800,
            user: "u",
            set: &[],
            velocity: 4,
            want: Decision::Approve,
            want_hits: &["CL-003"],
            want_param: None,
        },
        Case {
            name: "fraud: late circle",
            scenario: "rental_deposit_free",
            score: 800,
            user: "u",
            set: &[("close_circle_late60", 4.0)],
            velocity: 1,
            want: Decision::Review,
            want_hits: &["FR-002", "RDF-003"],
            want_param: None,
        },
        Case {
            name: "fraud: 3 late in circle is fine",
            scenario: "rental_deposit_free",
            score: 800,
            user: "u",
            set: &[("close_circle_late60", 3.0)],
            velocity: 1,
            want: Decision::Approve,
            want_hits: &["RDF-003"],
            want_param: None,
        },
        Case {
            name: "fraud: shared device ring",
            scenario: "cash_loan",
            score: 800,
            user: "u",
            set: &[("device_sharers_365d", 4.0)],
            velocity: 1,
            want: Decision::Review,
            want_hits: &["CL-003", "FR-003"],
            want_param: None,
        },
        Case {
            name: "fraud: watchlist",
            scenario: "cash_loan",
            score: 800,
            user: "watched",
            set: &[],
            velocity: 1,
            want: Decision::Review,
            want_hits: &["CL-003", "FR-004"],
            want_param: None,
        },
        Case {
            name: "fraud + reject: worst wins",
            scenario: "cash_loan",
            score: 500,
            user: "watched",
            set: &[],
            velocity: 6,
            want: Decision::Reject,
            want_hits: &["FR-001", "FR-004"],
            want_param: None,
        },
    ];
    let set = with_lists();
    for c in &cases {
        let e = run(&set, c);
        assert_eq!(e.decision, c.want, "{}", c.name);
        let mut hits: Vec<&str> = e.hits.iter().map(|h| h.rule_id.as_str()).collect();
        hits.sort();
        assert_eq!(hits, c.want_hits, "{}", c.name);
        if let Some((k, v)) = c.want_param {
            assert_eq!(e.params.get(k).map(String::as_str), Some(v), "{}", c.name);
        }
        assert!(e.hits.iter().all(|h| !h.reason.is_empty()));
    }
}

#[test]
fn shipped_rules_all_run_natively_and_others_run_interpreted() {
    assert_eq!(
        shipped().interpreted_rules(),
        Vec::<(String, String)>::new()
    );
    let set = RuleSet::from_sources(&[("probe.toml".into(), PROBE.into())], &features(), lists())
        .expect("probe policy loads");
    assert_eq!(
        set.interpreted_rules(),
        [
            ("probe".to_string(), "V-loop".to_string()),
            ("probe".to_string(), "V-interpreted".to_string())
        ]
    );
}

#[test]
fn shipped_rules_load_from_disk_with_their_lists() {
    let set = shipped();
    assert_eq!(
        set.scenarios(),
        ["cash_loan".to_string(), "rental_deposit_free".to_string()]
    );
    assert_eq!(set.version.len(), 16);
}

const SHADOW: &str = r#"
[policy]
name = "cash_loan_stricter"
scenario = "cash_loan"
mode = "first_hit"
shadow = true
default = { outcome = "reject", reason = "shadow default" }

[[rule]]
id = "SH-1"
description = "a stricter cut-off under trial"
when = "score >= 900"
outcome = "approve"
reason = "shadow approve"
"#;

#[test]
fn a_shadow_policy_never_changes_the_answer() {
    let live = with_lists();
    let mut files: Vec<(String, String)> =
        ["rental_deposit_free.toml", "cash_loan.toml", "fraud.toml"]
            .iter()
            .map(|f| {
                (
                    f.to_string(),
                    std::fs::read_to_string(root().join("rules").join(f)).unwrap(),
                )
            })
            .collect();
    files.push(("shadow.toml".into(), SHADOW.into()));
    let with_shadow = RuleSet::from_sources(&files, &features(), lists()).unwrap();
    for score in [400, 600, 650, 700, 800, 950] {
        let c = Case {
            name: "",
            scenario: "cash_loan",
            score,
            user: "u",
            set: &[],
            velocity: 1,
            want: Decision::Approve,
            want_hits: &[],
            want_param: None,
        };
        assert_eq!(run(&live, &c), run(&with_shadow, &c), "score {score}");
    }
    let counts = with_shadow.shadow_counters();
    assert_eq!(counts.len(), 1);
    assert_eq!(
        counts[0].1.iter().sum::<u64>(),
        6,
        "every request counted in shadow"
    );
    assert_eq!(counts[0].1[2], 5, "5 rejects (scores < 900)");
}

fn refused(rule_when: &str) -> String {
    let text = format!(
        "[policy]\nname = \"p\"\nscenario = \"s\"\nmode = \"first_hit\"\ndefault = {{ outcome = \"review\", reason = \"r\" }}\n\n[[rule]]\nid = \"R-BAD\"\ndescription = \"d\"\nwhen = '''{rule_when}'''\noutcome = \"reject\"\nreason = \"r\"\n"
    );
    match RuleSet::from_sources(&[("bad.toml".into(), text)], &features(), Lists::default()) {
        Ok(_) => panic!("'{rule_when}' should be refused"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_rules_are_refused_naming_the_rule() {
    for (when, why) in [
        ("score >= ", "syntax"),
        (
            "no_such_feature > 3",
            "unknown variable or feature 'no_such_feature'",
        ),
        ("score + 1", "not a boolean"),
        ("band > 3", "type error"),
        ("true", "unreachable"),
    ] {
        let e = refused(when);
        assert!(e.contains("R-BAD") && e.contains(why), "{when}: {e}");
    }
    let e = match RuleSet::from_sources(
        &[("x.toml".into(), "[policy]\nname = 1\n".into())],
        &features(),
        Lists::default(),
    ) {
        Ok(_) => panic!("refused"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("x.toml"), "{e}");
}

#[test]
fn the_loader_survives_arbitrary_text() {
    // A cheap property test: mutated copies of a real policy never panic the loader.
    let base = std::fs::read_to_string(root().join("rules/cash_loan.toml")).unwrap();
    let bytes = base.as_bytes();
    let metas = features();
    let mut state: u64 = 0x9E3779B97F4A7C15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let alphabet = b" \n\"'=<>!&|()[]{}.,:+-*/%0123456789abcdefghijklmnopqrstuvwxyz_#\\";
    for _ in 0..400 {
        let mut m = bytes.to_vec();
        for _ in 0..(1 + next() % 6) {
            let pos = (next() as usize) % m.len();
            match next() % 3 {
                0 => m[pos] = alphabet[(next() as usize) % alphabet.len()],
                1 => {
                    m.remove(pos);
                }
                _ => m.insert(pos, alphabet[(next() as usize) % alphabet.len()]),
            }
        }
        let text = String::from_utf8_lossy(&m).into_owned();
        let _ = RuleSet::from_sources(&[("fuzz.toml".into(), text)], &metas, Lists::default());
    }
}

const PROBE: &str = r#"
[policy]
name = "probe"
scenario = "probe"
mode = "collect_all"
default = { outcome = "approve", reason = "nothing hit" }

[[rule]]
id = "V-score"
description = "score"
when = "score == 612 && pd == 0.05 && band == 'good'"
outcome = "review"
reason = "r"

[[rule]]
id = "V-request"
description = "scenario and partner"
when = "scenario == 'probe' && partner == 'p1'"
outcome = "review"
reason = "r"

[[rule]]
id = "V-dims"
description = "sub-scores; a dimension the model lacks is null"
when = "dim_transaction == 612 && dim_behavior == 600 && dim_identity == null"
outcome = "review"
reason = "r"

[[rule]]
id = "V-lists"
description = "lists"
when = "blacklisted && !watchlisted && !whitelisted"
outcome = "review"
reason = "r"

[[rule]]
id = "V-velocity"
description = "velocity"
when = "partners_1h == 1 && partners_24h == 7 && partners_30d == 7"
outcome = "review"
reason = "r"

[[rule]]
id = "V-feature"
description = "a feature read twice, and a missing one"
when = "late1_count_90d > 2 && late1_count_90d < 4 && dpd_max_90d == null"
outcome = "review"
reason = "r"

[[rule]]
id = "V-loop"
description = "a macro's loop variable shadows the request's variable of that name"
when = "[700].exists(score, score > 650)"
outcome = "review"
reason = "r"

[[rule]]
id = "V-interpreted"
description = "`in` keeps the condition in the interpreter, which reads the same variables"
when = "score in [612, 613] && partner == 'p1' && dim_transaction == 612 && blacklisted && late1_count_90d == 3 && dpd_max_90d == null"
outcome = "review"
reason = "r"

[[rule]]
id = "V-never"
description = "does not hit"
when = "score > 900 || late1_count_90d == 0"
outcome = "reject"
reason = "r"
"#;

/// Every kind of variable a condition can read reaches it with the request's value: each rule
/// of the probe policy hits only if its values arrived right.
#[test]
fn every_kind_of_variable_reaches_the_conditions() {
    let set = RuleSet::from_sources(&[("probe.toml".into(), PROBE.into())], &features(), lists())
        .expect("probe policy loads");
    let c = Case {
        name: "probe",
        scenario: "probe",
        score: 612,
        user: "debtor",
        set: &[("late1_count_90d", 3.0), ("dpd_max_90d", NAN)],
        velocity: 7,
        want: Decision::Review,
        want_hits: &[
            "V-score",
            "V-request",
            "V-dims",
            "V-lists",
            "V-velocity",
            "V-feature",
            "V-loop",
            "V-interpreted",
        ],
        want_param: None,
    };
    let e = run(&set, &c);
    let hits: Vec<&str> = e.hits.iter().map(|h| h.rule_id.as_str()).collect();
    assert_eq!(hits, c.want_hits, "{}", c.name);
    assert_eq!(e.decision, c.want);
    // The same rules for a user on no list, with other values: only what changed stops hitting.
    let other = Case {
        user: "someone",
        score: 611,
        velocity: 2,
        ..c
    };
    let e = run(&set, &other);
    let hits: Vec<&str> = e.hits.iter().map(|h| h.rule_id.as_str()).collect();
    assert_eq!(hits, ["V-request", "V-feature", "V-loop"]);
}
