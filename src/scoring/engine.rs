//! The scoring engine: model bundles, the online feature store and the rule set, each swapped
//! atomically on reload (in-flight calls finish on the version they started with).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use chrono::NaiveDate;

use crate::domain::{Band, FeatureValue};
use crate::model::ReasonText;
use crate::rules::velocity::{Velocity, VelocityError};
use crate::rules::{RuleInput, RuleSet, VelocityCounts};

use super::bundle::ModelBundle;
use super::store::FeatureStore;
use super::types::*;

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// A model directory, or a directory of model directories (one per version).
    pub model_dir: PathBuf,
    /// Sub-directory name of the champion when `model_dir` holds several (default `default`).
    pub champion: String,
    /// Raw tables of the population the store materialises (e.g. `datasets/demo`).
    pub data_dir: PathBuf,
    /// Rule files (one policy per scenario) and `lists/`.
    pub rules_dir: PathBuf,
    /// Features are computed as of this date.
    pub as_of: NaiveDate,
    /// Shared velocity counters in Redis; `None` keeps them in this process.
    pub velocity_redis: Option<crate::rules::velocity::RedisVelocityConfig>,
}

impl EngineConfig {
    /// The shipped demo: `models/default` over `datasets/demo` with `rules/`, under `root`.
    pub fn demo(root: &Path) -> EngineConfig {
        EngineConfig {
            model_dir: root.join("models"),
            champion: "default".into(),
            data_dir: root.join("datasets/demo"),
            rules_dir: root.join("rules"),
            as_of: crate::datasets::demo_as_of(),
            velocity_redis: None,
        }
    }
}

/// What is swapped together on a model reload.
struct Models {
    /// Champion first.
    bundles: Vec<Arc<ModelBundle>>,
    /// One store per distinct pipeline.
    stores: HashMap<String, Arc<FeatureStore>>,
}

impl Models {
    fn champion(&self) -> &Arc<ModelBundle> {
        &self.bundles[0]
    }
    fn find(&self, version: Option<&str>) -> Result<&Arc<ModelBundle>, ScoringError> {
        match version.filter(|v| !v.is_empty()) {
            None => Ok(self.champion()),
            Some(v) => self
                .bundles
                .iter()
                .find(|b| b.version() == v)
                .ok_or_else(|| {
                    let known: Vec<&str> = self.bundles.iter().map(|b| b.version()).collect();
                    ScoringError::invalid(
                        "model_version",
                        format!("unknown model version '{v}' (loaded: {})", known.join(", ")),
                    )
                }),
        }
    }
    fn store(&self, bundle: &ModelBundle) -> Result<&Arc<FeatureStore>, ScoringError> {
        self.stores.get(bundle.pipeline.hash()).ok_or_else(|| {
            ScoringError::Internal(format!("no feature store for model {}", bundle.version()))
        })
    }
}

pub struct ScoringEngine {
    config: EngineConfig,
    models: ArcSwap<Models>,
    rules: ArcSwap<RuleSet>,
    velocity: Velocity,
    /// Reloads are serialised; scoring never waits on it.
    reload_lock: Mutex<()>,
}

impl ScoringEngine {
    /// Loads models, rules and materialises the store. Blocking and CPU heavy: call it from
    /// `spawn_blocking`.
    pub fn load(config: EngineConfig) -> Result<ScoringEngine, ScoringError> {
        let velocity = Velocity::new(config.velocity_redis.clone())
            .map_err(|e| ScoringError::Internal(e.to_string()))?;
        let models = load_models(&config, None)?;
        let rules = load_rules(&config, &models)?;
        Ok(ScoringEngine {
            config,
            models: ArcSwap::from_pointee(models),
            rules: ArcSwap::from_pointee(rules),
            velocity,
            reload_lock: Mutex::new(()),
        })
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Where the multi-lending counters live: `in_process` or `redis`.
    pub fn velocity_store_kind(&self) -> &'static str {
        self.velocity.kind()
    }

