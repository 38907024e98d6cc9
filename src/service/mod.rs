//! The gRPC service layer: the only module that knows about tonic.
//!
//! - [`convert`]: proto ⇄ domain, with validation;
//! - [`error`]: the one mapping of errors to gRPC codes;
//! - [`auth`]: API keys (partners and admin) and per-partner rate limits;
//! - [`audit`]: the query audit record of each Score call (written before the answer);
//! - [`scoring`] / [`admin`]: the two services;
//! - [`metrics`]: Prometheus text over plain HTTP;
//! - [`bench`]: the load-test client behind `sesame bench`.

pub mod admin;
pub mod audit;
pub mod auth;
pub mod bench;
pub mod convert;
pub mod error;
pub mod metrics;
pub mod scoring;

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use tokio::sync::Semaphore;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::audit::AuditLog;
use crate::config::Config;
use crate::scoring::{EngineConfig, ScoringEngine, ScoringError};
use crate::security::consent::ConsentKey;
use auth::Authenticator;
use metrics::Metrics;

/// Generated code of `proto/sesame/v1/sesame.proto` (messages, clients, servers).
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("sesame.v1");

    /// Encoded file descriptor set of the API, served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("sesame_v1_descriptor");
}

/// The health-check name of the scoring service.
pub const SCORING_SERVICE_NAME: &str = pb::credit_scoring_server::SERVICE_NAME;

/// A short, stable, non-reversible reference to a user for logs (never log the raw id).
pub fn user_ref(user_id: &str) -> String {
    // The first 16 hex digits of the audit log's reference, which `sesame audit` prints: a log
    // line and the audit record of the same call name the user the same way.
    let mut r = crate::audit::user_ref(user_id);
    r.truncate(16);
    r
}

/// Runs engine work on the blocking pool; a panic inside becomes INTERNAL, never a crash.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ScoringError> + Send + 'static,
) -> Result<T, ScoringError> {
    match tokio::task::spawn_blocking(move || std::panic::catch_unwind(AssertUnwindSafe(f))).await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => Err(ScoringError::Internal("the scoring engine panicked".into())),
        Err(e) => Err(ScoringError::Internal(format!("blocking task failed: {e}"))),
    }
}

/// Everything the handlers share.
pub struct State {
    /// `None` while loading (or when loading failed): Score answers UNAVAILABLE.
    pub engine: ArcSwapOption<ScoringEngine>,
    load_error: Mutex<String>,
    /// Serialises loads and reloads.
    reload_lock: tokio::sync::Mutex<()>,
    engine_config: EngineConfig,
    pub auth: Authenticator,
    /// Checks the consent token of every Score request.
    pub consent: ConsentKey,
    /// Every Score call and ScoreStream item is recorded here before it is answered.
    pub audit: AuditLog,
    pub metrics: Arc<Metrics>,
    pub score_permits: Arc<Semaphore>,
    pub inline_scoring: bool,
    pub stream_buffer: usize,
    pub stream_concurrency: usize,
    health: HealthReporter,
    /// Whether the velocity store answered the last probe (always, in process): without it
    /// every Score call is refused, so health must say so.
    velocity_up: AtomicBool,
    /// Serialises health updates, so that the status published is the state's latest.
    health_lock: tokio::sync::Mutex<()>,
}

