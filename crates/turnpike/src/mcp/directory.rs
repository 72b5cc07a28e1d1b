//! The hub's directory as `turnpike mcp --hub` reads it: the hub's base URL, the entries of
//! `GET <hub>/directory` (docs/hub.md, "Directory"), and the bounded, paged read of them.
//!
//! The hub is a peer, not a friend: a page is at most [`MAX_PAGE_BYTES`], the whole listing at
//! most [`MAX_ENTRIES`] entries, each request has a timeout, and an entry that does not parse is
//! left out (and said) instead of failing the rest.

use std::time::{Duration, Instant};

use serde::Deserialize;

/// The most entries read from a hub (the rest are left out, and said).
pub const MAX_ENTRIES: usize = 1000;
/// The most bytes of one page of the directory.
pub const MAX_PAGE_BYTES: usize = 1024 * 1024;
/// Entries asked per page (the directory's largest `limit`).
const PAGE_LIMIT: usize = 200;
/// How long one page may take.
const PAGE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the whole listing may take.
const LISTING_TIMEOUT: Duration = Duration::from_secs(60);

/// Why the directory could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("the hub URL {0:?} is not usable: {1}")]
    BadBase(String, &'static str),
    #[error("fetching {url}: {message}")]
    Fetch { url: String, message: String },
    #[error("{url} answered HTTP {status}{hint}")]
    Status {
        url: String,
        status: u16,
        hint: &'static str,
    },
    #[error("a page of {url} is larger than {MAX_PAGE_BYTES} bytes")]
    TooLarge { url: String },
    #[error("{url} is not a directory page: {message}")]
    NotADirectory { url: String, message: String },
    #[error("reading the directory took longer than {} s", LISTING_TIMEOUT.as_secs())]
    Timeout,
}

/// The hub's base URL: http or https, a host, no credentials, query or fragment; its path
/// without a trailing `/` (services' paths are joined to it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubBase(reqwest::Url);

impl HubBase {
    /// Checks `--hub URL`.
    pub fn parse(text: &str) -> Result<HubBase, DirectoryError> {
        let bad = |why| DirectoryError::BadBase(text.to_owned(), why);
        let mut url = reqwest::Url::parse(text.trim()).map_err(|_| bad("not a URL"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad("only http and https"));
        }
        if url.host_str().is_none() {
            return Err(bad("no host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad("credentials in the URL"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad("a query or a fragment"));
        }
        let path = url.path().trim_end_matches('/').to_owned();
        url.set_path(&path);
        Ok(HubBase(url))
    }

    /// The base URL.
    pub fn url(&self) -> &reqwest::Url {
        &self.0
    }

    /// The base path without its trailing `/` (empty at the root).
    pub fn path(&self) -> &str {
        self.0.path().trim_end_matches('/')
    }

    /// The URL of one directory page.
    fn page_url(&self, limit: usize, offset: usize) -> reqwest::Url {
        let mut url = self.0.clone();
        url.set_path(&format!("{}/directory", self.path()));
        url.query_pairs_mut()
            .append_pair("limit", &limit.to_string())
            .append_pair("offset", &offset.to_string());
        url
    }
}

/// The provider of an entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Provider {
    pub slug: String,
    pub name: String,
    /// A suspended provider's services answer 403 instead of 402: not listed as tools.
    #[serde(default)]
    pub suspended: bool,
}

/// The health of an entry (only its probe status is used).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Health {
    pub status: String,
}

/// One service (or route) of the directory; fields the contract may add later are ignored.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Entry {
    /// `<slug>/<service>` or `<slug>/<service>/<route>`.
    pub id: String,
    pub provider: Provider,
    pub service: String,
    #[serde(default)]
    pub route: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    /// The path on the hub, from its root (checked when called).
    pub path: String,
    /// `None`: any method (called with GET).
    #[serde(default)]
    pub method: Option<String>,
    pub mode: String,
    /// The provider's price (the most, for `dynamic_cap`).
    pub price_msat: u64,
    /// What the client pays, fee included.
    pub amount_msat: u64,
    #[serde(default)]
    pub calls_per_payment: Option<u64>,
    #[serde(default)]
    pub valid_secs: Option<u64>,
    #[serde(default)]
    pub input_schema: Option<serde_json::Value>,
    #[serde(default)]
    pub health: Option<Health>,
}

/// A page of the directory, its entries still unparsed (as raw text: each is parsed alone, so
/// that one too deeply nested for the parser is left out alone instead of failing the page).
#[derive(Debug, Deserialize)]
struct Page {
    total: usize,
    #[serde(default)]
    offset: Option<usize>,
    services: Vec<Box<serde_json::value::RawValue>>,
}

