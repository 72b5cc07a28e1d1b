//! A service as the pipeline uses it: every field of its `[[services]]` table parsed once into
//! a checked value (upstream URL, host pattern, canonical path, method, prices in exact money
//! types, the pricer's URL), or an error naming the key at fault.

use std::time::Duration;

use http::Uri;
use turnpike_l402::{Msat, Sats};

use crate::config::{ConfigError, FreeTierConfig, PricerConfig, RouteConfig, ServiceConfig};

/// A priced route ready to serve: a service, or one of its routes.
#[derive(Debug, Clone)]
pub struct Service {
    /// Name used in caveats (`<service>` or `<service>.<route>`).
    pub name: String,
    /// The route's own name (`<route>`), when this is a route of a service.
    pub route: Option<String>,
    host: Option<HostMatch>,
    path: Option<PathMatch>,
    method: Option<http::Method>,
    /// Upstream to forward to.
    pub upstream: UpstreamUrl,
    /// Price of one payment (zero: free).
    pub price: Sats,
    /// Calls one payment buys; `None` for a time pass (unlimited calls until it expires).
    pub calls: Option<u64>,
    /// Seconds from issue until the token expires, if it does.
    pub lifetime_secs: Option<u64>,
    /// Whether an upstream 5xx gives the call back.
    pub refund_on_5xx: bool,
    /// Time allowed for upstream response headers.
    pub upstream_timeout: Duration,
    /// Free calls per client per window, if any.
    pub free_tier: Option<FreeTierConfig>,
    /// The dynamic pricer, if any.
    pub pricer: Option<Pricer>,
    /// Paths holding `%2F`, `%5C` or `\` are passed on rather than refused.
    pub allow_encoded_slashes: bool,
    /// Header fields set on every upstream request, replacing the client's (values marked
    /// sensitive: never printed).
    pub upstream_headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Its counters (the same ones across reloads and admin changes: a table's replacements
    /// keep the counters of a name already registered, [`crate::router::ServiceTable::parse`]).
    pub metrics: std::sync::Arc<crate::metrics::ServiceMetrics>,
    /// Whether its 402 offers a Lightning invoice (`"l402"` in `rails`).
    pub l402: bool,
    /// What it offers over x402 (`"x402"` in `rails`), if anything.
    pub x402: Option<crate::x402::settings::X402Offer>,
    /// The hub provider paid for it (its invoices are created on the provider's wallet, with
    /// the platform fee), if it is a provider's.
    pub payee: Option<std::sync::Arc<crate::hub::Payee>>,
    /// The first path segment (`/<slug>`) is removed before the upstream (a provider's service
    /// reached under the hub's path prefix).
    pub strip_first_segment: bool,
    /// Its description, tags and input schema (a route inherits the service's unless it sets
    /// its own).
    pub meta: std::sync::Arc<crate::metadata::Metadata>,
}

#[derive(Debug, Clone)]
enum HostMatch {
    Exact(String),
    /// `*.example.com`, stored as `.example.com`.
    Suffix(String),
    /// `host_regex`: searched in the host (lower case, without port).
    Regex(regex::Regex),
}

/// How a service matches the canonical path.
#[derive(Debug, Clone)]
enum PathMatch {
    /// `path`: this prefix (in matching form, without trailing `/`) or below it.
    Prefix(String),
    /// `path_regex`: searched in the canonical match path.
    Regex(regex::Regex),
}

/// Largest compiled size of one `host_regex` / `path_regex` (and of its lazy DFA cache), so a
/// config (or a service added at runtime) cannot make the gateway allocate without bound.
pub const REGEX_SIZE_LIMIT: usize = 256 * 1024;
/// Longest `host_regex` / `path_regex` accepted, in bytes.
pub const REGEX_MAX_LEN: usize = 1024;

/// Compiles a `host_regex` or `path_regex`: Rust `regex` syntax (RE2's, as Aperture's
/// `hostregexp` / `pathregexp`), unanchored unless the pattern anchors itself, letter case
/// ignored unless the pattern says `(?-i)`, bounded in size and nesting.
pub fn compile_match_regex(pattern: &str) -> Result<regex::Regex, String> {
    if pattern.is_empty() {
        return Err("must not be empty (leave the key out to match everything)".into());
    }
    if pattern.len() > REGEX_MAX_LEN {
        return Err(format!("is longer than {REGEX_MAX_LEN} bytes"));
    }
    regex::RegexBuilder::new(pattern)
        .case_insensitive(true)
        .size_limit(REGEX_SIZE_LIMIT)
        .dfa_size_limit(REGEX_SIZE_LIMIT)
        .nest_limit(64)
        .build()
        .map_err(|e| match e {
            regex::Error::CompiledTooBig(limit) => {
                format!("is too large once compiled (more than {limit} bytes)")
            }
            regex::Error::Syntax(m) => format!("is not a valid regular expression: {m}"),
            other => format!("is not a valid regular expression: {other}"),
        })
}

/// A service's routes (most specific first) followed by the service itself, parsed from one
/// `[[services]]` table. Errors name the key relative to the table (`path`,
/// `routes[0].price_sats`).
#[derive(Debug)]
pub struct ServiceRoutes(pub Vec<Service>);

impl TryFrom<&ServiceConfig> for ServiceRoutes {
    type Error = ConfigError;

