//! Parsing an upstream's HTTP/1.x response head: status, headers (hop-by-hop ones dropped) and
//! how the body is framed (RFC 9112 §6.3).

use bytes::{Buf, BytesMut};
use http::StatusCode;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Most header fields accepted in one response.
pub const MAX_HEADERS: usize = 128;
/// Largest response head accepted.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Why a response head was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// Not an HTTP/1.x response head.
    #[error("malformed response head: {0}")]
    Malformed(String),
    /// Larger than [`MAX_HEAD_BYTES`] or with more than [`MAX_HEADERS`] fields.
    #[error("response head too large")]
    TooLarge,
    /// `Content-Length` not a number, or several different ones.
    #[error("invalid Content-Length")]
    BadContentLength,
    /// `101 Switching Protocols`, which the gateway never asks for.
    #[error("unexpected protocol switch")]
    UnexpectedSwitch,
}

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (a `HEAD` request, `204`, `304`).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the upstream closes the connection.
    UntilClose,
}

/// A parsed response head.
#[derive(Debug)]
pub struct ResponseHead {
    /// The status (never 1xx).
    pub status: StatusCode,
    /// The end-to-end header fields.
    pub headers: HeaderMap,
    /// How the body is delimited.
    pub framing: Framing,
    /// Whether the connection can carry another request after this response.
    pub keep_alive: bool,
    /// How long the upstream keeps the connection open while idle (`Keep-Alive: timeout=N`).
    pub idle_timeout: Option<std::time::Duration>,
}

/// Where one header field lies in the head.
#[derive(Clone, Copy, Default)]
struct FieldAt {
    name: (usize, usize),
    value: (usize, usize),
}

/// Fields tried first: most responses have far fewer, and the arrays are on the stack.
const USUAL_HEADERS: usize = 32;

/// Parses the response head at the front of `buf`, skipping interim (1xx) responses, and
/// removes it from `buf`. `Ok(None)`: the head is not complete yet.
pub fn parse(
    buf: &mut BytesMut,
    request_was_head: bool,
) -> Result<Option<ResponseHead>, HeadError> {
    if buf.is_empty() {
        return Ok(None);
    }
    match parse_with::<USUAL_HEADERS>(buf, request_was_head) {
        Some(result) => result,
        None => {
            parse_with::<MAX_HEADERS>(buf, request_was_head).unwrap_or(Err(HeadError::TooLarge))
        }
    }
}

/// [`parse`] with room for `N` fields; `None` when the head has more.
fn parse_with<const N: usize>(
    buf: &mut BytesMut,
    request_was_head: bool,
) -> Option<Result<Option<ResponseHead>, HeadError>> {
    loop {
        let mut fields = [httparse::EMPTY_HEADER; N];
        let mut at = [FieldAt::default(); N];
        let mut response = httparse::Response::new(&mut fields);
        let len = match response.parse(buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
                return Some(Err(HeadError::TooLarge));
            }
            Ok(httparse::Status::Partial) => return Some(Ok(None)),
            Err(httparse::Error::TooManyHeaders) => return None,
            Err(e) => return Some(Err(HeadError::Malformed(e.to_string()))),
        };
        if len > MAX_HEAD_BYTES {
            return Some(Err(HeadError::TooLarge));
        }
        let code = response.code.unwrap_or(0);
        let http11 = response.version == Some(1);
        if code == 101 {
            return Some(Err(HeadError::UnexpectedSwitch));
        }
        if (100..200).contains(&code) {
            buf.advance(len);
            continue;
        }
        let Ok(status) = StatusCode::from_u16(code) else {
            return Some(Err(HeadError::Malformed(format!("status {code}"))));
        };
        let base = buf.as_ptr() as usize;
        let count = response.headers.len();
        for (slot, field) in at.iter_mut().zip(response.headers.iter()) {
            let name = field.name.as_ptr() as usize - base;
            let value = field.value.as_ptr() as usize - base;
            *slot = FieldAt {
                name: (name, name + field.name.len()),
                value: (value, value + field.value.len()),
            };
        }
        let head = buf.split_to(len).freeze();
        return Some(build(&head, &at[..count], status, http11, request_was_head).map(Some));
    }
}