/// What was read from the directory.
#[derive(Debug, Default)]
pub struct Listing {
    pub entries: Vec<Entry>,
    /// Entries left out, each with the reason.
    pub skipped: Vec<String>,
    /// Whether the directory had more than [`MAX_ENTRIES`] entries.
    pub truncated: bool,
}

impl Listing {
    /// Adds the entries of one page, parsing each alone.
    fn add_page(&mut self, services: Vec<Box<serde_json::value::RawValue>>) {
        for (i, text) in services.into_iter().enumerate() {
            let raw: serde_json::Value = match serde_json::from_str(text.get()) {
                Ok(raw) => raw,
                Err(err) => {
                    self.skipped.push(format!("#{i}: {err}"));
                    continue;
                }
            };
            let id = raw
                .get("id")
                .and_then(|v| v.as_str())
                .map_or_else(|| format!("#{i}"), str::to_owned);
            match serde_json::from_value::<Entry>(raw) {
                Ok(e) if e.provider.suspended => {
                    self.skipped
                        .push(format!("{id}: its provider is suspended"));
                }
                Ok(e) => self.entries.push(e),
                Err(err) => self.skipped.push(format!("{id}: {err}")),
            }
        }
    }

    fn seen(&self) -> usize {
        self.entries.len() + self.skipped.len()
    }
}

/// Reads the whole directory of `base`, page by page, within the bounds of this module.
pub async fn read(http: &reqwest::Client, base: &HubBase) -> Result<Listing, DirectoryError> {
    tokio::time::timeout(LISTING_TIMEOUT, read_pages(http, base))
        .await
        .map_err(|_| DirectoryError::Timeout)?
}

async fn read_pages(http: &reqwest::Client, base: &HubBase) -> Result<Listing, DirectoryError> {
    let mut listing = Listing::default();
    let started = Instant::now();
    loop {
        let offset = listing.seen();
        let limit = PAGE_LIMIT.min(MAX_ENTRIES - offset);
        let url = base.page_url(limit, offset);
        let page = read_page(http, &url).await?;
        if page.offset.is_some_and(|o| o != offset) {
            return Err(DirectoryError::NotADirectory {
                url: url.to_string(),
                message: format!("asked offset {offset}, got {:?}", page.offset),
            });
        }
        let got = page.services.len();
        if got > limit {
            return Err(DirectoryError::NotADirectory {
                url: url.to_string(),
                message: format!("asked at most {limit} entries, got {got}"),
            });
        }
        listing.add_page(page.services);
        let seen = listing.seen();
        if got == 0 || seen >= page.total {
            break;
        }
        if seen >= MAX_ENTRIES {
            listing.truncated = true;
            break;
        }
        tracing::debug!(seen, elapsed = ?started.elapsed(), "directory page read");
    }
    Ok(listing)
}

async fn read_page(http: &reqwest::Client, url: &reqwest::Url) -> Result<Page, DirectoryError> {
    let fetch_err = |e: reqwest::Error| DirectoryError::Fetch {
        url: url.to_string(),
        message: crate::mcp::chain(&e),
    };
    let mut resp = http
        .get(url.clone())
        .header(http::header::ACCEPT, "application/json")
        .timeout(PAGE_TIMEOUT)
        .send()
        .await
        .map_err(fetch_err)?;
    let status = resp.status().as_u16();
    if status != 200 {
        let hint = if status == 404 {
            ": is it a Turnpike hub with [hub] on?"
        } else {
            ""
        };
        return Err(DirectoryError::Status {
            url: url.to_string(),
            status,
            hint,
        });
    }
    let body = crate::mcp::read_bounded(&mut resp, MAX_PAGE_BYTES)
        .await
        .map_err(|e| match e {
            crate::mcp::BodyError::TooLarge(_) => DirectoryError::TooLarge {
                url: url.to_string(),
            },
            crate::mcp::BodyError::Read(e) => fetch_err(e),
        })?;
    serde_json::from_slice(&body).map_err(|e| DirectoryError::NotADirectory {
        url: url.to_string(),
        message: e.to_string(),
    })
}

/// A peer for tests: a hub whose `/directory` pages a closure makes.
#[cfg(test)]
pub mod test_peer {
    use super::HubBase;
    use std::sync::{Arc, Mutex};