    /// Parses a service of a gateway without `[x402]` (a service with `"x402"` in its `rails`
    /// is then an error).
    fn try_from(c: &ServiceConfig) -> Result<ServiceRoutes, ConfigError> {
        ServiceRoutes::parse(c, None)
    }
}

impl ServiceRoutes {
    /// Parses one `[[services]]` table; `x402` is the gateway's `[x402]` section, if any.
    pub fn parse(
        c: &ServiceConfig,
        x402: Option<&crate::x402::settings::X402Settings>,
    ) -> Result<ServiceRoutes, ConfigError> {
        check_name(&c.name).map_err(|m| invalid("name", m))?;
        let host = HostMatch::from_keys(c.host.as_deref(), c.host_regex.as_deref())?;
        let path = PathMatch::from_keys(c.path.as_deref(), c.path_regex.as_deref())?;
        let upstream = UpstreamUrl::parse(&c.upstream).map_err(|m| invalid("upstream", m))?;
        if c.upstream_timeout_secs == 0 {
            return Err(invalid(
                "upstream_timeout_secs",
                "must be at least 1 second",
            ));
        }
        if let Some(f) = c.free_tier
            && (f.calls == 0 || f.window_secs == 0)
        {
            return Err(invalid(
                "free_tier",
                "calls and window_secs must be at least 1",
            ));
        }
        let pricer = c
            .pricer
            .as_ref()
            .map(Pricer::parse)
            .transpose()
            .map_err(|m| invalid("pricer", m))?;
        let pricing = Pricing::parse(
            c.price_sats,
            c.calls_per_payment,
            c.time_pass_secs,
            c.token_lifetime_secs,
        )?;
        let upstream_headers = upstream_headers(&c.headers)?;
        let (l402, x402) = rails(c, x402)?;
        let meta = crate::metadata::Metadata::parse(
            c.description.as_deref(),
            &c.tags,
            c.input_schema.as_ref(),
        )?;
        let own = Service {
            name: c.name.clone(),
            route: None,
            host,
            path,
            method: None,
            upstream,
            price: pricing.price,
            calls: pricing.calls,
            lifetime_secs: pricing.lifetime_secs,
            refund_on_5xx: c.refund_on_5xx,
            upstream_timeout: Duration::from_secs(c.upstream_timeout_secs),
            free_tier: c.free_tier,
            pricer,
            allow_encoded_slashes: c.allow_encoded_slashes,
            upstream_headers,
            metrics: std::sync::Arc::new(crate::metrics::ServiceMetrics::new(&c.name)),
            l402,
            x402,
            payee: None,
            strip_first_segment: false,
            meta: std::sync::Arc::new(meta),
        };
        let mut all = Vec::with_capacity(c.routes.len() + 1);
        for (j, r) in c.routes.iter().enumerate() {
            let route = own
                .route(r)
                .map_err(|e| e.within(&format!("routes[{j}]")))?;
            all.push(route);
        }
        all.push(own);
        Ok(ServiceRoutes(all))
    }
}

impl Service {
    /// A `[[services.routes]]` entry of this service: its own path, method and pricing, the
    /// rest inherited (no free tier, no pricer).
    fn route(&self, r: &RouteConfig) -> Result<Service, ConfigError> {
        let name = format!("{}.{}", self.name, r.name);
        check_name(&name).map_err(|m| invalid("name", m))?;
        let path = PathMatch::from_keys(r.path.as_deref(), r.path_regex.as_deref())?
            .ok_or_else(|| invalid("path", "a route needs path or path_regex"))?;
        let method = r
            .method
            .as_deref()
            .map(|m| {
                http::Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                    .map_err(|_| invalid("method", format!("{m:?} is not an HTTP method")))
            })
            .transpose()?;
        let pricing = Pricing::parse(
            r.price_sats,
            r.calls_per_payment,
            r.time_pass_secs,
            r.token_lifetime_secs,
        )?;
        let own = crate::metadata::Metadata::parse(
            r.description.as_deref(),
            &[],
            r.input_schema.as_ref(),
        )?;
        let meta = crate::metadata::Metadata {
            description: own.description.or_else(|| self.meta.description.clone()),
            tags: self.meta.tags.clone(),
            input_schema: own.input_schema.or_else(|| self.meta.input_schema.clone()),
        };
        Ok(Service {
            host: self.host.clone(),
            path: Some(path),
            method,
            upstream: self.upstream.clone(),
            price: pricing.price,
            calls: pricing.calls,
            lifetime_secs: pricing.lifetime_secs,
            refund_on_5xx: self.refund_on_5xx,
            upstream_timeout: self.upstream_timeout,
            free_tier: None,
            pricer: None,
            allow_encoded_slashes: self.allow_encoded_slashes,
            upstream_headers: self.upstream_headers.clone(),
            metrics: std::sync::Arc::new(crate::metrics::ServiceMetrics::new(&name)),
            name,
            route: Some(r.name.clone()),
            l402: true,
            x402: None,
            payee: None,
            strip_first_segment: false,
            meta: std::sync::Arc::new(meta),
        })
    }

    /// The two ways a hub provider's service (or route) is reached: by the provider's host
    /// (`<slug>.<hub domain>`, its path as it is), then by the path prefix `/<slug>` (removed
    /// before the upstream); both paid to `payee`.
    pub(crate) fn for_provider(
        self,
        host: String,
        slug: &str,
        payee: &std::sync::Arc<crate::hub::Payee>,
    ) -> [Service; 2] {
        let own = match &self.path {
            Some(PathMatch::Prefix(p)) => p.as_str(),
            _ => "",
        };
        let by_prefix = Service {
            host: None,
            path: Some(PathMatch::Prefix(format!("/{slug}{own}"))),
            payee: Some(payee.clone()),
            strip_first_segment: true,
            ..self.clone()
        };
        let by_host = Service {
            host: Some(HostMatch::Exact(host)),
            payee: Some(payee.clone()),
            ..self
        };
        [by_host, by_prefix]
    }

