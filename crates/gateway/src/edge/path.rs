//! One canonical spelling of a request path, used both to match a service and as the path the
//! upstream receives, so the gateway and the upstream can never disagree about what was asked.
//!
//! The rules (in this order):
//! 1. The path must be in origin form (start with `/`).
//! 2. Percent escapes must be well formed (`%` and two hex digits). Escapes of unreserved
//!    characters (`A-Z a-z 0-9 - . _ ~`, RFC 3986 §2.3) are decoded; every other escape is kept,
//!    with upper-case hex digits.
//! 3. Refused outright: an escaped NUL (`%00`), a double escape (`%25` followed by two hex
//!    digits once unreserved escapes are decoded, which a server that decodes twice would read
//!    as a different path), and a path
//!    whose bytes, fully decoded, are not UTF-8 (overlong forms such as `%C0%AE` among them).
//! 4. Encoded separators (`%2F`, `%5C`) and raw backslashes are reported, and refused unless the
//!    service opts in (`allow_encoded_slashes`): most servers decode them into separators.
//! 5. Repeated slashes are merged; dot segments (`.`, `..`, RFC 3986 §5.2.4) are resolved, never
//!    above the root. An empty or dot segment with path parameters (`/;x/`, `/..;x/`) is
//!    refused: some servers strip the parameters, then merge the slashes and resolve the dots.
//!
//! Raw bytes outside ASCII are percent-encoded. Besides the canonical path, matching uses the
//! same path with each segment's parameters (`;…`, which Java servers strip) removed and every
//! escape decoded but `%2F`, `%5C` and `%25`, so `/paid;x` is matched as `/paid` and
//! `/v1/models%3Apredict` as `/v1/models:predict`.

use std::borrow::Cow;

/// Why a request path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The target is not a path starting with `/`.
    #[error("the request target must be a path starting with '/'")]
    NotOriginForm,
    /// A `%` not followed by two hex digits.
    #[error("the path has a malformed percent escape")]
    BadEscape,
    /// An escaped NUL byte.
    #[error("the path has an escaped NUL byte")]
    Nul,
    /// `%25` followed by two hex digits.
    #[error("the path is percent-encoded twice")]
    DoubleEncoded,
    /// The decoded path is not UTF-8 (for example an overlong encoding).
    #[error("the decoded path is not valid UTF-8")]
    InvalidUtf8,
    /// An empty, `.` or `..` segment carrying path parameters (`/;x/`, `/..;x/`).
    #[error("the path has an empty or dot segment with parameters")]
    DotSegmentParameter,
}

/// A request path in canonical form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalPath<'a> {
    path: Cow<'a, str>,
    match_path: Option<String>,
    encoded_separator: bool,
}

impl<'a> CanonicalPath<'a> {
    /// The canonical path: what the upstream receives.
    pub fn as_str(&self) -> &str {
        &self.path
    }

    /// The path services are matched against: the canonical path without segment parameters.
    pub fn match_path(&self) -> &str {
        self.match_path.as_deref().unwrap_or(&self.path)
    }

    /// Whether the path holds `%2F`, `%5C` or `\` (refused unless the service allows them).
    pub fn has_encoded_separator(&self) -> bool {
        self.encoded_separator
    }

    /// Whether the canonical path is the raw path unchanged.
    pub fn is_unchanged(&self) -> bool {
        matches!(self.path, Cow::Borrowed(_))
    }

    /// The canonical path, owned.
    pub fn into_owned(self) -> CanonicalPath<'static> {
        CanonicalPath {
            path: Cow::Owned(self.path.into_owned()),
            match_path: self.match_path,
            encoded_separator: self.encoded_separator,
        }
    }
}

/// Puts `raw` (the path of a request target, without its query) into canonical form.
pub fn canonicalize(raw: &str) -> Result<CanonicalPath<'_>, PathError> {
    if !raw.starts_with('/') {
        return Err(PathError::NotOriginForm);
    }
    let bytes = raw.as_bytes();
    if is_plain(bytes) {
        return Ok(CanonicalPath {
            path: Cow::Borrowed(raw),
            match_path: None,
            encoded_separator: false,
        });
    }
    let (decoded, encoded_separator) = decode_unreserved(bytes)?;
    let path = resolve_segments(&decoded)?;
    let match_path = match_form(&path)?;
    let path = if path == raw {
        Cow::Borrowed(raw)
    } else {
        Cow::Owned(path)
    };
    Ok(CanonicalPath {
        path,
        match_path,
        encoded_separator,
    })
}

