//! Which IP address a request comes from, also behind load balancers and reverse proxies.
//!
//! The TCP peer is the client unless it is one of the operator's [`TrustedProxies`]. A trusted
//! peer's forwarding chain (`Forwarded`, RFC 7239, or `X-Forwarded-For`) is then walked from the
//! right: every proxy appends the address it received the request from, so the entries to the
//! right of a trusted hop were written by trusted proxies, and the first address that is not a
//! trusted proxy is the client. Everything to its left was written by the client itself (or by
//! proxies the operator does not trust) and is never used: a client cannot choose its address.
//!
//! ```text
//! X-Forwarded-For: 6.6.6.6, 203.0.113.9, 10.0.0.2      peer: 10.0.0.3 (trusted: 10.0.0.0/8)
//!                  ^forged  ^client      ^trusted hop
//! ```

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use http::header::{FORWARDED, HeaderMap, HeaderName};

/// The de-facto standard forwarding header.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Which header a trusted peer's forwarding chain is read from.
///
/// [`ForwardedHeader::Auto`] prefers `Forwarded` when the request has one. That is only safe when
/// every trusted proxy either appends to `Forwarded` or removes a `Forwarded` header sent by the
/// client: a proxy that only maintains `X-Forwarded-For` (nginx's `$proxy_add_x_forwarded_for`,
/// AWS ALB, …) passes a client's forged `Forwarded: for=…` through untouched. Name the header
/// the proxies really maintain whenever possible.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForwardedHeader {
    /// `Forwarded` if the request has one, else `X-Forwarded-For`.
    #[default]
    Auto,
    /// Only `Forwarded` (RFC 7239).
    Forwarded,
    /// Only `X-Forwarded-For`.
    XForwardedFor,
}

/// An address block: a network address with its host bits zero, and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cidr {
    V4 { net: Ipv4Addr, prefix: u8 },
    V6 { net: Ipv6Addr, prefix: u8 },
}