    /// The name its health is kept under (a hub's directory): `<provider>/<name>` for a hub
    /// provider's (so a name another provider used before starts afresh), its name otherwise.
    pub fn health_key(&self) -> String {
        match &self.payee {
            Some(p) => format!("{}/{}", p.provider, self.name),
            None => self.name.clone(),
        }
    }

    /// How one payment is described to people: "1 call", "3 calls", "unlimited calls for 1 h".
    pub fn grant_text(&self) -> String {
        match (self.calls, self.lifetime_secs) {
            (Some(1), _) => "1 call".to_owned(),
            (Some(n), _) => format!("{n} calls"),
            (None, Some(secs)) => format!("unlimited calls for {}", human_duration(secs)),
            (None, None) => "unlimited calls".to_owned(),
        }
    }

    /// The path prefix it matches, if it has one.
    pub fn path(&self) -> Option<&str> {
        match &self.path {
            Some(PathMatch::Prefix(p)) => Some(p),
            _ => None,
        }
    }

    /// The regular expression its path must match, if it has one (`path_regex`).
    pub fn path_regex(&self) -> Option<&str> {
        match &self.path {
            Some(PathMatch::Regex(r)) => Some(r.as_str()),
            _ => None,
        }
    }

    /// The regular expression its host must match, if it has one (`host_regex`).
    pub fn host_regex(&self) -> Option<&str> {
        match &self.host {
            Some(HostMatch::Regex(r)) => Some(r.as_str()),
            _ => None,
        }
    }

    /// The only method it matches, if restricted to one.
    pub fn method(&self) -> Option<&http::Method> {
        self.method.as_ref()
    }

    /// The host it matches (`*.example.com` for a suffix), if restricted by `host`.
    pub fn host(&self) -> Option<String> {
        self.host.as_ref().and_then(|h| match h {
            HostMatch::Exact(h) => Some(h.clone()),
            HostMatch::Suffix(s) => Some(format!("*{s}")),
            HostMatch::Regex(_) => None,
        })
    }

    /// Whether this service is free (no payment asked on any rail).
    pub fn is_free(&self) -> bool {
        self.price == Sats::ZERO && self.x402.is_none()
    }

    /// The price of one payment in millisatoshis.
    pub fn price_msat(&self) -> Msat {
        // Checked when parsed: the price fits.
        self.price.to_msat().unwrap_or(Msat(u64::MAX))
    }

    /// Whether a request with this method, host (without port, normalised) and path
    /// (canonical, without parameters) belongs to this service.
    pub(crate) fn matches(&self, method: &http::Method, host: Option<&str>, path: &str) -> bool {
        if self.method.as_ref().is_some_and(|m| m != method) {
            return false;
        }
        if let Some(m) = &self.host {
            let Some(host) = host else { return false };
            let ok = match m {
                HostMatch::Exact(h) => host.eq_ignore_ascii_case(h),
                HostMatch::Suffix(s) => {
                    host.len() > s.len() && host[host.len() - s.len()..].eq_ignore_ascii_case(s)
                }
                HostMatch::Regex(r) => r.is_match(host),
            };
            if !ok {
                return false;
            }
        }
        match &self.path {
            None => true,
            Some(PathMatch::Prefix(prefix)) => path_has_prefix(path, prefix),
            Some(PathMatch::Regex(r)) => r.is_match(path),
        }
    }
}

impl HostMatch {
    /// From a service's `host` and `host_regex` keys (at most one of them).
    fn from_keys(
        host: Option<&str>,
        regex: Option<&str>,
    ) -> Result<Option<HostMatch>, ConfigError> {
        match (host, regex) {
            (Some(_), Some(_)) => Err(invalid(
                "host_regex",
                "set host or host_regex, not both (host_regex can express any host)",
            )),
            (Some(h), None) => HostMatch::parse(h)
                .map(Some)
                .map_err(|m| invalid("host", m)),
            (None, Some(r)) => compile_match_regex(r)
                .map(|r| Some(HostMatch::Regex(r)))
                .map_err(|m| invalid("host_regex", m)),
            (None, None) => Ok(None),
        }
    }

