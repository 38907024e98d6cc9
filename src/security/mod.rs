//! Partner-facing security that is not gRPC-specific (no tonic here): user consent tokens and
//! per-partner rate limits. The service maps their errors to gRPC codes in `service::error`.

pub mod consent;
pub mod ratelimit;

use std::path::PathBuf;

use crate::config::Config;

/// `sesame consent ...`
#[derive(Debug, clap::Subcommand)]
pub enum ConsentCommand {
    /// Sign a consent token (stands for the platform's authorisation page) and print it alone
    /// on one line. Signs with the configured secret; in demo mode with the demo server's.
    Issue(IssueArgs),
}

#[derive(Debug, clap::Args)]
pub struct IssueArgs {
    /// The user who consents.
    #[arg(long)]
    pub user: String,
    /// The partner allowed to query.
    #[arg(long)]
    pub partner: String,
    /// The scenario (purpose) consented to.
    #[arg(long)]
    pub scenario: String,
    /// How long the consent holds: 90s, 15m, 1h, 7d.
    #[arg(long, default_value = "1h")]
    pub ttl: String,
    /// Server configuration (mode, consent_secret, partners); SESAME_* variables override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// Entry point of `sesame consent`.
pub fn consent_cli(cmd: ConsentCommand) -> anyhow::Result<()> {
    match cmd {
        ConsentCommand::Issue(a) => {
            let config = Config::load(a.config.as_deref())?;
            let ttl = consent::parse_ttl(&a.ttl).map_err(|e| anyhow::anyhow!("--ttl: {e}"))?;
            let secret = config.effective_consent_secret().ok_or_else(|| {
                anyhow::anyhow!("consent_secret: not configured (SESAME_CONSENT_SECRET)")
            })?;
            let partners = config.effective_partners();
            let Some(p) = partners.iter().find(|p| p.id == a.partner) else {
                let ids: Vec<&str> = partners.iter().map(|p| p.id.as_str()).collect();
                anyhow::bail!(
                    "--partner: '{}' is not a configured partner ({})",
                    a.partner,
                    ids.join(", ")
                );
            };
            if !p.scenarios.iter().any(|s| s == &a.scenario) {
                anyhow::bail!(
                    "--scenario: partner '{}' may not score '{}' (allowed: {})",
                    p.id,
                    a.scenario,
                    p.scenarios.join(", ")
                );
            }
            if a.user.trim().is_empty() {
                anyhow::bail!("--user: must not be empty");
            }
            let key = consent::ConsentKey::new(secret.as_bytes());
            println!(
                "{}",
                key.issue(
                    a.user.trim(),
                    &a.partner,
                    &a.scenario,
                    consent::unix_now(),
                    ttl
                )
            );
            Ok(())
        }
    }
}
