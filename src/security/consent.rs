//! User consent tokens: proof that a user authorised one partner to query their credit for one
//! scenario (purpose) until an expiry. HMAC-SHA256 over the claims, keyed by the server's
//! consent secret (the platform's authorisation page holds the same secret and issues them;
//! `sesame consent issue` stands for that page).
//!
//! Format: `sc1.<claims>.<mac>`, both parts base64url without padding; claims are JSON
//! `{"u":user_id,"p":partner_id,"s":scenario,"iat":unix_s,"exp":unix_s}`; the MAC covers
//! `sc1.<claims>` exactly as sent, so nothing is re-encoded before checking.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The demo consent secret: demo mode signs and checks with it, production mode refuses it.
pub const DEMO_CONSENT_SECRET: &str = "sesame-demo-consent-secret-not-for-production-use";
/// Version prefix of the token format.
pub const TOKEN_PREFIX: &str = "sc1";
/// Longest token accepted, bytes.
pub const MAX_TOKEN_BYTES: usize = 4096;
/// Clock skew tolerated on `iat` (a token issued "in the future"), seconds.
const MAX_SKEW_SECS: i64 = 300;

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    u: String,
    p: String,
    s: String,
    iat: i64,
    exp: i64,
}

/// A verified consent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consent {
    pub user_id: String,
    pub partner_id: String,
    pub scenario: String,
    pub issued_at: i64,
    pub expires_at: i64,
}

/// Why a consent token was refused. Messages name what is wrong, never the user id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsentError {
    #[error("consent_token: missing; the user's consent is needed for every query")]
    Missing,
    #[error("consent_token: malformed ({0})")]
    Malformed(&'static str),
    #[error(
        "consent_token: signature does not verify (forged, altered or signed with another key)"
    )]
    BadSignature,
    #[error("consent_token: expired at {0}")]
    Expired(String),
    #[error("consent_token: issued in the future (iat {0}); check the issuer's clock")]
    NotYetValid(String),
    #[error("consent_token: granted to partner '{token}', not to the caller '{caller}'")]
    WrongPartner { token: String, caller: String },
    #[error("consent_token: granted for another user than user_id")]
    WrongUser,
    #[error("consent_token: granted for scenario '{token}', not '{request}'")]
    WrongScenario { token: String, request: String },
}

fn rfc3339(unix_s: i64) -> String {
    chrono::DateTime::from_timestamp(unix_s, 0)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| unix_s.to_string())
}

/// Signs and checks consent tokens with one secret.
#[derive(Clone)]
pub struct ConsentKey {
    mac: HmacSha256,
}

impl std::fmt::Debug for ConsentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConsentKey(..)")
    }
}

impl ConsentKey {
    pub fn new(secret: &[u8]) -> ConsentKey {
        // HMAC takes keys of any length; this cannot fail.
        let mac = <HmacSha256 as Mac>::new_from_slice(secret)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        ConsentKey { mac }
    }

    fn sign(&self, signed_part: &str) -> Vec<u8> {
        let mut m = self.mac.clone();
        m.update(signed_part.as_bytes());
        m.finalize().into_bytes().to_vec()
    }

    /// A token for `user_id` × `partner_id` × `scenario`, valid from `now` for `ttl_secs`.
    pub fn issue(
        &self,
        user_id: &str,
        partner_id: &str,
        scenario: &str,
        now: i64,
        ttl_secs: i64,
    ) -> String {
        let claims = Claims {
            u: user_id.to_string(),
            p: partner_id.to_string(),
            s: scenario.to_string(),
            iat: now,
            exp: now.saturating_add(ttl_secs),
        };
        let json = serde_json::to_vec(&claims).unwrap_or_default();
        let signed = format!("{TOKEN_PREFIX}.{}", URL_SAFE_NO_PAD.encode(json));
        let mac = URL_SAFE_NO_PAD.encode(self.sign(&signed));
        format!("{signed}.{mac}")
    }

