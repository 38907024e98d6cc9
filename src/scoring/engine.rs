//! The scoring engine: loaded model bundles, the online feature store and the rule set, each
//! swappable at run time. INTERIM SKELETON: the lead replaces the bodies with the real engine.

use std::path::PathBuf;

use chrono::NaiveDate;

use super::types::*;

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Directory holding one sub-directory per model version (e.g. `models/`), or a single model dir.
    pub model_dir: PathBuf,
    /// Raw tables of the population the store materialises (e.g. `datasets/demo`).
    pub data_dir: PathBuf,
    /// Rule files (one policy per scenario).
    pub rules_dir: PathBuf,
    /// Features are computed as of this date.
    pub as_of: NaiveDate,
}

pub struct ScoringEngine {
    config: EngineConfig,
}

impl ScoringEngine {
    /// Loads models, rules and materialises the store. Blocking and CPU heavy: call it from
    /// `spawn_blocking`.
    pub fn load(config: EngineConfig) -> Result<ScoringEngine, ScoringError> {
        Err(ScoringError::Unavailable(format!(
            "engine not built yet ({})",
            config.model_dir.display()
        )))
    }
    /// Scores one request. CPU only (no I/O); safe to call from many threads.
    pub fn score(&self, _input: &ScoreInput) -> Result<ScoreOutcome, ScoringError> {
        Err(ScoringError::Unavailable("engine not built yet".into()))
    }
    pub fn model_info(&self, _version: Option<&str>) -> Result<ModelInfo, ScoringError> {
        Err(ScoringError::Unavailable("engine not built yet".into()))
    }
    /// Validates every model on disk, then swaps them in; on error the old ones keep serving.
    pub fn reload_models(&self) -> Result<String, ScoringError> {
        Err(ScoringError::Unavailable("engine not built yet".into()))
    }
    /// Validates the rule files, then swaps them in; on error the old rules keep serving.
    pub fn reload_rules(&self) -> Result<String, ScoringError> {
        Err(ScoringError::Unavailable("engine not built yet".into()))
    }
    pub fn status(&self) -> EngineStatus {
        EngineStatus {
            champion_version: String::new(),
            model_versions: vec![],
            rules_version: String::new(),
            scenarios: vec![],
            store_users: 0,
            features_as_of: self.config.as_of,
        }
    }
    pub fn has_scenario(&self, _scenario: &str) -> bool {
        false
    }
}
