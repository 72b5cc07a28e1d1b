//! A per-worker memo of credentials verified lately, so that a time pass or a bundle presented
//! on call after call is parsed and HMAC-checked once, not on every call.
//!
//! Verification depends only on the credential's bytes, the service and the time (through the
//! token's expiry), so a memo keyed by the exact credential bytes and the service gives the
//! same answer as verifying again: an entry holds the verified token, and a hit past the
//! token's expiry is answered as expired. Only successful verifications are kept, and only when
//! the request carries its credential in a single `Authorization` field and no macaroon
//! headers (then that field alone decides which credential the request presents). Single-call
//! tokens are never kept (they cannot be used twice). What happens after verification
//! (settlement check, rate limits, charging a call) runs on every request as before.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;

use http::HeaderMap;
use http::header::AUTHORIZATION;
use turnpike_l402::caveat::CaveatError;
use turnpike_l402::token::{VerifiedToken, VerifyError};

/// Entries kept per worker by default; when full, the memo starts afresh.
pub const DEFAULT_CAPACITY: usize = 4096;
/// Longest credential kept (a token with many caveats is simply verified every time).
const MAX_CREDENTIAL_BYTES: usize = 4096;

struct Entry {
    credential: Box<[u8]>,
    service: Box<str>,
    token: VerifiedToken,
}

/// Verified credentials, by the hash of their bytes and service.
pub struct VerifiedMemo {
    entries: Mutex<HashMap<u64, Entry, foldhash::fast::RandomState>>,
    hasher: foldhash::fast::RandomState,
    capacity: usize,
}

impl Default for VerifiedMemo {
    fn default() -> Self {
        VerifiedMemo::with_capacity(DEFAULT_CAPACITY)
    }
}

impl std::fmt::Debug for VerifiedMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VerifiedMemo")
    }
}

impl VerifiedMemo {
    /// A memo of at most `capacity` credentials (0: remembers nothing).
    pub fn with_capacity(capacity: usize) -> VerifiedMemo {
        VerifiedMemo {
            entries: Mutex::default(),
            hasher: foldhash::fast::RandomState::default(),
            capacity,
        }
    }

    /// The request's credential field, if the request presents its credential in exactly one
    /// `Authorization` field and carries no macaroon headers.
    pub fn credential_field(headers: &HeaderMap) -> Option<&[u8]> {
        let mut values = headers.get_all(AUTHORIZATION).iter();
        let only = values.next()?;
        use crate::headers::{GRPC_METADATA_MACAROON, MACAROON};
        if values.next().is_some()
            || headers.contains_key(MACAROON)
            || headers.contains_key(GRPC_METADATA_MACAROON)
        {
            return None;
        }
        Some(only.as_bytes())
    }

    /// The result of verifying `credential` for `service` at `now_unix`, if it was verified
    /// before.
    pub fn get(
        &self,
        credential: &[u8],
        service: &str,
        now_unix: u64,
    ) -> Option<Result<VerifiedToken, VerifyError>> {
        if self.capacity == 0 {
            return None;
        }
        let key = self.hasher.hash_one((credential, service));
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let entry = entries.get(&key)?;
        if *entry.credential != *credential || *entry.service != *service {
            return None;
        }
        Some(match entry.token.grant.valid_until {
            Some(valid_until) if now_unix >= valid_until => {
                Err(VerifyError::Caveat(CaveatError::Expired { valid_until }))
            }
            _ => Ok(entry.token.clone()),
        })
    }

    /// Remembers a successful verification of `credential` for `service`.
    pub fn insert(&self, credential: &[u8], service: &str, token: &VerifiedToken) {
        if self.capacity == 0
            || token.grant.calls == Some(1)
            || credential.len() > MAX_CREDENTIAL_BYTES
        {
            return;
        }
        let key = self.hasher.hash_one((credential, service));
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            entries.clear();
        }
        entries.insert(
            key,
            Entry {
                credential: credential.into(),
                service: service.into(),
                token: token.clone(),
            },
        );
    }

    /// Entries held (for tests).
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether the memo is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use turnpike_l402::caveat::Grant;
    use turnpike_l402::{PaymentHash, TokenId};

    fn token(calls: Option<u64>, valid_until: Option<u64>) -> VerifiedToken {
        VerifiedToken {
            token_id: TokenId([7; 32]),
            payment_hash: PaymentHash([8; 32]),
            grant: Grant {
                valid_until,
                calls,
                ..Grant::default()
            },
        }
    }

    #[test]
    fn hits_only_the_same_bytes_for_the_same_service() {
        let memo = VerifiedMemo::default();
        let t = token(None, Some(100));
        memo.insert(b"L402 abc:def", "svc", &t);
        assert_eq!(memo.get(b"L402 abc:def", "svc", 50), Some(Ok(t)));
        assert_eq!(memo.get(b"L402 abc:deg", "svc", 50), None);
        assert_eq!(memo.get(b"L402 abc:def", "other", 50), None);
        assert_eq!(
            memo.get(b"L402 abc:def", "svc", 100),
            Some(Err(VerifyError::Caveat(CaveatError::Expired {
                valid_until: 100
            })))
        );
    }

    #[test]
    fn single_call_tokens_and_huge_credentials_are_not_kept() {
        let memo = VerifiedMemo::default();
        memo.insert(b"L402 one:call", "svc", &token(Some(1), None));
        memo.insert(
            &vec![b'a'; MAX_CREDENTIAL_BYTES + 1],
            "svc",
            &token(None, None),
        );
        assert!(memo.is_empty());
        memo.insert(b"L402 bundle:x", "svc", &token(Some(5), None));
        assert_eq!(memo.len(), 1);
    }

    #[test]
    fn stays_bounded_and_can_be_off() {
        let memo = VerifiedMemo::with_capacity(100);
        for i in 0..250 {
            memo.insert(format!("L402 {i}:x").as_bytes(), "svc", &token(None, None));
            assert!(memo.len() <= 100);
        }
        let off = VerifiedMemo::with_capacity(0);
        off.insert(b"L402 a:b", "svc", &token(None, None));
        assert!(off.is_empty());
        assert_eq!(off.get(b"L402 a:b", "svc", 0), None);
    }

    #[test]
    fn only_a_single_authorization_field_without_macaroon_headers_is_a_key() {
        let mut h = HeaderMap::new();
        assert_eq!(VerifiedMemo::credential_field(&h), None);
        h.append(AUTHORIZATION, HeaderValue::from_static("L402 a:b"));
        assert_eq!(VerifiedMemo::credential_field(&h), Some(&b"L402 a:b"[..]));
        h.append(AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert_eq!(VerifiedMemo::credential_field(&h), None);
        let mut h = HeaderMap::new();
        h.append(AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        h.append("macaroon", HeaderValue::from_static("0201"));
        assert_eq!(VerifiedMemo::credential_field(&h), None);
    }
}
