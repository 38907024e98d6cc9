//! Evaluation: discrimination and calibration metrics, score stability, the `evaluate` report.
pub mod cli;
pub mod metrics;
pub mod report;
