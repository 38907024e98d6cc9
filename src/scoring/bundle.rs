//! A model directory as served: `pipeline.toml` + `scorecard.json`, checked against each other.

use std::path::{Path, PathBuf};

use crate::domain::FeatureValue;
use crate::features::Pipeline;
use crate::model::{ReasonText, ScoreResult, Scorecard};

pub const PIPELINE_FILE: &str = "pipeline.toml";

/// One servable model version.
pub struct ModelBundle {
    pub dir: PathBuf,
    pub pipeline: Pipeline,
    pub scorecard: Scorecard,
    /// For each scorecard feature, its position in the pipeline's feature order.
    index: Vec<usize>,
}

impl ModelBundle {
    /// Loads and cross-checks a model directory. Refuses a scorecard trained on another pipeline.
    pub fn load(dir: &Path) -> Result<ModelBundle, String> {
        let pipeline = Pipeline::load(&dir.join(PIPELINE_FILE))
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        let scorecard = Scorecard::load(dir).map_err(|e| e.to_string())?;
        Self::new(dir, pipeline, scorecard)
    }

    pub fn new(
        dir: &Path,
        pipeline: Pipeline,
        scorecard: Scorecard,
    ) -> Result<ModelBundle, String> {
        match scorecard.pipeline_hash.as_deref() {
            Some(h) if h == pipeline.hash() => {}
            Some(h) => {
                return Err(format!(
                    "{}: the scorecard was trained on pipeline {} but pipeline.toml hashes to {}; retrain or restore the pipeline",
                    dir.display(),
                    &h[..h.len().min(12)],
                    &pipeline.hash()[..12]
                ))
            }
            None => return Err(format!("{}: the scorecard records no pipeline hash", dir.display())),
        }
        let names: Vec<&str> = pipeline
            .spec
            .features
            .iter()
            .map(|f| f.meta.name.as_str())
            .collect();
        let mut index = Vec::new();
        for f in scorecard.features() {
            let i = names.iter().position(|n| *n == f.name).ok_or_else(|| {
                format!(
                    "{}: the scorecard uses feature '{}' that the pipeline lacks",
                    dir.display(),
                    f.name
                )
            })?;
            index.push(i);
        }
        Ok(ModelBundle {
            dir: dir.to_path_buf(),
            pipeline,
            scorecard,
            index,
        })
    }

    pub fn version(&self) -> &str {
        &self.scorecard.model_version
    }

    /// Scores one user from the pipeline's feature row (pipeline order).
    pub fn score(&self, pipeline_row: &[FeatureValue], text: ReasonText) -> ScoreResult {
        self.scorecard.score_with(
            |j| self.index.get(j).and_then(|&i| pipeline_row.get(i)),
            text,
        )
    }
}