    /// Score calls refused since start because the velocity store did not answer.
    pub fn velocity_store_errors(&self) -> u64 {
        self.velocity.errors_total()
    }

    /// The velocity store, for the service's health probe.
    pub fn velocity(&self) -> &Velocity {
        &self.velocity
    }

    /// Scores one partner request: features from the store (or inline rows), scorecard, rules.
    /// Safe from many threads. Blocks while a shared velocity store answers; async callers use
    /// [`ScoringEngine::score_async`].
    pub fn score(&self, input: &ScoreInput) -> Result<ScoreOutcome, ScoringError> {
        let rules = self.rules.load();
        let models = self.models.load();
        let r = resolve(&rules, &models, input)?;
        let velocity = self
            .velocity
            .record(&input.user_id, &input.partner_id, now_ms())
            .map_err(velocity_unavailable)?;
        Ok(r.decide(&rules, input, velocity))
    }

    /// [`ScoringEngine::score`] for async callers: the same steps, and a shared velocity store
    /// is awaited instead of blocking the thread (with the in-process store it never waits).
    pub async fn score_async(&self, input: &ScoreInput) -> Result<ScoreOutcome, ScoringError> {
        let rules = self.rules.load_full();
        let models = self.models.load_full();
        let r = resolve(&rules, &models, input)?;
        let velocity = self
            .velocity
            .record_async(&input.user_id, &input.partner_id, now_ms())
            .await
            .map_err(velocity_unavailable)?;
        Ok(r.decide(&rules, input, velocity))
    }