    fn parse(pattern: &str) -> Result<HostMatch, String> {
        let h = crate::edge::host::normalize_pattern(pattern).map_err(|_| {
            format!("{pattern:?} is not a host name or *.domain pattern (without port)")
        })?;
        Ok(match h.strip_prefix('*') {
            Some(suffix) => HostMatch::Suffix(suffix.to_owned()),
            None => HostMatch::Exact(h),
        })
    }
}

impl PathMatch {
    /// From a `path` and a `path_regex` key (at most one of them).
    fn from_keys(
        path: Option<&str>,
        regex: Option<&str>,
    ) -> Result<Option<PathMatch>, ConfigError> {
        match (path, regex) {
            (Some(_), Some(_)) => Err(invalid(
                "path_regex",
                "set path or path_regex, not both (path_regex can express any prefix)",
            )),
            (Some(p), None) => canonical_prefix(p)
                .map(|p| Some(PathMatch::Prefix(p)))
                .map_err(|m| invalid("path", m)),
            (None, Some(r)) => compile_match_regex(r)
                .map(|r| Some(PathMatch::Regex(r)))
                .map_err(|m| invalid("path_regex", m)),
            (None, None) => Ok(None),
        }
    }
}

/// Whether `path` (canonical, without segment parameters, escapes decoded) is `prefix` or below
/// it. Letters compare case-insensitively, and `.`, ` ` and `:` end a segment as `/` does, so an
/// upstream that routes case-insensitively (Express, ASP.NET), takes a format suffix
/// (`/paid.json`), drops trailing dots and spaces or reads an NTFS stream name (IIS:
/// `/paid.`, `/paid%20`, `/paid::$DATA`), or a custom verb (`/v1/thing:run`) as the same
/// resource is never reached through a spelling that misses its price.
pub fn path_has_prefix(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    path.len() >= prefix.len()
        && path.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
        && matches!(
            path.as_bytes().get(prefix.len()),
            None | Some(b'/' | b'.' | b' ' | b':')
        )
}

/// A configured path prefix, in the form requests are matched in (escapes decoded but those of
/// separators). It must not hold dot segments, repeated slashes, `;` parameters or encoded
/// separators: it could never match as written.
fn canonical_prefix(path: &str) -> Result<String, String> {
    let bad = |why: &str| Err(format!("{path:?}: {why}"));
    let Some(rest) = path.strip_prefix('/') else {
        return bad("must start with '/'");
    };
    let segments: Vec<&str> = rest.split('/').collect();
    let last = segments.len() - 1;
    for (i, segment) in segments.iter().enumerate() {
        if matches!(*segment, "." | "..") || (segment.is_empty() && i != last) {
            return bad("no dot segments or repeated slashes");
        }
        if segment.contains(';') {
            return bad("no ';' parameters");
        }
    }
    let c = crate::edge::path::canonicalize(path).map_err(|e| format!("{path:?}: {e}"))?;
    if c.has_encoded_separator() {
        return bad("no encoded slashes or backslashes");
    }
    Ok(c.match_path().trim_end_matches('/').to_owned())
}

/// The `headers` table, resolved: names checked, secrets read, values marked sensitive. Errors
/// name the field, never its value. Fields the gateway manages itself (`Host`, forwarding
/// fields, hop-by-hop fields, the body's framing, macaroon fields) cannot be set;
/// `Authorization` can (an upstream's own key), and then replaces any the client sent.
fn upstream_headers(
    table: &std::collections::BTreeMap<String, turnpike_lightning::SecretSource>,
) -> Result<Vec<(http::HeaderName, http::HeaderValue)>, ConfigError> {
    table
        .iter()
        .map(|(name, source)| {
            let key = format!("headers.{name}");
            let header = http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| invalid(&key, "is not a header field name"))?;
            if crate::headers::is_managed(header.as_str()) {
                return Err(invalid(&key, "is set by the gateway itself"));
            }
            let secret = source.resolve().map_err(|e| invalid(&key, e.to_string()))?;
            let mut value = http::HeaderValue::from_str(secret.expose())
                .map_err(|_| invalid(&key, "the value is not a valid header value"))?;
            value.set_sensitive(true);
            Ok((header, value))
        })
        .collect()
}

/// The `rails` of a service and its x402 offer (`price_usdc` in the `[x402]` token). A service
/// priced on one rail is priced on every rail it has.
fn rails(
    c: &ServiceConfig,
    settings: Option<&crate::x402::settings::X402Settings>,
) -> Result<(bool, Option<crate::x402::settings::X402Offer>), ConfigError> {
    use crate::config::Rail;
    if c.rails.is_empty() {
        return Err(invalid(
            "rails",
            "must name at least one of \"l402\", \"x402\"",
        ));
    }
    let l402 = c.rails.contains(&Rail::L402);
    if !c.rails.contains(&Rail::X402) {
        if c.price_usdc.is_some() {
            return Err(invalid("price_usdc", "needs \"x402\" in rails"));
        }
        return Ok((l402, None));
    }
    let settings = settings.ok_or_else(|| {
        invalid(
            "rails",
            "\"x402\" needs the gateway's [x402] section (facilitator, network, asset, pay_to)",
        )
    })?;
    let price = c
        .price_usdc
        .as_ref()
        .ok_or_else(|| invalid("price_usdc", "is required with \"x402\" in rails"))?;
    let offer = settings
        .offer(price)
        .map_err(|m| invalid("price_usdc", m))?;
    if l402 && c.price_sats == 0 {
        return Err(invalid(
            "price_sats",
            "must be above 0 when the service is priced over x402 too",
        ));
    }
    if !l402 && c.price_sats != 0 {
        return Err(invalid(
            "price_sats",
            "must be 0 when \"l402\" is not in rails",
        ));
    }
    if !c.routes.is_empty() {
        return Err(invalid(
            "rails",
            "\"x402\" is not supported yet on a service with [[services.routes]]",
        ));
    }
    if c.pricer.is_some() {
        return Err(invalid(
            "pricer",
            "dynamic prices are in sats: not supported with \"x402\"",
        ));
    }
    Ok((l402, Some(offer)))
}

fn check_name(name: &str) -> Result<(), String> {
    if !turnpike_l402::caveat::is_valid_service_name(name) {
        return Err(format!(
            "{name:?} must be 1 to 64 letters, digits, '_', '-' or '.'"
        ));
    }
    // `.` and `..` are path segments: `/api/v1/services/..` could not name the service.
    if name.bytes().all(|b| b == b'.') {
        return Err(format!("{name:?} must hold a letter, a digit, '_' or '-'"));
    }
    Ok(())
}

/// What one payment buys, checked.
struct Pricing {
    price: Sats,
    calls: Option<u64>,
    lifetime_secs: Option<u64>,
}

