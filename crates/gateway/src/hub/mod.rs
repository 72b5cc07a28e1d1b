//! The hub (`[hub]`): many providers on one gateway. Each provider registers (a name, a slug,
//! a contact, a payout), gets an admin token of its own scoped to its own services, and is
//! paid on its own wallet ([`payout`]): the hub never holds its money. A provider's services
//! answer at `<slug>.<hub domain>` and under `/<slug>/` (the prefix is stripped before the
//! upstream). The client pays the provider's price plus the platform fee ([`fee`]), owed by
//! the provider and accrued in the store's fee ledger once the token's payment is recognised;
//! no fee during the provider's free trial.
//!
//! Providers live in the admin store and are picked up by every replica with the services
//! ([`crate::control::Control::sync`]). The request path only reads a service's [`Payee`],
//! resolved when the service table is built.

pub mod billing;
pub mod catalogue;
pub mod directory;
pub mod fee;
pub mod health;
pub(crate) mod ledger;
pub mod payout;
pub mod register;
pub mod register_page;
pub mod sandbox;
pub mod verify;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use turnpike_l402::Msat;
use turnpike_l402::bolt11::Network;
use turnpike_lightning::InvoiceBackend;
use turnpike_store::ProviderRecord;

use crate::config::{ConfigError, HubConfig, ServiceConfig};
pub use fee::FeeRate;
pub use payout::{Payout, PayoutPolicy};

/// `[hub]`, checked.
#[derive(Debug, Clone)]
pub struct HubSettings {
    /// The hub's domain (normalised, lower case).
    pub domain: String,
    /// The platform fee.
    pub fee: FeeRate,
    /// Seconds from registration without fee.
    pub trial_secs: u64,
    /// Anyone may register.
    pub open_registration: bool,
    /// Where providers reach the dashboard (an absolute http or https URL), if said.
    pub dashboard_url: Option<String>,
    /// How payouts may be reached.
    pub payouts: PayoutPolicy,
    /// Providers' upstreams may be internal.
    pub allow_private_upstreams: bool,
    /// Unbilled fees from which a provider is billed.
    pub bill_threshold: Msat,
    /// Seconds a provider has to pay a bill.
    pub bill_grace_secs: u64,
    /// Between two billing runs.
    pub billing_interval: std::time::Duration,
    /// Between two probe rounds of the providers' upstreams (`None`: no probes).
    pub probe_interval: Option<std::time::Duration>,
    /// How long a bill's invoice lives, in seconds.
    pub bill_expiry_secs: u32,
}

/// The longest a bill's invoice lives (some backends refuse longer expiries).
const MAX_BILL_EXPIRY_SECS: u64 = 30 * 86_400;

impl HubSettings {
    /// Checks `[hub]`, naming the key at fault.
    pub fn parse(c: &HubConfig) -> Result<HubSettings, ConfigError> {
        let domain = crate::edge::host::normalize_pattern(&c.domain)
            .ok()
            .filter(|d| !d.starts_with('*') && d.contains('.'))
            .ok_or_else(|| invalid("hub.domain", "must be a domain name, e.g. hub.example.com"))?;
        let fee = FeeRate::parse(&c.fee).map_err(|m| invalid("hub.fee", m))?;
        if c.trial_days > 3650 {
            return Err(invalid("hub.trial_days", "must be at most 3650"));
        }
        let network = c
            .network
            .parse::<Network>()
            .map_err(|e| invalid("hub.network", e.to_string()))?;
        let bill_threshold = turnpike_l402::Sats(c.bill_threshold_sats)
            .to_msat()
            .filter(|m| m.0 > 0 && c.bill_threshold_sats <= 2_100_000_000_000_000)
            .ok_or_else(|| invalid("hub.bill_threshold_sats", "must be from 1 to all bitcoin"))?;
        if c.bill_grace_days > 365 {
            return Err(invalid("hub.bill_grace_days", "must be at most 365"));
        }
        if !(1..=86_400).contains(&c.billing_interval_secs) {
            return Err(invalid(
                "hub.billing_interval_secs",
                "must be between 1 and 86400",
            ));
        }
        let dashboard_url = c
            .dashboard_url
            .as_deref()
            .map(check_dashboard_url)
            .transpose()
            .map_err(|m| invalid("hub.dashboard_url", m))?;
        if c.probe_interval_secs > 86_400 {
            return Err(invalid(
                "hub.probe_interval_secs",
                "must be at most 86400 (0: no probes)",
            ));
        }
        let grace = u64::from(c.bill_grace_days) * 86_400;
        let bill_expiry_secs = match c.bill_expiry_secs {
            Some(s) if (1..=MAX_BILL_EXPIRY_SECS).contains(&s) => s,
            Some(_) => {
                return Err(invalid(
                    "hub.bill_expiry_secs",
                    "must be between 1 and 2592000 (30 days)",
                ));
            }
            None => (grace + 7 * 86_400).clamp(600, MAX_BILL_EXPIRY_SECS),
        };
        Ok(HubSettings {
            probe_interval: (c.probe_interval_secs > 0)
                .then(|| std::time::Duration::from_secs(c.probe_interval_secs)),
            bill_expiry_secs: u32::try_from(bill_expiry_secs).unwrap_or(u32::MAX),
            bill_threshold,
            bill_grace_secs: grace,
            billing_interval: std::time::Duration::from_secs(c.billing_interval_secs),
            domain,
            fee,
            trial_secs: u64::from(c.trial_days) * 86_400,
            open_registration: c.open_registration,
            dashboard_url,
            payouts: PayoutPolicy {
                allow_insecure: c.allow_insecure_payouts,
                network,
            },
            allow_private_upstreams: c.allow_private_upstreams,
        })
    }

