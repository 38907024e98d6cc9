//! Sesame: a credit-scoring service. One data path, one home per stage:
//! raw tables → `features` (polars pipeline) → `model` (WoE scorecard) → `rules` → `service` / `batch` / `eval`.

pub mod config;
pub mod domain;
pub mod features;
pub mod io;
pub mod scoring;
pub mod server;
pub mod service;
