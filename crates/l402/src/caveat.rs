//! First-party caveats of the form `condition=value` and their evaluation.
//!
//! Conventions (Aperture's, plus Turnpike's `_calls`):
//!
//! | caveat | meaning |
//! |---|---|
//! | `services=<name>:<tier>[,<name>:<tier>]` | the services the token is for (tier: decimal `u8`) |
//! | `<service>_valid_until=<unix seconds>` | the token is valid while `now < value` |
//! | `<service>_capabilities=<a>[,<b>]` | the capabilities granted for the service |
//! | `<service>_calls=<n>` | how many calls one payment buys |
//! | `preimage=<hex>` | appended by clients for the `Macaroon` header form; ignored here |
//!
//! Anyone holding a macaroon can append caveats, so evaluation only ever lets caveats narrow
//! what a token grants: every `services` caveat must list the service, repeated limits take the
//! minimum, repeated capability lists are intersected, and a caveat for the service that cannot
//! be parsed makes evaluation fail (fail closed).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::hash::Preimage;

/// The condition listing the services a token is for.
pub const SERVICES_CONDITION: &str = "services";
/// Suffix of the per-service expiry condition.
pub const VALID_UNTIL_SUFFIX: &str = "_valid_until";
/// Suffix of the per-service capabilities condition.
pub const CAPABILITIES_SUFFIX: &str = "_capabilities";
/// Suffix of the per-service call-count condition (Turnpike's own).
pub const CALLS_SUFFIX: &str = "_calls";
/// Suffix of Turnpike's `<service>_max_price_msat` caveat: the dearest request (as priced by a
/// dynamic pricer) the token may pay for.
pub const MAX_PRICE_SUFFIX: &str = "_max_price_msat";
/// The condition of the client-appended preimage caveat.
pub const PREIMAGE_CONDITION: &str = "preimage";

/// A first-party caveat `condition=value`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Caveat {
    /// The part before the first `=`.
    pub condition: String,
    /// The part after the first `=` (may contain further `=`).
    pub value: String,
}

impl fmt::Display for Caveat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.condition, self.value)
    }
}

impl Caveat {
    /// A caveat from its parts.
    pub fn new(condition: impl Into<String>, value: impl Into<String>) -> Caveat {
        Caveat {
            condition: condition.into(),
            value: value.into(),
        }
    }

    /// Splits a raw caveat on its first `=`, exactly (no trimming). `None` if it is not UTF-8
    /// or has no `=`.
    pub fn parse(raw: &[u8]) -> Option<Caveat> {
        let s = std::str::from_utf8(raw).ok()?;
        let (condition, value) = s.split_once('=')?;
        Some(Caveat::new(condition, value))
    }

    /// `services=<name>:0[,<name>:0]`: base tier for each service.
    pub fn services(names: &[&str]) -> Caveat {
        let value = names
            .iter()
            .map(|n| format!("{n}:0"))
            .collect::<Vec<_>>()
            .join(",");
        Caveat::new(SERVICES_CONDITION, value)
    }

    /// `<service>_valid_until=<unix>`.
    pub fn valid_until(service: &str, unix: u64) -> Caveat {
        Caveat::new(format!("{service}{VALID_UNTIL_SUFFIX}"), unix.to_string())
    }

    /// `<service>_capabilities=<a,b>`.
    pub fn capabilities(service: &str, caps: &[&str]) -> Caveat {
        Caveat::new(format!("{service}{CAPABILITIES_SUFFIX}"), caps.join(","))
    }

    /// `<service>_calls=<n>`.
    pub fn calls(service: &str, n: u64) -> Caveat {
        Caveat::new(format!("{service}{CALLS_SUFFIX}"), n.to_string())
    }

    /// `<service>_max_price_msat=<n>`.
    pub fn max_price_msat(service: &str, n: u64) -> Caveat {
        Caveat::new(format!("{service}{MAX_PRICE_SUFFIX}"), n.to_string())
    }

    /// `preimage=<lowercase hex>`.
    pub fn preimage(p: &Preimage) -> Caveat {
        Caveat::new(PREIMAGE_CONDITION, p.to_hex())
    }

    /// The caveat as the bytes stored in a macaroon (`condition=value`).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_string().into_bytes()
    }
}