    /// The host a provider's services answer at.
    pub fn host_of(&self, slug: &str) -> String {
        format!("{slug}.{}", self.domain)
    }
}

/// `[hub] dashboard_url`: an absolute `http`/`https` URL with a host and no user name or
/// password (it is shown to every provider as a link).
fn check_dashboard_url(url: &str) -> Result<String, &'static str> {
    let message = "must be an absolute http or https URL without user:password@, \
                   e.g. https://admin.hub.example.com/";
    let uri: http::Uri = url.parse().map_err(|_| message)?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
    if !scheme_ok || authority.is_empty() || authority.contains('@') {
        return Err(message);
    }
    Ok(url.to_owned())
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// The unix seconds of a calendar month `YYYY-MM` (UTC), end excluded: a statement's period.
pub fn month_range(month: &str) -> Result<std::ops::Range<u64>, String> {
    let bad = || format!("{month:?} is not a month: write YYYY-MM, e.g. 2026-12");
    let (y, m) = month.split_once('-').ok_or_else(bad)?;
    let digits = |t: &str, n: usize| t.len() == n && t.bytes().all(|b| b.is_ascii_digit());
    if !digits(y, 4) || !digits(m, 2) {
        return Err(bad());
    }
    let (y, m): (u32, u32) = (y.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
    let start = turnpike_store::Day::from_ymd(y, m, 1).ok_or_else(bad)?;
    let end = turnpike_store::Day::from_ymd(ny, nm, 1).ok_or_else(bad)?;
    let secs = |d: turnpike_store::Day| u64::from(d.days_since_epoch()) * 86_400;
    Ok(secs(start)..secs(end))
}

/// Slugs that name parts of the hub itself, never a provider.
const RESERVED_SLUGS: [&str; 12] = [
    "www",
    "api",
    "admin",
    "hub",
    "directory",
    "dashboard",
    "static",
    "assets",
    "mail",
    "status",
    "docs",
    "well-known",
];

/// Whether `slug` may name a provider: a DNS label of 3 to 32 lower-case letters, digits and
/// `-` (not first, not last, never two in a row), not reserved.
pub fn check_slug(slug: &str) -> Result<(), String> {
    let ok = (3..=32).contains(&slug.len())
        && slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !slug.starts_with('-')
        && !slug.ends_with('-')
        && !slug.contains("--");
    if !ok {
        return Err(format!(
            "{slug:?} must be 3 to 32 lower-case letters, digits and single '-' inside"
        ));
    }
    if RESERVED_SLUGS.contains(&slug) {
        return Err(format!("{slug:?} is reserved"));
    }
    Ok(())
}

/// Who is paid for a provider's service, and how its invoice amount is set.
pub struct Payee {
    /// The provider's slug.
    pub provider: String,
    /// Creates the provider's invoices (on its own wallet).
    pub backend: Arc<dyn InvoiceBackend>,
    /// The platform fee after the trial.
    pub fee: FeeRate,
    /// Until when no fee is added (unix seconds).
    pub trial_ends_at: u64,
    /// The wallet takes whole satoshis only.
    pub whole_sats: bool,
    /// The wallet can be asked whether an invoice was paid before a token's first use.
    pub checks_settlement: bool,
    /// The provider is suspended: no invoice is created for it.
    pub suspended: bool,
    /// Its Lightning address, when its invoices can be confirmed through LUD-21 `verify`
    /// ([`verify`]).
    pub verifier: Option<Arc<turnpike_lightning::lnurl::LnAddressBackend>>,
}

impl fmt::Debug for Payee {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Payee")
            .field("provider", &self.provider)
            .field("backend", &self.backend.name())
            .field("fee", &self.fee)
            .finish_non_exhaustive()
    }
}

