//! API-key authentication. Partners send `authorization: Bearer <key>`; keys are compared by
//! their SHA-256 in constant time against every configured key (no early exit), so neither the
//! key nor which partner matched leaks through timing. Nothing is open by default: a call
//! without a valid key is refused.

use sha2::{Digest, Sha256};
use tonic::metadata::MetadataMap;

use super::error::AuthError;
use crate::config::Config;
use crate::security::ratelimit::{RateLimit, RateLimited};

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Partner(usize),
    Admin,
}

#[derive(Debug)]
struct Partner {
    id: String,
    key_hash: [u8; 32],
    scenarios: Vec<String>,
    limit: RateLimit,
}

#[derive(Debug)]
pub struct Authenticator {
    partners: Vec<Partner>,
    admin: Option<[u8; 32]>,
}

fn decode_hash(h: &str) -> Option<[u8; 32]> {
    let v = hex::decode(h).ok()?;
    v.try_into().ok()
}

fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0u8;
    for i in 0..32 {
        diff |= a[i] ^ b[i];
    }
    // Keep the comparison from being short-circuited by the optimiser.
    std::hint::black_box(diff) == 0
}

impl Authenticator {
    /// Builds from a validated config (invalid hashes never match anything).
    pub fn from_config(config: &Config) -> Authenticator {
        let partners = config
            .effective_partners()
            .into_iter()
            .filter_map(|p| {
                Some(Partner {
                    key_hash: decode_hash(&p.key_sha256)?,
                    limit: RateLimit::new(p.rate_per_sec, p.burst),
                    id: p.id,
                    scenarios: p.scenarios,
                })
            })
            .collect();
        let admin = config
            .effective_admin_key_sha256()
            .and_then(|h| decode_hash(&h));
        Authenticator { partners, admin }
    }

    /// Who the metadata's key belongs to.
    pub fn identify(&self, md: &MetadataMap) -> Result<Caller, AuthError> {
        let value = md.get("authorization").ok_or(AuthError::Unauthenticated(
            "missing 'authorization: Bearer <api key>' metadata",
        ))?;
        let value = value
            .to_str()
            .map_err(|_| AuthError::Unauthenticated("malformed authorization metadata"))?;
        let key = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or(AuthError::Unauthenticated(
                "authorization metadata must be 'Bearer <api key>'",
            ))?;
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let mut found: Option<Caller> = None;
        for (i, p) in self.partners.iter().enumerate() {
            if ct_eq(&p.key_hash, &digest) && found.is_none() {
                found = Some(Caller::Partner(i));
            }
        }
        if let Some(admin) = &self.admin {
            if ct_eq(admin, &digest) && found.is_none() {
                found = Some(Caller::Admin);
            }
        }
        found.ok_or(AuthError::Unauthenticated("unknown api key"))
    }

    /// A partner key (CreditScoring). Returns the partner index.
    pub fn partner(&self, md: &MetadataMap) -> Result<usize, AuthError> {
        match self.identify(md)? {
            Caller::Partner(i) => Ok(i),
            Caller::Admin => Err(AuthError::PermissionDenied(
                "the admin key may not call CreditScoring; use a partner key".into(),
            )),
        }
    }

    /// The admin key (Admin service).
    pub fn admin(&self, md: &MetadataMap) -> Result<(), AuthError> {
        match self.identify(md)? {
            Caller::Admin => Ok(()),
            Caller::Partner(_) => Err(AuthError::PermissionDenied(
                "partner keys may not call Admin".into(),
            )),
        }
    }

    pub fn partner_id(&self, idx: usize) -> &str {
        self.partners.get(idx).map(|p| p.id.as_str()).unwrap_or("")
    }

    /// Takes one call from partner `idx`'s rate limit.
    pub fn check_rate(&self, idx: usize) -> Result<(), RateLimited> {
        match self.partners.get(idx) {
            Some(p) => p.limit.check(&p.id),
            None => Ok(()),
        }
    }

    /// Whether partner `idx` may score `scenario`.
    pub fn check_scenario(&self, idx: usize, scenario: &str) -> Result<(), AuthError> {
        match self.partners.get(idx) {
            Some(p) if p.scenarios.iter().any(|s| s == scenario) => Ok(()),
            Some(p) => Err(AuthError::PermissionDenied(format!(
                "partner '{}' is not allowed scenario '{scenario}'",
                p.id
            ))),
            None => Err(AuthError::Unauthenticated("unknown api key")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{sha256_hex, Mode, PartnerConfig};

    fn md(v: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        if let Ok(v) = v.parse() {
            m.insert("authorization", v);
        }
        m
    }

    #[test]
    fn keys_map_to_callers() {
        let mut c = Config::default();
        c.partners.push(PartnerConfig::new(
            "acme",
            &sha256_hex("acme-key"),
            &["cash_loan"],
        ));
        let a = Authenticator::from_config(&c);
        let acme = a.partner(&md("Bearer acme-key")).expect("acme");
        assert_eq!(a.partner_id(acme), "acme");
        assert!(a.check_scenario(acme, "cash_loan").is_ok());
        assert!(matches!(
            a.check_scenario(acme, "rental_deposit_free"),
            Err(AuthError::PermissionDenied(_))
        ));
        let demo = a.partner(&md("Bearer sesame-demo-key")).expect("demo");
        assert_eq!(a.partner_id(demo), "demo");
        assert!(a.admin(&md("Bearer sesame-demo-admin-key")).is_ok());
        assert!(matches!(
            a.admin(&md("Bearer acme-key")),
            Err(AuthError::PermissionDenied(_))
        ));
        assert!(matches!(
            a.partner(&md("Bearer nope")),
            Err(AuthError::Unauthenticated(_))
        ));
        assert!(matches!(
            a.partner(&md("acme-key")),
            Err(AuthError::Unauthenticated(_))
        ));
        assert!(matches!(
            a.partner(&MetadataMap::new()),
            Err(AuthError::Unauthenticated(_))
        ));
        c.mode = Mode::Production;
        let a = Authenticator::from_config(&c);
        assert!(
            a.partner(&md("Bearer sesame-demo-key")).is_err(),
            "no demo key in production"
        );
        assert!(a.admin(&md("Bearer sesame-demo-admin-key")).is_err());
    }
}
