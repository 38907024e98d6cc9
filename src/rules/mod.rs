//! The risk-rule engine: per-scenario policies whose conditions are CEL expressions, lists
//! (blacklist / whitelist / watchlist), velocity counters, shadow policies.
//!
//! Why CEL (the `cel` crate) rather than GoRules' zen-engine: CEL is a small, side-effect-free
//! expression language with no loops and no I/O, so a rule file cannot run code; zen-engine
//! would bring a JavaScript runtime we would then have to forbid, and a much larger build.
//!
//! Evaluation: every live policy that applies to the scenario (its own, plus shared `*` policies)
//! yields an outcome — `first_hit`: the first rule that hits, else the default; `collect_all`:
//! the worst outcome among hits, else the default. The decision is the worst over the policies
//! (reject > review > approve); parameters (credit limit, deposit waiver…) come from the
//! scenario policy's deciding rule. Shadow policies are evaluated and counted, never returned.
//! A condition that cannot be evaluated for a request (e.g. a comparison with a missing
//! feature) does not hit; such errors are counted per rule. Conditions made of comparisons and
//! `&&`/`||`/`!` over variables and literals are evaluated natively with CEL's semantics
//! ([`compiled`]); anything else runs in the `cel` interpreter.

pub mod cli;
mod compiled;
pub mod velocity;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use cel::objects::Value;
use cel::{Context, Program};
use compiled::Scalar;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::domain::{Band, Dimension, FeatureMeta, FeatureValue};
use crate::scoring::types::{Decision, RuleHit};

pub use velocity::{InProcessVelocity, VelocityCounts, VelocityStore};

/// Every policy file that fails validation says which file and which rule.
#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("{file}: {message}")]
    File { file: String, message: String },
    #[error("{file}: rule '{rule}': {message}")]
    Rule {
        file: String,
        rule: String,
        message: String,
    },
    #[error("rules: {0}")]
    Other(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    policy: PolicyHeader,
    #[serde(default, rename = "rule")]
    rules: Vec<RuleSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyHeader {
    name: String,
    /// The scenario this policy decides, or `*` for a policy applied to every scenario.
    scenario: String,
    /// `first_hit` or `collect_all`.
    mode: String,
    /// Evaluate and count, never return.
    #[serde(default)]
    shadow: bool,
    default: OutcomeSpec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OutcomeSpec {
    outcome: String,
    reason: String,
    #[serde(default)]
    params: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    id: String,
    description: String,
    when: String,
    outcome: String,
    reason: String,
    #[serde(default)]
    params: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    FirstHit,
    CollectAll,
}

pub struct Rule {
    pub id: String,
    pub description: String,
    pub source: String,
    program: Program,
    /// The same condition evaluated natively, when it is simple enough (see [`compiled`]).
    native: Option<compiled::Condition>,
    /// The context variables the condition reads (their union over the rule set is resolved at load).
    variables: Vec<String>,
    pub outcome: Decision,
    pub reason: String,
    pub params: BTreeMap<String, String>,
    hits: AtomicU64,
    errors: AtomicU64,
}

pub struct Policy {
    pub name: String,
    pub scenario: String,
    pub mode: Mode,
    pub shadow: bool,
    pub default_outcome: Decision,
    pub default_reason: String,
    pub default_params: BTreeMap<String, String>,
    pub rules: Vec<Rule>,
    shadow_decisions: [AtomicU64; 3],
}

/// Named user lists, one id per line (`#` comments allowed).
#[derive(Debug, Default, Clone)]
pub struct Lists {
    pub blacklist: HashSet<String>,
    pub whitelist: HashSet<String>,
    pub watchlist: HashSet<String>,
}

/// Everything a rule may read about one request.
pub struct RuleInput<'a> {
    pub scenario: &'a str,
    pub partner: &'a str,
    pub user_id: &'a str,
    pub score: i32,
    pub band: Band,
    pub pd: f64,
    pub dimension_scores: &'a [(Dimension, i32)],
    /// Pipeline features of the user, in the order of the features the rule set was loaded with.
    pub feature_values: &'a [FeatureValue],
    pub velocity: VelocityCounts,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub decision: Decision,
    pub hits: Vec<RuleHit>,
    pub params: BTreeMap<String, String>,
}

/// A loaded, validated rule set: the unit that is swapped on reload.
pub struct RuleSet {
    /// Content hash of all rule and list files.
    pub version: String,
    pub policies: Vec<Policy>,
    pub lists: Lists,
    scenarios: Vec<String>,
    /// Every variable a rule reads, sorted by name, with where its value comes from: looked up
    /// per request by [`RequestVariables`] instead of copied into a CEL scope.
    variables: Vec<(String, Source)>,
}

/// Where a rule variable's value comes from, decided once at load.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Source {
    Score,
    Pd,
    Band,
    Scenario,
    Partner,
    Dimension(Dimension),
    Blacklisted,
    Whitelisted,
    Watchlisted,
    Partners1h,
    Partners24h,
    Partners30d,
    Feature(usize),
}

