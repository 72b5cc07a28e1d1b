//! The credential a client presents: a macaroon and the preimage proving the invoice was paid.
//!
//! Accepted forms, in priority order:
//!
//! 1. `Authorization: L402 <base64 macaroon>:<hex preimage>` (or `LSAT`, any case). Every
//!    `Authorization` value is scanned; values with other schemes are skipped; the first valid
//!    L402/LSAT value wins.
//! 2. Only if no `Authorization` value uses L402/LSAT: `Grpc-Metadata-Macaroon: <hex>`, then
//!    `Macaroon: <hex>`, where the macaroon carries a `preimage=<hex>` caveat.

use std::fmt;

use http::HeaderMap;
use http::header::AUTHORIZATION;

use crate::caveat::{Caveat, PREIMAGE_CONDITION};
use crate::hash::Preimage;
use crate::macaroon::{Macaroon, MacaroonError};

/// Header used by grpc-gateway / REST clients for the hex macaroon form.
pub const GRPC_METADATA_MACAROON: &str = "grpc-metadata-macaroon";
/// Header (gRPC metadata) used by Aperture's own clients for the hex macaroon form.
pub const MACAROON_HEADER: &str = "macaroon";

/// An L402 authentication scheme name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `L402`, the current name.
    L402,
    /// `LSAT`, the legacy name.
    Lsat,
}