/// The common case: nothing to decode, merge or resolve, no parameters: no `%`, `\`, `;` or
/// byte outside ASCII, and no `//` or `/.`. One pass over the bytes.
fn is_plain(bytes: &[u8]) -> bool {
    let mut prev = 0u8;
    for &b in bytes {
        if matches!(b, b'%' | b'\\' | b';') || !b.is_ascii() {
            return false;
        }
        if prev == b'/' && matches!(b, b'/' | b'.') {
            return false;
        }
        prev = b;
    }
    true
}

/// Decodes escapes of unreserved characters, upper-cases the others and escapes raw bytes
/// outside ASCII; checks that the fully decoded path is UTF-8 and holds no NUL. Returns the path
/// and whether it holds an encoded separator.
fn decode_unreserved(bytes: &[u8]) -> Result<(String, bool), PathError> {
    let mut out = String::with_capacity(bytes.len());
    let mut fully_decoded = Vec::with_capacity(bytes.len());
    let mut separator = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'%' {
            separator |= b == b'\\';
            match b.is_ascii() {
                true => out.push(char::from(b)),
                false => push_escape(&mut out, b),
            }
            fully_decoded.push(b);
            i += 1;
            continue;
        }
        let (Some(hi), Some(lo)) = (
            bytes.get(i + 1).copied().and_then(hex_value),
            bytes.get(i + 2).copied().and_then(hex_value),
        ) else {
            return Err(PathError::BadEscape);
        };
        let value = hi << 4 | lo;
        match value {
            0 => return Err(PathError::Nul),
            b'/' | b'\\' => separator = true,
            _ => {}
        }
        match is_unreserved(value) {
            true => out.push(char::from(value)),
            false => push_escape(&mut out, value),
        }
        fully_decoded.push(value);
        i += 3;
    }
    if std::str::from_utf8(&fully_decoded).is_err() {
        return Err(PathError::InvalidUtf8);
    }
    // Checked on the result, so that `%25%32%65` (which decodes to `%252e`) is caught too.
    if has_double_escape(&out) {
        return Err(PathError::DoubleEncoded);
    }
    Ok((out, separator))
}

fn push_escape(out: &mut String, b: u8) {
    out.push('%');
    out.push(char::from(HEX_UPPER[usize::from(b >> 4)]));
    out.push(char::from(HEX_UPPER[usize::from(b & 0xf)]));
}

/// Whether `path` holds `%25` followed by two hex digits (a server that decodes twice reads
/// it as another escape).
fn has_double_escape(path: &str) -> bool {
    path.as_bytes().windows(5).any(|w| {
        w[0] == b'%'
            && w[1] == b'2'
            && w[2] == b'5'
            && hex_value(w[3]).is_some()
            && hex_value(w[4]).is_some()
    })
}