impl Payee {
    /// The fee rate in force at `now`: none in the trial.
    pub fn fee_at(&self, now: u64) -> FeeRate {
        if now < self.trial_ends_at {
            FeeRate::ZERO
        } else {
            self.fee
        }
    }

    /// What the client pays for `price` at `now`, and the fee in it (`None`: out of range).
    pub fn invoice_amount(&self, price: Msat, now: u64) -> Option<(Msat, Msat)> {
        let amount = fee::invoice_amount(price, self.fee_at(now), self.whole_sats)?;
        Some((amount, Msat(amount.0 - price.0)))
    }
}

/// A provider in force: its record and its payee.
#[derive(Debug)]
pub struct Provider {
    /// As stored.
    pub record: ProviderRecord,
    /// Its payout, connected.
    pub payee: Arc<Payee>,
    /// Its payout as stored (JSON), to tell whether it changed.
    payout_json: String,
}

/// A provider's status: its services are served and paid.
pub const ACTIVE: &str = "active";
/// A provider's status: its services take no new payment (no 402s); tokens already paid keep
/// working until used.
pub const SUSPENDED: &str = "suspended";

impl Provider {
    /// Whether it takes new payments.
    pub fn is_active(&self) -> bool {
        self.record.status == ACTIVE
    }

    /// Whether its services are routed at all (active or suspended).
    pub fn is_served(&self) -> bool {
        self.is_active() || self.record.status == SUSPENDED
    }

    /// The provider as the API shows it (the payout's secrets redacted).
    pub fn to_json(&self) -> serde_json::Value {
        let r = &self.record;
        let payout = serde_json::from_str::<Payout>(&r.payout)
            .map(|p| p.redacted())
            .unwrap_or(serde_json::Value::Null);
        serde_json::json!({
            "slug": r.slug,
            "name": r.name,
            "contact": r.contact,
            "payout": payout,
            "status": r.status,
            "created_at": r.created_at,
            "trial_ends_at": r.trial_ends_at,
        })
    }
}

/// The providers in force, by slug and by token hash.
#[derive(Debug, Default)]
struct Providers {
    by_slug: BTreeMap<String, Arc<Provider>>,
    by_token: HashMap<[u8; 32], Arc<Provider>>,
}

/// The hub of a gateway: its settings and its providers.
#[derive(Debug)]
pub struct Hub {
    /// `[hub]`, checked.
    pub settings: HubSettings,
    providers: ArcSwap<Providers>,
    /// The health of its services, as last read from the store, and what is yet to be added.
    pub health: health::board::Health,
}

impl Hub {
    /// A hub with no providers yet.
    pub fn new(settings: HubSettings) -> Hub {
        Hub {
            settings,
            providers: ArcSwap::default(),
            health: health::board::Health::default(),
        }
    }

    /// The provider `slug`.
    pub fn provider(&self, slug: &str) -> Option<Arc<Provider>> {
        self.providers.load().by_slug.get(slug).cloned()
    }

    /// Every provider, by slug.
    pub fn providers(&self) -> Vec<Arc<Provider>> {
        self.providers.load().by_slug.values().cloned().collect()
    }

    /// The provider whose admin token is `token` (looked up by its SHA-256).
    pub fn provider_by_token(&self, token: &[u8]) -> Option<Arc<Provider>> {
        use sha2::{Digest, Sha256};
        let hash: [u8; 32] = Sha256::digest(token).into();
        self.providers.load().by_token.get(&hash).cloned()
    }

    /// Puts the stored providers in force. A provider whose payout did not change keeps its
    /// connected backend; one whose payout cannot be connected is left out (logged), and so
    /// are its services.
    pub fn load(&self, records: Vec<ProviderRecord>) {
        let old = self.providers.load_full();
        let mut next = Providers::default();
        for record in records {
            let kept = old
                .by_slug
                .get(&record.slug)
                .filter(|p| p.payout_json == record.payout && p.record == record)
                .cloned();
            let provider = match kept {
                Some(p) => p,
                None => match self.connect(record) {
                    Ok(p) => Arc::new(p),
                    Err((slug, e)) => {
                        tracing::error!(provider = %slug, error = %e, "provider's payout cannot be used: its services are off");
                        continue;
                    }
                },
            };
            next.by_token
                .insert(provider.record.token_hash, provider.clone());
            next.by_slug.insert(provider.record.slug.clone(), provider);
        }
        self.providers.store(Arc::new(next));
    }

