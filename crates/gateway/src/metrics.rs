//! The gateway's counters and histograms, and their Prometheus text rendering (format 0.0.4).
//!
//! Counting costs the request path a few relaxed atomic adds and nothing else: no lock, no map
//! lookup, no allocation. Each [`crate::service::Service`] holds its own [`ServiceMetrics`]
//! (an `Arc` the request already has through the service it matched), kept by name across
//! service-table swaps, so a reload never resets a count. The registry ([`Metrics`]) is locked
//! only when a service table is built, when metrics are rendered and when statistics are
//! flushed.
//!
//! A small hand-written registry rather than the `prometheus-client` or `metrics` crates: both
//! reach a labelled counter through a map lookup keyed by the label set (and `metrics` through
//! a global recorder), where here a request reaches its service's counters through a pointer it
//! already holds; the text format is small enough to write and test directly.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use turnpike_store::StatCounts;

/// A monotonic counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Upper bounds of the latency buckets, in seconds (as rendered) and nanoseconds (as counted).
const BUCKETS_SECS: [&str; 14] = [
    "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1",
    "2.5", "5", "10",
];
const BUCKETS_NANOS: [u64; 14] = [
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// A latency histogram with fixed buckets (0.5 ms to 10 s): one bucket add and one sum add per
/// observation.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last is above every bound.
    buckets: [AtomicU64; BUCKETS_NANOS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    #[inline]
    pub fn observe(&self, elapsed: Duration) {
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let i = BUCKETS_NANOS.partition_point(|&bound| bound < nanos);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// How many observations were recorded.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }
}

/// The outcome of a request to an upstream, by class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamClass {
    /// `1xx`.
    Informational,
    /// `2xx`.
    Success,
    /// `3xx`.
    Redirect,
    /// `4xx`.
    ClientError,
    /// `5xx`.
    ServerError,
    /// No answer: unreachable, timed out, or refused before it was sent.
    Failed,
}

impl UpstreamClass {
    const ALL: [UpstreamClass; 6] = [
        UpstreamClass::Informational,
        UpstreamClass::Success,
        UpstreamClass::Redirect,
        UpstreamClass::ClientError,
        UpstreamClass::ServerError,
        UpstreamClass::Failed,
    ];

    /// The class of an answer with `status`.
    pub fn of(status: http::StatusCode) -> UpstreamClass {
        match status.as_u16() {
            100..=199 => UpstreamClass::Informational,
            200..=299 => UpstreamClass::Success,
            300..=399 => UpstreamClass::Redirect,
            400..=499 => UpstreamClass::ClientError,
            _ => UpstreamClass::ServerError,
        }
    }

    fn label(self) -> &'static str {
        match self {
            UpstreamClass::Informational => "1xx",
            UpstreamClass::Success => "2xx",
            UpstreamClass::Redirect => "3xx",
            UpstreamClass::ClientError => "4xx",
            UpstreamClass::ServerError => "5xx",
            UpstreamClass::Failed => "error",
        }
    }
}

/// The counters of one service (or route), reached through the service a request matched.
#[derive(Debug)]
pub struct ServiceMetrics {
    name: String,
    /// `402` challenges issued.
    pub challenges: Counter,
    /// Tokens used for the first time (payments).
    pub payments: Counter,
    /// Millisatoshis those payments were for.
    pub earned_msat: Counter,
    /// Paid calls served and kept charged.
    pub calls_served: Counter,
    /// Paid calls given back.
    pub calls_refunded: Counter,
    /// Calls served without payment.
    pub free_calls: Counter,
    /// Requests answered `429`.
    pub rate_limited: Counter,
    /// Time to the upstream's response head (or its failure).
    pub upstream_latency: Histogram,
    upstream_responses: [Counter; UpstreamClass::ALL.len()],
    /// Calls forwarded, answered below 500, and their latency, for a hub's health figures.
    pub traffic: crate::traffic::Traffic,
}