/// The path services are matched against: segment parameters removed, then every escape
/// decoded but those of `/`, `\` and `%` (so `/v1/models%3Apredict` is `/v1/models:predict`,
/// as most servers read it). `None` when that is the path itself.
fn match_form(path: &str) -> Result<Option<String>, PathError> {
    let stripped = without_parameters(path);
    let base = stripped.as_deref().unwrap_or(path);
    if !base.contains('%') {
        return Ok(stripped);
    }
    let bytes = base.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| {
                Some((
                    hex_value(*bytes.get(i + 1)?)?,
                    hex_value(*bytes.get(i + 2)?)?,
                ))
            })
            .flatten();
        match escaped {
            Some((hi, lo)) if !matches!(hi << 4 | lo, b'/' | b'\\' | b'%') => {
                out.push(hi << 4 | lo);
                i += 3;
            }
            _ => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out)
        .map(Some)
        .map_err(|_| PathError::InvalidUtf8)
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Merges repeated slashes and resolves dot segments; a trailing slash (or a trailing dot
/// segment) leaves the path ending in `/`.
fn resolve_segments(path: &str) -> Result<String, PathError> {
    let mut kept: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for segment in path.split('/').skip(1) {
        trailing_slash = false;
        let base = segment.split(';').next().unwrap_or_default();
        let has_parameters = base.len() != segment.len();
        match base {
            "" | "." | ".." if has_parameters => return Err(PathError::DotSegmentParameter),
            "" if !has_parameters => trailing_slash = true,
            "." => trailing_slash = true,
            ".." => {
                kept.pop();
                trailing_slash = true;
            }
            _ => kept.push(segment),
        }
    }
    let mut out = String::with_capacity(path.len());
    for segment in &kept {
        out.push('/');
        out.push_str(segment);
    }
    if trailing_slash || out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// The path with each segment's parameters removed (no segment is left empty: those are
/// refused), or `None` when it has none.
fn without_parameters(path: &str) -> Option<String> {
    if !path.contains(';') {
        return None;
    }
    let mut out = String::with_capacity(path.len());
    for segment in path.split('/').skip(1) {
        if !segment.is_empty() {
            out.push('/');
            out.push_str(segment.split(';').next().unwrap_or_default());
        }
    }
    if path.ends_with('/') || out.is_empty() {
        out.push('/');
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn canon(raw: &str) -> Result<(String, String, bool), PathError> {
        canonicalize(raw).map(|c| {
            (
                c.as_str().to_owned(),
                c.match_path().to_owned(),
                c.has_encoded_separator(),
            )
        })
    }

    fn path(raw: &str) -> String {
        canon(raw).unwrap().0
    }

    #[test]
    fn plain_paths_are_borrowed_unchanged() {
        for p in ["/", "/a", "/a/b/", "/a.b/c-d_e~f", "/a..b", "/a.", "/x?"] {
            let c = canonicalize(p).unwrap();
            assert!(c.is_unchanged(), "{p}");
            assert_eq!(c.as_str(), p);
        }
    }

    #[test]
    fn dot_segments_and_repeated_slashes_are_resolved() {
        assert_eq!(path("/docs/../secret"), "/secret");
        assert_eq!(path("/docs/./secret"), "/docs/secret");
        assert_eq!(path("/./secret"), "/secret");
        assert_eq!(path("//secret"), "/secret");
        assert_eq!(path("/a//b///c"), "/a/b/c");
        assert_eq!(path("/../../secret"), "/secret");
        assert_eq!(path("/a/b/.."), "/a/");
        assert_eq!(path("/a/b/."), "/a/b/");
        assert_eq!(path("/a/"), "/a/");
        assert_eq!(path("/.."), "/");
        assert_eq!(path("/x/.%2e/secret"), "/secret");
        assert_eq!(path("/docs/%2e%2e/secret"), "/secret");
        assert_eq!(path("/docs/%2E%2e/secret"), "/secret");
        assert_eq!(path("/docs/.%2E/secret"), "/secret");
    }

    #[test]
    fn unreserved_escapes_are_decoded_and_others_upper_cased() {
        assert_eq!(path("/secr%65t"), "/secret");
        assert_eq!(path("/secr%45t"), "/secrEt");
        assert_eq!(path("/a%7eb%5fc"), "/a~b_c");
        assert_eq!(path("/a%20b"), "/a%20b");
        assert_eq!(path("/a%3fb"), "/a%3Fb");
        assert_eq!(path("/caf%c3%a9"), "/caf%C3%A9");
        assert_eq!(path("/100%25"), "/100%25");
    }

    #[test]
    fn encoded_separators_are_reported_not_decoded() {
        assert_eq!(
            canon("/docs/..%2fsecret").unwrap(),
            ("/docs/..%2Fsecret".into(), "/docs/..%2Fsecret".into(), true)
        );
        assert!(canon("/%2fsecret").unwrap().2);
        assert!(canon("/a%5cb").unwrap().2);
        assert!(canon("/a\\b").unwrap().2);
        assert!(!canon("/a%2eb").unwrap().2);
    }

    #[test]
    fn dangerous_spellings_are_refused() {
        assert_eq!(canon("/a%00b"), Err(PathError::Nul));
        assert_eq!(canon("/a%2"), Err(PathError::BadEscape));
        assert_eq!(canon("/a%zz"), Err(PathError::BadEscape));
        assert_eq!(canon("/a%"), Err(PathError::BadEscape));
        assert_eq!(canon("/a%252e%252e/b"), Err(PathError::DoubleEncoded));
        assert_eq!(canon("/%c0%ae%c0%ae/secret"), Err(PathError::InvalidUtf8));
        assert_eq!(canon("/%e0%80%ae/secret"), Err(PathError::InvalidUtf8));
        assert_eq!(canon("/%ff"), Err(PathError::InvalidUtf8));
        assert_eq!(
            canon("/docs/..;/secret"),
            Err(PathError::DotSegmentParameter)
        );
        assert_eq!(
            canon("/docs/.;x/secret"),
            Err(PathError::DotSegmentParameter)
        );
        assert_eq!(
            canon("/docs/%2e%2e;x/secret"),
            Err(PathError::DotSegmentParameter)
        );
        assert_eq!(canon("secret"), Err(PathError::NotOriginForm));
        assert_eq!(canon("*"), Err(PathError::NotOriginForm));
        assert_eq!(canon(""), Err(PathError::NotOriginForm));
    }

    #[test]
    fn matching_sees_every_escape_decoded_but_separators_and_percent() {
        assert_eq!(
            canon("/v1/models%3Apredict").unwrap(),
            (
                "/v1/models%3Apredict".into(),
                "/v1/models:predict".into(),
                false
            )
        );
        assert_eq!(canon("/caf%c3%a9").unwrap().1, "/café");
        assert_eq!(canon("/a%2Fb%5Cc%25d").unwrap().1, "/a%2Fb%5Cc%25d");
        assert_eq!(canon("/a%20b;x").unwrap().1, "/a b");
    }

    #[test]
    fn raw_bytes_outside_ascii_are_escaped_not_garbled() {
        assert_eq!(
            canon("/café/./x").unwrap(),
            ("/caf%C3%A9/x".into(), "/café/x".into(), false)
        );
    }

    #[test]
    fn double_escapes_are_found_after_decoding() {
        assert_eq!(
            canon("/docs/%25%32%65%25%32%65/secret"),
            Err(PathError::DoubleEncoded)
        );
        assert_eq!(canon("/docs/%252%65/secret"), Err(PathError::DoubleEncoded));
        assert_eq!(
            canon("/docs/%25%32%66secret"),
            Err(PathError::DoubleEncoded)
        );
        assert!(canon("/50%25off").is_ok());
    }

    #[test]
    fn parameters_are_kept_but_not_matched() {
        assert_eq!(
            canon("/secret;jsessionid=1").unwrap(),
            ("/secret;jsessionid=1".into(), "/secret".into(), false)
        );
        assert_eq!(canon("/a;x/b;y/").unwrap().1, "/a/b/");
        assert_eq!(canon("/a;/b").unwrap().1, "/a/b");
        assert_eq!(canon("/;x/secret"), Err(PathError::DotSegmentParameter));
        assert_eq!(
            canon("/free/x/;x/../../paid"),
            Err(PathError::DotSegmentParameter)
        );
    }

    /// What a server that decodes every escape, strips parameters and resolves dots would act
    /// on (the upstreams the rules protect against), or `None` if it would refuse.
    fn server_view(raw: &str) -> Option<String> {
        let mut decoded = Vec::new();
        let b = raw.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' {
                let v = u8::from_str_radix(raw.get(i + 1..i + 3)?, 16).ok()?;
                decoded.push(v);
                i += 3;
            } else {
                decoded.push(b[i]);
                i += 1;
            }
        }
        let s = String::from_utf8(decoded).ok()?.replace('\\', "/");
        let stripped: Vec<&str> = s
            .split('/')
            .map(|seg| seg.split(';').next().unwrap_or_default())
            .collect();
        resolve_segments(&stripped.join("/")).ok()
    }

    proptest! {
        #[test]
        fn the_plain_test_is_the_pattern_search_it_replaced(raw in "[a-z/.%;\\\\é]{0,24}") {
            let searched = !raw
                .bytes()
                .any(|b| matches!(b, b'%' | b'\\' | b';') || !b.is_ascii())
                && !raw.contains("//")
                && !raw.contains("/.");
            prop_assert_eq!(is_plain(raw.as_bytes()), searched);
        }

        #[test]
        fn never_panics_and_is_idempotent(raw in "/[a-zA-Z0-9%./;\\\\~_é-]{0,40}") {
            if let Ok(c) = canonicalize(&raw) {
                let again = canonicalize(c.as_str()).unwrap();
                prop_assert_eq!(again.as_str(), c.as_str());
                prop_assert!(c.as_str().starts_with('/'));
                prop_assert!(!c.as_str().contains("//"));
            }
        }

        /// Without encoded separators, a server that decodes, strips parameters and resolves
        /// dots (case aside) acts on the path that was matched.
        #[test]
        fn a_normalising_server_sees_the_matched_path(
            raw in "/([a-c]|%2[eE]|%6[1-3]|\\.|\\.\\.|/|;x){0,12}"
        ) {
            if let Ok(c) = canonicalize(&raw)
                && !c.has_encoded_separator()
            {
                let server = server_view(c.as_str()).unwrap();
                prop_assert_eq!(server, c.match_path().to_owned(), "raw {}", raw);
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(raw in any::<Vec<u8>>()) {
            if let Ok(s) = std::str::from_utf8(&raw) {
                let _ = canonicalize(s);
            }
        }
    }
}
