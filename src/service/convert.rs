//! proto ⇄ domain, with validation. Every refusal names the offending field the way the caller
//! wrote it (`applicant.transactions[3].amount`), and nothing here can panic on any input.

use chrono::NaiveDate;

use super::pb;
use crate::domain::{Band, Dimension};
use crate::scoring::{
    ApplicantData, BehaviorRow, Decision, EngineStatus, IdentityFacts, ModelInfo, RelationRow,
    ScoreInput, ScoreOutcome, ScoringEngine, ScoringError, TransactionRow, MAX_INLINE_ROWS,
};

/// Longest id (request, user, device, ...) accepted, bytes.
pub const MAX_ID_BYTES: usize = 128;
/// Longest free-text field accepted, bytes.
pub const MAX_TEXT_BYTES: usize = 256;
/// Longest consent token accepted, bytes.
pub const MAX_CONSENT_BYTES: usize = 4096;
/// Latest timestamp accepted (2100-01-01T00:00:00Z), ms.
const MAX_TS_MS: i64 = 4_102_444_800_000;

fn bad(field: impl AsRef<str>, message: impl Into<String>) -> ScoringError {
    ScoringError::invalid(field.as_ref(), message)
}

fn check_len(field: &str, s: &str, max: usize) -> Result<(), ScoringError> {
    if s.len() > max {
        return Err(bad(field, format!("longer than {max} bytes")));
    }
    Ok(())
}

fn required(field: &str, s: &str, max: usize) -> Result<(), ScoringError> {
    if s.trim().is_empty() {
        return Err(bad(field, "must not be empty"));
    }
    check_len(field, s, max)
}

fn date(field: &str, s: &str) -> Result<NaiveDate, ScoringError> {
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
        .map_err(|_| bad(field, format!("'{}' is not a date YYYY-MM-DD", truncate(s))))
}