impl Pricing {
    fn parse(
        price_sats: u64,
        calls: Option<u64>,
        pass: Option<u64>,
        lifetime: Option<u64>,
    ) -> Result<Pricing, ConfigError> {
        let price = Sats(price_sats);
        if price.to_msat().is_none() || price_sats > 2_100_000_000_000_000 {
            return Err(invalid("price_sats", "is larger than all bitcoin"));
        }
        if calls == Some(0) {
            return Err(invalid("calls_per_payment", "must be at least 1"));
        }
        if lifetime == Some(0) {
            return Err(invalid("token_lifetime_secs", "must be at least 1 second"));
        }
        match pass {
            Some(0) => Err(invalid("time_pass_secs", "must be at least 1 second")),
            Some(_) if calls.is_some() => Err(invalid(
                "time_pass_secs",
                "a time pass buys unlimited calls: remove calls_per_payment (or use calls_per_payment with token_lifetime_secs)",
            )),
            Some(_) if lifetime.is_some() => Err(invalid(
                "time_pass_secs",
                "a time pass already expires: remove token_lifetime_secs",
            )),
            Some(secs) => Ok(Pricing {
                price,
                calls: None,
                lifetime_secs: Some(secs),
            }),
            None => Ok(Pricing {
                price,
                calls: Some(calls.unwrap_or(1)),
                lifetime_secs: lifetime,
            }),
        }
    }
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        message: message.into(),
    }
}