impl Source {
    fn of(name: &str, features: &HashMap<String, usize>) -> Option<Source> {
        Some(match name {
            "score" => Source::Score,
            "pd" => Source::Pd,
            "band" => Source::Band,
            "scenario" => Source::Scenario,
            "partner" => Source::Partner,
            "dim_transaction" => Source::Dimension(Dimension::Transaction),
            "dim_behavior" => Source::Dimension(Dimension::Behavior),
            "dim_relationship" => Source::Dimension(Dimension::Relationship),
            "dim_identity" => Source::Dimension(Dimension::Identity),
            "dim_capacity" => Source::Dimension(Dimension::Capacity),
            "blacklisted" => Source::Blacklisted,
            "whitelisted" => Source::Whitelisted,
            "watchlisted" => Source::Watchlisted,
            "partners_1h" => Source::Partners1h,
            "partners_24h" => Source::Partners24h,
            "partners_30d" => Source::Partners30d,
            feature => Source::Feature(*features.get(feature)?),
        })
    }
}

/// The variables of one request, as CEL asks for them: each value is made when a condition
/// reads it, so a `first_hit` policy that stops at its first rule never builds the rest, and
/// no per-request map of names is built (that map was half the cost of the rules).
struct RequestVariables<'a> {
    set: &'a RuleSet,
    input: &'a RuleInput<'a>,
}

impl cel::context::VariableResolver for RequestVariables<'_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<cel::common::value::CowVal<'b, 'b>> {
        // Names that are not rule variables (e.g. a macro's loop variable) stay CEL's own.
        let k = self
            .set
            .variables
            .binary_search_by(|(name, _)| name.as_str().cmp(variable))
            .ok()?;
        let value = self
            .set
            .scalar_of(self.set.variables[k].1, self.input)
            .to_cel();
        Box::<dyn cel::common::value::Val>::try_from(value)
            .ok()
            .map(cel::common::value::CowVal::Owned)
    }
}

const BUILTIN_VARIABLES: &[&str] = &[
    "score",
    "pd",
    "band",
    "scenario",
    "partner",
    "dim_transaction",
    "dim_behavior",
    "dim_relationship",
    "dim_identity",
    "dim_capacity",
    "blacklisted",
    "whitelisted",
    "watchlisted",
    "partners_1h",
    "partners_24h",
    "partners_30d",
];

fn parse_decision(s: &str) -> Option<Decision> {
    match s {
        "approve" => Some(Decision::Approve),
        "review" => Some(Decision::Review),
        "reject" => Some(Decision::Reject),
        _ => None,
    }
}

fn severity(d: Decision) -> u8 {
    match d {
        Decision::Approve => 0,
        Decision::Review => 1,
        Decision::Reject => 2,
    }
}