    fn connect(&self, record: ProviderRecord) -> Result<Provider, (String, String)> {
        let fail = |e: String| (record.slug.clone(), e);
        let payout: Payout =
            serde_json::from_str(&record.payout).map_err(|e| fail(e.to_string()))?;
        let connected = payout.connect(self.settings.payouts).map_err(fail)?;
        let payee = Payee {
            provider: record.slug.clone(),
            backend: connected.backend,
            fee: self.settings.fee,
            trial_ends_at: record.trial_ends_at,
            whole_sats: connected.whole_sats,
            checks_settlement: connected.checks_settlement,
            suspended: record.status == SUSPENDED,
            verifier: connected.verifier,
        };
        Ok(Provider {
            payout_json: record.payout.clone(),
            record,
            payee: Arc::new(payee),
        })
    }

    /// Checks a provider's service, as a `[[services]]` table (its provider is looked up by
    /// the caller): the hub sets where it answers
    /// (no `host`, `host_regex`, `path_regex`), it is paid over Lightning only (an x402
    /// `pay_to` would be the hub's), header values are inline (never the hub's files or
    /// environment), no pricer yet. Errors name the key.
    pub fn check_service(&self, c: &ServiceConfig) -> Result<(), ConfigError> {
        let set_by_hub = "is set by the hub: a provider's services answer at <slug>.<hub domain> and under /<slug>/";
        if c.host.is_some() {
            return Err(invalid("host", set_by_hub));
        }
        if c.host_regex.is_some() {
            return Err(invalid("host_regex", set_by_hub));
        }
        if c.path_regex.is_some() || c.routes.iter().any(|r| r.path_regex.is_some()) {
            return Err(invalid(
                "path_regex",
                "is not available to hub providers yet: use path",
            ));
        }
        if c.pricer.is_some() {
            return Err(invalid("pricer", "is not available to hub providers yet"));
        }
        if c.rails != [crate::config::Rail::L402] || c.price_usdc.is_some() {
            return Err(invalid(
                "rails",
                "a provider's services are paid over Lightning (\"l402\") only",
            ));
        }
        for (name, source) in &c.headers {
            if !matches!(source, turnpike_lightning::SecretSource::Inline(_)) {
                return Err(invalid(
                    &format!("headers.{name}"),
                    "a provider's header values are given inline",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn slugs_are_dns_labels_and_not_reserved() {
        for ok in ["alice", "bob-2", "a1b", "x-y-z"] {
            assert_eq!(check_slug(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "ab",
            "Alice",
            "-ab",
            "ab-",
            "a--b",
            "a.b",
            "a_b",
            "a b",
            "admin",
            "www",
            "abcdefghijklmnopqrstuvwxyz0123456",
            "ålice",
            "a%62c",
        ] {
            assert!(check_slug(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn months_are_utc_calendar_months() {
        assert_eq!(month_range("1970-01"), Ok(0..31 * 86_400));
        assert_eq!(
            month_range("2024-02").map(|r| (r.end - r.start) / 86_400),
            Ok(29)
        );
        assert_eq!(
            month_range("2026-12").map(|r| r.end),
            month_range("2027-01").map(|r| r.start)
        );
        for bad in [
            "",
            "2026",
            "2026-13",
            "2026-00",
            "2026-1",
            "26-01",
            "2026-01-01",
            "２０２６-01",
        ] {
            assert!(month_range(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        /// Consecutive months tile time: each ends where the next starts, and every second of
        /// a month is in exactly that month (its day says so).
        #[test]
        fn months_tile_time(y in 1970u32..2400, m in 1u32..=12, offset in 0u64..31 * 86_400) {
            let r = month_range(&format!("{y:04}-{m:02}")).unwrap();
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            let next = month_range(&format!("{ny:04}-{nm:02}")).unwrap();
            prop_assert_eq!(r.end, next.start);
            let at = r.start + offset;
            let (dy, dm, _) = turnpike_store::Day::from_unix(at).ymd();
            prop_assert_eq!(r.contains(&at), (dy, dm) == (y, m));
        }

        /// A valid slug is a lower-case DNS label, so `<slug>.<domain>` is one host.
        #[test]
        fn valid_slugs_are_host_labels(slug in "\\PC{0,40}") {
            if check_slug(&slug).is_ok() {
                let host = format!("{slug}.hub.example");
                let normal = crate::edge::host::normalize_pattern(&host).ok();
                prop_assert_eq!(normal.as_deref(), Some(host.as_str()));
            }
        }
    }

    fn settings(text: &str) -> Result<HubSettings, ConfigError> {
        HubSettings::parse(&toml::from_str::<HubConfig>(text).unwrap())
    }

    #[test]
    fn hub_settings_are_checked_naming_the_key() {
        let s = settings("domain = \"Hub.Example.com\"").unwrap();
        assert_eq!(s.domain, "hub.example.com");
        assert_eq!(s.fee.ppm(), 20_000);
        assert_eq!(s.trial_secs, 14 * 86_400);
        assert!(!s.payouts.allow_insecure && !s.open_registration);
        assert_eq!(s.bill_expiry_secs, 21 * 86_400, "grace + 7 days");
        let short = settings("domain = \"h.x\"\nbill_grace_days = 0").unwrap();
        assert_eq!(short.bill_expiry_secs, 7 * 86_400);
        let long = settings("domain = \"h.x\"\nbill_grace_days = 60").unwrap();
        assert_eq!(long.bill_expiry_secs, 30 * 86_400, "at most 30 days");
        let set = settings("domain = \"h.x\"\nbill_expiry_secs = 5").unwrap();
        assert_eq!(set.bill_expiry_secs, 5);
        let key = |t: &str| match settings(t).unwrap_err() {
            ConfigError::Invalid { key, .. } => key,
            other => panic!("{other}"),
        };
        assert_eq!(key("domain = \"*.x.com\""), "hub.domain");
        assert_eq!(key("domain = \"localhost\""), "hub.domain");
        assert_eq!(key("domain = \"h.x\"\nfee = \"0.1.2\""), "hub.fee");
        assert_eq!(key("domain = \"h.x\"\nfee = \"101%\""), "hub.fee");
        assert_eq!(
            key("domain = \"h.x\"\ntrial_days = 99999"),
            "hub.trial_days"
        );
        assert_eq!(key("domain = \"h.x\"\nnetwork = \"moon\""), "hub.network");
        assert_eq!(
            key("domain = \"h.x\"\nbill_threshold_sats = 0"),
            "hub.bill_threshold_sats"
        );
        assert_eq!(
            key("domain = \"h.x\"\nbill_grace_days = 400"),
            "hub.bill_grace_days"
        );
        assert_eq!(
            key("domain = \"h.x\"\nbilling_interval_secs = 0"),
            "hub.billing_interval_secs"
        );
        assert_eq!(
            key("domain = \"h.x\"\nprobe_interval_secs = 86401"),
            "hub.probe_interval_secs"
        );
        assert_eq!(
            settings("domain = \"h.x\"\nprobe_interval_secs = 0")
                .unwrap()
                .probe_interval,
            None
        );
        assert_eq!(s.probe_interval, Some(std::time::Duration::from_secs(60)));
        assert_eq!(
            key("domain = \"h.x\"\nbill_expiry_secs = 0"),
            "hub.bill_expiry_secs"
        );
        assert_eq!(
            key("domain = \"h.x\"\nbill_expiry_secs = 2592001"),
            "hub.bill_expiry_secs"
        );
    }

    #[test]
    fn no_fee_in_the_trial_then_the_fee_rounded_up() {
        let payee = Payee {
            provider: "alice".into(),
            backend: Arc::new(turnpike_lightning::DevBackend::random()),
            fee: FeeRate::parse("2%").unwrap(),
            trial_ends_at: 1000,
            whole_sats: true,
            checks_settlement: true,
            suspended: false,
            verifier: None,
        };
        assert_eq!(
            payee.invoice_amount(Msat(21_000), 999),
            Some((Msat(21_000), Msat(0)))
        );
        assert_eq!(
            payee.invoice_amount(Msat(21_000), 1000),
            Some((Msat(22_000), Msat(1000)))
        );
        let exact = Payee {
            whole_sats: false,
            ..payee
        };
        assert_eq!(
            exact.invoice_amount(Msat(21_000), 1000),
            Some((Msat(21_420), Msat(420)))
        );
    }
}
