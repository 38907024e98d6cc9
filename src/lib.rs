//! Sesame: a credit-scoring service. One data path, one home per stage:
//! raw tables (`datasets`) → `features` (polars pipeline) → `model` (WoE scorecard) → `rules` →
//! `scoring` (the engine the `service` and `batch` share) → `eval`.

pub mod audit;
pub mod batch;
pub mod config;
pub mod datasets;
pub mod domain;
pub mod eval;
pub mod features;
pub mod io;
pub mod model;
pub mod rules;
pub mod scoring;
pub mod security;
pub mod server;
pub mod service;