impl RuleSet {
    /// Loads every `*.toml` policy in `dir` and the lists in `dir/lists/`, validating each rule
    /// against the pipeline's features. Nothing is returned unless everything is valid.
    pub fn load(dir: &Path, features: &[FeatureMeta]) -> Result<RuleSet, RuleError> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| {
                RuleError::Other(format!(
                    "cannot read rules directory {}: {e}",
                    dir.display()
                ))
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        entries.sort();
        let mut hasher = Sha256::new();
        let mut files = Vec::new();
        for path in &entries {
            let text = std::fs::read_to_string(path)
                .map_err(|e| RuleError::Other(format!("cannot read {}: {e}", path.display())))?;
            hasher.update(
                path.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
                    .as_bytes(),
            );
            hasher.update(text.as_bytes());
            files.push((path.display().to_string(), text));
        }
        let lists = Lists::load(&dir.join("lists"), &mut hasher)?;
        let mut set = RuleSet::from_sources(&files, features, lists)?;
        set.version = hex::encode(hasher.finalize())[..16].to_string();
        Ok(set)
    }

    /// Builds a rule set from (file name, TOML text) pairs — the loader and the tests share it.
    pub fn from_sources(
        files: &[(String, String)],
        features: &[FeatureMeta],
        lists: Lists,
    ) -> Result<RuleSet, RuleError> {
        let feature_index: HashMap<String, usize> = features
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name.clone(), i))
            .collect();
        let mut policies = Vec::new();
        for (file, text) in files {
            policies.push(parse_policy(file, text, &feature_index)?);
        }
        if policies.is_empty() {
            return Err(RuleError::Other("no policy files (*.toml) found".into()));
        }
        let mut names = HashSet::new();
        for p in &policies {
            if !names.insert(p.name.clone()) {
                return Err(RuleError::Other(format!(
                    "two policies are named '{}'",
                    p.name
                )));
            }
        }
        let mut scenarios: Vec<String> = policies
            .iter()
            .filter(|p| p.scenario != "*" && !p.shadow)
            .map(|p| p.scenario.clone())
            .collect();
        scenarios.sort();
        scenarios.dedup();
        for p in policies.iter().filter(|p| p.scenario != "*") {
            let live = policies
                .iter()
                .filter(|q| q.scenario == p.scenario && !q.shadow)
                .count();
            if live > 1 {
                return Err(RuleError::Other(format!(
                    "scenario '{}' has {live} live policies; exactly one may decide it",
                    p.scenario
                )));
            }
            if live == 0 {
                return Err(RuleError::Other(format!(
                    "shadow policy '{}' has no live policy for scenario '{}'",
                    p.name, p.scenario
                )));
            }
        }
        let mut names: Vec<&str> = policies
            .iter()
            .flat_map(|p| p.rules.iter())
            .flat_map(|r| r.variables.iter().map(String::as_str))
            .collect();
        names.sort_unstable();
        names.dedup();
        // Every name was checked against the built-ins and the features when its rule loaded.
        let variables = names
            .into_iter()
            .filter_map(|n| Some((n.to_string(), Source::of(n, &feature_index)?)))
            .collect();
        Ok(RuleSet {
            version: String::new(),
            policies,
            lists,
            scenarios,
            variables,
        })
    }

    pub fn scenarios(&self) -> &[String] {
        &self.scenarios
    }

    pub fn has_scenario(&self, scenario: &str) -> bool {
        self.scenarios.iter().any(|s| s == scenario)
    }

    /// Decides one request. Never fails: an unknown scenario is the caller's check.
    pub fn evaluate(&self, input: &RuleInput<'_>) -> Evaluation {
        ROOT_CONTEXT.with(|root| self.evaluate_in(root, input))
    }

    fn evaluate_in(&self, root: &Context<'static, 'static>, input: &RuleInput<'_>) -> Evaluation {
        let variables = RequestVariables { set: self, input };
        let mut ctx = root.new_inner_scope();
        ctx.set_variable_resolver(&variables);
        let mut decision = Decision::Approve;
        let mut hits = Vec::new();
        let mut params = None;
        for policy in self
            .policies
            .iter()
            .filter(|p| p.scenario == "*" || p.scenario == input.scenario)
        {
            if policy.shadow {
                let mut shadow_hits = Vec::new();
                let (outcome, _) = policy.run(self, input, &ctx, &mut shadow_hits);
                policy.shadow_decisions[severity(outcome) as usize].fetch_add(1, Ordering::Relaxed);
                tracing::debug!(policy = %policy.name, outcome = outcome.as_str(), "shadow decision");
                continue;
            }
            let (outcome, policy_params) = policy.run(self, input, &ctx, &mut hits);
            if severity(outcome) > severity(decision) {
                decision = outcome;
            }
            if policy.scenario != "*" {
                params = Some(policy_params);
            }
        }
        Evaluation {
            decision,
            hits,
            params: params.cloned().unwrap_or_default(),
        }
    }

    /// Per-rule hit and error counters: (policy, rule id, hits, evaluation errors).
    pub fn counters(&self) -> Vec<(String, String, u64, u64)> {
        self.policies
            .iter()
            .flat_map(|p| {
                p.rules.iter().map(move |r| {
                    (
                        p.name.clone(),
                        r.id.clone(),
                        r.hits.load(Ordering::Relaxed),
                        r.errors.load(Ordering::Relaxed),
                    )
                })
            })
            .collect()
    }

    /// Rules whose condition runs in the CEL interpreter because it is not in the natively
    /// evaluated subset (see [`compiled`]): (policy, rule id). They decide the same, slower.
    pub fn interpreted_rules(&self) -> Vec<(String, String)> {
        self.policies
            .iter()
            .flat_map(|p| {
                p.rules
                    .iter()
                    .filter(|r| r.native.is_none())
                    .map(move |r| (p.name.clone(), r.id.clone()))
            })
            .collect()
    }

    /// Shadow decisions counted so far: (policy, [approve, review, reject]).
    pub fn shadow_counters(&self) -> Vec<(String, [u64; 3])> {
        self.policies
            .iter()
            .filter(|p| p.shadow)
            .map(|p| {
                (
                    p.name.clone(),
                    [0, 1, 2].map(|i| p.shadow_decisions[i].load(Ordering::Relaxed)),
                )
            })
            .collect()
    }

    /// The value of a rule variable for this request: the one mapping from request to
    /// variables, which both the interpreter and the native conditions read.
    fn scalar_of<'a>(&self, source: Source, input: &RuleInput<'a>) -> Scalar<'a> {
        match source {
            Source::Score => Scalar::Int(input.score as i64),
            Source::Pd => Scalar::Float(input.pd),
            Source::Band => Scalar::Str(input.band.as_str()),
            Source::Scenario => Scalar::Str(input.scenario),
            Source::Partner => Scalar::Str(input.partner),
            Source::Dimension(d) => input
                .dimension_scores
                .iter()
                .find(|(x, _)| *x == d)
                .map(|(_, s)| Scalar::Int(*s as i64))
                .unwrap_or(Scalar::Null),
            Source::Blacklisted => Scalar::Bool(self.lists.blacklist.contains(input.user_id)),
            Source::Whitelisted => Scalar::Bool(self.lists.whitelist.contains(input.user_id)),
            Source::Watchlisted => Scalar::Bool(self.lists.watchlist.contains(input.user_id)),
            Source::Partners1h => Scalar::Int(input.velocity.partners_1h as i64),
            Source::Partners24h => Scalar::Int(input.velocity.partners_24h as i64),
            Source::Partners30d => Scalar::Int(input.velocity.partners_30d as i64),
            Source::Feature(i) => input
                .feature_values
                .get(i)
                .map(feature_scalar)
                .unwrap_or(Scalar::Null),
        }
    }
}

