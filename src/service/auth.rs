//! Partner authentication. Partners send `authorization: Bearer <key>`; keys are compared by
//! their SHA-256 in constant time against every configured key (no early exit), so neither the
//! key nor which partner matched leaks through timing. Over mutual TLS a partner configured with
//! `cert_sha256` is identified by its client certificate instead, and must present it. Nothing
//! is open by default: a call without a valid key or partner certificate is refused.

use sha2::{Digest, Sha256};
use tonic::metadata::MetadataMap;
use tonic::Request;

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
    cert_hash: Option<[u8; 32]>,
}

/// SHA-256 of the client certificate the call's TLS connection presented (mutual TLS), if any.
pub fn client_cert<T>(request: &Request<T>) -> Option<[u8; 32]> {
    let certs = request.peer_certs()?;
    let leaf = certs.first()?;
    Some(Sha256::digest(leaf.as_ref()).into())
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
                    cert_hash: p.cert_sha256.as_deref().and_then(decode_hash),
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

    /// Who is calling: the partner whose certificate the connection presented (`cert`), or
    /// whose key the metadata carries — the same partner when both are there.
    pub fn identify(&self, md: &MetadataMap, cert: Option<[u8; 32]>) -> Result<Caller, AuthError> {
        let by_cert = cert.and_then(|fp| {
            self.partners
                .iter()
                .position(|p| p.cert_hash.is_some_and(|h| ct_eq(&h, &fp)))
        });
        if md.get("authorization").is_none() {
            if let Some(i) = by_cert {
                return Ok(Caller::Partner(i));
            }
        }
        match self.by_key(md)? {
            Caller::Partner(i) => match by_cert {
                Some(j) if j != i => Err(AuthError::Unauthenticated(
                    "the api key and the client certificate belong to different partners",
                )),
                None if self.partners[i].cert_hash.is_some() => Err(AuthError::Unauthenticated(
                    "this partner must call with its client certificate (mutual TLS)",
                )),
                _ => Ok(Caller::Partner(i)),
            },
            Caller::Admin => Ok(Caller::Admin),
        }
    }

    /// Who the metadata's key belongs to.
    fn by_key(&self, md: &MetadataMap) -> Result<Caller, AuthError> {
        let value = md.get("authorization").ok_or(AuthError::Unauthenticated(
            "missing 'authorization: Bearer <api key>' metadata (or a partner's client certificate)",
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

    /// A partner (CreditScoring), by key or client certificate. Returns the partner index.
    pub fn partner(&self, md: &MetadataMap, cert: Option<[u8; 32]>) -> Result<usize, AuthError> {
        match self.identify(md, cert)? {
            Caller::Partner(i) => Ok(i),
            Caller::Admin => Err(AuthError::PermissionDenied(
                "the admin key may not call CreditScoring; use a partner key".into(),
            )),
        }
    }

    /// The admin key (Admin service).
    pub fn admin(&self, md: &MetadataMap) -> Result<(), AuthError> {
        match self.by_key(md)? {
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
        let acme = a.partner(&md("Bearer acme-key"), None).expect("acme");
        assert_eq!(a.partner_id(acme), "acme");
        assert!(a.check_scenario(acme, "cash_loan").is_ok());
        assert!(matches!(
            a.check_scenario(acme, "rental_deposit_free"),
            Err(AuthError::PermissionDenied(_))
        ));
        let demo = a
            .partner(&md("Bearer sesame-demo-key"), None)
            .expect("demo");
        assert_eq!(a.partner_id(demo), "demo");
        assert!(a.admin(&md("Bearer sesame-demo-admin-key")).is_ok());
        assert!(matches!(
            a.admin(&md("Bearer acme-key")),
            Err(AuthError::PermissionDenied(_))
        ));
        assert!(matches!(
            a.partner(&md("Bearer nope"), None),
            Err(AuthError::Unauthenticated(_))
        ));
        assert!(matches!(
            a.partner(&md("acme-key"), None),
            Err(AuthError::Unauthenticated(_))
        ));
        assert!(matches!(
            a.partner(&MetadataMap::new(), None),
            Err(AuthError::Unauthenticated(_))
        ));
        c.mode = Mode::Production;
        let a = Authenticator::from_config(&c);
        assert!(
            a.partner(&md("Bearer sesame-demo-key"), None).is_err(),
            "no demo key in production"
        );
        assert!(a.admin(&md("Bearer sesame-demo-admin-key")).is_err());
    }

    #[test]
    fn a_certificate_identifies_its_partner_and_binds_its_key() {
        let fp = |s: &str| -> [u8; 32] { Sha256::digest(s.as_bytes()).into() };
        let mut c = Config::default();
        let mut acme = PartnerConfig::new("acme", &sha256_hex("acme-key"), &["cash_loan"]);
        acme.cert_sha256 = Some(hex::encode(fp("acme-cert")));
        c.partners.push(acme);
        let a = Authenticator::from_config(&c);
        let none = MetadataMap::new();
        let acme = a
            .partner(&none, Some(fp("acme-cert")))
            .expect("by certificate");
        assert_eq!(a.partner_id(acme), "acme");
        assert_eq!(
            a.partner(&md("Bearer acme-key"), Some(fp("acme-cert")))
                .ok(),
            Some(acme)
        );
        // The key alone is not enough for a partner bound to a certificate.
        assert!(matches!(
            a.partner(&md("Bearer acme-key"), None),
            Err(AuthError::Unauthenticated(m)) if m.contains("client certificate")
        ));
        // Key and certificate of different partners.
        assert!(matches!(
            a.partner(&md("Bearer sesame-demo-key"), Some(fp("acme-cert"))),
            Err(AuthError::Unauthenticated(m)) if m.contains("different partners")
        ));
        // A certificate nobody is configured with identifies nobody; the key still does.
        assert!(a.partner(&none, Some(fp("other"))).is_err());
        let demo = a
            .partner(&md("Bearer sesame-demo-key"), Some(fp("other")))
            .expect("demo by key");
        assert_eq!(a.partner_id(demo), "demo");
    }
}