/// Whether `name` can be used as a service name: 1 to 64 characters of `[A-Za-z0-9_.-]`
/// (so never `,`, `:`, `=` or whitespace).
pub fn is_valid_service_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// What a token grants for one service after evaluating its caveats.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Grant {
    /// The token is valid while `now < valid_until` (unix seconds); `None`: no expiry.
    pub valid_until: Option<u64>,
    /// How many calls the payment buys; `None`: unlimited until expiry.
    pub calls: Option<u64>,
    /// The capabilities granted; `None`: not restricted by a capabilities caveat.
    pub capabilities: Option<Vec<String>>,
    /// The dearest request (msat) the token pays for; `None`: no price bound.
    pub max_price_msat: Option<u64>,
}

/// Why caveats do not grant access to a service.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaveatError {
    /// No `services` caveat, or one that does not list the service.
    #[error("token does not grant this service")]
    ServiceNotGranted,
    /// The token expired.
    #[error("token expired at {valid_until}")]
    Expired {
        /// The effective expiry (unix seconds).
        valid_until: u64,
    },
    /// A caveat that applies to the service cannot be parsed.
    #[error("malformed caveat {condition:?}")]
    Malformed {
        /// The condition of the offending caveat.
        condition: String,
    },
}

/// Parses a `services` value; `None` if malformed.
/// Whether a well-formed `services` list names `service`; `None` if any entry is malformed.
fn services_list_contains(value: &str, service: &str) -> Option<bool> {
    let mut found = false;
    for entry in value.split(',') {
        let (name, tier) = entry.trim().split_once(':')?;
        let ok = is_valid_service_name(name)
            && !tier.is_empty()
            && tier.bytes().all(|b| b.is_ascii_digit())
            && tier.parse::<u8>().is_ok();
        if !ok {
            return None;
        }
        found |= name == service;
    }
    Some(found)
}

/// Parses a decimal `u64` made of ASCII digits only.
fn parse_u64(value: &str) -> Option<u64> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

