//! The model stage: optimal binning → WoE → linfa logistic scorecard on the 350–950 scale,
//! reason codes, dimension sub-scores, a tree-ensemble challenger, the versioned JSON artifact
//! and the training command. Polars-free: tables arrive as `domain::Dataset`.
pub mod binning;
pub mod challenger;
pub mod cli;
pub mod scorecard;
pub mod train;

pub use scorecard::{Reason, ReasonText, ScoreResult, Scorecard};
pub use train::{train_dataset, TrainConfig, TrainedModel};

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("the training data has no target column")]
    NoTarget,
    #[error("the training data has no rows")]
    Empty,
    #[error("the target has only one class (all {0}); need both goods and bads")]
    OneClass(&'static str),
    #[error("column '{column}' has {got} values but the dataset has {expected} rows")]
    Length {
        column: String,
        got: usize,
        expected: usize,
    },
    #[error("no feature passed selection (IV >= {iv_min}); candidates: {detail}")]
    NoFeatures { iv_min: f64, detail: String },
    #[error("feature '{0}' required by the model is not in the dataset")]
    MissingColumn(String),
    #[error("model fitting failed: {0}")]
    Fit(String),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("invalid model artifact {path}: {reason}")]
    InvalidArtifact { path: PathBuf, reason: String },
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}
