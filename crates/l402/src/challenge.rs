//! The `402 Payment Required` challenge: `WWW-Authenticate: L402 macaroon="..", invoice=".."`.
//!
//! The server side emits exactly Aperture's two header lines (LSAT first, then L402). The client
//! side parser is liberal: scheme `L402` or `LSAT` in any case, parameters comma or space
//! separated, quoted or unquoted, in any order, `macaroon=` or `token=`, optional `version=`
//! (must be `0`), unknown parameters ignored, and several challenges in one header value.

use std::borrow::Cow;

use http::HeaderMap;
use http::header::WWW_AUTHENTICATE;

use crate::credential::Scheme;
use crate::macaroon::{Macaroon, MacaroonError};

/// The longest `WWW-Authenticate` value the parser looks at, in bytes.
pub const MAX_CHALLENGE_LEN: usize = 256 * 1024;

/// Why a challenge could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChallengeError {
    /// No `L402` or `LSAT` challenge was found.
    #[error("no L402 or LSAT challenge found")]
    NotL402,
    /// The header value is longer than [`MAX_CHALLENGE_LEN`].
    #[error("challenge header too long: {len} bytes, the limit is {max}")]
    TooLarge {
        /// The length found.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The header value does not follow the auth-param syntax.
    #[error("malformed challenge: {0}")]
    Malformed(&'static str),
    /// Neither `macaroon=` nor `token=` is present.
    #[error("challenge has no macaroon (or token) parameter")]
    MissingMacaroon,
    /// No (or an empty) `invoice=`.
    #[error("challenge has no invoice parameter")]
    MissingInvoice,
    /// A `version=` other than `0`.
    #[error("unsupported L402 challenge version {0:?}")]
    UnsupportedVersion(String),
    /// The macaroon could not be decoded.
    #[error("invalid macaroon in challenge: {0}")]
    Macaroon(#[from] MacaroonError),
}

/// A payment challenge: the token to pay for, and the invoice paying for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The macaroon (not yet usable: it needs the invoice's preimage).
    pub macaroon: Macaroon,
    /// The BOLT11 invoice.
    pub invoice: String,
}

/// Quotes a string as an HTTP quoted-string.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

impl Challenge {
    /// The two `WWW-Authenticate` values, exactly as Aperture sends them, LSAT first:
    /// `LSAT macaroon="<b64>", invoice="<bolt11>"` and `L402 macaroon="<b64>", invoice="<bolt11>"`.
    pub fn header_values(&self) -> [String; 2] {
        let params = format!(
            "macaroon={}, invoice={}",
            quote(&self.macaroon.to_base64()),
            quote(&self.invoice)
        );
        [format!("LSAT {params}"), format!("L402 {params}")]
    }

    /// The single `WWW-Authenticate` value for `scheme`.
    pub fn header_value(&self, scheme: Scheme) -> String {
        let [lsat, l402] = self.header_values();
        match scheme {
            Scheme::Lsat => lsat,
            Scheme::L402 => l402,
        }
    }

    /// Parses one `WWW-Authenticate` value. If it holds several challenges, the first valid L402
    /// one is taken, else the first valid LSAT one.
    pub fn parse(value: &str) -> Result<Challenge, ChallengeError> {
        let mut found = Found::default();
        found.scan(value);
        found.pick()
    }

    /// Picks the challenge from all `WWW-Authenticate` values: the first parsable L402 one,
    /// else the first parsable LSAT one. Non-UTF-8 values are skipped.
    pub fn from_headers(headers: &HeaderMap) -> Result<Challenge, ChallengeError> {
        let mut found = Found::default();
        for value in headers.get_all(WWW_AUTHENTICATE) {
            if let Ok(s) = std::str::from_utf8(value.as_bytes()) {
                found.scan(s);
            }
        }
        found.pick()
    }
}

/// Candidate challenges collected from header values.
#[derive(Default)]
struct Found {
    l402: Option<Challenge>,
    lsat: Option<Challenge>,
    first_err: Option<ChallengeError>,
}

impl Found {
    fn scan(&mut self, value: &str) {
        if self.l402.is_some() {
            return;
        }
        if value.len() > MAX_CHALLENGE_LEN {
            self.first_err.get_or_insert(ChallengeError::TooLarge {
                len: value.len(),
                max: MAX_CHALLENGE_LEN,
            });
            return;
        }
        let (raws, syntax_err) = tokenize(value);
        for raw in raws {
            let Some(scheme) = Scheme::from_name(raw.scheme) else {
                continue;
            };
            match (raw.build(), scheme) {
                (Ok(c), Scheme::L402) => {
                    self.l402 = Some(c);
                    return;
                }
                (Ok(c), Scheme::Lsat) => {
                    self.lsat.get_or_insert(c);
                }
                (Err(e), _) => {
                    self.first_err.get_or_insert(e);
                }
            }
        }
        if let Some(e) = syntax_err {
            self.first_err.get_or_insert(e);
        }
    }

    fn pick(self) -> Result<Challenge, ChallengeError> {
        self.l402
            .or(self.lsat)
            .ok_or(self.first_err.unwrap_or(ChallengeError::NotL402))
    }
}

/// One challenge as written: scheme and parameters.
struct RawChallenge<'a> {
    scheme: &'a str,
    params: Vec<(&'a str, Cow<'a, str>)>,
}