fn human_duration(secs: u64) -> String {
    match secs {
        s if s % 86_400 == 0 => format!("{} d", s / 86_400),
        s if s % 3_600 == 0 => format!("{} h", s / 3_600),
        s if s % 60 == 0 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

/// A validated upstream base URL.
#[derive(Debug, Clone)]
pub struct UpstreamUrl {
    /// `http` or `https`.
    pub scheme: http::uri::Scheme,
    /// Host and port.
    pub authority: http::uri::Authority,
    /// Path prefix with no trailing `/` (empty for none).
    pub base_path: String,
}

impl UpstreamUrl {
    /// Parses an `http://` or `https://` URL with no query and no user information. Errors
    /// never repeat the URL: it could hold credentials.
    pub fn parse(s: &str) -> Result<UpstreamUrl, String> {
        let uri: Uri = s.parse().map_err(|e| format!("not a URL: {e}"))?;
        let scheme = uri
            .scheme()
            .cloned()
            .ok_or_else(|| "needs http:// or https://".to_owned())?;
        if scheme != http::uri::Scheme::HTTP && scheme != http::uri::Scheme::HTTPS {
            return Err("the scheme must be http or https".to_owned());
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| "the URL has no host".to_owned())?;
        if authority.as_str().contains('@') {
            return Err(
                "user:password@ in an upstream URL is not supported (it would be sent as the \
                 upstream's Host); set credentials with the upstream's own header instead"
                    .to_owned(),
            );
        }
        if uri.query().is_some() {
            return Err("the URL must not have a query string".to_owned());
        }
        let base_path = uri.path().trim_end_matches('/').to_owned();
        Ok(UpstreamUrl {
            scheme,
            authority,
            base_path,
        })
    }
}

/// A dynamic pricer, parsed: where to ask, how long to wait, how much of the body it sees.
#[derive(Debug, Clone)]
pub struct Pricer {
    /// The pricer's URL.
    pub uri: Uri,
    /// Time allowed for an answer.
    pub timeout: Duration,
    /// Leading body bytes sent to it.
    pub body_bytes: usize,
}

impl Pricer {
    /// Largest `body_bytes` allowed.
    pub const MAX_BODY_BYTES: usize = 1 << 20;

    /// Checks and parses a `pricer = {…}` table. Errors never repeat the URL.
    pub fn parse(c: &PricerConfig) -> Result<Pricer, String> {
        let uri: Uri = c
            .url
            .parse()
            .map_err(|e| format!("url is not a URL: {e}"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err("url must be an http:// or https:// URL".into());
        }
        if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
            return Err("url must not hold user:password@".into());
        }
        if c.timeout_ms == 0 || c.timeout_ms > 60_000 {
            return Err("timeout_ms must be between 1 and 60000".into());
        }
        if c.body_bytes > Pricer::MAX_BODY_BYTES {
            return Err(format!(
                "body_bytes must be at most {}",
                Pricer::MAX_BODY_BYTES
            ));
        }
        Ok(Pricer {
            uri,
            timeout: Duration::from_millis(c.timeout_ms),
            body_bytes: c.body_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(c: &ServiceConfig) -> Result<Vec<Service>, String> {
        ServiceRoutes::try_from(c)
            .map(|r| r.0)
            .map_err(|e| e.to_string())
    }

    fn svc() -> ServiceConfig {
        ServiceConfig {
            path: Some("/weather".into()),
            ..ServiceConfig::new("weather", "http://127.0.0.1:9000/base/", 5)
        }
    }

    #[test]
    fn names_of_dots_alone_are_refused_as_they_are_path_segments() {
        for bad in [".", "..", "..."] {
            let c = ServiceConfig {
                name: bad.into(),
                ..svc()
            };
            let err = parse(&c).unwrap_err();
            assert!(err.contains("name"), "{bad}: {err}");
        }
        for good in ["a.b", ".well", "v1..2", "_"] {
            let c = ServiceConfig {
                name: good.into(),
                ..svc()
            };
            assert!(parse(&c).is_ok(), "{good}");
        }
    }

    #[test]
    fn metadata_comes_from_toml_and_routes_inherit_what_they_do_not_set() {
        let c: ServiceConfig = toml::from_str(
            r#"
            name = "quote"
            path = "/quote"
            upstream = "http://127.0.0.1:9000"
            price_sats = 21
            description = "Stock quotes"
            tags = ["finance", "stocks"]
            input_schema = { type = "object", properties = { symbol = { type = "string" } } }
            [[routes]]
            name = "bulk"
            path = "/quote/bulk"
            price_sats = 100
            input_schema = { type = "object", properties = { symbols = { type = "array" } } }
            [[routes]]
            name = "news"
            path = "/quote/news"
            price_sats = 5
            description = "Headlines"
            "#,
        )
        .unwrap();
        let s = parse(&c).unwrap();
        let [bulk, news, own] = [&s[0], &s[1], &s[2]];
        assert_eq!(own.meta.description.as_deref(), Some("Stock quotes"));
        assert_eq!(own.meta.tags, ["finance", "stocks"]);
        assert_eq!(
            own.meta.input_schema,
            Some(serde_json::json!({"type": "object",
                "properties": {"symbol": {"type": "string"}}}))
        );
        assert_eq!(bulk.meta.description.as_deref(), Some("Stock quotes"));
        assert_eq!(bulk.meta.tags, own.meta.tags);
        assert_eq!(
            bulk.meta.input_schema.as_ref().unwrap()["properties"]["symbols"]["type"],
            "array"
        );
        assert_eq!(news.meta.description.as_deref(), Some("Headlines"));
        assert_eq!(news.meta.input_schema, own.meta.input_schema);
        let mut bad = c.clone();
        bad.routes[1].input_schema = Some(serde_json::json!({"type": "array"}));
        assert!(
            parse(&bad).unwrap_err().contains("routes[1].input_schema"),
            "{:?}",
            parse(&bad)
        );
        bad.routes[1].input_schema = None;
        bad.tags = vec!["Finance".into()];
        assert!(parse(&bad).unwrap_err().contains("tags[0]"));
    }

    #[test]
    fn a_good_service_is_parsed_once() {
        let s = parse(&svc()).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].upstream.base_path, "/base");
        assert_eq!(s[0].price_msat(), Msat(5000));
        assert_eq!(s[0].calls, Some(1));
    }

    #[test]
    fn errors_name_the_key_and_never_echo_credentials() {
        let cases: Vec<(ServiceConfig, &str)> = vec![
            (
                ServiceConfig {
                    name: "we ather".into(),
                    ..svc()
                },
                "name",
            ),
            (
                ServiceConfig {
                    upstream: "ftp://x".into(),
                    ..svc()
                },
                "upstream",
            ),
            (
                ServiceConfig {
                    upstream: "http://u:s3cr3t@127.0.0.1:9000/".into(),
                    ..svc()
                },
                "upstream",
            ),
            (
                ServiceConfig {
                    path: Some("weather".into()),
                    ..svc()
                },
                "path",
            ),
            (
                ServiceConfig {
                    host: Some("a.test:80".into()),
                    ..svc()
                },
                "host",
            ),
            (
                ServiceConfig {
                    calls_per_payment: Some(0),
                    ..svc()
                },
                "calls_per_payment",
            ),
            (
                ServiceConfig {
                    upstream_timeout_secs: 0,
                    ..svc()
                },
                "upstream_timeout_secs",
            ),
            (
                ServiceConfig {
                    time_pass_secs: Some(60),
                    calls_per_payment: Some(2),
                    ..svc()
                },
                "time_pass_secs",
            ),
        ];
        for (c, key) in cases {
            let e = parse(&c).unwrap_err();
            assert!(e.contains(&format!("invalid config: {key}:")), "{key}: {e}");
            assert!(!e.contains("s3cr3t"), "{e}");
        }
        for bad in ["/a/../b", "//a", "/a;x", "/a%2fb", "/a%zz", "a", "/a/./b"] {
            let c = ServiceConfig {
                path: Some(bad.into()),
                ..svc()
            };
            assert!(parse(&c).unwrap_err().contains("path"), "{bad}");
        }
        assert!(
            parse(&ServiceConfig {
                path: Some("/weather/".into()),
                ..svc()
            })
            .is_ok()
        );
    }

    #[test]
    fn routes_come_first_with_their_own_pricing_and_keys() {
        let mut c = svc();
        c.routes = vec![
            RouteConfig {
                name: "big".into(),
                path: Some("/weather/big".into()),
                path_regex: None,
                method: Some("post".into()),
                price_sats: 50,
                calls_per_payment: None,
                time_pass_secs: None,
                token_lifetime_secs: None,
                description: None,
                input_schema: None,
            },
            RouteConfig {
                name: "pass".into(),
                path: Some("/weather/pass".into()),
                path_regex: None,
                method: None,
                price_sats: 500,
                calls_per_payment: None,
                time_pass_secs: Some(3600),
                token_lifetime_secs: None,
                description: None,
                input_schema: None,
            },
        ];
        let s = parse(&c).unwrap();
        let names: Vec<&str> = s.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["weather.big", "weather.pass", "weather"]);
        assert_eq!((s[1].calls, s[1].lifetime_secs), (None, Some(3600)));
        assert_eq!(s[1].grant_text(), "unlimited calls for 1 h");
        c.routes[1].calls_per_payment = Some(0);
        c.routes[1].time_pass_secs = None;
        assert!(
            parse(&c)
                .unwrap_err()
                .contains("routes[1].calls_per_payment")
        );
    }

    #[test]
    fn configured_prefixes_are_kept_in_matching_form() {
        let prefix = |p: &str| {
            let c = ServiceConfig {
                path: Some(p.into()),
                ..svc()
            };
            parse(&c).unwrap()[0].path().unwrap().to_owned()
        };
        assert_eq!(prefix("/v1/models:predict"), "/v1/models:predict");
        assert_eq!(prefix("/v1/models%3Apredict"), "/v1/models:predict");
        assert_eq!(prefix("/café/"), "/café");
        assert_eq!(prefix("/caf%C3%A9"), "/café");
        assert_eq!(prefix("/%61"), "/a");
    }

    #[test]
    fn prefixes_end_at_slash_or_dot_and_ignore_case() {
        assert!(path_has_prefix("/secret", "/secret"));
        assert!(path_has_prefix("/secret/", "/secret/"));
        assert!(path_has_prefix("/SECRET/x", "/secret"));
        assert!(path_has_prefix("/secret.json", "/secret"));
        assert!(path_has_prefix("/secret.", "/secret"));
        assert!(path_has_prefix("/secret ", "/secret"));
        assert!(path_has_prefix("/secret::$DATA", "/secret"));
        assert!(path_has_prefix("/v1/thing:run", "/v1/thing"));
        assert!(path_has_prefix("/anything", "/"));
        assert!(path_has_prefix("/anything", ""));
        assert!(!path_has_prefix("/secretx", "/secret"));
        assert!(!path_has_prefix("/secret-v2", "/secret"));
        assert!(!path_has_prefix("/secre", "/secret"));
    }

    #[test]
    fn upstream_headers_are_resolved_and_never_echoed() {
        let mut c = svc();
        c.headers.insert(
            "X-Api-Key".into(),
            turnpike_lightning::SecretSource::Inline("s3cr3t".into()),
        );
        let s = parse(&c).unwrap();
        assert_eq!(s[0].upstream_headers[0].0, "x-api-key");
        assert!(s[0].upstream_headers[0].1.is_sensitive());
        assert!(!format!("{:?}", s[0]).contains("s3cr3t"));
        c.headers.insert(
            "X-Other".into(),
            turnpike_lightning::SecretSource::Env {
                env: "TURNPIKE_TEST_NO_SUCH_VAR".into(),
            },
        );
        let e = parse(&c).unwrap_err();
        assert!(
            e.contains("headers.X-Other") && !e.contains("s3cr3t"),
            "{e}"
        );
        for managed in ["Host", "X-Forwarded-For", "Macaroon", "Content-Length"] {
            let mut c = svc();
            c.headers.insert(
                managed.into(),
                turnpike_lightning::SecretSource::Inline("v".into()),
            );
            assert!(
                parse(&c).unwrap_err().contains("set by the gateway"),
                "{managed}"
            );
        }
    }

    #[test]
    fn rails_and_x402_prices_are_checked_with_named_keys() {
        use crate::config::{Rail, TokenPrice, X402Config};
        let settings = crate::x402::settings::X402Settings::parse(&X402Config {
            facilitator_url: "http://127.0.0.1:1".into(),
            network: "eip155:84532".into(),
            asset: "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512".into(),
            token_name: "USDC".into(),
            token_version: "2".into(),
            decimals: 6,
            pay_to: "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC".into(),
            max_timeout_secs: 300,
            verify_timeout_ms: 1000,
            settle_timeout_ms: 1000,
        })
        .unwrap();
        let both = ServiceConfig {
            rails: vec![Rail::L402, Rail::X402],
            price_usdc: Some(TokenPrice::Text("0.01".into())),
            ..svc()
        };
        let parse_with = |c: &ServiceConfig| {
            ServiceRoutes::parse(c, Some(&settings))
                .map(|r| r.0)
                .map_err(|e| e.to_string())
        };
        let s = parse_with(&both).unwrap();
        assert!(s[0].l402 && !s[0].is_free());
        let offer = s[0].x402.as_ref().unwrap();
        assert_eq!(offer.requirements.amount.base_units(), 10_000);
        assert_eq!(offer.price_text(), "0.01");
        let only = ServiceConfig {
            rails: vec![Rail::X402],
            price_sats: 0,
            ..both.clone()
        };
        let s = parse_with(&only).unwrap();
        assert!(!s[0].l402 && !s[0].is_free(), "x402 only is not free");
        // Without [x402], and each inconsistency, name the key.
        assert!(parse(&both).unwrap_err().contains("invalid config: rails:"));
        let cases: Vec<(ServiceConfig, &str)> = vec![
            (
                ServiceConfig {
                    rails: vec![],
                    ..both.clone()
                },
                "rails",
            ),
            (
                ServiceConfig {
                    price_usdc: None,
                    ..both.clone()
                },
                "price_usdc",
            ),
            (
                ServiceConfig {
                    price_usdc: Some(TokenPrice::Text("0.0000001".into())),
                    ..both.clone()
                },
                "price_usdc",
            ),
            (
                ServiceConfig {
                    price_usdc: Some(TokenPrice::BaseUnits(0)),
                    ..both.clone()
                },
                "price_usdc",
            ),
            (
                ServiceConfig {
                    rails: vec![Rail::L402],
                    ..both.clone()
                },
                "price_usdc",
            ),
            (
                ServiceConfig {
                    price_sats: 0,
                    ..both.clone()
                },
                "price_sats",
            ),
            (
                ServiceConfig {
                    price_sats: 5,
                    ..only.clone()
                },
                "price_sats",
            ),
            (
                ServiceConfig {
                    pricer: Some(PricerConfig {
                        url: "http://127.0.0.1:9/p".into(),
                        timeout_ms: 100,
                        body_bytes: 0,
                    }),
                    ..both.clone()
                },
                "pricer",
            ),
        ];
        for (c, key) in cases {
            let e = parse_with(&c).unwrap_err();
            assert!(e.contains(&format!("invalid config: {key}:")), "{key}: {e}");
        }
    }

    #[test]
    fn regexes_are_parsed_once_and_cannot_be_mixed_or_huge() {
        let with = |host: Option<&str>,
                    host_re: Option<&str>,
                    path: Option<&str>,
                    path_re: Option<&str>| {
            parse(&ServiceConfig {
                host: host.map(Into::into),
                host_regex: host_re.map(Into::into),
                path: path.map(Into::into),
                path_regex: path_re.map(Into::into),
                ..svc()
            })
        };
        let s = with(
            None,
            Some(r"^api\.example\.com$"),
            None,
            Some("^/v[0-9]+/admin"),
        )
        .unwrap();
        assert_eq!(s[0].path_regex(), Some("^/v[0-9]+/admin"));
        assert_eq!(s[0].host(), None);
        let get = http::Method::GET;
        assert!(s[0].matches(&get, Some("api.example.com"), "/v2/admin/x"));
        assert!(s[0].matches(&get, Some("API.example.com"), "/V2/ADMIN"));
        assert!(!s[0].matches(&get, Some("api.example.com.evil"), "/v2/admin"));
        assert!(!s[0].matches(&get, None, "/v2/admin"));
        assert!(!s[0].matches(&get, Some("api.example.com"), "/x/v2/admin"));
        // Unanchored unless anchored, as in RE2.
        let s = with(None, None, None, Some("admin")).unwrap();
        assert!(s[0].matches(&get, None, "/x/admin/y"));
        let s = with(None, None, None, Some("(?-i)^/admin")).unwrap();
        assert!(!s[0].matches(&get, None, "/ADMIN"));

        let cases = [
            (
                with(Some("a.test"), Some("a"), None, None),
                "host_regex",
                "not both",
            ),
            (
                with(None, None, Some("/a"), Some("^/a")),
                "path_regex",
                "not both",
            ),
            (
                with(None, None, None, Some("(")),
                "path_regex",
                "not a valid regular expression",
            ),
            (
                with(None, Some("["), None, None),
                "host_regex",
                "not a valid regular expression",
            ),
            (with(None, None, None, Some("")), "path_regex", "empty"),
            (
                with(None, None, None, Some(&"a".repeat(2000))),
                "path_regex",
                "longer than",
            ),
            (
                with(None, None, None, Some(r"\w{1000}\w{1000}")),
                "path_regex",
                "too large",
            ),
            (
                with(
                    None,
                    None,
                    None,
                    Some(&format!("{}a{}", "(".repeat(100), ")".repeat(100))),
                ),
                "path_regex",
                "not a valid",
            ),
        ];
        for (result, key, why) in cases {
            let e = result.unwrap_err();
            assert!(
                e.contains(&format!("invalid config: {key}:")) && e.contains(why),
                "{key}: {e}"
            );
        }
    }

    #[test]
    fn routes_take_a_path_or_a_path_regex() {
        let route = |path: Option<&str>, re: Option<&str>| RouteConfig {
            name: "r".into(),
            path: path.map(Into::into),
            path_regex: re.map(Into::into),
            method: None,
            price_sats: 1,
            calls_per_payment: None,
            time_pass_secs: None,
            token_lifetime_secs: None,
            description: None,
            input_schema: None,
        };
        let mut c = svc();
        c.routes = vec![route(None, Some("^/weather/[a-z]+/big$"))];
        let s = parse(&c).unwrap();
        assert!(s[0].matches(&http::Method::GET, None, "/weather/oslo/big"));
        assert!(!s[0].matches(&http::Method::GET, None, "/weather/oslo/small"));
        for (r, why) in [
            (
                route(None, None),
                "routes[0].path: a route needs path or path_regex",
            ),
            (
                route(Some("/w"), Some("^/w")),
                "routes[0].path_regex: set path or path_regex",
            ),
            (
                route(None, Some(")")),
                "routes[0].path_regex: is not a valid",
            ),
        ] {
            c.routes = vec![r];
            let e = parse(&c).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
    }

    #[test]
    fn pricers_are_parsed_once() {
        let p = Pricer::parse(&PricerConfig {
            url: "http://127.0.0.1:9100/price".into(),
            timeout_ms: 500,
            body_bytes: 10,
        })
        .unwrap();
        assert_eq!(p.uri.path(), "/price");
        assert_eq!(p.timeout, Duration::from_millis(500));
        let bad = PricerConfig {
            url: "http://u:s3cr3t@h/".into(),
            timeout_ms: 500,
            body_bytes: 10,
        };
        assert!(!Pricer::parse(&bad).unwrap_err().contains("s3cr3t"));
    }

    proptest::proptest! {
        /// Any pattern compiles within the limits or is refused with a message; never a panic,
        /// and a compiled one is a regex of at most the allowed length.
        #[test]
        fn match_regexes_compile_or_are_refused(pattern in "[a-z()\\[\\]{}*+?.^$|\\\\0-9,/:-]{0,64}") {
            match compile_match_regex(&pattern) {
                Ok(r) => proptest::prop_assert!(r.as_str().len() <= REGEX_MAX_LEN),
                Err(m) => proptest::prop_assert!(!m.is_empty()),
            }
        }
    }
}