impl ServiceMetrics {
    /// Fresh counters for `name` (not yet in any registry).
    pub fn new(name: &str) -> ServiceMetrics {
        ServiceMetrics {
            name: name.to_owned(),
            challenges: Counter::default(),
            payments: Counter::default(),
            earned_msat: Counter::default(),
            calls_served: Counter::default(),
            calls_refunded: Counter::default(),
            free_calls: Counter::default(),
            rate_limited: Counter::default(),
            upstream_latency: Histogram::default(),
            upstream_responses: Default::default(),
            traffic: crate::traffic::Traffic::default(),
        }
    }

    /// The service's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Records one payment of `msat`.
    #[inline]
    pub fn payment(&self, msat: turnpike_l402::Msat) {
        self.payments.inc();
        self.earned_msat.add(msat.0);
    }

    /// Records one upstream answer (or failure) after `elapsed`.
    #[inline]
    pub fn upstream(&self, class: UpstreamClass, elapsed: Duration) {
        self.upstream_latency.observe(elapsed);
        self.upstream_responses[class as usize].inc();
    }

    /// Upstream answers of `class` so far.
    pub fn upstream_responses(&self, class: UpstreamClass) -> u64 {
        self.upstream_responses[class as usize].get()
    }

    /// The counts kept per day, as they stand.
    pub fn stat_counts(&self) -> StatCounts {
        StatCounts {
            earned_msat: self.earned_msat.get(),
            challenges: self.challenges.get(),
            payments: self.payments.get(),
            calls_served: self.calls_served.get(),
            calls_refunded: self.calls_refunded.get(),
            free_calls: self.free_calls.get(),
            rate_limited: self.rate_limited.get(),
        }
    }
}

/// Why a credential was not accepted: the label set of `turnpike_verification_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyFailure {
    /// Malformed, forged, tampered, foreign, wrong preimage (`401 invalid_credential`).
    InvalidCredential,
    /// The backend does not report the invoice paid (`401 payment_not_settled`).
    PaymentNotSettled,
    /// The token expired (a fresh `402`).
    TokenExpired,
    /// The token is for another service (a fresh `402`).
    OtherService,
    /// The token has no calls left (a fresh `402`).
    TokenUsedUp,
    /// The request costs more than the token covers (a fresh `402`).
    PriceAboveToken,
    /// The provider revoked the token (`401 token_revoked`).
    TokenRevoked,
}

impl VerifyFailure {
    const ALL: [VerifyFailure; 7] = [
        VerifyFailure::InvalidCredential,
        VerifyFailure::PaymentNotSettled,
        VerifyFailure::TokenExpired,
        VerifyFailure::OtherService,
        VerifyFailure::TokenUsedUp,
        VerifyFailure::PriceAboveToken,
        VerifyFailure::TokenRevoked,
    ];

    fn label(self) -> &'static str {
        match self {
            VerifyFailure::InvalidCredential => "invalid_credential",
            VerifyFailure::PaymentNotSettled => "payment_not_settled",
            VerifyFailure::TokenExpired => "token_expired",
            VerifyFailure::OtherService => "other_service",
            VerifyFailure::TokenUsedUp => "token_used_up",
            VerifyFailure::PriceAboveToken => "price_above_token",
            VerifyFailure::TokenRevoked => "token_revoked",
        }
    }
}

/// A store operation, the label set of `turnpike_store_latency_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreOp {
    /// Charging a call.
    ConsumeCall,
    /// Giving a call back.
    RefundCall,
    /// Recording a challenge's invoice.
    RecordInvoice,
    /// Taking a free-tier call.
    TakeFreeCall,
    /// Beginning an idempotent request.
    IdempotencyBegin,
    /// Marking a time pass used.
    RecordPassUse,
    /// Adding the statistics of a flush.
    AddDailyStats,
}

impl StoreOp {
    const ALL: [StoreOp; 7] = [
        StoreOp::ConsumeCall,
        StoreOp::RefundCall,
        StoreOp::RecordInvoice,
        StoreOp::TakeFreeCall,
        StoreOp::IdempotencyBegin,
        StoreOp::RecordPassUse,
        StoreOp::AddDailyStats,
    ];