/// Builds the header map and the framing from the located fields.
fn build(
    head: &bytes::Bytes,
    fields: &[FieldAt],
    status: StatusCode,
    http11: bool,
    request_was_head: bool,
) -> Result<ResponseHead, HeadError> {
    let mut close = false;
    let mut keep_alive_token = false;
    let mut connection_named: Vec<HeaderName> = Vec::new();
    let mut content_length: Option<u64> = None;
    let mut transfer_encoding = false;
    let mut chunked_last = false;
    let mut idle_timeout = None;
    let mut headers = HeaderMap::with_capacity(fields.len());

    for f in fields {
        let name = HeaderName::from_bytes(&head[f.name.0..f.name.1])
            .map_err(|_| HeadError::Malformed("invalid header name".into()))?;
        let raw = &head[f.value.0..f.value.1];
        if name == header::CONNECTION {
            for token in connection_tokens(raw) {
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    keep_alive_token = true;
                } else if let Ok(named) = HeaderName::from_bytes(token) {
                    connection_named.push(named);
                }
            }
            continue;
        }
        if name == header::TRANSFER_ENCODING {
            transfer_encoding = true;
            // Only the last coding of the last field counts.
            if let Some(last) = raw.rsplit(|&b| b == b',').next() {
                chunked_last = last.trim_ascii().eq_ignore_ascii_case(b"chunked");
            }
            continue;
        }
        if name == header::CONTENT_LENGTH {
            for part in raw.split(|&b| b == b',') {
                let n = parse_length(part.trim_ascii()).ok_or(HeadError::BadContentLength)?;
                if content_length.is_some_and(|prior| prior != n) {
                    return Err(HeadError::BadContentLength);
                }
                content_length = Some(n);
            }
        }
        if name.as_str() == "keep-alive" {
            idle_timeout = keep_alive_timeout(raw).or(idle_timeout);
        }
        if is_hop_by_hop(&name) {
            continue;
        }
        let value = HeaderValue::from_maybe_shared(head.slice(f.value.0..f.value.1))
            .map_err(|_| HeadError::Malformed("invalid header value".into()))?;
        headers.append(name, value);
    }
    for named in connection_named {
        headers.remove(named);
    }

    let mut keep_alive = if http11 {
        !close
    } else {
        keep_alive_token && !close
    };
    let framing = if request_was_head
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        Framing::Empty
    } else if transfer_encoding {
        // A length next to a transfer coding is ignored (and not passed on), but such a message,
        // or a transfer coding from an HTTP/1.0 server, leaves the connection suspect
        // (RFC 9112 §6.1, §6.3).
        if headers.remove(header::CONTENT_LENGTH).is_some() || !http11 {
            keep_alive = false;
        }
        if !chunked_last {
            // Another coding would reach the client undeclared (Transfer-Encoding is
            // hop-by-hop): refused.
            return Err(HeadError::Malformed(
                "transfer coding other than chunked".into(),
            ));
        }
        Framing::Chunked
    } else if let Some(n) = content_length {
        Framing::Length(n)
    } else {
        keep_alive = false;
        Framing::UntilClose
    };
    Ok(ResponseHead {
        status,
        headers,
        framing,
        keep_alive,
        idle_timeout,
    })
}

/// The `timeout=N` parameter of a `Keep-Alive` field.
fn keep_alive_timeout(raw: &[u8]) -> Option<std::time::Duration> {
    raw.split(|&b| b == b',').find_map(|param| {
        let (key, value) = std::str::from_utf8(param).ok()?.split_once('=')?;
        if !key.trim().eq_ignore_ascii_case("timeout") {
            return None;
        }
        let secs: u64 = value.trim().trim_matches('"').parse().ok()?;
        Some(std::time::Duration::from_secs(secs))
    })
}

/// The options of a `Connection` field value, trimmed.
pub fn connection_tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// Decimal digits only, no sign, no overflow.
fn parse_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0'))
    })
}

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1).
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    is_hop_by_hop_name(name.as_str())
}