thread_local! {
    /// CEL's root context holds the built-in function registry; building it per request costs
    /// more than evaluating the rules, and it is not `Sync`, so each thread keeps one.
    static ROOT_CONTEXT: Context<'static, 'static> = Context::default();
}

fn feature_scalar(v: &FeatureValue) -> Scalar<'_> {
    match v {
        FeatureValue::Missing => Scalar::Null,
        // Whole numbers become CEL ints so `count > 0` and `count == 2` read naturally.
        FeatureValue::Num(x) if x.fract() == 0.0 && x.abs() < 9e15 => Scalar::Int(*x as i64),
        FeatureValue::Num(x) => Scalar::Float(*x),
        FeatureValue::Cat(s) => Scalar::Str(s),
    }
}

impl Policy {
    /// This policy's outcome and the parameters of the rule (or default) that decided it; its
    /// hits are appended to `hits`.
    fn run(
        &self,
        set: &RuleSet,
        input: &RuleInput<'_>,
        ctx: &Context<'_, '_>,
        hits: &mut Vec<RuleHit>,
    ) -> (Decision, &BTreeMap<String, String>) {
        let mut decided: Option<&Rule> = None;
        for rule in &self.rules {
            let answer = match &rule.native {
                Some(condition) => match condition.eval(&|s| set.scalar_of(s, input)) {
                    Ok(Scalar::Bool(b)) => Some(b),
                    _ => None,
                },
                None => match rule.program.execute(ctx) {
                    Ok(Value::Bool(b)) => Some(b),
                    _ => None,
                },
            };
            let hit = answer.unwrap_or_else(|| {
                rule.errors.fetch_add(1, Ordering::Relaxed);
                false
            });
            if !hit {
                continue;
            }
            rule.hits.fetch_add(1, Ordering::Relaxed);
            hits.push(RuleHit {
                rule_id: rule.id.clone(),
                policy: self.name.clone(),
                outcome: rule.outcome,
                reason: rule.reason.clone(),
            });
            match self.mode {
                Mode::FirstHit => {
                    decided = Some(rule);
                    break;
                }
                Mode::CollectAll => {
                    if decided.is_none_or(|d| severity(rule.outcome) > severity(d.outcome)) {
                        decided = Some(rule);
                    }
                }
            }
        }
        match decided {
            Some(rule) => (rule.outcome, &rule.params),
            None => (self.default_outcome, &self.default_params),
        }
    }
}

