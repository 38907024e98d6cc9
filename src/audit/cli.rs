//! `sesame audit`: verify the chain, list who queried a user, or what a partner queried.

use std::path::PathBuf;

use anyhow::Context;

use super::{user_ref, Filter, Store};
use crate::config::Config;

#[derive(Debug, Clone, clap::Args)]
pub struct AuditArgs {
    /// The audit file (default: `audit.path` of --config / SESAME_AUDIT_PATH, else var/audit.db).
    #[arg(long)]
    pub path: Option<PathBuf>,
    /// Server configuration to take `audit.path` from.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Recompute the hash chain; exit 1 naming the first broken record.
    #[arg(long)]
    pub verify: bool,
    /// List the queries about this user id (hashed the way the log stores it).
    #[arg(long)]
    pub user: Option<String>,
    /// List the queries of this partner id.
    #[arg(long)]
    pub partner: Option<String>,
    /// Only records at or after this time (RFC 3339, e.g. 2026-11-01T00:00:00Z).
    #[arg(long)]
    pub since: Option<String>,
    /// Only records before this time (RFC 3339).
    #[arg(long)]
    pub until: Option<String>,
    /// At most this many records.
    #[arg(long)]
    pub limit: Option<u64>,
}

fn parse_time(flag: &str, s: &str) -> anyhow::Result<i64> {
    chrono::DateTime::parse_from_rfc3339(s.trim())
        .map(|t| t.timestamp_millis())
        .map_err(|_| {
            anyhow::anyhow!("{flag}: '{s}' is not an RFC 3339 time like 2026-11-01T00:00:00Z")
        })
}

fn fmt_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_else(|| ms.to_string())
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}

/// Entry point of `sesame audit`. `Ok(false)` = the chain is broken (exit 1).
pub fn audit_cli(args: AuditArgs) -> anyhow::Result<bool> {
    let path = match &args.path {
        Some(p) => p.clone(),
        None => Config::load(args.config.as_deref())?.audit.path,
    };
    let store = Store::open_read_only(&path)?;
    if args.verify {
        let v = store.verify()?;
        return match v.first_broken {
            None => {
                println!(
                    "audit log {}: {} records, chain intact; head {}",
                    path.display(),
                    v.records,
                    v.head
                );
                Ok(true)
            }
            Some((seq, why)) => {
                println!(
                    "audit log {}: BROKEN at record {seq}: {why} ({} records read)",
                    path.display(),
                    v.records
                );
                Ok(false)
            }
        };
    }
    if args.user.is_none() && args.partner.is_none() {
        anyhow::bail!("give --verify, --user U or --partner P (with --since/--until)");
    }
    let filter = Filter {
        user_ref: args.user.as_deref().map(user_ref),
        partner: args.partner.clone(),
        since_ms: args
            .since
            .as_deref()
            .map(|s| parse_time("--since", s))
            .transpose()?,
        until_ms: args
            .until
            .as_deref()
            .map(|s| parse_time("--until", s))
            .transpose()?,
        limit: args.limit,
    };
    let rows = store.query(&filter).context("query")?;
    if let Some(u) = &args.user {
        println!(
            "queries about user ref {} ({} records)",
            user_ref(u),
            rows.len()
        );
    } else {
        println!(
            "queries by partner {} ({} records)",
            filter.partner.as_deref().unwrap_or(""),
            rows.len()
        );
    }
    println!(
        "seq\ttime\tpartner\tscenario\tdecision\tcode\tmodel_version\trequest_id\tmethod\tuser_ref"
    );
    for r in rows {
        let x = &r.record;
        println!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            r.seq,
            fmt_ms(x.ts_ms),
            x.partner,
            or_dash(&x.scenario),
            or_dash(&x.decision),
            x.code,
            or_dash(&x.model_version),
            or_dash(&x.request_id),
            x.method,
            &x.user_ref.get(..16).unwrap_or("-"),
        );
    }
    Ok(true)
}