    /// Scores users in bulk from precomputed pipeline rows (batch jobs): same scorecard and
    /// rules as `score`, no velocity recorded (a batch is not a partner query).
    pub fn score_rows<'a>(
        &self,
        scenario: Option<&str>,
        rows: impl Iterator<Item = (&'a str, &'a [FeatureValue])>,
    ) -> Result<Vec<ScoreOutcome>, ScoringError> {
        let rules = self.rules.load();
        if let Some(s) = scenario {
            if !rules.has_scenario(s) {
                return Err(unknown_scenario(s, rules.scenarios()));
            }
        }
        let models = self.models.load();
        let bundle = models.champion();
        let as_of = models.store(bundle)?.as_of;
        Ok(decide_rows(
            bundle,
            Some(&rules),
            scenario,
            as_of,
            rows,
            ReasonText::Write,
        ))
    }

    pub fn model_info(&self, version: Option<&str>) -> Result<ModelInfo, ScoringError> {
        let models = self.models.load();
        let b = models.find(version)?;
        let sc = &b.scorecard;
        let mut metrics = BTreeMap::new();
        for (split, s) in [("train", &sc.metrics.train), ("test", &sc.metrics.test)] {
            if let Some(s) = s {
                metrics.insert(format!("{split}_auc"), s.auc);
                metrics.insert(format!("{split}_ks"), s.ks);
                metrics.insert(format!("{split}_gini"), s.gini);
            }
        }
        Ok(ModelInfo {
            model_version: b.version().to_string(),
            pipeline_hash: b.pipeline.hash().to_string(),
            features: sc.features(),
            base_score: sc.scaling.base_score,
            base_odds: sc.scaling.base_odds,
            pdo: sc.scaling.pdo,
            bands: Band::ALL
                .iter()
                .map(|b| (*b, b.range().0, b.range().1))
                .collect(),
            metrics,
            is_champion: Arc::ptr_eq(b, models.champion()),
        })
    }

    /// Validates every model on disk (and builds stores for new pipelines), then swaps them in;
    /// on any error the old ones keep serving. Returns the champion's version.
    pub fn reload_models(&self) -> Result<String, ScoringError> {
        let _guard = self.reload_lock.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.models.load_full();
        let models = load_models(&self.config, Some(&current))?;
        // The rules must still validate against the new champion's features.
        let rules = load_rules(&self.config, &models)?;
        let version = models.champion().version().to_string();
        self.models.store(Arc::new(models));
        self.rules.store(Arc::new(rules));
        tracing::info!(version = %version, "models reloaded");
        Ok(version)
    }

    /// Validates the rule files, then swaps them in; on error the old rules keep serving.
    pub fn reload_rules(&self) -> Result<String, ScoringError> {
        let _guard = self.reload_lock.lock().unwrap_or_else(|p| p.into_inner());
        let models = self.models.load();
        let rules = load_rules(&self.config, &models)?;
        let version = rules.version.clone();
        self.rules.store(Arc::new(rules));
        tracing::info!(version = %version, "rules reloaded");
        Ok(version)
    }

    /// Recomputes the feature store from the data directory and swaps it in.
    pub fn refresh_store(&self) -> Result<usize, ScoringError> {
        let _guard = self.reload_lock.lock().unwrap_or_else(|p| p.into_inner());
        let current = self.models.load_full();
        let mut stores = HashMap::new();
        for b in &current.bundles {
            if !stores.contains_key(b.pipeline.hash()) {
                let s = FeatureStore::build(&b.pipeline, &self.config.data_dir, self.config.as_of)
                    .map_err(|e| ScoringError::Unavailable(format!("feature store: {e}")))?;
                stores.insert(b.pipeline.hash().to_string(), Arc::new(s));
            }
        }
        let users = stores.values().map(|s| s.len()).max().unwrap_or(0);
        self.models.store(Arc::new(Models {
            bundles: current.bundles.clone(),
            stores,
        }));
        Ok(users)
    }

    /// The training score distribution of each loaded model version (for the live PSI metric).
    pub fn training_score_distributions(
        &self,
    ) -> Vec<(String, crate::model::scorecard::ScoreDistribution)> {
        self.models
            .load()
            .bundles
            .iter()
            .map(|b| {
                (
                    b.version().to_string(),
                    b.scorecard.metrics.train_score_distribution.clone(),
                )
            })
            .collect()
    }

    /// The rule set in force (for metrics: per-rule hit counters).
    pub fn rules(&self) -> Arc<RuleSet> {
        self.rules.load_full()
    }

    pub fn status(&self) -> EngineStatus {
        let models = self.models.load();
        let rules = self.rules.load();
        let champion = models.champion();
        EngineStatus {
            champion_version: champion.version().to_string(),
            model_versions: models
                .bundles
                .iter()
                .map(|b| b.version().to_string())
                .collect(),
            rules_version: rules.version.clone(),
            scenarios: rules.scenarios().to_vec(),
            store_users: models
                .stores
                .get(champion.pipeline.hash())
                .map(|s| s.len())
                .unwrap_or(0),
            features_as_of: self.config.as_of,
        }
    }

    pub fn has_scenario(&self, scenario: &str) -> bool {
        self.rules.load().has_scenario(scenario)
    }

    /// The champion model in force.
    pub fn champion(&self) -> Arc<ModelBundle> {
        self.models.load().champion().clone()
    }

    /// Up to `n` user ids of the champion's store (for benchmarks and examples).
    pub fn stored_user_ids(&self, n: usize) -> Vec<String> {
        let models = self.models.load();
        models
            .store(models.champion())
            .map(|s| s.user_ids(n))
            .unwrap_or_default()
    }

    /// The champion's feature row for a stored user (pipeline order), e.g. for parity checks.
    pub fn stored_features(&self, user_id: &str) -> Option<Vec<FeatureValue>> {
        let models = self.models.load();
        let store = models.store(models.champion()).ok()?;
        store.get(user_id).map(|r| r.to_vec())
    }
}