/// Evaluates first-party caveats for `service` at time `now_unix`.
///
/// Caveats that are not UTF-8 or have no `=`, caveats for other services and unknown caveats
/// are ignored. Conditions and values are compared after trimming surrounding whitespace, so a
/// restriction appended with stray spaces still applies. The checks, in order:
///
/// 1. any `services` caveat with a malformed list, or a malformed `<service>_valid_until`,
///    `<service>_calls` or `<service>_capabilities` -> [`CaveatError::Malformed`];
/// 2. no `services` caveat, or one not listing `service` -> [`CaveatError::ServiceNotGranted`];
/// 3. `now_unix >= min(<service>_valid_until)` -> [`CaveatError::Expired`].
pub fn evaluate<'a>(
    caveats: impl IntoIterator<Item = &'a [u8]>,
    service: &str,
    now_unix: u64,
) -> Result<Grant, CaveatError> {
    // No allocation on this path: caveats are split in place and conditions compared as
    // `<service><suffix>` without building the strings.
    let is = |condition: &str, suffix: &str| {
        condition
            .strip_prefix(service)
            .is_some_and(|rest| rest == suffix)
    };

    let mut saw_services = false;
    let mut granted = true;
    let mut grant = Grant::default();

    for raw in caveats {
        let Some((condition, value)) = std::str::from_utf8(raw)
            .ok()
            .and_then(|s| s.split_once('='))
        else {
            continue;
        };
        let condition = condition.trim();
        let value = value.trim();
        let malformed = || CaveatError::Malformed {
            condition: condition.to_owned(),
        };
        if condition == SERVICES_CONDITION {
            let listed = services_list_contains(value, service).ok_or_else(malformed)?;
            saw_services = true;
            granted &= listed;
        } else if is(condition, VALID_UNTIL_SUFFIX) {
            let t = parse_u64(value).ok_or_else(malformed)?;
            grant.valid_until = Some(grant.valid_until.map_or(t, |old| old.min(t)));
        } else if is(condition, CALLS_SUFFIX) {
            let n = parse_u64(value).ok_or_else(malformed)?;
            grant.calls = Some(grant.calls.map_or(n, |old| old.min(n)));
        } else if is(condition, MAX_PRICE_SUFFIX) {
            let n = parse_u64(value).ok_or_else(malformed)?;
            grant.max_price_msat = Some(grant.max_price_msat.map_or(n, |old| old.min(n)));
        } else if is(condition, CAPABILITIES_SUFFIX) {
            let mut caps: Vec<String> = Vec::new();
            for cap in value.split(',').map(str::trim).filter(|c| !c.is_empty()) {
                if !caps.iter().any(|c| c == cap) {
                    caps.push(cap.to_owned());
                }
            }
            grant.capabilities = Some(match grant.capabilities.take() {
                None => caps,
                Some(old) => old.into_iter().filter(|c| caps.contains(c)).collect(),
            });
        }
    }

    if !saw_services || !granted {
        return Err(CaveatError::ServiceNotGranted);
    }
    if let Some(valid_until) = grant.valid_until
        && now_unix >= valid_until
    {
        return Err(CaveatError::Expired { valid_until });
    }
    Ok(grant)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(caveats: &[&str], service: &str, now: u64) -> Result<Grant, CaveatError> {
        evaluate(caveats.iter().map(|c| c.as_bytes()), service, now)
    }

    #[test]
    fn constructors_and_display() {
        assert_eq!(
            Caveat::services(&["lightning_loop", "pool"]).to_string(),
            "services=lightning_loop:0,pool:0"
        );
        assert_eq!(
            Caveat::valid_until("svc", 1700000000).to_string(),
            "svc_valid_until=1700000000"
        );
        assert_eq!(
            Caveat::capabilities("svc", &["a", "b"]).to_string(),
            "svc_capabilities=a,b"
        );
        assert_eq!(Caveat::calls("svc", 5).to_string(), "svc_calls=5");
        let p = Preimage([0xab; 32]);
        assert_eq!(
            Caveat::preimage(&p).to_string(),
            format!("preimage={}", "ab".repeat(32))
        );
    }

    #[test]
    fn parse_splits_on_first_equals() {
        assert_eq!(Caveat::parse(b"a=b=c"), Some(Caveat::new("a", "b=c")));
        assert_eq!(Caveat::parse(b"a="), Some(Caveat::new("a", "")));
        assert_eq!(Caveat::parse(b"=x"), Some(Caveat::new("", "x")));
        assert_eq!(Caveat::parse(b"noequals"), None);
        assert_eq!(Caveat::parse(&[0xff, b'=', b'x']), None);
    }

    #[test]
    fn service_names() {
        assert!(is_valid_service_name("lightning_loop"));
        assert!(is_valid_service_name("a.b-c_D9"));
        assert!(is_valid_service_name(&"a".repeat(64)));
        assert!(!is_valid_service_name(&"a".repeat(65)));
        for bad in ["", "a,b", "a:b", "a=b", "a b", "é", "a\n"] {
            assert!(!is_valid_service_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn grants() {
        let g = eval(
            &[
                "services=other:0,svc:1",
                "svc_capabilities=read,write",
                "svc_calls=10",
                "svc_valid_until=200",
                "preimage=zz",
                "unknown=1",
                "other_valid_until=bogus",
                "no-equals-sign",
            ],
            "svc",
            100,
        )
        .unwrap();
        assert_eq!(
            g,
            Grant {
                valid_until: Some(200),
                calls: Some(10),
                capabilities: Some(vec!["read".into(), "write".into()]),
                max_price_msat: None,
            }
        );
        assert_eq!(eval(&["services=svc:0"], "svc", 0), Ok(Grant::default()));
    }

    #[test]
    fn services_must_list_the_service_in_every_caveat() {
        assert_eq!(eval(&[], "svc", 0), Err(CaveatError::ServiceNotGranted));
        assert_eq!(
            eval(&["services=other:0"], "svc", 0),
            Err(CaveatError::ServiceNotGranted)
        );
        // Appending a services caveat can only narrow.
        assert_eq!(
            eval(&["services=svc:0,b:0", "services=b:0"], "svc", 0),
            Err(CaveatError::ServiceNotGranted)
        );
        assert_eq!(
            eval(&["services=b:0", "services=svc:0,b:0"], "svc", 0),
            Err(CaveatError::ServiceNotGranted)
        );
        assert!(eval(&["services=svc:0,b:0", "services=svc:0"], "svc", 0).is_ok());
        // Prefix and suffix names do not match.
        assert_eq!(
            eval(&["services=svc2:0"], "svc", 0),
            Err(CaveatError::ServiceNotGranted)
        );
    }

    #[test]
    fn malformed_services_fail_closed() {
        for bad in [
            "services=",
            "services=svc",
            "services=svc:",
            "services=svc:256",
            "services=svc:-1",
            "services=svc:+1",
            "services=svc:0,",
            "services=:0",
            "services=svc:0:0",
            "services=s v c:0",
        ] {
            assert_eq!(
                eval(&["services=svc:0", bad], "svc", 0),
                Err(CaveatError::Malformed {
                    condition: "services".into()
                }),
                "{bad}"
            );
        }
        assert!(eval(&["services=svc:255, b:0"], "svc", 0).is_ok());
    }

    #[test]
    fn expiry() {
        let c = ["services=svc:0", "svc_valid_until=100"];
        assert!(eval(&c, "svc", 99).is_ok());
        assert_eq!(
            eval(&c, "svc", 100),
            Err(CaveatError::Expired { valid_until: 100 })
        );
        // Minimum wins whatever the order.
        let c = [
            "services=svc:0",
            "svc_valid_until=100",
            "svc_valid_until=1000",
        ];
        assert_eq!(
            eval(&c, "svc", 500),
            Err(CaveatError::Expired { valid_until: 100 })
        );
        let c = [
            "services=svc:0",
            "svc_valid_until=1000",
            "svc_valid_until=100",
        ];
        assert_eq!(
            eval(&c, "svc", 500),
            Err(CaveatError::Expired { valid_until: 100 })
        );
        for bad in [
            "svc_valid_until=",
            "svc_valid_until=1e9",
            "svc_valid_until=-1",
            "svc_valid_until=99999999999999999999999",
        ] {
            assert_eq!(
                eval(&["services=svc:0", bad], "svc", 0),
                Err(CaveatError::Malformed {
                    condition: "svc_valid_until".into()
                }),
                "{bad}"
            );
        }
    }

    #[test]
    fn max_prices_take_the_minimum() {
        let g = eval(
            &[
                "services=svc:0",
                "svc_max_price_msat=5000",
                "svc_max_price_msat=9000",
            ],
            "svc",
            0,
        )
        .unwrap();
        assert_eq!(g.max_price_msat, Some(5000));
        assert_eq!(
            Caveat::max_price_msat("svc", 7).to_string(),
            "svc_max_price_msat=7"
        );
        assert!(eval(&["services=svc:0", "svc_max_price_msat=x"], "svc", 0).is_err());
    }

    #[test]
    fn calls_take_the_minimum() {
        let g = eval(
            &["services=svc:0", "svc_calls=1", "svc_calls=1000"],
            "svc",
            0,
        )
        .unwrap();
        assert_eq!(g.calls, Some(1));
        let g = eval(
            &["services=svc:0", "svc_calls=1000", "svc_calls=3"],
            "svc",
            0,
        )
        .unwrap();
        assert_eq!(g.calls, Some(3));
        assert_eq!(
            eval(&["services=svc:0", "svc_calls=lots"], "svc", 0),
            Err(CaveatError::Malformed {
                condition: "svc_calls".into()
            })
        );
    }

    #[test]
    fn capabilities_intersect() {
        let g = eval(
            &[
                "services=svc:0",
                "svc_capabilities=a,b,c",
                "svc_capabilities=c, b ,z",
            ],
            "svc",
            0,
        )
        .unwrap();
        assert_eq!(g.capabilities, Some(vec!["b".into(), "c".into()]));
        let g = eval(&["services=svc:0", "svc_capabilities="], "svc", 0).unwrap();
        assert_eq!(g.capabilities, Some(vec![]));
    }

    #[test]
    fn whitespace_padded_restrictions_still_apply() {
        let g = eval(&["services=svc:0", " svc_calls = 2 "], "svc", 0).unwrap();
        assert_eq!(g.calls, Some(2));
        assert_eq!(
            eval(&["services=svc:0", "services =other:0"], "svc", 0),
            Err(CaveatError::ServiceNotGranted)
        );
    }

    #[test]
    fn malformed_beats_not_granted_and_expired() {
        assert!(matches!(
            eval(
                &["services=other:0", "svc_valid_until=1", "svc_calls=x"],
                "svc",
                5
            ),
            Err(CaveatError::Malformed { .. })
        ));
        assert_eq!(
            eval(&["services=other:0", "svc_valid_until=1"], "svc", 5),
            Err(CaveatError::ServiceNotGranted)
        );
    }
}