impl RawChallenge<'_> {
    /// The first value of a parameter (names are case-insensitive).
    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_ref())
    }

    fn build(&self) -> Result<Challenge, ChallengeError> {
        if let Some(v) = self.param("version")
            && v.trim() != "0"
        {
            return Err(ChallengeError::UnsupportedVersion(v.to_owned()));
        }
        let mac = self
            .param("macaroon")
            .or_else(|| self.param("token"))
            .ok_or(ChallengeError::MissingMacaroon)?;
        let invoice = self
            .param("invoice")
            .map(str::trim)
            .filter(|i| !i.is_empty())
            .ok_or(ChallengeError::MissingInvoice)?;
        let macaroon = Macaroon::from_base64(mac)?;
        Ok(Challenge {
            macaroon,
            invoice: invoice.to_owned(),
        })
    }
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Splits a header value into challenges. A token followed by `=` is a parameter of the
/// current challenge; any other token starts a new challenge (so token68 credentials of other
/// schemes become harmless pseudo-challenges). On a syntax error, the challenges completed
/// before it are returned with the error.
fn tokenize(s: &str) -> (Vec<RawChallenge<'_>>, Option<ChallengeError>) {
    let b = s.as_bytes();
    let mut out: Vec<RawChallenge<'_>> = Vec::new();
    let mut i = 0;
    // Delimiters are ASCII, so every index used to slice `s` is a char boundary.
    let skip = |mut i: usize, commas: bool| {
        while i < b.len() && (is_ws(b[i]) || (commas && b[i] == b',')) {
            i += 1;
        }
        i
    };
    loop {
        i = skip(i, true);
        if i >= b.len() {
            return (out, None);
        }
        let start = i;
        while i < b.len() && !is_ws(b[i]) && !matches!(b[i], b',' | b'=' | b'"') {
            i += 1;
        }
        if i == start {
            out.pop();
            return (
                out,
                Some(ChallengeError::Malformed("unexpected '=' or '\"'")),
            );
        }
        let token = &s[start..i];
        let j = skip(i, false);
        if j >= b.len() || b[j] != b'=' {
            out.push(RawChallenge {
                scheme: token,
                params: Vec::new(),
            });
            continue;
        }
        // A parameter.
        i = skip(j + 1, false);
        let value: Cow<'_, str> = if i < b.len() && b[i] == b'"' {
            match quoted(s, i) {
                Some((v, end)) => {
                    i = end;
                    v
                }
                None => {
                    out.pop();
                    return (
                        out,
                        Some(ChallengeError::Malformed("unterminated quoted string")),
                    );
                }
            }
        } else {
            let vs = i;
            while i < b.len() && !is_ws(b[i]) && b[i] != b',' {
                i += 1;
            }
            Cow::Borrowed(&s[vs..i])
        };
        // Parameters before any scheme are ignored.
        if let Some(current) = out.last_mut() {
            current.params.push((token, value));
        }
    }
}