    /// Checks `token` for this exact query at `now` (unix seconds). The signature is checked
    /// (in constant time) before anything in the claims is believed.
    pub fn verify(
        &self,
        token: &str,
        user_id: &str,
        partner_id: &str,
        scenario: &str,
        now: i64,
    ) -> Result<Consent, ConsentError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(ConsentError::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(ConsentError::Malformed("longer than 4096 bytes"));
        }
        let (signed, mac) = token
            .rsplit_once('.')
            .ok_or(ConsentError::Malformed("expected sc1.<claims>.<signature>"))?;
        let (prefix, claims) = signed
            .split_once('.')
            .ok_or(ConsentError::Malformed("expected sc1.<claims>.<signature>"))?;
        if prefix != TOKEN_PREFIX {
            return Err(ConsentError::Malformed(
                "unknown token version (expected sc1)",
            ));
        }
        let mac = URL_SAFE_NO_PAD
            .decode(mac)
            .map_err(|_| ConsentError::Malformed("signature is not base64url"))?;
        let mut m = self.mac.clone();
        m.update(signed.as_bytes());
        m.verify_slice(&mac)
            .map_err(|_| ConsentError::BadSignature)?;
        let json = URL_SAFE_NO_PAD
            .decode(claims)
            .map_err(|_| ConsentError::Malformed("claims are not base64url"))?;
        let c: Claims = serde_json::from_slice(&json)
            .map_err(|_| ConsentError::Malformed("claims are not the expected JSON"))?;
        if now >= c.exp {
            return Err(ConsentError::Expired(rfc3339(c.exp)));
        }
        if c.iat > now + MAX_SKEW_SECS {
            return Err(ConsentError::NotYetValid(rfc3339(c.iat)));
        }
        if c.p != partner_id {
            return Err(ConsentError::WrongPartner {
                token: c.p,
                caller: partner_id.to_string(),
            });
        }
        if c.u != user_id {
            return Err(ConsentError::WrongUser);
        }
        if c.s != scenario {
            return Err(ConsentError::WrongScenario {
                token: c.s,
                request: scenario.to_string(),
            });
        }
        Ok(Consent {
            user_id: c.u,
            partner_id: c.p,
            scenario: c.s,
            issued_at: c.iat,
            expires_at: c.exp,
        })
    }
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Parses a time-to-live: `90` (seconds), `90s`, `15m`, `1h`, `7d`.
pub fn parse_ttl(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: i64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration like 90s, 15m, 1h or 7d"))?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("'{s}' is not a duration like 90s, 15m, 1h or 7d")),
    };
    match n.checked_mul(mult) {
        Some(v) if v > 0 && v <= 366 * 86_400 => Ok(v),
        _ => Err(format!("'{s}': must be more than 0 and at most 366 days")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    fn key() -> ConsentKey {
        ConsentKey::new(b"test-secret-test-secret-test-secret")
    }

    #[test]
    fn issued_token_verifies_for_exactly_its_query() {
        let k = key();
        let t = k.issue("U1", "acme", "cash_loan", NOW, 3600);
        assert!(t.starts_with("sc1.") && !t.contains(char::is_whitespace));
        let c = k
            .verify(&t, "U1", "acme", "cash_loan", NOW + 10)
            .expect("valid");
        assert_eq!(c.expires_at, NOW + 3600);
        assert_eq!(
            k.verify(&t, "U1", "acme", "cash_loan", NOW + 3600),
            Err(ConsentError::Expired(rfc3339(NOW + 3600)))
        );
        assert!(matches!(
            k.verify(&t, "U1", "other", "cash_loan", NOW),
            Err(ConsentError::WrongPartner { .. })
        ));
        assert_eq!(
            k.verify(&t, "U2", "acme", "cash_loan", NOW),
            Err(ConsentError::WrongUser)
        );
        assert!(matches!(
            k.verify(&t, "U1", "acme", "rental_deposit_free", NOW),
            Err(ConsentError::WrongScenario { .. })
        ));
        assert!(matches!(
            k.verify(&t, "U1", "acme", "cash_loan", NOW - 1000),
            Err(ConsentError::NotYetValid(_))
        ));
    }

    #[test]
    fn forged_altered_and_malformed_tokens_are_refused() {
        let k = key();
        let t = k.issue("U1", "acme", "cash_loan", NOW, 3600);
        let other = ConsentKey::new(b"another-secret-another-secret-xx");
        assert_eq!(
            other.verify(&t, "U1", "acme", "cash_loan", NOW),
            Err(ConsentError::BadSignature)
        );
        // Claims swapped for another user's, signature kept.
        let t2 = k.issue("U2", "acme", "cash_loan", NOW, 3600);
        let (_, mac1) = t.rsplit_once('.').expect("mac");
        let (signed2, _) = t2.rsplit_once('.').expect("mac");
        assert_eq!(
            k.verify(&format!("{signed2}.{mac1}"), "U2", "acme", "cash_loan", NOW),
            Err(ConsentError::BadSignature)
        );
        assert_eq!(
            k.verify("", "U1", "acme", "cash_loan", NOW),
            Err(ConsentError::Missing)
        );
        for bad in [
            "c-1",
            "sc1.x",
            "sc2.a.b",
            "sc1.a.!!",
            "sc1..",
            &"a".repeat(5000),
        ] {
            assert!(
                matches!(
                    k.verify(bad, "U1", "acme", "cash_loan", NOW),
                    Err(ConsentError::Malformed(_) | ConsentError::BadSignature)
                ),
                "{bad}"
            );
        }
        // No user id in any message.
        let e = k.verify(&t, "U2", "acme", "cash_loan", NOW).unwrap_err();
        assert!(!e.to_string().contains("U1") && !e.to_string().contains("U2"));
    }

    #[test]
    fn ttl_parses() {
        assert_eq!(parse_ttl("1h"), Ok(3600));
        assert_eq!(parse_ttl("90"), Ok(90));
        assert_eq!(parse_ttl("15m"), Ok(900));
        assert_eq!(parse_ttl("7d"), Ok(604_800));
        assert!(parse_ttl("0s").is_err());
        assert!(parse_ttl("1y").is_err());
        assert!(parse_ttl("h").is_err());
    }
}
