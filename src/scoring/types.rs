//! The scoring request and its answer in domain terms (no transport types). The service converts
//! proto ⇄ these; batch jobs build them directly.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::domain::{Band, Dimension};

/// Largest inline list a request may carry (per list), so one call cannot pin the server.
pub const MAX_INLINE_ROWS: usize = 10_000;

#[derive(Debug, Clone, Default)]
pub struct ScoreInput {
    pub request_id: String,
    pub user_id: String,
    pub scenario: String,
    /// The authenticated partner (filled by the service from credentials, never by the caller).
    pub partner_id: String,
    /// Empty = the champion model.
    pub model_version: Option<String>,
    /// Raw rows for a user the store does not hold.
    pub applicant: Option<ApplicantData>,
}

#[derive(Debug, Clone, Default)]
pub struct ApplicantData {
    pub identity: Option<IdentityFacts>,
    pub transactions: Vec<TransactionRow>,
    pub behaviors: Vec<BehaviorRow>,
    pub relations: Vec<RelationRow>,
}

#[derive(Debug, Clone, Default)]
pub struct IdentityFacts {
    pub signup_date: Option<NaiveDate>,
    pub age: Option<i32>,
    pub city_tier: Option<i32>,
    pub real_name_verified: Option<bool>,
    pub education: Option<String>,
    pub education_verified: Option<bool>,
    pub social_security_months: Option<i32>,
    pub housing_fund_months: Option<i32>,
    pub phone_tenure_months: Option<i32>,
    pub income_band: Option<i32>,
}

#[derive(Debug, Clone)]
pub struct TransactionRow {
    /// Milliseconds since the Unix epoch (UTC).
    pub ts_ms: i64,
    pub kind: String,
    pub amount: f64,
    pub merchant_category: Option<String>,
    pub due_date: Option<NaiveDate>,
    pub paid_date: Option<NaiveDate>,
}

#[derive(Debug, Clone)]
pub struct BehaviorRow {
    pub ts_ms: i64,
    pub event: String,
    pub device_id: String,
    pub ip_city: String,
}

#[derive(Debug, Clone)]
pub struct RelationRow {
    pub other_user_id: String,
    pub kind: String,
    pub since: NaiveDate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Approve,
    Review,
    Reject,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Approve => "approve",
            Decision::Review => "review",
            Decision::Reject => "reject",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleHit {
    pub rule_id: String,
    pub policy: String,
    pub outcome: Decision,
    pub reason: String,
}

/// A ranked adverse factor (FICO-style): the scorecard's own type, re-exported for callers.
pub use crate::model::Reason as ReasonCode;

#[derive(Debug, Clone, PartialEq)]
pub struct ScoreOutcome {
    pub request_id: String,
    pub user_id: String,
    pub score: i32,
    pub band: Band,
    pub probability_of_default: f64,
    pub dimension_scores: Vec<(Dimension, i32)>,
    pub reasons: Vec<ReasonCode>,
    pub decision: Decision,
    pub rule_hits: Vec<RuleHit>,
    /// Outcome parameters of the deciding rule (e.g. `credit_limit`, `deposit_waived`).
    pub params: BTreeMap<String, String>,
    pub model_version: String,
    /// The date the features were computed as of.
    pub features_as_of: NaiveDate,
}

/// Why a score could not be given. The service maps each kind to one gRPC code in one place.
#[derive(Debug, thiserror::Error)]
pub enum ScoringError {
    #[error("{field}: {message}")]
    InvalidArgument { field: String, message: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl ScoringError {
    pub fn invalid(field: &str, message: impl Into<String>) -> ScoringError {
        ScoringError::InvalidArgument {
            field: field.to_string(),
            message: message.into(),
        }
    }
}

/// What `GetModelInfo` reports.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    pub model_version: String,
    pub pipeline_hash: String,
    pub features: Vec<crate::domain::FeatureMeta>,
    pub base_score: f64,
    pub base_odds: f64,
    pub pdo: f64,
    pub bands: Vec<(Band, i32, i32)>,
    pub metrics: BTreeMap<String, f64>,
    pub is_champion: bool,
}

/// What the admin `Status` call reports.
#[derive(Debug, Clone, Serialize)]
pub struct EngineStatus {
    pub champion_version: String,
    pub model_versions: Vec<String>,
    pub rules_version: String,
    pub scenarios: Vec<String>,
    pub store_users: usize,
    pub features_as_of: NaiveDate,
}