    fn label(self) -> &'static str {
        match self {
            StoreOp::ConsumeCall => "consume_call",
            StoreOp::RefundCall => "refund_call",
            StoreOp::RecordInvoice => "record_invoice",
            StoreOp::TakeFreeCall => "take_free_call",
            StoreOp::IdempotencyBegin => "idempotency_begin",
            StoreOp::RecordPassUse => "record_pass_use",
            StoreOp::AddDailyStats => "add_daily_stats",
        }
    }
}

/// A Lightning backend operation, the label set of `turnpike_backend_latency_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendOp {
    /// Creating a challenge's invoice.
    CreateInvoice,
    /// Looking up whether a token's invoice is settled.
    Lookup,
}

impl BackendOp {
    const ALL: [BackendOp; 2] = [BackendOp::CreateInvoice, BackendOp::Lookup];

    fn label(self) -> &'static str {
        match self {
            BackendOp::CreateInvoice => "create_invoice",
            BackendOp::Lookup => "lookup",
        }
    }
}

/// Picks one counter of a service.
type CounterOf = fn(&ServiceMetrics) -> &Counter;

/// Every metric of one gateway.
#[derive(Debug)]
pub struct Metrics {
    /// Every service ever in the table, in the order first seen (never removed: a counter
    /// must not go back).
    services: Mutex<Vec<Arc<ServiceMetrics>>>,
    verification_failures: [Counter; VerifyFailure::ALL.len()],
    store_latency: [Histogram; StoreOp::ALL.len()],
    backend_latency: [Histogram; BackendOp::ALL.len()],
    /// Client connections open now (kept by the serving code).
    open_connections: Arc<AtomicUsize>,
    /// The counts already added to the store, per service (see [`crate::stats`]).
    pub(crate) flushed: tokio::sync::Mutex<HashMap<String, StatCounts>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// An empty registry.
    pub fn new() -> Metrics {
        Metrics {
            services: Mutex::default(),
            verification_failures: Default::default(),
            store_latency: Default::default(),
            backend_latency: Default::default(),
            open_connections: Arc::default(),
            flushed: tokio::sync::Mutex::default(),
        }
    }

    /// The counters of the service `name`: the same ones for as long as this registry lives.
    pub fn service(&self, name: &str) -> Arc<ServiceMetrics> {
        let mut services = self.lock_services();
        if let Some(found) = services.iter().find(|s| s.name == name) {
            return found.clone();
        }
        let fresh = Arc::new(ServiceMetrics::new(name));
        services.push(fresh.clone());
        fresh
    }

    /// The counters registered under `name`, if any.
    pub(crate) fn existing(&self, name: &str) -> Option<Arc<ServiceMetrics>> {
        self.lock_services()
            .iter()
            .find(|s| s.name == name)
            .cloned()
    }

    /// Registers `metrics` under its name, unless that name has counters already.
    pub(crate) fn adopt(&self, metrics: &Arc<ServiceMetrics>) {
        let mut services = self.lock_services();
        if !services.iter().any(|s| s.name == metrics.name) {
            services.push(metrics.clone());
        }
    }

    /// Every service's counters (including services no longer configured).
    pub fn services(&self) -> Vec<Arc<ServiceMetrics>> {
        self.lock_services().clone()
    }

    fn lock_services(&self) -> std::sync::MutexGuard<'_, Vec<Arc<ServiceMetrics>>> {
        self.services.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a credential refused (or sent back to pay) for `why`.
    #[inline]
    pub fn verification_failed(&self, why: VerifyFailure) {
        self.verification_failures[why as usize].inc();
    }

    /// Verification failures for `why` so far.
    pub fn verification_failures(&self, why: VerifyFailure) -> u64 {
        self.verification_failures[why as usize].get()
    }

    /// Records a store operation's latency.
    #[inline]
    pub fn store_op(&self, op: StoreOp, elapsed: Duration) {
        self.store_latency[op as usize].observe(elapsed);
    }

    /// Records a backend operation's latency.
    #[inline]
    pub fn backend_op(&self, op: BackendOp, elapsed: Duration) {
        self.backend_latency[op as usize].observe(elapsed);
    }