/// Scorecard + rules for many users from precomputed pipeline rows, with no engine around them:
/// what [`ScoringEngine::score_rows`] runs, and what `sesame batch` runs over a population too
/// large for the in-memory store. `scenario` must be known to `rules` (the caller checks, see
/// [`check_scenario`]); without a scenario (or without rules) no rule is evaluated and the
/// decision is `review` with no hits, as the service answers a request without a scenario.
/// With [`ReasonText::Skip`] the reasons carry their codes and values but no sentence.
pub fn decide_rows<'a, Row: std::borrow::Borrow<[FeatureValue]>>(
    bundle: &ModelBundle,
    rules: Option<&RuleSet>,
    scenario: Option<&str>,
    as_of: NaiveDate,
    rows: impl Iterator<Item = (&'a str, Row)>,
    text: ReasonText,
) -> Vec<ScoreOutcome> {
    rows.map(|(user, row)| {
        let input = ScoreInput {
            user_id: user.to_string(),
            scenario: scenario.unwrap_or_default().to_string(),
            partner_id: "batch".into(),
            ..Default::default()
        };
        decide(
            bundle,
            rules,
            row.borrow(),
            &input,
            VelocityCounts::default(),
            as_of,
            text,
        )
    })
    .collect()
}

/// The service's "unknown scenario" error, for callers that hold a rule set without an engine.
pub fn check_scenario(rules: &RuleSet, scenario: &str) -> Result<(), ScoringError> {
    if rules.has_scenario(scenario) {
        Ok(())
    } else {
        Err(unknown_scenario(scenario, rules.scenarios()))
    }
}

/// What a Score call has checked and found before its query is counted.
struct Resolved<'a> {
    bundle: &'a ModelBundle,
    row: std::borrow::Cow<'a, [FeatureValue]>,
    as_of: NaiveDate,
}

/// The request's own checks, the model it asks for and the user's features (stored, or computed
/// from the inline applicant data): everything of a Score call before velocity and decision.
fn resolve<'a>(
    rules: &RuleSet,
    models: &'a Models,
    input: &ScoreInput,
) -> Result<Resolved<'a>, ScoringError> {
    if input.user_id.trim().is_empty() {
        return Err(ScoringError::invalid("user_id", "must not be empty"));
    }
    if !rules.has_scenario(&input.scenario) {
        return Err(unknown_scenario(&input.scenario, rules.scenarios()));
    }
    let bundle = models.find(input.model_version.as_deref())?;
    let store = models.store(bundle)?;
    let row = match (&input.applicant, store.get(&input.user_id)) {
        (None, Some(row)) => std::borrow::Cow::Borrowed(row),
        (Some(data), _) => {
            std::borrow::Cow::Owned(store.compute_inline(&bundle.pipeline, &input.user_id, data)?)
        }
        (None, None) => {
            return Err(ScoringError::NotFound(format!(
            "user_id: no features for this user as of {} and the request carries no applicant data",
            store.as_of
        )))
        }
    };
    Ok(Resolved {
        bundle,
        row,
        as_of: store.as_of,
    })
}