impl Scheme {
    /// The canonical spelling: `"L402"` or `"LSAT"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::L402 => "L402",
            Scheme::Lsat => "LSAT",
        }
    }

    /// Matches a scheme name case-insensitively.
    pub fn from_name(name: &str) -> Option<Scheme> {
        if name.eq_ignore_ascii_case("L402") {
            Some(Scheme::L402)
        } else if name.eq_ignore_ascii_case("LSAT") {
            Some(Scheme::Lsat)
        } else {
            None
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why presented credentials were rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// An L402/LSAT header value that is not valid ASCII/UTF-8.
    #[error("credential header is not valid UTF-8")]
    NotUtf8,
    /// `L402` with nothing after it.
    #[error("L402 authorization has no credentials")]
    Missing,
    /// Several comma-separated macaroons: not supported.
    #[error("multiple macaroons in one L402 authorization are not supported")]
    MultipleMacaroons,
    /// No `:<preimage>` after the macaroon.
    #[error("L402 authorization lacks the ':<preimage>' part")]
    MissingPreimage,
    /// The preimage is not 64 hex characters.
    #[error("L402 preimage must be 64 hex characters")]
    InvalidPreimage,
    /// The macaroon could not be decoded.
    #[error("invalid macaroon: {0}")]
    Macaroon(#[from] MacaroonError),
    /// A hex macaroon header whose macaroon has no `preimage=` caveat.
    #[error("macaroon header form requires a preimage caveat")]
    MissingPreimageCaveat,
    /// A `preimage=` caveat whose value is not 64 hex characters.
    #[error("preimage caveat must be 64 hex characters")]
    InvalidPreimageCaveat,
}

/// What a client presents: a macaroon and the preimage of its payment hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// The token.
    pub macaroon: Macaroon,
    /// The proof of payment.
    pub preimage: Preimage,
}

fn is_sp(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// The header fields that can carry an L402 credential (lower case): `Authorization` (when its
/// scheme is `L402` or `LSAT`), [`MACAROON_HEADER`] and [`GRPC_METADATA_MACAROON`]. The one
/// list used wherever credentials are looked for or kept from an upstream.
pub const CREDENTIAL_FIELDS: [&str; 3] = ["authorization", MACAROON_HEADER, GRPC_METADATA_MACAROON];

/// Whether the header field `name: value` carries an L402 credential: an `Authorization` value
/// with the `L402`/`LSAT` scheme (other schemes, such as an upstream's `Bearer` key, do not), or
/// any macaroon field. `name` must be lower case (as `http::HeaderName` keeps it).
pub fn is_credential_field(name: &str, value: &[u8]) -> bool {
    match name {
        "authorization" => is_l402_authorization(value),
        MACAROON_HEADER | GRPC_METADATA_MACAROON => true,
        _ => false,
    }
}

/// Whether an `Authorization` value uses the `L402` or `LSAT` scheme (any case).
pub fn is_l402_authorization(value: &[u8]) -> bool {
    bytes_have_l402_scheme(value)
}

/// Whether raw header bytes begin with an L402/LSAT scheme token.
fn bytes_have_l402_scheme(raw: &[u8]) -> bool {
    let raw = raw.trim_ascii_start();
    let end = raw
        .iter()
        .position(|b| matches!(b, b' ' | b'\t'))
        .unwrap_or(raw.len());
    let scheme = &raw[..end];
    scheme.eq_ignore_ascii_case(b"L402") || scheme.eq_ignore_ascii_case(b"LSAT")
}

impl Credential {
    /// Extracts the credential from request headers (see the module docs for the rules).
    ///
    /// `Ok(None)` if no credential is present. If L402/LSAT `Authorization` values (or macaroon
    /// headers) were present but none was valid, the error is the first one's.
    pub fn from_headers(headers: &HeaderMap) -> Result<Option<Credential>, CredentialError> {
        let mut first_err = None;
        for value in headers.get_all(AUTHORIZATION) {
            let parsed = match std::str::from_utf8(value.as_bytes()) {
                Ok(s) => Credential::parse_authorization(s),
                Err(_) if bytes_have_l402_scheme(value.as_bytes()) => Err(CredentialError::NotUtf8),
                Err(_) => Ok(None),
            };
            match parsed {
                Ok(Some(cred)) => return Ok(Some(cred)),
                Ok(None) => {}
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }

        let macaroon_values = headers
            .get_all(GRPC_METADATA_MACAROON)
            .into_iter()
            .chain(headers.get_all(MACAROON_HEADER));
        for value in macaroon_values {
            let parsed = std::str::from_utf8(value.as_bytes())
                .map_err(|_| CredentialError::NotUtf8)
                .and_then(Credential::from_macaroon_hex);
            match parsed {
                Ok(cred) => return Ok(Some(cred)),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(None),
        }
    }

    /// Parses one `Authorization` value: `L402` or `LSAT` (any case), one or more spaces,
    /// `<base64 macaroon>:<64 hex preimage>` (split on the last `:`; base64 standard or
    /// URL-safe, padded or not; hex either case). `Ok(None)` if the scheme is another one.
    pub fn parse_authorization(value: &str) -> Result<Option<Credential>, CredentialError> {
        let value = value.trim_matches(is_sp);
        let (scheme, rest) = value.split_once(is_sp).unwrap_or((value, ""));
        if Scheme::from_name(scheme).is_none() {
            return Ok(None);
        }
        let rest = rest.trim_matches(is_sp);
        if rest.is_empty() {
            return Err(CredentialError::Missing);
        }
        if rest.contains(',') {
            return Err(CredentialError::MultipleMacaroons);
        }
        let (mac, preimage) = rest
            .rsplit_once(':')
            .ok_or(CredentialError::MissingPreimage)?;
        let preimage: Preimage = preimage
            .parse()
            .map_err(|_| CredentialError::InvalidPreimage)?;
        let macaroon = Macaroon::from_base64(mac)?;
        Ok(Some(Credential { macaroon, preimage }))
    }

    /// Parses the hex macaroon form (`Macaroon` / `Grpc-Metadata-Macaroon` headers): the
    /// preimage comes from the macaroon's `preimage=<hex>` caveat (the last one wins; every one
    /// must be well-formed).
    pub fn from_macaroon_hex(value: &str) -> Result<Credential, CredentialError> {
        let macaroon = Macaroon::from_hex(value)?;
        let mut preimage = None;
        for raw in macaroon.first_party_caveats() {
            let Some(c) = Caveat::parse(raw) else {
                continue;
            };
            if c.condition.trim() == PREIMAGE_CONDITION {
                let p: Preimage = c
                    .value
                    .trim()
                    .parse()
                    .map_err(|_| CredentialError::InvalidPreimageCaveat)?;
                preimage = Some(p);
            }
        }
        let preimage = preimage.ok_or(CredentialError::MissingPreimageCaveat)?;
        Ok(Credential { macaroon, preimage })
    }

    /// The `Authorization` header value: exactly `L402 <std padded base64>:<lowercase hex>`.
    pub fn authorization_value(&self) -> String {
        format!(
            "L402 {}:{}",
            self.macaroon.to_base64(),
            self.preimage.to_hex()
        )
    }

    /// The hex value for the `Macaroon` / `Grpc-Metadata-Macaroon` header: the macaroon with a
    /// `preimage=<hex>` caveat appended (unless its last preimage caveat already is this one).
    pub fn macaroon_header_value(&self) -> String {
        let wanted = Caveat::preimage(&self.preimage).to_bytes();
        let has = self
            .macaroon
            .first_party_caveats()
            .filter(|c| Caveat::parse(c).is_some_and(|c| c.condition.trim() == PREIMAGE_CONDITION))
            .last()
            .is_some_and(|c| c == wanted.as_slice());
        if has {
            self.macaroon.to_hex()
        } else {
            let mut m = self.macaroon.clone();
            m.add_first_party_caveat(wanted);
            m.to_hex()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const B64: &str = "AgEIYXBlcnR1cmUCBEFBPT0AAklwcmVpbWFnZT00OTM0OWRmZWE0YWJlZDNjZDE0ZjZkMzU2YWZhODNkZTk3ODdiNjA5ZjA4OGM4ZGYwOWJhY2M3YjRiZDIxYjM5AAAGIKMp8NcUmtVBYudEjYaIJemlCNTelfuG1dAGAAJJPKa1";
    const PRE: &str = "49349dfea4abed3cd14f6d356afa83de9787b609f088c8df09bacc7b4bd21b39";
    const KEY: &[u8] = b"aabbccddeeff00112233445566778899";

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn golden_vector_4() {
        let value = format!("L402 {B64}:{PRE}");
        let cred = Credential::parse_authorization(&value).unwrap().unwrap();
        assert_eq!(cred.preimage.to_hex(), PRE);
        assert_eq!(cred.macaroon.to_base64(), B64);
        cred.macaroon.verify_signature(KEY).unwrap();
        assert_eq!(cred.authorization_value(), value);
        assert_eq!(
            hex::encode(cred.macaroon.signature()),
            "a329f0d7149ad54162e7448d868825e9a508d4de95fb86d5d0060002493ca6b5"
        );
    }

    #[test]
    fn scheme_forms() {
        for v in [
            format!("L402 {B64}:{PRE}"),
            format!("LSAT {B64}:{PRE}"),
            format!("l402 {B64}:{PRE}"),
            format!("lsat   {B64}:{}", PRE.to_uppercase()),
            format!("  L402\t{B64}:{PRE}  "),
            format!("L402 {}:{PRE}", B64.trim_end_matches('=')),
            format!("L402 {}:{PRE}", B64.replace('+', "-").replace('/', "_")),
        ] {
            let c = Credential::parse_authorization(&v).unwrap().unwrap();
            assert_eq!(c.preimage.to_hex(), PRE, "{v}");
        }
        assert_eq!(Credential::parse_authorization("Bearer abc"), Ok(None));
        assert_eq!(Credential::parse_authorization("L402x abc"), Ok(None));
        assert_eq!(Credential::parse_authorization(""), Ok(None));
    }

    #[test]
    fn malformed_authorization() {
        use CredentialError::*;
        let cases: Vec<(String, CredentialError)> = vec![
            ("L402".into(), Missing),
            ("L402   ".into(), Missing),
            (format!("L402 {B64}"), MissingPreimage),
            (format!("L402 {B64}:"), InvalidPreimage),
            (format!("L402 {B64}:{}", &PRE[..63]), InvalidPreimage),
            (format!("L402 {B64}:{PRE}00"), InvalidPreimage),
            (format!("L402 {B64},{B64}:{PRE}"), MultipleMacaroons),
            (format!("L402 {B64}:{PRE},{B64}:{PRE}"), MultipleMacaroons),
            (format!("L402 fo!o:{PRE}"), Macaroon(MacaroonError::Base64)),
            // "foo" is valid unpadded base64, but not a macaroon.
            (
                format!("L402 foo:{PRE}"),
                Macaroon(MacaroonError::UnknownFormat(0x7e)),
            ),
            ("L402 foo".into(), MissingPreimage),
        ];
        for (v, e) in cases {
            assert_eq!(Credential::parse_authorization(&v), Err(e), "{v}");
        }
        assert!(matches!(
            Credential::parse_authorization(&format!("L402 :{PRE}")),
            Err(Macaroon(_))
        ));
    }

    #[test]
    fn header_scanning() {
        let good = format!("L402 {B64}:{PRE}");
        // Bearer first, then L402.
        let h = headers(&[("authorization", "Bearer xyz"), ("authorization", &good)]);
        assert!(Credential::from_headers(&h).unwrap().is_some());
        // Valid then other: still valid (unlike Aperture's last-value quirk).
        let h = headers(&[("authorization", &good), ("authorization", "Basic abc")]);
        assert!(Credential::from_headers(&h).unwrap().is_some());
        // Invalid L402 then valid LSAT: the valid one wins.
        let lsat = format!("LSAT {B64}:{PRE}");
        let h = headers(&[("authorization", "L402 foo"), ("authorization", &lsat)]);
        assert!(Credential::from_headers(&h).unwrap().is_some());
        // Only invalid ones: the first one's error.
        let h = headers(&[
            ("authorization", "L402 foo"),
            ("authorization", &format!("L402 {B64}")),
        ]);
        assert_eq!(
            Credential::from_headers(&h),
            Err(CredentialError::MissingPreimage)
        );
        // Nothing.
        assert_eq!(Credential::from_headers(&HeaderMap::new()), Ok(None));
        let h = headers(&[("authorization", "Bearer xyz")]);
        assert_eq!(Credential::from_headers(&h), Ok(None));
    }

    #[test]
    fn macaroon_headers() {
        let mac = crate::macaroon::Macaroon::from_base64(B64).unwrap();
        let hex = mac.to_hex();
        for name in ["grpc-metadata-macaroon", "macaroon", "Macaroon"] {
            let h = headers(&[(name, &hex)]);
            let c = Credential::from_headers(&h).unwrap().unwrap();
            assert_eq!(c.preimage.to_hex(), PRE);
            assert_eq!(c.macaroon, mac);
        }
        // Used when the Authorization header has another scheme.
        let h = headers(&[("authorization", "Bearer x"), ("macaroon", &hex)]);
        assert!(Credential::from_headers(&h).unwrap().is_some());
        // An L402 Authorization value takes priority, even when invalid.
        let h = headers(&[("authorization", "L402 foo"), ("macaroon", &hex)]);
        assert_eq!(
            Credential::from_headers(&h),
            Err(CredentialError::MissingPreimage)
        );
        // "foo" is rejected.
        let h = headers(&[("macaroon", "foo")]);
        assert_eq!(
            Credential::from_headers(&h),
            Err(CredentialError::Macaroon(MacaroonError::Hex))
        );
        // Without a preimage caveat.
        let bare = crate::macaroon::Macaroon::new(KEY, "AA==", "aperture");
        let h = headers(&[("grpc-metadata-macaroon", &bare.to_hex())]);
        assert_eq!(
            Credential::from_headers(&h),
            Err(CredentialError::MissingPreimageCaveat)
        );
        // Bad preimage caveat.
        let mut badp = bare.clone();
        badp.add_first_party_caveat("preimage=1234");
        assert_eq!(
            Credential::from_macaroon_hex(&badp.to_hex()),
            Err(CredentialError::InvalidPreimageCaveat)
        );
        // The last preimage caveat wins.
        let mut two = bare.clone();
        two.add_first_party_caveat(format!("preimage={}", "11".repeat(32)));
        two.add_first_party_caveat(format!("preimage={PRE}"));
        assert_eq!(
            Credential::from_macaroon_hex(&two.to_hex())
                .unwrap()
                .preimage
                .to_hex(),
            PRE
        );
        // Grpc-Metadata-Macaroon invalid, Macaroon valid: the valid one wins.
        let h = headers(&[("grpc-metadata-macaroon", "zz"), ("macaroon", &hex)]);
        assert!(Credential::from_headers(&h).unwrap().is_some());
    }

    #[test]
    fn non_utf8_header_values() {
        let mut h = HeaderMap::new();
        h.append(
            AUTHORIZATION,
            HeaderValue::from_bytes(b"Bearer \xff").unwrap(),
        );
        assert_eq!(Credential::from_headers(&h), Ok(None));
        h.append(
            AUTHORIZATION,
            HeaderValue::from_bytes(b"L402 \xff").unwrap(),
        );
        assert_eq!(Credential::from_headers(&h), Err(CredentialError::NotUtf8));
        let mut h = HeaderMap::new();
        h.append(MACAROON_HEADER, HeaderValue::from_bytes(b"\xfe").unwrap());
        assert_eq!(Credential::from_headers(&h), Err(CredentialError::NotUtf8));
    }

    #[test]
    fn macaroon_header_value_round_trip() {
        let mac = crate::macaroon::Macaroon::new(KEY, "AA==", "aperture");
        let cred = Credential {
            macaroon: mac,
            preimage: PRE.parse().unwrap(),
        };
        let v = cred.macaroon_header_value();
        let back = Credential::from_macaroon_hex(&v).unwrap();
        assert_eq!(back.preimage, cred.preimage);
        // Idempotent: already carrying the caveat, nothing is appended.
        assert_eq!(back.macaroon_header_value(), v);
        back.macaroon.verify_signature(KEY).unwrap();
    }
}
