//! The hub's services as tools of `turnpike mcp --hub URL`: the directory read at start, read
//! again when a listing asked for is older than the TTL (by one caller, the others keep the
//! last list meanwhile; a failed re-read keeps it too), each entry named, described and given
//! its schema by [`super::hub_tools`]. Each list that differs from the one before gets the
//! next version number, so that every connection can tell the list changed since it last saw.
//! A call reaches a tool only as the connection was shown it ([`resolve`]).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rmcp::model::{Tool, ToolAnnotations};

use super::directory::{self, DirectoryError, Entry, HubBase, Listing};
use super::hub_tools;

/// One service of the hub as a tool.
#[derive(Debug, Clone)]
pub struct HubTool {
    pub tool: Tool,
    pub entry: Entry,
}

/// The hub's tools by name.
pub type Tools = BTreeMap<String, HubTool>;

struct State {
    tools: Arc<Tools>,
    /// 1 for the first list, one more for each that differs from the one before.
    version: u64,
    read_at: Instant,
}

/// A hub and its tools.
pub struct Hub {
    base: HubBase,
    /// Reaches the hub only: guarded resolver, no redirects.
    http: reqwest::Client,
    ttl: Duration,
    /// Names the hub's tools may not take (the built-in tools').
    reserved: Vec<String>,
    state: std::sync::Mutex<State>,
    /// Held by the one caller re-reading the directory.
    reading: tokio::sync::Mutex<()>,
}

impl Hub {
    /// Reads the directory of `base` once; an error when it cannot be read.
    pub async fn open(
        base: HubBase,
        http: reqwest::Client,
        ttl: Duration,
        reserved: Vec<String>,
    ) -> Result<Hub, DirectoryError> {
        let listing = directory::read(&http, &base).await?;
        let tools = Arc::new(build(listing, &reserved));
        tracing::info!(hub = %base.url(), tools = tools.len(), "hub directory read");
        Ok(Hub {
            base,
            http,
            ttl,
            reserved,
            state: std::sync::Mutex::new(State {
                tools,
                version: 1,
                read_at: Instant::now(),
            }),
            reading: tokio::sync::Mutex::new(()),
        })
    }

    pub fn base(&self) -> &HubBase {
        &self.base
    }

    /// The client that reaches the hub (guarded, no redirects).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The tools and their version; when the last reading is older than the TTL, the directory
    /// is read again first (by this caller, unless another is already at it: then the last
    /// list is given at once).
    pub async fn tools(&self) -> (Arc<Tools>, u64) {
        let current = || {
            let state = self.state();
            (state.tools.clone(), state.version)
        };
        if self.state().read_at.elapsed() < self.ttl {
            return current();
        }
        let Ok(_reading) = self.reading.try_lock() else {
            return current();
        };
        if self.state().read_at.elapsed() < self.ttl {
            return current();
        }
        let read = directory::read(&self.http, &self.base).await;
        let mut state = self.state();
        state.read_at = Instant::now();
        match read {
            Ok(listing) => {
                let fresh = build(listing, &self.reserved);
                if !same(&state.tools, &fresh) {
                    state.tools = Arc::new(fresh);
                    state.version += 1;
                }
            }
            Err(e) => {
                tracing::warn!("re-reading the hub's directory failed (the last list stays): {e}");
            }
        }
        (state.tools.clone(), state.version)
    }
}

/// Why a call of a hub tool is refused before anything is sent.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    #[error("no tool named {0:?}")]
    Unknown(String),
    #[error(
        "the hub's list changed since the tools were listed: {0:?} now names another service, \
         another price or path, or none; nothing was sent: list the tools again"
    )]
    Changed(String),
}

/// The tool a call of `name` reaches: the one this connection was shown (`shown`; before its
/// first listing, the current one), and only while the hub's current list gives that name to
/// the same service on the same terms. So a re-read of the directory between the agent's
/// listing and its call never makes the call reach another service, nor pay another price,
/// than the one the agent was shown.
pub fn resolve<'a>(
    shown: Option<&Tools>,
    current: &'a Tools,
    name: &str,
) -> Result<&'a HubTool, ResolveError> {
    let now = current.get(name);
    let Some(shown) = shown else {
        return now.ok_or_else(|| ResolveError::Unknown(name.to_owned()));
    };
    match (shown.get(name), now) {
        (None, None) => Err(ResolveError::Unknown(name.to_owned())),
        (Some(seen), Some(now)) if same_terms(&seen.entry, &now.entry) => Ok(now),
        _ => Err(ResolveError::Changed(name.to_owned())),
    }
}

