//! The query string of `GET /directory`, parsed strictly: every parameter at most once, each
//! checked, an unknown one refused; errors name the parameter.

use std::fmt;

/// Most entries one answer holds (`limit`).
pub const MAX_LIMIT: usize = 200;
/// Entries an answer holds when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 50;
/// Longest `q`, in characters.
pub const MAX_Q_CHARS: usize = 200;
/// Largest `offset`.
pub const MAX_OFFSET: usize = 1_000_000;

/// The pricing modes a service can have (as `x-turnpike.mode` in `/.well-known/l402.json`).
pub const MODES: [&str; 5] = [
    "per_call",
    "bundle",
    "time_pass",
    "dynamic_cap",
    "unlimited",
];

/// A search of the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryQuery {
    /// Lower-cased text searched in slugs, names, descriptions and tags.
    pub q: Option<String>,
    /// An exact tag.
    pub tag: Option<String>,
    /// Most the client pays (`amount_msat`), in millisatoshis.
    pub max_price_msat: Option<u64>,
    /// A pricing mode (one of [`MODES`]).
    pub mode: Option<&'static str>,
    /// A provider's slug.
    pub provider: Option<String>,
    /// Entries in the answer, 1 to [`MAX_LIMIT`].
    pub limit: usize,
    /// Entries skipped first.
    pub offset: usize,
}

impl Default for DirectoryQuery {
    fn default() -> DirectoryQuery {
        DirectoryQuery {
            q: None,
            tag: None,
            max_price_msat: None,
            mode: None,
            provider: None,
            limit: DEFAULT_LIMIT,
            offset: 0,
        }
    }
}

/// A parameter at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{param}: {message}")]
pub struct QueryError {
    /// The parameter (`limit`, `mode`…).
    pub param: String,
    /// What is wrong with it.
    pub message: String,
}

fn bad(param: &str, message: impl fmt::Display) -> QueryError {
    QueryError {
        param: param.to_owned(),
        message: message.to_string(),
    }
}

impl DirectoryQuery {
    /// Parses a raw query string (`None`: no `?`).
    pub fn parse(raw: Option<&str>) -> Result<DirectoryQuery, QueryError> {
        let mut out = DirectoryQuery::default();
        let mut seen: Vec<String> = Vec::new();
        for (key, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
            if seen.iter().any(|k| *k == key) {
                return Err(bad(&key, "is given more than once"));
            }
            seen.push(key.to_string());
            out.set(&key, &value)?;
        }
        Ok(out)
    }

    fn set(&mut self, key: &str, value: &str) -> Result<(), QueryError> {
        match key {
            "q" => self.q = parse_q(value)?,
            "tag" => {
                crate::metadata::check_tag(value).map_err(|m| bad("tag", m))?;
                self.tag = Some(value.to_owned());
            }
            "max_price_msat" => self.max_price_msat = Some(number("max_price_msat", value)?),
            "mode" => {
                let mode = MODES
                    .iter()
                    .find(|m| **m == value)
                    .ok_or_else(|| bad("mode", format!("must be one of {}", MODES.join(", "))))?;
                self.mode = Some(mode);
            }
            "provider" => {
                let shape = (1..=32).contains(&value.len())
                    && value
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
                if !shape {
                    return Err(bad("provider", "must be a provider's slug"));
                }
                self.provider = Some(value.to_owned());
            }
            "limit" => {
                let n = number("limit", value)?;
                self.limit = usize::try_from(n)
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| bad("limit", format!("must be from 1 to {MAX_LIMIT}")))?;
            }
            "offset" => {
                let n = number("offset", value)?;
                self.offset = usize::try_from(n)
                    .ok()
                    .filter(|n| *n <= MAX_OFFSET)
                    .ok_or_else(|| bad("offset", format!("must be at most {MAX_OFFSET}")))?;
            }
            other => {
                return Err(bad(
                    other,
                    "is not a parameter of /directory (q, tag, max_price_msat, mode, provider, limit, offset)",
                ));
            }
        }
        Ok(())
    }
}

