//! Scoring in domain terms: features (store or inline rows) → scorecard → rules → outcome.
//! Batch jobs and the gRPC service both call this; neither has a second implementation.

pub mod bundle;
pub mod engine;
pub mod store;
pub mod types;

pub use engine::{EngineConfig, ScoringEngine};
pub use types::*;