/// Whether two entries are the same service called and paid the same way.
fn same_terms(a: &Entry, b: &Entry) -> bool {
    let terms = |e: &Entry| {
        (
            e.id.clone(),
            e.path.clone(),
            e.method.clone(),
            e.mode.clone(),
            e.price_msat,
            e.amount_msat,
            e.calls_per_payment,
            e.valid_secs,
        )
    };
    terms(a) == terms(b)
}

/// Whether two lists of tools are the same (names and entries).
fn same(a: &Tools, b: &Tools) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((na, ta), (nb, tb))| na == nb && ta.entry == tb.entry)
}

/// The tools of a listing: one per id (a repeated id is read once), named without collisions.
pub fn build(listing: Listing, reserved: &[String]) -> Tools {
    for s in &listing.skipped {
        tracing::warn!("a hub directory entry is left out: {s}");
    }
    if listing.truncated {
        tracing::warn!(
            "the hub lists more than {} services: the rest are left out",
            directory::MAX_ENTRIES
        );
    }
    let mut seen = HashSet::new();
    let entries: Vec<Entry> = listing
        .entries
        .into_iter()
        .filter(|e| !e.id.is_empty() && seen.insert(e.id.clone()))
        .collect();
    let ids: Vec<&str> = entries.iter().map(|e| e.id.as_str()).collect();
    let reserved: Vec<&str> = reserved.iter().map(String::as_str).collect();
    let names = hub_tools::assign_names(&ids, &reserved);
    names
        .into_iter()
        .zip(entries)
        .map(|(name, entry)| {
            let tool = tool_of(&name, &entry);
            (name, HubTool { tool, entry })
        })
        .collect()
}