fn parse_policy(
    file: &str,
    text: &str,
    features: &HashMap<String, usize>,
) -> Result<Policy, RuleError> {
    let ferr = |message: String| RuleError::File {
        file: file.to_string(),
        message,
    };
    let pf: PolicyFile = toml::from_str(text).map_err(|e| ferr(e.to_string()))?;
    let h = pf.policy;
    let mode = match h.mode.as_str() {
        "first_hit" => Mode::FirstHit,
        "collect_all" => Mode::CollectAll,
        other => {
            return Err(ferr(format!(
                "unknown mode '{other}' (expected first_hit or collect_all)"
            )))
        }
    };
    let default_outcome = parse_decision(&h.default.outcome).ok_or_else(|| {
        ferr(format!(
            "default outcome '{}' is not approve, review or reject",
            h.default.outcome
        ))
    })?;
    if h.scenario.trim().is_empty() {
        return Err(ferr("policy scenario is empty".into()));
    }
    let mut rules = Vec::new();
    let mut ids = HashSet::new();
    for r in pf.rules {
        let rerr = |message: String| RuleError::Rule {
            file: file.to_string(),
            rule: r.id.clone(),
            message,
        };
        if r.id.trim().is_empty() {
            return Err(ferr("a rule has an empty id".into()));
        }
        if !ids.insert(r.id.clone()) {
            return Err(rerr("duplicate rule id".into()));
        }
        let outcome = parse_decision(&r.outcome).ok_or_else(|| {
            rerr(format!(
                "outcome '{}' is not approve, review or reject",
                r.outcome
            ))
        })?;
        // The cel parser is third-party code fed with user text: contain any panic.
        let compiled = std::panic::catch_unwind(|| Program::compile(&r.when))
            .map_err(|_| rerr(format!("syntax: cannot parse '{}'", r.when)))?;
        let program = compiled.map_err(|e| rerr(format!("syntax: {e}")))?;
        let mut variables: Vec<String> = program
            .references()
            .variables()
            .iter()
            .map(|s| s.to_string())
            .collect();
        variables.sort();
        for v in &variables {
            if !BUILTIN_VARIABLES.contains(&v.as_str()) && !features.contains_key(v) {
                return Err(rerr(format!("unknown variable or feature '{v}'")));
            }
        }
        // Type check by trial: with every input present the condition must give a boolean.
        let trial = trial_evaluate(&program, &variables, features);
        match &trial {
            Ok(Value::Bool(always)) => {
                if *always && variables.is_empty() && mode == Mode::FirstHit {
                    return Err(rerr("condition is always true: the rules after it and the default are unreachable".into()));
                }
            }
            Ok(other) => return Err(rerr(format!("condition gives {other:?}, not a boolean"))),
            Err(e) => return Err(rerr(format!("type error: {e}"))),
        }
        // The native form must agree with the interpreter on the trial too, or it is not used.
        let native =
            compiled::Condition::compile(program.expression(), &|name| Source::of(name, features))
                .filter(|c| {
                    c.eval(&|s| trial_scalar(s)).map(Scalar::to_cel).ok()
                        == trial.as_ref().ok().cloned()
                });
        rules.push(Rule {
            id: r.id,
            description: r.description,
            source: r.when,
            program,
            native,
            variables,
            outcome,
            reason: r.reason,
            params: r.params,
            hits: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        });
    }
    Ok(Policy {
        name: h.name,
        scenario: h.scenario,
        mode,
        shadow: h.shadow,
        default_outcome,
        default_reason: h.default.reason,
        default_params: h.default.params,
        rules,
        shadow_decisions: [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)],
    })
}