    /// The count of open connections, for the serving code to keep.
    pub(crate) fn open_connections(&self) -> Arc<AtomicUsize> {
        self.open_connections.clone()
    }

    /// Appends every metric to `out` in the Prometheus text format 0.0.4.
    pub fn render_prometheus(&self, out: &mut String) {
        let services = self.services();
        let per_service: [(&str, &str, CounterOf); 7] = [
            ("turnpike_challenges_total", "402 challenges issued.", |s| {
                &s.challenges
            }),
            (
                "turnpike_payments_total",
                "Tokens used for the first time (one payment each).",
                |s| &s.payments,
            ),
            (
                "turnpike_earned_msat_total",
                "Millisatoshis earned by the payments counted.",
                |s| &s.earned_msat,
            ),
            (
                "turnpike_calls_served_total",
                "Paid calls served and kept charged.",
                |s| &s.calls_served,
            ),
            (
                "turnpike_calls_refunded_total",
                "Paid calls given back (upstream failure or 5xx, client gone).",
                |s| &s.calls_refunded,
            ),
            (
                "turnpike_free_calls_total",
                "Calls served without payment (free tier, free service, price 0).",
                |s| &s.free_calls,
            ),
            (
                "turnpike_rate_limited_total",
                "Requests answered 429.",
                |s| &s.rate_limited,
            ),
        ];
        for (name, help, counter) in per_service {
            header(out, name, help, "counter");
            for s in &services {
                sample(out, name, &[("service", &s.name)], counter(s).get());
            }
        }
        let name = "turnpike_upstream_responses_total";
        header(
            out,
            name,
            "Upstream answers by status class (error: no answer).",
            "counter",
        );
        for s in &services {
            for class in UpstreamClass::ALL {
                let labels = [("service", s.name.as_str()), ("class", class.label())];
                sample(out, name, &labels, s.upstream_responses(class));
            }
        }
        let name = "turnpike_upstream_latency_seconds";
        header(
            out,
            name,
            "Time to the upstream's response head.",
            "histogram",
        );
        for s in &services {
            histogram(out, name, &[("service", &s.name)], &s.upstream_latency);
        }
        let name = "turnpike_verification_failures_total";
        header(
            out,
            name,
            "Credentials refused (401) or sent back to pay (402), by reason.",
            "counter",
        );
        for why in VerifyFailure::ALL {
            sample(
                out,
                name,
                &[("reason", why.label())],
                self.verification_failures(why),
            );
        }
        let name = "turnpike_store_latency_seconds";
        header(out, name, "Latency of store operations.", "histogram");
        for op in StoreOp::ALL {
            let h = &self.store_latency[op as usize];
            histogram(out, name, &[("operation", op.label())], h);
        }
        let name = "turnpike_backend_latency_seconds";
        header(
            out,
            name,
            "Latency of Lightning backend operations.",
            "histogram",
        );
        for op in BackendOp::ALL {
            let h = &self.backend_latency[op as usize];
            histogram(out, name, &[("operation", op.label())], h);
        }
        let name = "turnpike_open_connections";
        header(out, name, "Client connections open now.", "gauge");
        let open = self.open_connections.load(Ordering::Relaxed);
        let open = u64::try_from(open).unwrap_or(u64::MAX);
        sample(out, name, &[], open);
    }
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// One sample line: `name{labels} value`.
fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
    out.push_str(name);
    write_labels(out, labels, None);
    let _ = writeln!(out, " {value}");
}

fn write_labels(out: &mut String, labels: &[(&str, &str)], le: Option<&str>) {
    if labels.is_empty() && le.is_none() {
        return;
    }
    out.push('{');
    let all = labels.iter().copied().chain(le.map(|le| ("le", le)));
    for (i, (key, value)) in all.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(key);
        out.push_str("=\"");
        escape_label_value(out, value);
        out.push('"');
    }
    out.push('}');
}