fn tool_of(name: &str, e: &Entry) -> Tool {
    let label = |s: &str| hub_tools::clip(s, 60);
    let title = match &e.route {
        Some(route) => format!(
            "{}: {} / {}",
            label(&e.provider.name),
            label(&e.service),
            label(route)
        ),
        None => format!("{}: {}", label(&e.provider.name), label(&e.service)),
    };
    Tool::new(
        name.to_owned(),
        hub_tools::description(e),
        Arc::new(hub_tools::input_schema(e)),
    )
    .with_annotations(
        ToolAnnotations::with_title(title)
            .read_only(false)
            .destructive(false)
            .idempotent(false)
            .open_world(true),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry_json(id: &str) -> serde_json::Value {
        json!({
            "id": id, "provider": {"slug": "alice", "name": "Alice"}, "service": "s",
            "path": "/alice/s", "mode": "per_call", "price_msat": 1000, "amount_msat": 1020,
            "calls_per_payment": 1,
        })
    }

    fn entry(id: &str) -> Entry {
        serde_json::from_value(entry_json(id)).unwrap()
    }

    #[test]
    fn a_listing_becomes_tools_named_without_collisions() {
        let listing = Listing {
            entries: vec![
                entry("alice/s.x"),
                entry("alice/s_x"),
                entry("alice/s.x"),
                entry(""),
            ],
            skipped: vec!["bob/y: bad".into()],
            truncated: false,
        };
        let tools = build(listing, &["l402_fetch".into()]);
        let names: Vec<&str> = tools.keys().map(String::as_str).collect();
        assert_eq!(names, ["alice__s_x", "alice__s_x_2"]);
        assert_eq!(tools["alice__s_x"].entry.id, "alice/s.x");
        assert_eq!(tools["alice__s_x_2"].entry.id, "alice/s_x");
        let t = &tools["alice__s_x"].tool;
        assert_eq!(t.name, "alice__s_x");
        assert!(
            t.description
                .as_deref()
                .unwrap()
                .contains("Costs 1 sat per call (1.02 sat with fee)")
        );
        assert_eq!(t.input_schema["type"], "object");
        let again = build(
            Listing {
                entries: vec![entry("alice/s_x"), entry("alice/s.x")],
                ..Listing::default()
            },
            &["l402_fetch".into()],
        );
        assert!(same(&tools, &again));
        let mut cheaper = entry("alice/s_x");
        cheaper.price_msat = 500;
        let changed = build(
            Listing {
                entries: vec![cheaper, entry("alice/s.x")],
                ..Listing::default()
            },
            &["l402_fetch".into()],
        );
        assert!(!same(&tools, &changed));
    }

    #[test]
    fn a_call_reaches_only_the_service_and_price_the_agent_was_shown() {
        let reserved = ["l402_fetch".to_owned()];
        let list = |entries: Vec<Entry>| {
            build(
                Listing {
                    entries,
                    ..Listing::default()
                },
                &reserved,
            )
        };
        let shown = list(vec![entry("alice/s_x"), entry("alice/t")]);
        // Unchanged (a new health or description does not matter): the current tool.
        let mut redescribed = entry("alice/t");
        redescribed.description = Some("new words".into());
        let same = list(vec![entry("alice/s_x"), redescribed]);
        let t = resolve(Some(&shown), &same, "alice__t").unwrap();
        assert_eq!(t.entry.description.as_deref(), Some("new words"));
        // The price rose after the listing: refused, whatever the hub lists now.
        let mut dearer = entry("alice/t");
        dearer.amount_msat = 40_800;
        let raised = list(vec![entry("alice/s_x"), dearer]);
        assert_eq!(
            resolve(Some(&shown), &raised, "alice__t").unwrap_err(),
            ResolveError::Changed("alice__t".into())
        );
        // A newcomer whose id sorts first takes the plain name: the name the agent was shown
        // for alice/s_x does not reach alice/s.x.
        let shifted = list(vec![
            entry("alice/s_x"),
            entry("alice/s.x"),
            entry("alice/t"),
        ]);
        assert_eq!(shifted["alice__s_x"].entry.id, "alice/s.x");
        assert!(matches!(
            resolve(Some(&shown), &shifted, "alice__s_x"),
            Err(ResolveError::Changed(_))
        ));
        // Gone from the hub, or never shown: refused; unknown everywhere: unknown.
        let gone = list(vec![entry("alice/t")]);
        assert!(matches!(
            resolve(Some(&shown), &gone, "alice__s_x"),
            Err(ResolveError::Changed(_))
        ));
        assert!(matches!(
            resolve(Some(&shown), &shifted, "alice__s_x_2"),
            Err(ResolveError::Changed(_))
        ));
        assert_eq!(
            resolve(Some(&shown), &shown, "bob__x").unwrap_err(),
            ResolveError::Unknown("bob__x".into())
        );
        // Before any listing, the current list.
        assert_eq!(
            resolve(None, &raised, "alice__t")
                .unwrap()
                .entry
                .amount_msat,
            40_800
        );
    }

    #[tokio::test]
    async fn a_changed_list_gets_a_new_version_and_a_failed_read_keeps_the_last() {
        use super::super::directory::test_peer::{hostile_hub, json_response};
        use std::sync::Mutex;
        turnpike_lightning::ensure_crypto_provider();
        let ids: Arc<Mutex<Option<Vec<&'static str>>>> =
            Arc::new(Mutex::new(Some(vec!["alice/a"])));
        let served = ids.clone();
        let (base, asked) = hostile_hub(move |_, offset| match served.lock().unwrap().clone() {
            Some(ids) => {
                let entries: Vec<_> = ids.iter().map(|id| entry_json(id)).collect();
                json_response(json!({"total": ids.len(), "offset": offset, "services": entries}))
            }
            None => {
                axum::response::IntoResponse::into_response(http::StatusCode::INTERNAL_SERVER_ERROR)
            }
        })
        .await;
        let names = |t: &Tools| t.keys().cloned().collect::<Vec<_>>();
        // A long TTL: no re-read.
        let http = reqwest::Client::new();
        let hub = Hub::open(base.clone(), http.clone(), Duration::from_secs(600), vec![])
            .await
            .unwrap();
        *ids.lock().unwrap() = Some(vec!["alice/a", "alice/b"]);
        let (t, v) = hub.tools().await;
        assert_eq!((names(&t), v), (vec!["alice__a".to_owned()], 1));
        assert_eq!(asked.lock().unwrap().len(), 1);
        // No TTL: each call re-reads; same list, same version; another list, the next one.
        let hub = Hub::open(base, http, Duration::ZERO, vec![]).await.unwrap();
        assert_eq!(hub.tools().await.1, 1);
        *ids.lock().unwrap() = Some(vec!["alice/a", "alice/c"]);
        let (t, v) = hub.tools().await;
        assert_eq!(
            (names(&t), v),
            (vec!["alice__a".into(), "alice__c".into()], 2)
        );
        *ids.lock().unwrap() = None;
        let (t, v) = hub.tools().await;
        assert_eq!((t.len(), v), (2, 2), "a failed read keeps the last list");
        assert_eq!(asked.lock().unwrap().len(), 5);
    }
}