fn mask_v4(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask_v6(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

impl Cidr {
    fn parse(entry: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match entry.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (entry, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{addr}` is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) if !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()) => {
                match p.parse::<u8>() {
                    Ok(p) if p <= max => p,
                    _ => return Err(format!("prefix length {p} is larger than {max}")),
                }
            }
            Some(p) => return Err(format!("`{p}` is not a prefix length")),
        };
        let cidr = match addr {
            IpAddr::V4(a) => {
                let net = Ipv4Addr::from(u32::from(a) & mask_v4(prefix));
                if net != a {
                    return Err(format!("host bits are set (the network is {net}/{prefix})"));
                }
                Cidr::V4 { net, prefix }
            }
            IpAddr::V6(a) => {
                let net = Ipv6Addr::from(u128::from(a) & mask_v6(prefix));
                if net != a {
                    return Err(format!("host bits are set (the network is {net}/{prefix})"));
                }
                Cidr::V6 { net, prefix }
            }
        };
        Ok(cidr)
    }

    fn contains_v4(&self, ip: Ipv4Addr) -> bool {
        match *self {
            Cidr::V4 { net, prefix } => u32::from(ip) & mask_v4(prefix) == u32::from(net),
            Cidr::V6 { .. } => self.contains_v6(ip.to_ipv6_mapped()),
        }
    }

    fn contains_v6(&self, ip: Ipv6Addr) -> bool {
        match *self {
            Cidr::V6 { net, prefix } => u128::from(ip) & mask_v6(prefix) == u128::from(net),
            Cidr::V4 { .. } => false,
        }
    }
}

/// The reverse proxies and load balancers whose forwarding headers are believed.
///
/// The default trusts nobody: the TCP peer is always the client.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    blocks: Vec<Cidr>,
    header: ForwardedHeader,
}

impl TrustedProxies {
    /// Parses addresses and address blocks: `"10.0.0.0/8"`, `"192.168.1.7"`, `"::1"`,
    /// `"fd00::/8"`. A block with host bits set (`"10.0.0.1/8"`) is refused as a likely typo.
    /// The error names the bad entry.
    pub fn parse(entries: &[String]) -> Result<TrustedProxies, String> {
        let blocks = entries
            .iter()
            .map(|entry| {
                Cidr::parse(entry.trim())
                    .map_err(|why| format!("invalid trusted proxy `{entry}`: {why}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TrustedProxies {
            blocks,
            header: ForwardedHeader::default(),
        })
    }

    /// Reads the forwarding chain from `header` only (the default is
    /// [`ForwardedHeader::Auto`]).
    pub fn with_header(mut self, header: ForwardedHeader) -> TrustedProxies {
        self.header = header;
        self
    }

    /// The forwarding header the trusted proxies maintain.
    pub fn forwarded_header(&self) -> ForwardedHeader {
        self.header
    }

    /// Whether no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// Whether `ip` is a trusted proxy. An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is the
    /// IPv4 address `a.b.c.d`.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip.to_canonical() {
            IpAddr::V4(v4) => self.blocks.iter().any(|b| b.contains_v4(v4)),
            IpAddr::V6(v6) => self.blocks.iter().any(|b| b.contains_v6(v6)),
        }
    }

    /// The address of the client that sent a request that arrived from `peer` with `headers`.
    ///
    /// An untrusted peer is the client, whatever the headers say. A trusted peer's forwarding
    /// chain is walked from the right, skipping trusted proxies; the first untrusted address is
    /// the client. If every address is trusted, the leftmost one is. If the chain is missing, or
    /// the walk reaches an entry that is not an address (`unknown`, an obfuscated identifier, an
    /// element without `for=`, anything malformed), the last trusted hop is: nothing to the left
    /// of such an entry can be told apart from what a client wrote.
    ///
    /// The result is in canonical form: an IPv4-mapped IPv6 address is returned as IPv4.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.contains(peer) {
            return peer;
        }
        let use_forwarded = match self.header {
            ForwardedHeader::Auto => headers.contains_key(FORWARDED),
            ForwardedHeader::Forwarded => true,
            ForwardedHeader::XForwardedFor => false,
        };
        let mut hops = Vec::new();
        if use_forwarded {
            for value in headers.get_all(FORWARDED) {
                forwarded_hops(value.as_bytes(), &mut hops);
            }
        } else {
            for value in headers.get_all(X_FORWARDED_FOR) {
                x_forwarded_for_hops(value.as_bytes(), &mut hops);
            }
        }
        let mut last_trusted = peer;
        for hop in hops.into_iter().rev() {
            match hop {
                Some(ip) => {
                    let ip = ip.to_canonical();
                    if !self.contains(ip) {
                        return ip;
                    }
                    last_trusted = ip;
                }
                None => break,
            }
        }
        last_trusted
    }
}

/// The key a per-client limit counts under: an IPv4 address as is, an IPv6 address masked to its
/// /64 (one subscriber usually owns a whole /64), as text (`"203.0.113.9"`,
/// `"2001:db8:1:2::/64"`). An IPv4-mapped IPv6 address is keyed as its IPv4 address.
pub fn client_key(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("{}/64", Ipv6Addr::from(u128::from(v6) & mask_v6(64))),
    }
}

/// One entry of a forwarding chain: an address, or `None` for anything else (`unknown`, an
/// obfuscated identifier, a malformed entry), which stops the walk.
type Hop = Option<IpAddr>;

fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if !is_ows(*first) {
            break;
        }
        s = rest;
    }
    while let [rest @ .., last] = s {
        if !is_ows(*last) {
            break;
        }
        s = rest;
    }
    s
}

/// Appends the hops of one `X-Forwarded-For` field value: comma-separated addresses, IPv4
/// optionally with a port, IPv6 bare or in brackets (optionally with a port). Empty list
/// elements are skipped (RFC 9110 §5.6.1).
fn x_forwarded_for_hops(value: &[u8], hops: &mut Vec<Hop>) {
    for element in value.split(|&b| b == b',') {
        let element = trim_ows(element);
        if !element.is_empty() {
            hops.push(parse_node(element, false));
        }
    }
}

/// Parses a node: `1.2.3.4`, `1.2.3.4:80`, `[2001:db8::1]`, `[2001:db8::1]:80`, or a bare
/// `2001:db8::1`. With `obfuscated_port`, a port may also be an RFC 7239 obfuscated port
/// (`_abc`): the address is still known.
fn parse_node(node: &[u8], obfuscated_port: bool) -> Option<IpAddr> {
    let node = std::str::from_utf8(node).ok()?;
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip);
    }
    let (addr, port) = if let Some(rest) = node.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        let ip = IpAddr::V6(v6.parse().ok()?);
        if after.is_empty() {
            return Some(ip);
        }
        (ip, after.strip_prefix(':')?)
    } else {
        let (v4, port) = node.rsplit_once(':')?;
        (IpAddr::V4(v4.parse().ok()?), port)
    };
    let numeric = !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit());
    let numeric = numeric && port.parse::<u16>().is_ok();
    let obfuscated = obfuscated_port
        && port.len() > 1
        && port.starts_with('_')
        && port
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    (numeric || obfuscated).then_some(addr)
}

/// `tchar` (RFC 9110 §5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A cursor over one `Forwarded` field value.
struct Cursor<'a> {
    s: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn skip_ows(&mut self) {
        while self.peek().is_some_and(is_ows) {
            self.pos += 1;
        }
    }

    fn token(&mut self) -> Option<&'a [u8]> {
        let start = self.pos;
        while self.peek().is_some_and(is_tchar) {
            self.pos += 1;
        }
        (self.pos > start).then(|| &self.s[start..self.pos])
    }

    /// A quoted string, the opening quote already consumed; `None` if it is not closed.
    fn quoted(&mut self) -> Option<Cow<'a, [u8]>> {
        let start = self.pos;
        let mut unescaped: Option<Vec<u8>> = None;
        loop {
            let b = self.peek()?;
            self.pos += 1;
            match b {
                b'"' => {
                    return Some(match unescaped {
                        Some(v) => Cow::Owned(v),
                        None => Cow::Borrowed(&self.s[start..self.pos - 1]),
                    });
                }
                b'\\' => {
                    let escaped = self.peek()?;
                    self.pos += 1;
                    unescaped
                        .get_or_insert_with(|| self.s[start..self.pos - 2].to_vec())
                        .push(escaped);
                }
                _ => {
                    if let Some(v) = unescaped.as_mut() {
                        v.push(b);
                    }
                }
            }
        }
    }
}

/// Appends the hops of one `Forwarded` field value (RFC 7239 §4): one hop per element, the
/// address of its `for=` parameter. An element without `for=`, or whose `for=` is `unknown`,
/// obfuscated or malformed, is a hop without an address. If the value is malformed, the
/// elements before the error are kept and one hop without an address marks the error, so a walk
/// from the right stops there: past a syntax error (an unclosed quote, say), nothing tells what
/// a client wrote from what a proxy appended.
fn forwarded_hops(value: &[u8], hops: &mut Vec<Hop>) {
    let mut c = Cursor { s: value, pos: 0 };
    loop {
        c.skip_ows();
        match c.peek() {
            None => return,
            Some(b',') => {
                c.pos += 1;
                continue;
            }
            Some(_) => {}
        }
        match forwarded_element(&mut c) {
            Some(hop) => hops.push(hop),
            None => {
                hops.push(None);
                return;
            }
        }
    }
}

/// Parses one element up to and including its terminating comma; `None` on a syntax error.
fn forwarded_element(c: &mut Cursor<'_>) -> Option<Hop> {
    let mut for_value: Option<Hop> = None;
    loop {
        c.skip_ows();
        match c.peek() {
            None => break,
            Some(b',') => {
                c.pos += 1;
                break;
            }
            Some(b';') => {
                c.pos += 1;
                continue;
            }
            Some(_) => {}
        }
        let name = c.token()?;
        if c.peek() != Some(b'=') {
            return None;
        }
        c.pos += 1;
        let value = if c.peek() == Some(b'"') {
            c.pos += 1;
            c.quoted()?
        } else {
            Cow::Borrowed(c.token()?)
        };
        if name.eq_ignore_ascii_case(b"for") {
            if for_value.is_some() {
                // A parameter must not occur twice in one element (RFC 7239 §4).
                return None;
            }
            for_value = Some(parse_node(&value, true));
        }
        c.skip_ows();
        match c.peek() {
            None | Some(b',' | b';') => {}
            Some(_) => return None,
        }
    }
    Some(for_value.flatten())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use proptest::prelude::*;

    fn trusted(entries: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(&entries.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        h
    }

    fn lb() -> TrustedProxies {
        trusted(&["10.0.0.0/8", "fd00::/8", "192.168.1.7"])
    }

    #[test]
    fn parses_addresses_and_blocks() {
        let t = trusted(&[
            "10.0.0.0/8",
            "192.168.1.7",
            "::1",
            "fd00::/8",
            " 0.0.0.0/0 ",
        ]);
        assert!(t.contains(ip("8.8.8.8")));
        let t = trusted(&["10.0.0.0/8", "192.168.1.7", "::1", "fd00::/8"]);
        assert!(t.contains(ip("10.255.0.1")));
        assert!(t.contains(ip("192.168.1.7")));
        assert!(!t.contains(ip("192.168.1.8")));
        assert!(!t.contains(ip("11.0.0.1")));
        assert!(t.contains(ip("::1")));
        assert!(!t.contains(ip("::2")));
        assert!(t.contains(ip("fdff::1")));
        assert!(!t.contains(ip("fe00::1")));
        assert!(t.contains(ip("::ffff:10.1.2.3")), "IPv4-mapped is IPv4");
        assert!(!t.contains(ip("::ffff:11.1.2.3")));
        let mapped = trusted(&["::ffff:10.0.0.0/104"]);
        assert!(mapped.contains(ip("10.9.9.9")));
        assert!(!mapped.contains(ip("11.9.9.9")));
        let all6 = trusted(&["::/0"]);
        assert!(all6.contains(ip("2001:db8::1")));
        assert!(!TrustedProxies::default().contains(ip("127.0.0.1")));
        assert!(TrustedProxies::default().is_empty());
    }

    #[test]
    fn parse_errors_name_the_entry() {
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0.1/8",
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/-1",
            "10.0.0.0/8/8",
            "10.0.0",
            "example.com",
            "",
            "[::1]",
            "fe80::1%eth0",
        ] {
            let err = TrustedProxies::parse(&["::1".into(), bad.into()]).unwrap_err();
            assert!(err.contains(&format!("`{bad}`")), "{bad}: {err}");
        }
        let err = TrustedProxies::parse(&["10.0.0.1/8".into()]).unwrap_err();
        assert!(err.contains("10.0.0.0/8"), "{err}");
    }

    #[test]
    fn untrusted_peer_is_the_client_whatever_the_headers() {
        let h = headers(&[("x-forwarded-for", "1.1.1.1"), ("forwarded", "for=2.2.2.2")]);
        assert_eq!(lb().client_ip(ip("203.0.113.5"), &h), ip("203.0.113.5"));
        assert_eq!(
            TrustedProxies::default().client_ip(ip("10.0.0.1"), &h),
            ip("10.0.0.1")
        );
        assert_eq!(
            lb().client_ip(ip("::ffff:203.0.113.5"), &h),
            ip("203.0.113.5")
        );
    }

    #[test]
    fn x_forwarded_for_is_walked_from_the_right() {
        let t = lb();
        let peer = ip("10.0.0.3");
        let client = |xff: &[&str]| {
            let pairs: Vec<_> = xff.iter().map(|v| ("x-forwarded-for", *v)).collect();
            t.client_ip(peer, &headers(&pairs))
        };
        assert_eq!(client(&[]), peer, "no header: the peer");
        assert_eq!(client(&["203.0.113.9"]), ip("203.0.113.9"));
        assert_eq!(
            client(&["6.6.6.6, 203.0.113.9, 10.0.0.2"]),
            ip("203.0.113.9")
        );
        assert_eq!(
            client(&["6.6.6.6", "203.0.113.9", "10.0.0.2"]),
            ip("203.0.113.9"),
            "several field lines are one list"
        );
        assert_eq!(
            client(&["6.6.6.6,203.0.113.9:4711 ,10.0.0.2:80"]),
            ip("203.0.113.9")
        );
        assert_eq!(client(&["[2001:db8::1]:4711, fd00::2"]), ip("2001:db8::1"));
        assert_eq!(client(&["2001:db8::1, [fd00::2]"]), ip("2001:db8::1"));
        assert_eq!(client(&["::ffff:203.0.113.9"]), ip("203.0.113.9"));
        assert_eq!(client(&["203.0.113.9, , 10.0.0.2"]), ip("203.0.113.9"));
        assert_eq!(client(&[""]), peer);
        // All trusted: the leftmost.
        assert_eq!(client(&["10.0.0.1, 192.168.1.7, 10.0.0.2"]), ip("10.0.0.1"));
        // Garbage stops the walk at the last trusted hop.
        assert_eq!(client(&["6.6.6.6, unknown, 10.0.0.2"]), ip("10.0.0.2"));
        assert_eq!(client(&["6.6.6.6, 1.2.3.4:99999"]), peer);
        assert_eq!(client(&["6.6.6.6, example.com"]), peer);
        assert_eq!(client(&["6.6.6.6, 1.2.3.4:_obf"]), peer);
        assert_eq!(client(&["6.6.6.6, \"1.2.3.4\""]), peer);
        assert_eq!(client(&["6.6.6.6, fe80::1%eth0"]), peer);
    }

    #[test]
    fn non_utf8_x_forwarded_for_element_stops_the_walk() {
        let mut h = HeaderMap::new();
        h.append(
            X_FORWARDED_FOR,
            HeaderValue::from_bytes(b"6.6.6.6, \xff\xfe, 203.0.113.9").unwrap(),
        );
        assert_eq!(lb().client_ip(ip("10.0.0.1"), &h), ip("203.0.113.9"));
        let mut h = HeaderMap::new();
        h.append(
            X_FORWARDED_FOR,
            HeaderValue::from_bytes(b"6.6.6.6, \xff\xfe, 10.0.0.9").unwrap(),
        );
        assert_eq!(lb().client_ip(ip("10.0.0.1"), &h), ip("10.0.0.9"));
    }

    #[test]
    fn forwarded_is_preferred_and_parsed() {
        let t = lb();
        let peer = ip("10.0.0.3");
        let client = |fwd: &[&str]| {
            let mut pairs: Vec<_> = fwd.iter().map(|v| ("forwarded", *v)).collect();
            pairs.push(("x-forwarded-for", "198.51.100.1"));
            t.client_ip(peer, &headers(&pairs))
        };
        assert_eq!(client(&["for=203.0.113.9"]), ip("203.0.113.9"));
        assert_eq!(
            client(&["for=6.6.6.6, for=203.0.113.9;proto=https, for=10.0.0.2"]),
            ip("203.0.113.9")
        );
        assert_eq!(
            client(&[
                "for=6.6.6.6",
                "For=\"203.0.113.9:4711\";by=10.0.0.3",
                "for=10.0.0.2"
            ]),
            ip("203.0.113.9")
        );
        assert_eq!(
            client(&[r#"for="[2001:db8::1]:4711", for="[fd00::2]""#]),
            ip("2001:db8::1")
        );
        assert_eq!(client(&[r#"for="[2001:db8::1]""#]), ip("2001:db8::1"));
        assert_eq!(client(&[r#"for="\[2001:db8::1\]""#]), ip("2001:db8::1"));
        assert_eq!(client(&["for=\"203.0.113.9:_hidden\""]), ip("203.0.113.9"));
        assert_eq!(
            client(&["for=203.0.113.9:80"]),
            peer,
            "a port must be quoted"
        );
        assert_eq!(
            client(&["proto=https;for=203.0.113.9;host=x"]),
            ip("203.0.113.9")
        );
        assert_eq!(
            client(&["for=203.0.113.9 ; proto=https"]),
            ip("203.0.113.9")
        );
        assert_eq!(
            client(&["for=203.0.113.9,,for=10.0.0.2"]),
            ip("203.0.113.9")
        );
        // Unknown, obfuscated, missing `for`: the walk stops at the last trusted hop.
        assert_eq!(
            client(&["for=6.6.6.6, for=unknown, for=10.0.0.2"]),
            ip("10.0.0.2")
        );
        assert_eq!(client(&["for=6.6.6.6, for=_hidden"]), peer);
        assert_eq!(client(&["for=6.6.6.6, proto=https"]), peer);
        assert_eq!(client(&["for=6.6.6.6, for=1.1.1.1;for=2.2.2.2"]), peer);
        // Malformed values.
        assert_eq!(client(&["for=6.6.6.6, for=\"1.1.1.1"]), peer);
        assert_eq!(client(&["for=6.6.6.6, for=1.1.1.1 x"]), peer);
        assert_eq!(client(&["for=6.6.6.6, for="]), peer);
        assert_eq!(client(&["for=6.6.6.6, 1.1.1.1"]), peer);
        assert_eq!(
            client(&["for=6.6.6.6, for=[::1]"]),
            peer,
            "unquoted brackets"
        );
        assert_eq!(client(&["for=2001:db8::1"]), peer, "':' is not a tchar");
        // A malformed line stops the walk, a later line is still read.
        assert_eq!(
            client(&["for=\"6.6.6.6", "for=203.0.113.9"]),
            ip("203.0.113.9")
        );
        assert_eq!(client(&["for=\"6.6.6.6", "for=10.0.0.2"]), ip("10.0.0.2"));
        // A quote opened by the client swallows what the proxy appended: stop, never 6.6.6.6.
        assert_eq!(client(&[r#"for="6.6.6.6, for=203.0.113.9"#]), peer);
        // An empty Forwarded header is still the chosen header.
        assert_eq!(client(&[""]), peer);
    }

    #[test]
    fn the_header_can_be_pinned() {
        let h = headers(&[
            ("forwarded", "for=6.6.6.6"),
            ("x-forwarded-for", "203.0.113.9"),
        ]);
        let peer = ip("10.0.0.1");
        assert_eq!(lb().client_ip(peer, &h), ip("6.6.6.6"));
        let xff = lb().with_header(ForwardedHeader::XForwardedFor);
        assert_eq!(xff.client_ip(peer, &h), ip("203.0.113.9"));
        let fwd = lb().with_header(ForwardedHeader::Forwarded);
        assert_eq!(
            fwd.client_ip(peer, &headers(&[("x-forwarded-for", "1.1.1.1")])),
            peer
        );
    }

    #[test]
    fn forwarded_header_deserializes() {
        #[derive(serde::Deserialize)]
        struct C {
            h: ForwardedHeader,
        }
        let h = |s: &str| toml::from_str::<C>(&format!("h = \"{s}\"")).map(|c| c.h);
        assert_eq!(h("auto").unwrap(), ForwardedHeader::Auto);
        assert_eq!(h("forwarded").unwrap(), ForwardedHeader::Forwarded);
        assert_eq!(
            h("x-forwarded-for").unwrap(),
            ForwardedHeader::XForwardedFor
        );
        assert!(h("x_forwarded_for").is_err());
    }

    #[test]
    fn client_keys() {
        assert_eq!(client_key(ip("203.0.113.9")), "203.0.113.9");
        assert_eq!(client_key(ip("::ffff:203.0.113.9")), "203.0.113.9");
        assert_eq!(
            client_key(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")),
            "2001:db8:1:2::/64"
        );
        assert_eq!(
            client_key(ip("2001:db8:1:2::1")),
            client_key(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            client_key(ip("2001:db8:1:2::1")),
            client_key(ip("2001:db8:1:3::1"))
        );
        assert_eq!(client_key(ip("::1")), "::/64");
    }

    // ---- properties ----

    /// Addresses from small pools, so that the same address shows up at several places.
    fn any_untrusted() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            (1u8..=5).prop_map(|b| IpAddr::from([203, 0, 113, b])),
            (1u16..=5).prop_map(|b| IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, b])),
            (1u8..=3).prop_map(|b| IpAddr::from(Ipv4Addr::new(198, 51, 100, b).to_ipv6_mapped())),
        ]
    }

    fn any_trusted() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            (1u8..=5).prop_map(|b| IpAddr::from([10, 0, 0, b])),
            (1u16..=5).prop_map(|b| IpAddr::from([0xfd00, 0, 0, 0, 0, 0, 0, b])),
            Just(ip("192.168.1.7")),
        ]
    }

    #[derive(Debug, Clone)]
    enum Entry {
        Addr(IpAddr),
        Junk(String),
    }

    fn any_entry() -> impl Strategy<Value = Entry> {
        prop_oneof![
            4 => any_untrusted().prop_map(Entry::Addr),
            4 => any_trusted().prop_map(Entry::Addr),
            1 => prop::sample::select(vec!["unknown", "_obf", "x", "1.2.3.4:x", "[::1"])
                .prop_map(|s| Entry::Junk(s.to_owned())),
        ]
    }

    fn xff_text(e: &Entry) -> String {
        match e {
            Entry::Addr(IpAddr::V6(a)) => format!("[{a}]"),
            Entry::Addr(a) => a.to_string(),
            Entry::Junk(s) => s.clone(),
        }
    }

    fn fwd_text(e: &Entry) -> String {
        match e {
            Entry::Addr(IpAddr::V6(a)) => format!("for=\"[{a}]:1\""),
            Entry::Addr(a) => format!("for={a}"),
            Entry::Junk(s) => format!("for=\"{s}\""),
        }
    }

    /// Printable header bytes, including quotes, backslashes, commas and obs-text.
    fn header_bytes() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(
            prop_oneof![
                prop::sample::select(b"\",;=\\[]:_ \t.f".to_vec()),
                prop::sample::select(b"for=6.6.6.6".to_vec()),
                (0x20u8..=0xff).prop_filter("DEL", |b| *b != 0x7f),
            ],
            0..40,
        )
    }

    proptest! {
        #[test]
        fn never_panics(
            peer in prop_oneof![any_trusted(), any_untrusted()],
            fwd in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..60), 0..3),
            xff in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..60), 0..3),
            printable in prop::collection::vec(header_bytes(), 0..3),
            mode in prop::sample::select(vec![
                ForwardedHeader::Auto, ForwardedHeader::Forwarded, ForwardedHeader::XForwardedFor,
            ]),
        ) {
            let t = lb().with_header(mode);
            let mut h = HeaderMap::new();
            for (name, values) in [(FORWARDED, &fwd), (X_FORWARDED_FOR, &xff), (FORWARDED, &printable), (X_FORWARDED_FOR, &printable)] {
                for v in values {
                    if let Ok(v) = HeaderValue::from_bytes(v) {
                        h.append(name.clone(), v);
                    }
                }
            }
            let got = t.client_ip(peer, &h);
            if !t.contains(peer) {
                prop_assert_eq!(got, peer.to_canonical());
            }
        }

        #[test]
        fn an_untrusted_peer_is_always_the_client(
            peer in any_untrusted(),
            chain in prop::collection::vec(any_entry(), 0..8),
            junk in header_bytes(),
        ) {
            let mut h = HeaderMap::new();
            let xff = chain.iter().map(xff_text).collect::<Vec<_>>().join(", ");
            let fwd = chain.iter().map(fwd_text).collect::<Vec<_>>().join(", ");
            h.append(X_FORWARDED_FOR, HeaderValue::from_str(&xff).unwrap());
            h.append(FORWARDED, HeaderValue::from_str(&fwd).unwrap());
            if let Ok(v) = HeaderValue::from_bytes(&junk) {
                h.append(FORWARDED, v.clone());
                h.append(X_FORWARDED_FOR, v);
            }
            prop_assert_eq!(lb().client_ip(peer, &h), peer.to_canonical());
        }

        /// Walking a well-formed chain: the result is the rightmost untrusted address, or a
        /// trusted one; never an address that appears only to the left of an untrusted one.
        #[test]
        fn never_an_address_left_of_an_untrusted_one(
            peer in any_trusted(),
            chain in prop::collection::vec(any_entry(), 0..8),
            forwarded in any::<bool>(),
            split_lines in any::<bool>(),
        ) {
            let t = lb();
            let texts: Vec<String> =
                chain.iter().map(if forwarded { fwd_text } else { xff_text }).collect();
            let name = if forwarded { FORWARDED } else { X_FORWARDED_FOR };
            let mut h = HeaderMap::new();
            if split_lines {
                for text in &texts {
                    h.append(name.clone(), HeaderValue::from_str(text).unwrap());
                }
            } else if !texts.is_empty() {
                h.append(name.clone(), HeaderValue::from_str(&texts.join(", ")).unwrap());
            }
            let got = t.client_ip(peer, &h);
            prop_assert_eq!(got, got.to_canonical());
            // The model: walk from the right.
            let mut expected = peer.to_canonical();
            for e in chain.iter().rev() {
                match e {
                    Entry::Addr(a) if t.contains(*a) => expected = a.to_canonical(),
                    Entry::Addr(a) => { expected = a.to_canonical(); break; }
                    Entry::Junk(_) => break,
                }
            }
            prop_assert_eq!(got, expected);
            // The invariant, stated directly.
            if let Some(u) = chain.iter().rposition(|e| matches!(e, Entry::Addr(a) if !t.contains(*a))) {
                let at_or_right = chain[u..].iter().any(|e| matches!(e, Entry::Addr(a) if a.to_canonical() == got));
                prop_assert!(got == peer.to_canonical() || at_or_right);
            }
        }

        /// A client controls the start of the chain, proxies append to it. Whatever the
        /// client writes, the result is the address the proxies appended or a trusted one.
        #[test]
        fn a_client_prefix_cannot_choose_the_result(
            peer in any_trusted(),
            junk in header_bytes(),
            real in any_untrusted(),
            hops in prop::collection::vec(any_trusted(), 0..3),
            forwarded in any::<bool>(),
            same_line in any::<bool>(),
        ) {
            let t = lb();
            let real = real.to_canonical();
            let mut appended = vec![Entry::Addr(real)];
            appended.extend(hops.into_iter().map(Entry::Addr));
            let texts: Vec<String> =
                appended.iter().map(if forwarded { fwd_text } else { xff_text }).collect();
            let name = if forwarded { FORWARDED } else { X_FORWARDED_FOR };
            let mut h = HeaderMap::new();
            let Ok(junk_value) = HeaderValue::from_bytes(&junk) else { return Ok(()) };
            if same_line {
                let mut line = junk.clone();
                line.extend_from_slice(b", ");
                line.extend_from_slice(texts.join(", ").as_bytes());
                h.append(name.clone(), HeaderValue::from_bytes(&line).unwrap());
            } else {
                h.append(name.clone(), junk_value);
                h.append(name.clone(), HeaderValue::from_str(&texts.join(", ")).unwrap());
            }
            let got = t.client_ip(peer, &h);
            prop_assert!(got == real || t.contains(got), "got {}", got);
            if !forwarded || !same_line {
                // Without quoting, or on its own line, the appended part is read as written.
                prop_assert_eq!(got, real);
            }
        }
    }
}