    /// A hub that need not be honest (an attacker's test peer, not a fake of Turnpike's
    /// directory): each page as `page` makes it from (limit, offset), which are logged.
    pub async fn hostile_hub(
        page: impl Fn(usize, usize) -> axum::response::Response + Clone + Send + Sync + 'static,
    ) -> (HubBase, Arc<Mutex<Vec<(usize, usize)>>>) {
        let asked: Arc<Mutex<Vec<(usize, usize)>>> = Default::default();
        let log = asked.clone();
        let app = axum::Router::new().route(
            "/directory",
            axum::routing::get(
                move |q: axum::extract::Query<std::collections::HashMap<String, usize>>| {
                    let (limit, offset) = (q.0["limit"], q.0["offset"]);
                    log.lock().unwrap().push((limit, offset));
                    let page = page.clone();
                    async move { page(limit, offset) }
                },
            ),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(axum::serve(l, app).into_future());
        (HubBase::parse(&format!("http://{addr}")).unwrap(), asked)
    }

    pub fn json_response(v: serde_json::Value) -> axum::response::Response {
        axum::response::IntoResponse::into_response(axum::Json(v))
    }
}

#[cfg(test)]
mod tests {
    use super::test_peer::{hostile_hub, json_response};
    use super::*;
    use serde_json::json;