/// Text to search: trimmed, lower-cased, at most [`MAX_Q_CHARS`]; empty means no filter.
fn parse_q(value: &str) -> Result<Option<String>, QueryError> {
    let q = value.trim();
    if q.chars().count() > MAX_Q_CHARS {
        return Err(bad("q", format!("is longer than {MAX_Q_CHARS} characters")));
    }
    if q.chars().any(char::is_control) {
        return Err(bad("q", "must not hold control characters"));
    }
    Ok((!q.is_empty()).then(|| q.to_lowercase()))
}

/// A decimal number of digits only (no sign, no blanks), fitting in 64 bits.
fn number(param: &str, value: &str) -> Result<u64, QueryError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) || value.len() > 20 {
        return Err(bad(param, "must be a whole number"));
    }
    value
        .parse()
        .map_err(|_| bad(param, "must be a whole number below 2^64"))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn param(raw: &str) -> String {
        DirectoryQuery::parse(Some(raw)).unwrap_err().param
    }

    #[test]
    fn every_parameter_is_read() {
        let q = DirectoryQuery::parse(Some(
            "q=Stock%20Quotes&tag=finance&max_price_msat=21420&mode=per_call&provider=alice&limit=10&offset=20",
        ))
        .unwrap();
        assert_eq!(
            q,
            DirectoryQuery {
                q: Some("stock quotes".into()),
                tag: Some("finance".into()),
                max_price_msat: Some(21_420),
                mode: Some("per_call"),
                provider: Some("alice".into()),
                limit: 10,
                offset: 20,
            }
        );
        assert_eq!(
            DirectoryQuery::parse(None).unwrap(),
            DirectoryQuery::default()
        );
        assert_eq!(
            DirectoryQuery::parse(Some("")).unwrap(),
            DirectoryQuery::default()
        );
        assert_eq!(DirectoryQuery::parse(Some("q=+")).unwrap().q, None);
        assert_eq!(DirectoryQuery::parse(Some("limit=200")).unwrap().limit, 200);
    }

    #[test]
    fn bad_parameters_are_named() {
        for (raw, named) in [
            ("limit=0", "limit"),
            ("limit=201", "limit"),
            ("limit=-1", "limit"),
            ("limit=1e2", "limit"),
            ("offset=x", "offset"),
            ("offset=1000001", "offset"),
            ("max_price_msat=18446744073709551616", "max_price_msat"),
            ("max_price_msat=+1", "max_price_msat"),
            ("mode=percall", "mode"),
            ("mode=PER_CALL", "mode"),
            ("tag=Finance", "tag"),
            ("tag=", "tag"),
            ("provider=Alice", "provider"),
            ("provider=a/b", "provider"),
            ("q=a&q=b", "q"),
            ("limit=1&limit=1", "limit"),
            ("sort=price", "sort"),
            ("q=a%00b", "q"),
        ] {
            assert_eq!(param(raw), named, "{raw}");
        }
        assert_eq!(param(&format!("q={}", "a".repeat(201))), "q");
    }

    proptest! {
        /// Any query string is a search or an error naming one of its own keys; a search
        /// always has a limit in range.
        #[test]
        fn any_query_parses_or_names_its_key(raw in "[a-z_=&%0-9A-F+.-]{0,60}") {
            match DirectoryQuery::parse(Some(&raw)) {
                Ok(q) => {
                    prop_assert!((1..=MAX_LIMIT).contains(&q.limit));
                    prop_assert!(q.offset <= MAX_OFFSET);
                }
                Err(e) => {
                    let keys: Vec<String> = form_urlencoded::parse(raw.as_bytes())
                        .map(|(k, _)| k.into_owned())
                        .collect();
                    prop_assert!(keys.contains(&e.param), "{} not in {:?}", e.param, keys);
                }
            }
        }

        /// Numbers round-trip exactly: what is asked is what is searched.
        #[test]
        fn numbers_round_trip(limit in 1usize..=MAX_LIMIT, offset in 0usize..=MAX_OFFSET,
                              max in any::<u64>()) {
            let q = DirectoryQuery::parse(Some(&format!(
                "limit={limit}&offset={offset}&max_price_msat={max}"
            ))).unwrap();
            prop_assert_eq!((q.limit, q.offset, q.max_price_msat), (limit, offset, Some(max)));
        }
    }
}