/// Evaluates a condition with plausible values for every variable it reads (numbers for
/// features, the right types for built-ins), so type errors surface at load, not per request.
fn trial_evaluate(
    program: &Program,
    variables: &[String],
    features: &HashMap<String, usize>,
) -> Result<Value, String> {
    let root = Context::default();
    let mut ctx = root.new_inner_scope();
    for v in variables {
        let value = Source::of(v, features)
            .map(|s| trial_scalar(s).to_cel())
            .unwrap_or(Value::Null);
        ctx.add_variable_from_value(v.clone(), value);
    }
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| program.execute(&ctx)))
        .map_err(|_| "evaluation panicked".to_string())?
        .map_err(|e| e.to_string())
}

fn trial_scalar(source: Source) -> Scalar<'static> {
    match source {
        Source::Pd => Scalar::Float(0.05),
        Source::Band | Source::Scenario | Source::Partner => Scalar::Str("x"),
        Source::Blacklisted | Source::Whitelisted | Source::Watchlisted => Scalar::Bool(false),
        Source::Score
        | Source::Dimension(_)
        | Source::Partners1h
        | Source::Partners24h
        | Source::Partners30d => Scalar::Int(600),
        Source::Feature(_) => Scalar::Int(1),
    }
}

impl Lists {
    fn load(dir: &Path, hasher: &mut Sha256) -> Result<Lists, RuleError> {
        let read = |name: &str, hasher: &mut Sha256| -> Result<HashSet<String>, RuleError> {
            let path = dir.join(name);
            if !path.exists() {
                return Ok(HashSet::new());
            }
            let text = std::fs::read_to_string(&path).map_err(|e| {
                RuleError::Other(format!("cannot read list {}: {e}", path.display()))
            })?;
            hasher.update(name.as_bytes());
            hasher.update(text.as_bytes());
            Ok(text
                .lines()
                .map(|l| l.split('#').next().unwrap_or("").trim())
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect())
        };
        Ok(Lists {
            blacklist: read("blacklist.txt", hasher)?,
            whitelist: read("whitelist.txt", hasher)?,
            watchlist: read("watchlist.txt", hasher)?,
        })
    }
}
