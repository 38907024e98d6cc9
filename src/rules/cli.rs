//! `sesame rules …`: build the blacklist from court judgments, and check a rule directory before
//! it is reloaded into a running server.

use std::path::{Path, PathBuf};

use anyhow::Context;
use polars::prelude::*;

use crate::features::PipelineSpec;

use super::RuleSet;

#[derive(Debug, clap::Subcommand)]
pub enum RulesCommand {
    /// Write the blacklist: users with an active court judgment as a debtor, one id per line.
    Blacklist {
        /// Directory with `judgments.parquet` (e.g. datasets/demo).
        #[arg(long)]
        data: PathBuf,
        /// Output list file (e.g. rules/lists/blacklist.txt); written atomically.
        #[arg(long)]
        out: PathBuf,
    },
    /// Validate a rule directory against a pipeline's features, as a reload would.
    Check {
        #[arg(long, default_value = "rules")]
        rules: PathBuf,
        #[arg(long, default_value = "models/default/pipeline.toml")]
        pipeline: PathBuf,
    },
}

pub fn run(cmd: RulesCommand) -> anyhow::Result<()> {
    match cmd {
        RulesCommand::Blacklist { data, out } => {
            let ids = active_debtors(&data.join("judgments.parquet"))?;
            let mut text = String::from(
                "# Dishonest judgment debtors with an active judgment, from judgments.parquet.\n\
                 # Regenerate: sesame rules blacklist --data datasets/demo --out rules/lists/blacklist.txt\n",
            );
            for id in &ids {
                text.push_str(id);
                text.push('\n');
            }
            let tmp = crate::io::temp_beside(&out);
            std::fs::write(&tmp, text)
                .with_context(|| format!("cannot write {}", tmp.display()))?;
            std::fs::rename(&tmp, &out)
                .with_context(|| format!("cannot write {}", out.display()))?;
            println!("wrote {} blacklisted users to {}", ids.len(), out.display());
            Ok(())
        }
        RulesCommand::Check { rules, pipeline } => {
            let spec = PipelineSpec::load(&pipeline)?;
            let set = RuleSet::load(&rules, &spec.feature_metas())?;
            let n: usize = set.policies.iter().map(|p| p.rules.len()).sum();
            println!(
                "rules OK: {} policies, {n} rules, scenarios {}, version {}",
                set.policies.len(),
                set.scenarios().join(", "),
                set.version
            );
            Ok(())
        }
    }
}

/// Sorted, distinct user ids with at least one `active` judgment.
pub fn active_debtors(judgments: &Path) -> anyhow::Result<Vec<String>> {
    let df = crate::io::read_parquet(judgments)?;
    let ids = df
        .lazy()
        .filter(col("status").eq(lit("active")))
        .select([col("user_id")])
        .unique(None, UniqueKeepStrategy::Any)
        .sort(["user_id"], Default::default())
        .collect()
        .map_err(|e| {
            anyhow::anyhow!(
                "{}: needs user_id and status columns: {e}",
                judgments.display()
            )
        })?;
    let col = ids.column("user_id").map_err(|e| anyhow::anyhow!("{e}"))?;
    let ca = col.str().map_err(|e| anyhow::anyhow!("user_id: {e}"))?;
    Ok(ca.iter().flatten().map(str::to_string).collect())
}