impl State {
    /// `audit`: the opened log (see `server::run`), or [`AuditLog::disabled`].
    pub fn new(config: &Config, health: HealthReporter, audit: AuditLog) -> State {
        let metrics = Arc::new(Metrics::default());
        if audit.enabled() {
            metrics.watch_audit(audit.progress());
        }
        State {
            engine: ArcSwapOption::empty(),
            load_error: Mutex::new("the scoring engine is loading".into()),
            reload_lock: tokio::sync::Mutex::new(()),
            engine_config: config.engine_config(),
            auth: Authenticator::from_config(config),
            consent: ConsentKey::new(
                config
                    .effective_consent_secret()
                    .unwrap_or_default()
                    .as_bytes(),
            ),
            audit,
            metrics,
            score_permits: Arc::new(Semaphore::new(config.limits.max_concurrent_scores)),
            inline_scoring: config.inline_scoring,
            stream_buffer: config.limits.stream_buffer,
            stream_concurrency: config.limits.stream_concurrency,
            health,
            velocity_up: AtomicBool::new(true),
            health_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Whether the velocity store answered the last probe.
    pub fn velocity_up(&self) -> bool {
        self.velocity_up.load(Ordering::Relaxed)
    }

    /// SERVING only when a Score call can be answered: the engine is loaded, its velocity
    /// store answers, and the audit log takes writes.
    async fn publish_health(&self) {
        let _guard = self.health_lock.lock().await;
        let serving = self.engine.load().is_some() && self.velocity_up() && self.audit.writable();
        let status = if serving {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        self.health
            .set_service_status(SCORING_SERVICE_NAME, status)
            .await;
    }

    /// Asks the audit writer whether the disk takes writes again (after a failed commit), and
    /// publishes the change to health, metrics and the log. Returns whether it does.
    pub async fn probe_audit(&self) -> bool {
        let was = self.audit.writable();
        let result = self.audit.probe().await;
        let ok = result.is_ok() && self.audit.writable();
        self.metrics.set_audit_writable(ok);
        match (&result, was, ok) {
            (Err(e), _, _) => {
                tracing::warn!(error = %e, "audit log takes no writes; health NOT_SERVING until it does")
            }
            (Ok(()), false, true) => tracing::info!("audit log takes writes again; health SERVING"),
            _ => {}
        }
        self.publish_health().await;
        ok
    }

    /// Asks the engine's velocity store whether it answers, and publishes the change, if any,
    /// to health, metrics and the log. Returns whether it answers.
    pub async fn probe_velocity(&self, engine: &ScoringEngine) -> bool {
        let result = engine.velocity().check_async().await;
        let up = result.is_ok();
        let was_up = self.velocity_up.swap(up, Ordering::Relaxed);
        self.metrics.set_velocity_up(up);
        match (&result, was_up) {
            (Err(e), true) => tracing::warn!(error = %e,
                "velocity store unreachable; health NOT_SERVING until it answers"),
            (Ok(()), false) => tracing::info!(store = %engine.velocity().describe(),
                "velocity store answers again; health SERVING"),
            _ => {}
        }
        if up != was_up {
            self.publish_health().await;
        }
        up
    }

    pub fn load_error(&self) -> String {
        self.load_error
            .lock()
            .map(|e| e.clone())
            .unwrap_or_default()
    }

    fn set_load_error(&self, e: String) {
        if let Ok(mut g) = self.load_error.lock() {
            *g = e;
        }
    }

    /// The engine, or UNAVAILABLE while it is not loaded.
    pub fn engine(&self) -> Result<Arc<ScoringEngine>, ScoringError> {
        self.engine.load_full().ok_or_else(|| {
            ScoringError::Unavailable(format!(
                "the scoring engine is not loaded ({}); retry shortly",
                self.load_error()
            ))
        })
    }

    /// Loads the engine from scratch (at start, or later if the first load failed) and marks the
    /// scoring service SERVING. On error the server keeps running NOT_SERVING.
    pub async fn load_engine(&self) -> Result<String, ScoringError> {
        let _guard = self.reload_lock.lock().await;
        let cfg = self.engine_config.clone();
        match blocking(move || ScoringEngine::load(cfg)).await {
            Ok(engine) => {
                let version = engine.status().champion_version;
                let engine = Arc::new(engine);
                self.metrics.watch_rules(engine.clone());
                self.probe_velocity(&engine).await;
                let velocity_store = engine.velocity().describe();
                self.engine.store(Some(engine));
                self.set_load_error(String::new());
                self.metrics.set_engine(true, &version);
                self.publish_health().await;
                tracing::info!(model_version = %version, %velocity_store, "scoring engine loaded");
                Ok(version)
            }
            Err(e) => {
                self.set_load_error(format!("engine load failed: {e}"));
                tracing::error!(error = %e, "scoring engine failed to load; not serving");
                Err(e)
            }
        }
    }

    /// Reloads models (validate, then swap; the old ones keep serving on error). Loads the engine
    /// if it is not loaded yet.
    pub async fn reload_models(&self) -> Result<String, ScoringError> {
        let Some(engine) = self.engine.load_full() else {
            return self.load_engine().await;
        };
        let _guard = self.reload_lock.lock().await;
        let result = blocking(move || {
            let v = engine.reload_models()?;
            Ok((v, engine.status().champion_version))
        })
        .await;
        match result {
            Ok((v, champion)) => {
                self.metrics.set_engine(true, &champion);
                tracing::info!(version = %v, "models reloaded");
                Ok(v)
            }
            Err(e) => {
                self.metrics.reload_failed();
                tracing::warn!(error = %e, "model reload refused; previous models keep serving");
                Err(e)
            }
        }
    }

    pub async fn reload_rules(&self) -> Result<String, ScoringError> {
        let engine = self.engine()?;
        let _guard = self.reload_lock.lock().await;
        match blocking(move || engine.reload_rules()).await {
            Ok(v) => {
                tracing::info!(version = %v, "rules reloaded");
                Ok(v)
            }
            Err(e) => {
                self.metrics.reload_failed();
                tracing::warn!(error = %e, "rules reload refused; previous rules keep serving");
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn user_ref_is_stable_and_hides_the_id() {
        let r = super::user_ref("user-12345");
        assert_eq!(r, super::user_ref("user-12345"));
        assert_eq!(r.len(), 16);
        assert!(crate::audit::user_ref("user-12345").starts_with(&r));
        assert!(!r.contains("12345"));
        assert_ne!(r, super::user_ref("user-12346"));
    }
}
