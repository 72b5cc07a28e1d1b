//! Host names in one spelling: lower case, without a trailing dot, validated. Services are
//! matched on the host without its port.

use std::borrow::Cow;

/// Why a host was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// Not `name[:port]` or `[ipv6][:port]`, or it has user information.
    #[error("the host is not a valid host name or address")]
    Invalid,
    /// The port is not a number from 0 to 65535.
    #[error("the host has an invalid port")]
    BadPort,
}

/// An authority (`host[:port]`) in canonical form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority<'a> {
    text: Cow<'a, str>,
    host_len: usize,
}

impl<'a> Authority<'a> {
    /// `host[:port]`, normalised.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The host without its port (an IPv6 address without brackets).
    pub fn host(&self) -> &str {
        let host = &self.text[..self.host_len];
        host.strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
    }

    /// Whether the canonical form is the input unchanged.
    pub fn is_unchanged(&self) -> bool {
        matches!(self.text, Cow::Borrowed(_))
    }
}

/// Normalises `raw` (a `Host` field or an absolute target's authority): lower-cases it, drops
/// one trailing dot from a name, checks the characters and the port.
pub fn normalize(raw: &str) -> Result<Authority<'_>, HostError> {
    let (host, port) = split_port(raw)?;
    if let Some(port) = port
        && !port.is_empty()
        && (port.len() > 5
            || !port.bytes().all(|b| b.is_ascii_digit())
            || port.parse::<u16>().is_err())
    {
        return Err(HostError::BadPort);
    }
    let name = if host.starts_with('[') {
        check_ip_literal(host)?;
        host
    } else {
        let name = host.strip_suffix('.').unwrap_or(host);
        check_name(name)?;
        name
    };
    let lower = !name.bytes().any(|b| b.is_ascii_uppercase());
    let port_text = port.filter(|p| !p.is_empty());
    let unchanged = lower && name.len() == host.len() && port_text.map_or(port.is_none(), |_| true);
    if unchanged {
        return Ok(Authority {
            text: Cow::Borrowed(raw),
            host_len: host.len(),
        });
    }
    let mut text = name.to_ascii_lowercase();
    let host_len = text.len();
    if let Some(port) = port_text {
        text.push(':');
        text.push_str(port);
    }
    Ok(Authority {
        text: Cow::Owned(text),
        host_len,
    })
}

/// Normalises a configured host pattern (`api.example.com` or `*.example.com`, no port).
pub fn normalize_pattern(pattern: &str) -> Result<String, HostError> {
    let (wildcard, name) = match pattern.strip_prefix("*.") {
        Some(rest) => ("*.", rest),
        None => ("", pattern),
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.starts_with('[') {
        check_ip_literal(name)?;
    } else {
        check_name(name)?;
    }
    Ok(format!("{wildcard}{}", name.to_ascii_lowercase()))
}

fn split_port(raw: &str) -> Result<(&str, Option<&str>), HostError> {
    if raw.starts_with('[') {
        let end = raw.find(']').ok_or(HostError::Invalid)?;
        let (host, rest) = raw.split_at(end + 1);
        return match rest.strip_prefix(':') {
            Some(port) => Ok((host, Some(port))),
            None if rest.is_empty() => Ok((host, None)),
            None => Err(HostError::Invalid),
        };
    }
    Ok(match raw.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (raw, None),
    })
}

/// A registered name or IPv4 address: letters, digits, `-`, `.`, `_`, `~`; no empty label.
fn check_name(name: &str) -> Result<(), HostError> {
    if name.is_empty() || name.len() > 253 {
        return Err(HostError::Invalid);
    }
    // One pass: allowed bytes only, and no label empty (no leading, double or trailing dot).
    let mut label_empty = true;
    for b in name.bytes() {
        if b == b'.' {
            if label_empty {
                return Err(HostError::Invalid);
            }
            label_empty = true;
        } else if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~') {
            label_empty = false;
        } else {
            return Err(HostError::Invalid);
        }
    }
    if label_empty {
        Err(HostError::Invalid)
    } else {
        Ok(())
    }
}

fn check_ip_literal(host: &str) -> Result<(), HostError> {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .and_then(|h| h.parse::<std::net::Ipv6Addr>().ok())
        .map(|_| ())
        .ok_or(HostError::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn norm(raw: &str) -> Result<(String, String), HostError> {
        normalize(raw).map(|a| (a.as_str().to_owned(), a.host().to_owned()))
    }

    #[test]
    fn hosts_are_lower_cased_without_trailing_dot() {
        assert_eq!(
            norm("Paid.Test").unwrap(),
            ("paid.test".into(), "paid.test".into())
        );
        assert_eq!(
            norm("paid.test.").unwrap(),
            ("paid.test".into(), "paid.test".into())
        );
        assert_eq!(
            norm("PAID.test.:8080").unwrap(),
            ("paid.test:8080".into(), "paid.test".into())
        );
        assert_eq!(norm("[::1]:80").unwrap(), ("[::1]:80".into(), "::1".into()));
        assert_eq!(norm("127.0.0.1").unwrap().1, "127.0.0.1");
        assert_eq!(norm("a.test:").unwrap().0, "a.test");
        assert!(normalize("paid.test:8080").unwrap().is_unchanged());
    }

    #[test]
    fn bad_hosts_are_refused() {
        for bad in [
            "",
            ".",
            "a..b",
            "paid.test..",
            "user@paid.test",
            "a b",
            "a/b",
            "[::1",
            "[zz]",
            "[::1]x",
            "*.a",
        ] {
            assert_eq!(norm(bad), Err(HostError::Invalid), "{bad:?}");
        }
        for bad in ["a:99999", "a:-1", "a:1x", "a:000080", "a:b:c"] {
            assert_eq!(norm(bad), Err(HostError::BadPort), "{bad:?}");
        }
    }

    #[test]
    fn patterns_are_normalised() {
        assert_eq!(
            normalize_pattern("*.Example.COM.").unwrap(),
            "*.example.com"
        );
        assert_eq!(normalize_pattern("api.test").unwrap(), "api.test");
        assert!(normalize_pattern("api.test:80").is_err());
        assert!(normalize_pattern("*").is_err());
        assert!(normalize_pattern("a/b").is_err());
    }

    proptest! {
        #[test]
        fn normalising_is_idempotent(raw in "[a-zA-Z0-9.:\\[\\]_~-]{0,30}") {
            if let Ok(a) = normalize(&raw) {
                let again = normalize(a.as_str()).unwrap();
                prop_assert_eq!(again.as_str(), a.as_str());
                prop_assert!(again.is_unchanged());
            }
        }

        /// The one-pass check accepts exactly the names the rule describes.
        #[test]
        fn name_check_is_the_rule(name in "[a-zA-Z0-9._~/:@-]{0,12}") {
            let rule = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
                && !name.split('.').any(str::is_empty);
            prop_assert_eq!(check_name(&name).is_ok(), rule);
        }
    }
}