/// [`is_hop_by_hop`] for a lower-case name.
pub fn is_hop_by_hop_name(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "keep-alive"
            | "proxy-connection"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_all(wire: &[u8], head: bool) -> Result<Option<(ResponseHead, Vec<u8>)>, HeadError> {
        let mut buf = BytesMut::from(wire);
        Ok(parse(&mut buf, head)?.map(|h| (h, buf.to_vec())))
    }

    #[test]
    fn parses_a_length_delimited_response_and_leaves_the_body() {
        let (h, rest) = parse_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nX-A: 1\r\nX-A: 2\r\n\r\nhello",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.status, StatusCode::OK);
        assert_eq!(h.framing, Framing::Length(5));
        assert!(h.keep_alive);
        assert_eq!(h.headers["content-type"], "text/plain");
        assert_eq!(h.headers["content-length"], "5");
        assert_eq!(h.headers.get_all("x-a").iter().count(), 2);
        assert_eq!(rest, b"hello");
    }

    #[test]
    fn partial_heads_ask_for_more() {
        assert!(
            parse_all(b"HTTP/1.1 200 OK\r\nContent-Le", false)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn drops_hop_by_hop_and_connection_named_fields() {
        let (h, _) = parse_all(
            b"HTTP/1.1 200 OK\r\nConnection: x-hop, close\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\nX-Kept: 1\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.framing, Framing::Chunked);
        assert!(!h.keep_alive);
        let names: Vec<_> = h.headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-kept"]);
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let framing = |wire: &[u8], head: bool| {
            let (h, _) = parse_all(wire, head).unwrap().unwrap();
            (h.framing, h.keep_alive)
        };
        assert_eq!(
            framing(b"HTTP/1.1 204 No Content\r\n\r\n", false),
            (Framing::Empty, true)
        );
        assert_eq!(
            framing(
                b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
                false
            ),
            (Framing::Empty, true)
        );
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", true),
            (Framing::Empty, true)
        );
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\n\r\n", false),
            (Framing::UntilClose, false)
        );
        assert!(matches!(
            parse_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false),
            Err(HeadError::Malformed(_))
        ));
        assert_eq!(
            framing(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
                false
            ),
            (Framing::Chunked, false)
        );
        assert_eq!(
            framing(
                b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n",
                false
            ),
            (Framing::Chunked, false)
        );
        assert_eq!(
            framing(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false),
            (Framing::Length(1), false)
        );
        assert_eq!(
            framing(
                b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n",
                false
            ),
            (Framing::Length(1), true)
        );
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\n\r\n", false),
            (Framing::Length(7), true)
        );
    }

    #[test]
    fn reads_the_upstreams_idle_timeout() {
        let (h, _) = parse_all(
            b"HTTP/1.1 200 OK\r\nKeep-Alive: max=100, timeout=5\r\nContent-Length: 0\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.idle_timeout, Some(std::time::Duration::from_secs(5)));
        assert!(h.headers.get("keep-alive").is_none());
        let (h, _) = parse_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false)
            .unwrap()
            .unwrap();
        assert_eq!(h.idle_timeout, None);
    }

    #[test]
    fn skips_interim_responses_and_refuses_switches() {
        let (h, rest) = parse_all(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
            false,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.status, StatusCode::CREATED);
        assert!(rest.is_empty());
        assert_eq!(
            parse_all(b"HTTP/1.1 101 Switching Protocols\r\n\r\n", false).unwrap_err(),
            HeadError::UnexpectedSwitch
        );
    }

    #[test]
    fn refuses_bad_lengths_and_oversized_heads() {
        for cl in ["-1", "1x", "", "5, 6", "99999999999999999999"] {
            let wire = format!("HTTP/1.1 200 OK\r\nContent-Length: {cl}\r\n\r\n");
            assert_eq!(
                parse_all(wire.as_bytes(), false).unwrap_err(),
                HeadError::BadContentLength,
                "{cl:?}"
            );
        }
        let mut big = b"HTTP/1.1 200 OK\r\nX-Big: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_HEAD_BYTES));
        assert_eq!(parse_all(&big, false).unwrap_err(), HeadError::TooLarge);
        let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("X-{i}: 1\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(parse_all(&many, false).unwrap_err(), HeadError::TooLarge);
        assert!(matches!(
            parse_all(b"SMTP ready\r\n\r\n", false),
            Err(HeadError::Malformed(_))
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(wire in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = parse_all(&wire, false);
            let mut prefixed = b"HTTP/1.1 200 OK\r\n".to_vec();
            prefixed.extend_from_slice(&wire);
            let _ = parse_all(&prefixed, false);
        }

        #[test]
        fn generated_heads_keep_their_fields_and_body(
            status in 200u16..600,
            values in proptest::collection::vec("[a-zA-Z0-9 ;=/-]{0,20}", 0..10),
            length in 0u64..100_000,
            split in 1usize..200,
        ) {
            let mut wire = format!("HTTP/1.1 {status} Whatever\r\nContent-Length: {length}\r\n");
            for (i, v) in values.iter().enumerate() {
                wire.push_str(&format!("X-F{i}: {v}\r\n"));
            }
            wire.push_str("\r\nBODY");
            let wire = wire.into_bytes();
            // Fed in two pieces: the first may be partial.
            let split = split.min(wire.len());
            let mut buf = BytesMut::from(&wire[..split]);
            let head = match parse(&mut buf, false).unwrap() {
                Some(h) => {
                    buf.extend_from_slice(&wire[split..]);
                    h
                }
                None => {
                    buf.extend_from_slice(&wire[split..]);
                    parse(&mut buf, false).unwrap().unwrap()
                }
            };
            prop_assert_eq!(head.status.as_u16(), status);
            let expect = if status == 204 || status == 304 { Framing::Empty } else { Framing::Length(length) };
            prop_assert_eq!(head.framing, expect);
            for (i, v) in values.iter().enumerate() {
                let got = head.headers.get(format!("x-f{i}")).unwrap().as_bytes();
                prop_assert_eq!(got, v.trim().as_bytes());
            }
            prop_assert_eq!(&buf[..], b"BODY");
        }
    }
}