impl Resolved<'_> {
    fn decide(
        &self,
        rules: &RuleSet,
        input: &ScoreInput,
        velocity: VelocityCounts,
    ) -> ScoreOutcome {
        decide(
            self.bundle,
            Some(rules),
            &self.row,
            input,
            velocity,
            self.as_of,
            ReasonText::Write,
        )
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Without the counts the multi-lending rules cannot run, and approving blind is the risk a
/// lender would not take: the call fails (UNAVAILABLE) and the partner retries. The store logs
/// the cause; the partner is not told internal addresses.
fn velocity_unavailable(_: VelocityError) -> ScoringError {
    ScoringError::Unavailable(
        "the multi-lending (velocity) counters cannot be read right now; retry".into(),
    )
}

fn unknown_scenario(s: &str, known: &[String]) -> ScoringError {
    ScoringError::invalid(
        "scenario",
        format!("unknown scenario '{s}' (known: {})", known.join(", ")),
    )
}

/// Scorecard + rules for one user: the one place a decision is made, online or in batch.
fn decide(
    bundle: &ModelBundle,
    rules: Option<&RuleSet>,
    row: &[FeatureValue],
    input: &ScoreInput,
    velocity: VelocityCounts,
    as_of: NaiveDate,
    text: ReasonText,
) -> ScoreOutcome {
    let result = bundle.score(row, text);
    let eval = rules.filter(|_| !input.scenario.is_empty()).map(|rules| {
        rules.evaluate(&RuleInput {
            scenario: &input.scenario,
            partner: &input.partner_id,
            user_id: &input.user_id,
            score: result.score,
            band: result.band,
            pd: result.pd,
            dimension_scores: &result.dimension_scores,
            feature_values: row,
            velocity,
        })
    });
    let (decision, rule_hits, params) = match eval {
        Some(e) => (e.decision, e.hits, e.params),
        None => (Decision::Review, vec![], BTreeMap::new()),
    };
    ScoreOutcome {
        request_id: input.request_id.clone(),
        user_id: input.user_id.clone(),
        score: result.score,
        band: result.band,
        probability_of_default: result.pd,
        dimension_scores: result.dimension_scores,
        reasons: result.reasons,
        decision,
        rule_hits,
        params,
        model_version: bundle.version().to_string(),
        features_as_of: as_of,
    }
}

fn model_dirs(config: &EngineConfig) -> Result<Vec<PathBuf>, ScoringError> {
    let root = &config.model_dir;
    if root.join(crate::model::scorecard::SCORECARD_FILE).is_file() {
        return Ok(vec![root.clone()]);
    }
    let entries = std::fs::read_dir(root).map_err(|e| {
        ScoringError::Unavailable(format!(
            "cannot read model directory {}: {e}",
            root.display()
        ))
    })?;
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join(crate::model::scorecard::SCORECARD_FILE).is_file())
        .collect();
    dirs.sort();
    let champion = root.join(&config.champion);
    let Some(pos) = dirs.iter().position(|d| *d == champion) else {
        return Err(ScoringError::Unavailable(format!(
            "champion model '{}' not found under {}",
            config.champion,
            root.display()
        )));
    };
    let c = dirs.remove(pos);
    dirs.insert(0, c);
    Ok(dirs)
}

/// Loads every model (champion first) and a store per pipeline, reusing `current`'s stores
/// for unchanged pipelines. All or nothing.
fn load_models(
    config: &EngineConfig,
    current: Option<&Arc<Models>>,
) -> Result<Models, ScoringError> {
    let mut bundles = Vec::new();
    for dir in model_dirs(config)? {
        let b = ModelBundle::load(&dir).map_err(ScoringError::Unavailable)?;
        if bundles
            .iter()
            .any(|x: &Arc<ModelBundle>| x.version() == b.version())
        {
            return Err(ScoringError::Unavailable(format!(
                "two model directories carry version '{}'",
                b.version()
            )));
        }
        bundles.push(Arc::new(b));
    }
    let mut stores: HashMap<String, Arc<FeatureStore>> = HashMap::new();
    for b in &bundles {
        let hash = b.pipeline.hash().to_string();
        if stores.contains_key(&hash) {
            continue;
        }
        if let Some(s) = current.and_then(|c| c.stores.get(&hash)) {
            stores.insert(hash, s.clone());
            continue;
        }
        let store =
            FeatureStore::build(&b.pipeline, &config.data_dir, config.as_of).map_err(|e| {
                ScoringError::Unavailable(format!("feature store for model {}: {e}", b.version()))
            })?;
        stores.insert(hash, Arc::new(store));
    }
    Ok(Models { bundles, stores })
}

fn load_rules(config: &EngineConfig, models: &Models) -> Result<RuleSet, ScoringError> {
    RuleSet::load(
        &config.rules_dir,
        &models.champion().pipeline.spec.feature_metas(),
    )
    .map_err(|e| ScoringError::Unavailable(format!("rules refused: {e}")))
}