/// Unset or empty = no date.
fn optional_date(field: &str, s: &Option<String>) -> Result<Option<NaiveDate>, ScoringError> {
    match s.as_deref() {
        None => Ok(None),
        Some(v) if v.trim().is_empty() => Ok(None),
        Some(v) => date(field, v).map(Some),
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(32).collect()
}

fn ts(field: &str, v: i64) -> Result<i64, ScoringError> {
    if !(0..=MAX_TS_MS).contains(&v) {
        return Err(bad(
            field,
            "must be ms since the Unix epoch, between 1970 and 2100",
        ));
    }
    Ok(v)
}

fn non_negative(field: &str, v: Option<i32>, max: i32) -> Result<Option<i32>, ScoringError> {
    match v {
        Some(x) if !(0..=max).contains(&x) => {
            Err(bad(field, format!("must be between 0 and {max}")))
        }
        _ => Ok(v),
    }
}

fn list_len<T>(field: &str, v: &[T]) -> Result<(), ScoringError> {
    if v.len() > MAX_INLINE_ROWS {
        return Err(bad(
            field,
            format!("{} rows, more than the {MAX_INLINE_ROWS} allowed", v.len()),
        ));
    }
    Ok(())
}

/// Validates a request and turns it into the engine's input. Needs no engine: the scenario is
/// only checked for presence here (see [`check_scenario`]).
pub fn score_input(req: pb::ScoreRequest, partner_id: &str) -> Result<ScoreInput, ScoringError> {
    check_len("request_id", &req.request_id, MAX_ID_BYTES)?;
    required("user_id", &req.user_id, MAX_ID_BYTES)?;
    required("scenario", &req.scenario, MAX_ID_BYTES)?;
    let model_version = match req.model_version {
        Some(v) if v.trim().is_empty() => None,
        Some(v) => {
            check_len("model_version", &v, MAX_ID_BYTES)?;
            Some(v)
        }
        None => None,
    };
    let applicant = req.applicant.map(applicant).transpose()?;
    Ok(ScoreInput {
        request_id: req.request_id,
        user_id: req.user_id.trim().to_string(),
        scenario: req.scenario.trim().to_string(),
        partner_id: partner_id.to_string(),
        model_version,
        applicant,
    })
}

/// The scenario must be one the engine has rules for.
pub fn check_scenario(engine: &ScoringEngine, scenario: &str) -> Result<(), ScoringError> {
    if engine.has_scenario(scenario) {
        Ok(())
    } else {
        Err(bad(
            "scenario",
            format!("unknown scenario '{}'", truncate(scenario)),
        ))
    }
}

fn applicant(a: pb::ApplicantData) -> Result<ApplicantData, ScoringError> {
    list_len("applicant.transactions", &a.transactions)?;
    list_len("applicant.behaviors", &a.behaviors)?;
    list_len("applicant.relations", &a.relations)?;
    let identity = a.identity.map(identity).transpose()?;
    let mut transactions = Vec::with_capacity(a.transactions.len());
    for (i, t) in a.transactions.into_iter().enumerate() {
        let f = |name: &str| format!("applicant.transactions[{i}].{name}");
        if !t.amount.is_finite() || t.amount < 0.0 {
            return Err(bad(
                f("amount"),
                format!("must be a finite number >= 0, got {}", t.amount),
            ));
        }
        required(&f("kind"), &t.kind, MAX_TEXT_BYTES)?;
        if let Some(m) = &t.merchant_category {
            check_len(&f("merchant_category"), m, MAX_TEXT_BYTES)?;
        }
        transactions.push(TransactionRow {
            ts_ms: ts(&f("ts_ms"), t.ts_ms)?,
            due_date: optional_date(&f("due_date"), &t.due_date)?,
            paid_date: optional_date(&f("paid_date"), &t.paid_date)?,
            kind: t.kind,
            amount: t.amount,
            merchant_category: t.merchant_category.filter(|m| !m.is_empty()),
        });
    }
    let mut behaviors = Vec::with_capacity(a.behaviors.len());
    for (i, b) in a.behaviors.into_iter().enumerate() {
        let f = |name: &str| format!("applicant.behaviors[{i}].{name}");
        required(&f("event"), &b.event, MAX_TEXT_BYTES)?;
        check_len(&f("device_id"), &b.device_id, MAX_TEXT_BYTES)?;
        check_len(&f("ip_city"), &b.ip_city, MAX_TEXT_BYTES)?;
        behaviors.push(BehaviorRow {
            ts_ms: ts(&f("ts_ms"), b.ts_ms)?,
            event: b.event,
            device_id: b.device_id,
            ip_city: b.ip_city,
        });
    }
    let mut relations = Vec::with_capacity(a.relations.len());
    for (i, r) in a.relations.into_iter().enumerate() {
        let f = |name: &str| format!("applicant.relations[{i}].{name}");
        required(&f("other_user_id"), &r.other_user_id, MAX_ID_BYTES)?;
        required(&f("kind"), &r.kind, MAX_TEXT_BYTES)?;
        relations.push(RelationRow {
            since: date(&f("since"), &r.since)?,
            other_user_id: r.other_user_id,
            kind: r.kind,
        });
    }
    Ok(ApplicantData {
        identity,
        transactions,
        behaviors,
        relations,
    })
}

fn identity(p: pb::IdentityFacts) -> Result<IdentityFacts, ScoringError> {
    let f = |name: &str| format!("applicant.identity.{name}");
    if let Some(e) = &p.education {
        check_len(&f("education"), e, MAX_TEXT_BYTES)?;
    }
    Ok(IdentityFacts {
        signup_date: optional_date(&f("signup_date"), &p.signup_date)?,
        age: non_negative(&f("age"), p.age, 150)?,
        city_tier: non_negative(&f("city_tier"), p.city_tier, 100)?,
        real_name_verified: p.real_name_verified,
        education: p.education.filter(|e| !e.is_empty()),
        education_verified: p.education_verified,
        social_security_months: non_negative(
            &f("social_security_months"),
            p.social_security_months,
            2400,
        )?,
        housing_fund_months: non_negative(&f("housing_fund_months"), p.housing_fund_months, 2400)?,
        phone_tenure_months: non_negative(&f("phone_tenure_months"), p.phone_tenure_months, 2400)?,
        income_band: non_negative(&f("income_band"), p.income_band, 1000)?,
    })
}

pub fn band(b: Band) -> pb::Band {
    match b {
        Band::Poor => pb::Band::Poor,
        Band::Fair => pb::Band::Fair,
        Band::Good => pb::Band::Good,
        Band::VeryGood => pb::Band::VeryGood,
        Band::Excellent => pb::Band::Excellent,
    }
}

pub fn decision(d: Decision) -> pb::Decision {
    match d {
        Decision::Approve => pb::Decision::Approve,
        Decision::Review => pb::Decision::Review,
        Decision::Reject => pb::Decision::Reject,
    }
}

pub fn dimension(d: Dimension) -> pb::Dimension {
    match d {
        Dimension::Transaction => pb::Dimension::Transaction,
        Dimension::Behavior => pb::Dimension::Behavior,
        Dimension::Relationship => pb::Dimension::Relationship,
        Dimension::Identity => pb::Dimension::Identity,
        Dimension::Capacity => pb::Dimension::Capacity,
    }
}

/// The engine's answer in wire terms. `request_id` is the caller's, echoed.
pub fn score_response(o: ScoreOutcome) -> pb::ScoreResponse {
    pb::ScoreResponse {
        request_id: o.request_id,
        score: o.score,
        band: band(o.band) as i32,
        probability_of_default: o.probability_of_default,
        dimension_scores: o
            .dimension_scores
            .into_iter()
            .map(|(d, s)| pb::DimensionScore {
                dimension: dimension(d) as i32,
                score: s,
            })
            .collect(),
        reasons: o
            .reasons
            .into_iter()
            .map(|r| pb::Reason {
                code: r.code,
                dimension: dimension(r.dimension) as i32,
                text: r.text,
                value: r.value.to_string(),
                points_lost: r.points_lost,
                feature: r.feature,
            })
            .collect(),
        decision: decision(o.decision) as i32,
        rule_hits: o
            .rule_hits
            .into_iter()
            .map(|h| pb::RuleHit {
                rule_id: h.rule_id,
                policy: h.policy,
                outcome: decision(h.outcome) as i32,
                reason: h.reason,
            })
            .collect(),
        params: o.params.into_iter().collect(),
        model_version: o.model_version,
        // Display is YYYY-MM-DD, without parsing a strftime pattern on every call.
        features_as_of: o.features_as_of.to_string(),
    }
}

pub fn model_info(m: ModelInfo) -> pb::ModelInfo {
    pb::ModelInfo {
        model_version: m.model_version,
        pipeline_hash: m.pipeline_hash,
        features: m
            .features
            .into_iter()
            .map(|f| pb::FeatureInfo {
                name: f.name,
                dimension: dimension(f.dimension) as i32,
                description: f.description,
            })
            .collect(),
        base_score: m.base_score,
        base_odds: m.base_odds,
        pdo: m.pdo,
        bands: m
            .bands
            .into_iter()
            .map(|(b, lo, hi)| pb::BandRange {
                band: band(b) as i32,
                min_score: lo,
                max_score: hi,
            })
            .collect(),
        metrics: m.metrics.into_iter().collect(),
        is_champion: m.is_champion,
    }
}

/// `velocity`: the store's description and whether it answered the last probe;
/// `audit_writable`: whether the audit log took its last write.
pub fn status(
    s: Option<EngineStatus>,
    load_error: String,
    velocity: Option<(String, bool)>,
    audit_writable: bool,
) -> pb::StatusResponse {
    let (velocity_store, velocity_store_up) = velocity.unwrap_or_default();
    match s {
        Some(s) => pb::StatusResponse {
            engine_ready: true,
            velocity_store,
            velocity_store_up,
            audit_writable,
            load_error,
            champion_version: s.champion_version,
            model_versions: s.model_versions,
            rules_version: s.rules_version,
            scenarios: s.scenarios,
            store_users: s.store_users as u64,
            features_as_of: s.features_as_of.format("%Y-%m-%d").to_string(),
        },
        None => pb::StatusResponse {
            engine_ready: false,
            load_error,
            audit_writable,
            ..Default::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> pb::ScoreRequest {
        pb::ScoreRequest {
            request_id: "r1".into(),
            user_id: "u1".into(),
            scenario: "cash_loan".into(),
            consent_token: "c".into(),
            model_version: None,
            applicant: None,
        }
    }

    fn tx(amount: f64) -> pb::Transaction {
        pb::Transaction {
            ts_ms: 1_700_000_000_000,
            kind: "purchase".into(),
            amount,
            merchant_category: None,
            due_date: None,
            paid_date: None,
        }
    }

    fn field_of(e: ScoringError) -> String {
        match e {
            ScoringError::InvalidArgument { field, .. } => field,
            other => panic!("not invalid argument: {other:?}"),
        }
    }

    #[test]
    fn valid_request_converts() {
        let mut r = req();
        r.model_version = Some(String::new());
        let mut t = tx(12.5);
        t.due_date = Some("2025-01-31".into());
        t.paid_date = Some(String::new());
        r.applicant = Some(pb::ApplicantData {
            transactions: vec![t],
            ..Default::default()
        });
        let i = score_input(r, "acme").expect("valid");
        assert_eq!(i.partner_id, "acme");
        assert_eq!(i.model_version, None);
        let a = i.applicant.expect("applicant");
        assert_eq!(
            a.transactions[0].due_date,
            NaiveDate::from_ymd_opt(2025, 1, 31)
        );
        assert_eq!(a.transactions[0].paid_date, None);
    }

    #[test]
    fn refusals_name_the_field() {
        let mut r = req();
        r.user_id = " ".into();
        assert_eq!(field_of(score_input(r, "p").unwrap_err()), "user_id");
        // The consent token is checked (signature, expiry, binding) by the scoring handler:
        // a missing one is PERMISSION_DENIED there, not a malformed request.
        let mut r = req();
        r.consent_token = String::new();
        assert!(score_input(r, "p").is_ok());
        for bad_amount in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -1.0] {
            let mut r = req();
            r.applicant = Some(pb::ApplicantData {
                transactions: vec![tx(1.0), tx(2.0), tx(3.0), tx(bad_amount)],
                ..Default::default()
            });
            assert_eq!(
                field_of(score_input(r, "p").unwrap_err()),
                "applicant.transactions[3].amount"
            );
        }
        let mut r = req();
        let mut t = tx(1.0);
        t.due_date = Some("2025-02-30".into());
        r.applicant = Some(pb::ApplicantData {
            transactions: vec![t],
            ..Default::default()
        });
        assert_eq!(
            field_of(score_input(r, "p").unwrap_err()),
            "applicant.transactions[0].due_date"
        );
        let mut r = req();
        r.applicant = Some(pb::ApplicantData {
            relations: vec![pb::Relation {
                other_user_id: "u2".into(),
                kind: "contact".into(),
                since: "yesterday".into(),
            }],
            ..Default::default()
        });
        assert_eq!(
            field_of(score_input(r, "p").unwrap_err()),
            "applicant.relations[0].since"
        );
        let mut r = req();
        r.applicant = Some(pb::ApplicantData {
            behaviors: vec![
                pb::BehaviorEvent {
                    ts_ms: 0,
                    event: "login".into(),
                    device_id: String::new(),
                    ip_city: String::new(),
                };
                MAX_INLINE_ROWS + 1
            ],
            ..Default::default()
        });
        assert_eq!(
            field_of(score_input(r, "p").unwrap_err()),
            "applicant.behaviors"
        );
        let mut r = req();
        r.applicant = Some(pb::ApplicantData {
            identity: Some(pb::IdentityFacts {
                age: Some(-3),
                ..Default::default()
            }),
            ..Default::default()
        });
        assert_eq!(
            field_of(score_input(r, "p").unwrap_err()),
            "applicant.identity.age"
        );
        let mut r = req();
        r.applicant = Some(pb::ApplicantData {
            transactions: vec![pb::Transaction {
                ts_ms: -5,
                ..tx(1.0)
            }],
            ..Default::default()
        });
        assert_eq!(
            field_of(score_input(r, "p").unwrap_err()),
            "applicant.transactions[0].ts_ms"
        );
    }
}