/// Reads a quoted-string starting at the `"` at `start`; returns the unescaped value and the
/// index after the closing quote.
fn quoted(s: &str, start: usize) -> Option<(Cow<'_, str>, usize)> {
    let b = s.as_bytes();
    let mut i = start + 1;
    let mut owned: Option<String> = None;
    let mut chunk = i;
    while i < b.len() {
        match b[i] {
            b'"' => {
                let v = match owned {
                    Some(mut o) => {
                        o.push_str(&s[chunk..i]);
                        Cow::Owned(o)
                    }
                    None => Cow::Borrowed(&s[chunk..i]),
                };
                return Some((v, i + 1));
            }
            b'\\' => {
                let o = owned.get_or_insert_with(String::new);
                o.push_str(&s[chunk..i]);
                let c = s[i + 1..].chars().next()?;
                o.push(c);
                i += 1 + c.len_utf8();
                chunk = i;
            }
            _ => i += 1,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const B64: &str = "AgEEbHNhdAJCAAAWMQKpyI+k7JrJk3tvBwvD4nJJqBrXoF85isXX0W976v7XSz7ySCD0QGAe/1v7Qr701hXElIzsiso8sVvSPxATAAIZc2VydmljZXM9bGlnaHRuaW5nX2xvb3A6MAACLGxpZ2h0bmluZ19sb29wX2NhcGFiaWxpdGllcz1sb29wX291dCxsb29wX2luAAIlbGlnaHRuaW5nX2xvb3BfdmFsaWRfdW50aWw9MTcwMDAwMDAwMAAABiCNNQV05X02pRNNsI0tfDbHdOkWYKR3t5RPHJ6Wc7g8gg==";
    const INV: &str = "lnbc1500n1pw5kjhmpp5fu6xhthlt2vucmzkx6c7wtlh2r625r30cyjsfqhu8rsx4xpz5lwq";

    fn challenge() -> Challenge {
        Challenge {
            macaroon: Macaroon::from_base64(B64).unwrap(),
            invoice: INV.into(),
        }
    }

    #[test]
    fn header_values_are_apertures() {
        let [lsat, l402] = challenge().header_values();
        assert_eq!(lsat, format!("LSAT macaroon=\"{B64}\", invoice=\"{INV}\""));
        assert_eq!(l402, format!("L402 macaroon=\"{B64}\", invoice=\"{INV}\""));
        assert_eq!(Challenge::parse(&lsat).unwrap(), challenge());
        assert_eq!(Challenge::parse(&l402).unwrap(), challenge());
        assert_eq!(challenge().header_value(Scheme::L402), l402);
    }

    #[test]
    fn liberal_forms() {
        let unpadded = B64.trim_end_matches('=');
        for v in [
            format!("l402 macaroon=\"{B64}\", invoice=\"{INV}\""),
            format!("L402 invoice=\"{INV}\",macaroon=\"{B64}\""),
            format!("LSAT macaroon={B64} invoice={INV}"),
            format!("L402 macaroon={B64}, invoice={INV}"),
            format!("L402 version=\"0\", token=\"{B64}\", invoice=\"{INV}\""),
            format!("L402 token={unpadded}, invoice=\"{INV}\", foo=\"b,a=r\", baz=1"),
            format!("L402 MACAROON = \"{B64}\" , Invoice = \"{INV}\""),
            format!(
                "Payment id=\"x\", method=\"lightning\", L402 macaroon=\"{B64}\", invoice=\"{INV}\""
            ),
            format!("Basic realm=\"x\", Bearer abc==, L402 macaroon=\"{B64}\", invoice=\"{INV}\""),
            format!("L402 macaroon=\"{B64}\", invoice=\"{INV}\", Payment id=\"unterminated"),
            format!(
                "LSAT macaroon=\"bad\", invoice=\"x\", L402 macaroon=\"{B64}\", invoice=\"{INV}\""
            ),
        ] {
            assert_eq!(Challenge::parse(&v), Ok(challenge()), "{v}");
        }
    }

    #[test]
    fn rejects() {
        use ChallengeError::*;
        assert_eq!(Challenge::parse(""), Err(NotL402));
        assert_eq!(Challenge::parse("Bearer realm=\"x\""), Err(NotL402));
        assert_eq!(
            Challenge::parse(&format!("L402 macaroon=\"{B64}\"")),
            Err(MissingInvoice)
        );
        assert_eq!(
            Challenge::parse(&format!("L402 macaroon=\"{B64}\", invoice=\"\"")),
            Err(MissingInvoice)
        );
        assert_eq!(
            Challenge::parse(&format!("L402 invoice=\"{INV}\"")),
            Err(MissingMacaroon)
        );
        assert_eq!(
            Challenge::parse(&format!(
                "L402 version=1, macaroon=\"{B64}\", invoice=\"{INV}\""
            )),
            Err(UnsupportedVersion("1".into()))
        );
        assert_eq!(
            Challenge::parse(&format!("L402 macaroon=\"!!\", invoice=\"{INV}\"")),
            Err(Macaroon(MacaroonError::Base64))
        );
        assert_eq!(
            Challenge::parse(&format!("L402 macaroon=\"{B64}\", invoice=\"{INV}")),
            Err(Malformed("unterminated quoted string"))
        );
        assert!(matches!(
            Challenge::parse(&"x".repeat(MAX_CHALLENGE_LEN + 1)),
            Err(TooLarge { .. })
        ));
    }

    #[test]
    fn quoted_escapes() {
        let c = Challenge {
            macaroon: Macaroon::from_base64(B64).unwrap(),
            invoice: "a\"b\\c é".into(),
        };
        let [_, l402] = c.header_values();
        assert_eq!(Challenge::parse(&l402), Ok(c));
    }

    #[test]
    fn from_headers_prefers_l402() {
        let other = Challenge {
            macaroon: Macaroon::new(b"k", "id", "x"),
            invoice: "lnbcother".into(),
        };
        let mut h = HeaderMap::new();
        h.append(
            WWW_AUTHENTICATE,
            HeaderValue::from_str("Bearer realm=\"x\"").unwrap(),
        );
        h.append(
            WWW_AUTHENTICATE,
            HeaderValue::from_str(&other.header_value(Scheme::Lsat)).unwrap(),
        );
        h.append(
            WWW_AUTHENTICATE,
            HeaderValue::from_bytes(b"L402 \xff").unwrap(),
        );
        h.append(
            WWW_AUTHENTICATE,
            HeaderValue::from_str("L402 macaroon=\"!!\", invoice=\"x\"").unwrap(),
        );
        // Only LSAT is valid so far.
        assert_eq!(Challenge::from_headers(&h), Ok(other.clone()));
        for v in challenge().header_values() {
            h.append(WWW_AUTHENTICATE, HeaderValue::from_str(&v).unwrap());
        }
        assert_eq!(Challenge::from_headers(&h), Ok(challenge()));

        let mut bad = HeaderMap::new();
        bad.append(
            WWW_AUTHENTICATE,
            HeaderValue::from_str("L402 invoice=\"x\"").unwrap(),
        );
        assert_eq!(
            Challenge::from_headers(&bad),
            Err(ChallengeError::MissingMacaroon)
        );
        assert_eq!(
            Challenge::from_headers(&HeaderMap::new()),
            Err(ChallengeError::NotL402)
        );
    }
}
