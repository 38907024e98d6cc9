//! Evaluation: discrimination and calibration metrics, score stability.
pub mod metrics;