/// A label value as the text format wants it: `\`, `"` and newlines escaped.
fn escape_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// The cumulative `_bucket` lines, `_sum` (seconds) and `_count` of one histogram.
fn histogram(out: &mut String, name: &str, labels: &[(&str, &str)], h: &Histogram) {
    let counts: Vec<u64> = h
        .buckets
        .iter()
        .map(|b| b.load(Ordering::Relaxed))
        .collect();
    let bucket = format!("{name}_bucket");
    let mut cumulative = 0u64;
    for (i, n) in counts.iter().enumerate() {
        cumulative += n;
        let le = BUCKETS_SECS.get(i).copied().unwrap_or("+Inf");
        out.push_str(&bucket);
        write_labels(out, labels, Some(le));
        let _ = writeln!(out, " {cumulative}");
    }
    let sum = h.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
    sample(out, &format!("{name}_sum"), labels, sum);
    sample(out, &format!("{name}_count"), labels, cumulative);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(m: &Metrics) -> String {
        let mut out = String::new();
        m.render_prometheus(&mut out);
        out
    }

    #[test]
    fn label_values_are_escaped() {
        let mut out = String::new();
        sample(&mut out, "m", &[("a", "x\\y\"z\nw"), ("b", "plain")], 3);
        assert_eq!(out, "m{a=\"x\\\\y\\\"z\\nw\",b=\"plain\"} 3\n");
        let mut out = String::new();
        sample(&mut out, "g", &[], 0);
        assert_eq!(out, "g 0\n");
    }

    #[test]
    fn histogram_buckets_are_cumulative_with_sum_and_count() {
        let h = Histogram::default();
        for ms in [0, 1, 3, 3, 20_000] {
            h.observe(Duration::from_millis(ms));
        }
        // Exactly on a bound counts in that bucket (`le` is "less or equal").
        h.observe(Duration::from_micros(500));
        let mut out = String::new();
        histogram(&mut out, "h", &[("op", "x")], &h);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), BUCKETS_SECS.len() + 3);
        assert_eq!(lines[0], "h_bucket{op=\"x\",le=\"0.0005\"} 2");
        assert_eq!(lines[1], "h_bucket{op=\"x\",le=\"0.001\"} 3");
        assert_eq!(lines[2], "h_bucket{op=\"x\",le=\"0.0025\"} 3");
        assert_eq!(lines[3], "h_bucket{op=\"x\",le=\"0.005\"} 5");
        assert_eq!(lines[13], "h_bucket{op=\"x\",le=\"10\"} 5");
        assert_eq!(lines[14], "h_bucket{op=\"x\",le=\"+Inf\"} 6");
        assert_eq!(lines[15], "h_sum{op=\"x\"} 20.0075");
        assert_eq!(lines[16], "h_count{op=\"x\"} 6");
        assert_eq!(h.count(), 6);
    }

    #[test]
    fn services_keep_their_counters_by_name_and_render_every_family_once() {
        let m = Metrics::new();
        let a = m.service("a\"b");
        a.payment(turnpike_l402::Msat(2_500));
        a.upstream(
            UpstreamClass::of(http::StatusCode::BAD_GATEWAY),
            Duration::ZERO,
        );
        assert!(Arc::ptr_eq(&a, &m.service("a\"b")));
        m.adopt(&Arc::new(ServiceMetrics::new("a\"b")));
        assert_eq!(m.services().len(), 1);
        m.verification_failed(VerifyFailure::InvalidCredential);
        m.store_op(StoreOp::ConsumeCall, Duration::from_millis(2));
        let text = rendered(&m);
        assert!(
            text.contains("turnpike_earned_msat_total{service=\"a\\\"b\"} 2500\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "turnpike_upstream_responses_total{service=\"a\\\"b\",class=\"5xx\"} 1\n"
            )
        );
        assert!(
            text.contains(
                "turnpike_verification_failures_total{reason=\"invalid_credential\"} 1\n"
            )
        );
        assert!(
            text.contains("turnpike_store_latency_seconds_count{operation=\"consume_call\"} 1\n")
        );
        assert!(text.contains("turnpike_open_connections 0\n"));
        for family in text.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
            let name = family.split(' ').next().unwrap();
            let types = text.matches(&format!("# TYPE {name} ")).count();
            assert_eq!(types, 1, "{name}");
        }
    }
}