    #[test]
    fn the_hub_url_is_checked() {
        let ok = HubBase::parse("http://127.0.0.1:8080/").unwrap();
        assert_eq!(ok.path(), "");
        assert_eq!(
            ok.page_url(200, 0).as_str(),
            "http://127.0.0.1:8080/directory?limit=200&offset=0"
        );
        let sub = HubBase::parse("https://hub.example/api/").unwrap();
        assert_eq!(sub.path(), "/api");
        assert_eq!(
            sub.page_url(5, 10).as_str(),
            "https://hub.example/api/directory?limit=5&offset=10"
        );
        for bad in [
            "hub.example",
            "ftp://hub.example/",
            "http://user:pw@hub.example/",
            "http://hub.example/?q=1",
            "http://hub.example/#x",
            "file:///etc",
        ] {
            assert!(HubBase::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_bad_or_suspended_entry_is_left_out_alone() {
        let good = json!({
            "id": "alice/quote", "provider": {"slug": "alice", "name": "Alice"},
            "service": "quote", "route": null, "description": "Quotes", "tags": [],
            "path": "/alice/quote", "method": "GET", "mode": "per_call",
            "price_msat": 21000, "amount_msat": 21420, "calls_per_payment": 1,
            "valid_secs": null, "rails": ["l402"], "input_schema": null,
            "health": {"status": "up", "uptime_pct": null}, "some_new_field": 1
        });
        let mut suspended = good.clone();
        suspended["id"] = json!("bob/x");
        suspended["provider"] = json!({"slug": "bob", "name": "Bob", "suspended": true});
        let mut listing = Listing::default();
        let raw = |v: serde_json::Value| serde_json::value::to_raw_value(&v).unwrap();
        listing.add_page(vec![
            raw(good),
            raw(json!({"id": "carol/y", "price_msat": "lots"})),
            raw(suspended),
            raw(json!(7)),
        ]);
        assert_eq!(listing.entries.len(), 1);
        assert_eq!(listing.entries[0].amount_msat, 21_420);
        assert_eq!(listing.skipped.len(), 3, "{:?}", listing.skipped);
        assert!(listing.skipped[0].starts_with("carol/y: "));
        assert!(listing.skipped[1].contains("suspended"));
        assert_eq!(listing.seen(), 4);
    }

    fn entry_json(i: usize) -> serde_json::Value {
        json!({
            "id": format!("p/s{i}"), "provider": {"slug": "p", "name": "P"}, "service": format!("s{i}"),
            "path": format!("/p/s{i}"), "mode": "per_call", "price_msat": 1000, "amount_msat": 1020,
            "calls_per_payment": 1,
        })
    }

    #[tokio::test]
    async fn the_listing_is_paged_and_bounded() {
        turnpike_lightning::ensure_crypto_provider();
        let http = reqwest::Client::new();
        // An honest directory of 450 entries: three pages.
        let (base, asked) = hostile_hub(|limit, offset| {
            let services: Vec<_> = (offset..(offset + limit).min(450))
                .map(entry_json)
                .collect();
            json_response(json!({"total": 450, "offset": offset, "services": services}))
        })
        .await;
        let listing = read(&http, &base).await.unwrap();
        assert_eq!((listing.entries.len(), listing.truncated), (450, false));
        assert_eq!(*asked.lock().unwrap(), [(200, 0), (200, 200), (200, 400)]);
        // One that never ends: cut at MAX_ENTRIES, said.
        let (base, asked) = hostile_hub(|limit, offset| {
            let services: Vec<_> = (offset..offset + limit).map(entry_json).collect();
            json_response(json!({"total": 1_000_000, "offset": offset, "services": services}))
        })
        .await;
        let listing = read(&http, &base).await.unwrap();
        assert_eq!(
            (listing.entries.len(), listing.truncated),
            (MAX_ENTRIES, true)
        );
        assert_eq!(asked.lock().unwrap().len(), MAX_ENTRIES / PAGE_LIMIT);
        // One that sends more than asked, or ignores the offset: refused.
        let (base, _) = hostile_hub(|_, _| {
            let services: Vec<_> = (0..300).map(entry_json).collect();
            json_response(json!({"total": 300, "services": services}))
        })
        .await;
        let e = read(&http, &base).await.unwrap_err();
        assert!(matches!(e, DirectoryError::NotADirectory { .. }), "{e}");
        let (base, _) = hostile_hub(|_, _| {
            let services: Vec<_> = (0..200).map(entry_json).collect();
            json_response(json!({"total": 5000, "offset": 0, "services": services}))
        })
        .await;
        let e = read(&http, &base).await.unwrap_err();
        assert!(e.to_string().contains("asked offset 200"), "{e}");
    }

    /// `levels` arrays nested in one another, as JSON text.
    fn nested(levels: usize) -> String {
        format!("{}{}", "[".repeat(levels), "]".repeat(levels))
    }

    #[tokio::test]
    async fn one_deeply_nested_entry_does_not_fail_the_page() {
        turnpike_lightning::ensure_crypto_provider();
        let http = reqwest::Client::new();
        // A schema a hub's admin API takes (its JSON parser's 128 levels: the schema is one
        // level below the body's root, as in an entry) but that is too deep inside a page,
        // and one no parser of 128 levels takes even alone.
        let (base, _) = hostile_hub(|_, offset| {
            let deep = |id: &str, levels: usize| {
                let mut e = entry_json(0).to_string();
                e.pop();
                format!(
                    "{e},\"id\":\"{id}\",\"input_schema\":{{\"type\":\"object\",\"x\":{}}}}}",
                    nested(levels)
                )
            };
            let page = format!(
                "{{\"total\":4,\"offset\":{offset},\"services\":[{},{},{},{}]}}",
                entry_json(1),
                deep("p/deep", 125),
                deep("p/deeper", 5000),
                entry_json(2)
            );
            axum::response::IntoResponse::into_response(page)
        })
        .await;
        let listing = read(&http, &base).await.unwrap();
        let ids: Vec<&str> = listing.entries.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["p/s1", "p/deep", "p/s2"]);
        assert_eq!(listing.skipped.len(), 1, "{:?}", listing.skipped);
        assert!(
            listing.skipped[0].starts_with("#2: "),
            "{:?}",
            listing.skipped
        );
    }

    #[tokio::test]
    async fn a_page_above_a_mebibyte_or_not_a_directory_is_refused() {
        turnpike_lightning::ensure_crypto_provider();
        let http = reqwest::Client::new();
        let (base, _) = hostile_hub(|_, offset| {
            let mut e = entry_json(0);
            e["description"] = json!("x".repeat(MAX_PAGE_BYTES));
            json_response(json!({"total": 1, "offset": offset, "services": [e]}))
        })
        .await;
        let e = read(&http, &base).await.unwrap_err();
        assert!(matches!(e, DirectoryError::TooLarge { .. }), "{e}");
        // Streamed without a length: still cut at the bound.
        let (base, _) = hostile_hub(|_, _| {
            let chunks =
                (0..40).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b' '; 64 * 1024])));
            axum::response::IntoResponse::into_response(axum::body::Body::from_stream(
                futures_util::stream::iter(chunks),
            ))
        })
        .await;
        let e = read(&http, &base).await.unwrap_err();
        assert!(matches!(e, DirectoryError::TooLarge { .. }), "{e}");
        let (base, _) = hostile_hub(|_, _| json_response(json!({"hello": "world"}))).await;
        let e = read(&http, &base).await.unwrap_err();
        assert!(matches!(e, DirectoryError::NotADirectory { .. }), "{e}");
        let (base, _) = hostile_hub(|_, _| {
            axum::response::IntoResponse::into_response(http::StatusCode::NOT_FOUND)
        })
        .await;
        let e = read(&http, &base).await.unwrap_err();
        assert!(
            e.to_string().contains("404") && e.to_string().contains("[hub]"),
            "{e}"
        );
    }
}
