//! Runtime control of a gateway: the services in force are those of the config file overlaid by
//! the ones stored through the admin API (a stored service replaces a file service of the same
//! name, a stored tombstone hides it), and the set of revoked tokens. Both are shared by replicas
//! through the store: [`Control::sync`] polls its change sequence (one cheap read) and swaps in
//! what changed. The request path only reads in-memory snapshots ([`Control::is_revoked`], the
//! [`ServiceTable`]), never the store.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use arc_swap::ArcSwap;
use turnpike_l402::TokenId;
use turnpike_store::{AdminStore, StoreError};

use crate::config::{ConfigError, ServiceConfig};
use crate::router::{Router, ServiceTable};

/// Where a service in force comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The config file's `[[services]]`.
    Config,
    /// The admin API (stored).
    Admin,
}

impl Source {
    /// `"config"` or `"admin"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Config => "config",
            Source::Admin => "admin",
        }
    }
}

/// Why a change was refused.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// The resulting services would be invalid; nothing was stored.
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    /// The store failed; nothing changed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// This gateway has no admin store (built without one).
    #[error("this gateway has no admin store")]
    NoStore,
}

/// The file's services and the stored overlay, as last read.
#[derive(Default)]
struct Overlay {
    file: Vec<ServiceConfig>,
    /// Stored services by name; `None` is a tombstone.
    stored: BTreeMap<String, Option<ServiceConfig>>,
    /// The change sequence number last read.
    seq: u64,
}

impl Overlay {
    /// The services in force, in matching order: the file's (replaced or hidden by stored ones
    /// of the same name), then the stored ones the file does not name, by name.
    fn effective(&self) -> Vec<(ServiceConfig, Source)> {
        let mut out = Vec::new();
        for f in &self.file {
            match self.stored.get(&f.name) {
                None => out.push((f.clone(), Source::Config)),
                Some(Some(s)) => out.push((s.clone(), Source::Admin)),
                Some(None) => {}
            }
        }
        for (name, s) in &self.stored {
            if let Some(s) = s
                && !self.file.iter().any(|f| &f.name == name)
            {
                out.push((s.clone(), Source::Admin));
            }
        }
        out
    }

    /// The router of the services in force, parsed as `table` parses (see
    /// [`ServiceTable::parse`]).
    fn router(&self, table: &ServiceTable) -> Result<Router, ConfigError> {
        let configs: Vec<ServiceConfig> = self.effective().into_iter().map(|(c, _)| c).collect();
        table.parse(&configs)
    }
}

/// The services and revocations of a running gateway, changed at runtime.
pub struct Control {
    table: Arc<ServiceTable>,
    admin: Option<Arc<dyn AdminStore>>,
    overlay: tokio::sync::Mutex<Overlay>,
    /// The services in force with their source, for listing (kept with the table).
    view: ArcSwap<Vec<(ServiceConfig, Source)>>,
    revoked: ArcSwap<HashSet<TokenId>>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control").finish_non_exhaustive()
    }
}

impl Control {
    /// Control over `table`, which holds the file's services `file`; with `admin`, changes are
    /// stored and shared.
    pub fn new(
        table: Arc<ServiceTable>,
        file: Vec<ServiceConfig>,
        admin: Option<Arc<dyn AdminStore>>,
    ) -> Control {
        let overlay = Overlay {
            file,
            ..Overlay::default()
        };
        let view = ArcSwap::from_pointee(overlay.effective());
        Control {
            table,
            admin,
            overlay: tokio::sync::Mutex::new(overlay),
            view,
            revoked: ArcSwap::default(),
        }
    }

    /// The gateway's hub, if it is one.
    pub fn hub(&self) -> Option<&Arc<crate::hub::Hub>> {
        self.table.hub()
    }

    /// The service table it changes.
    pub fn table(&self) -> &Arc<ServiceTable> {
        &self.table
    }

    /// The admin store, when there is one.
    pub fn store(&self) -> Option<&Arc<dyn AdminStore>> {
        self.admin.as_ref()
    }

    /// Whether `token` was revoked (an in-memory lookup).
    pub fn is_revoked(&self, token: &TokenId) -> bool {
        let revoked = self.revoked.load();
        !revoked.is_empty() && revoked.contains(token)
    }

    /// The services in force, in matching order, with their source.
    pub fn services(&self) -> Arc<Vec<(ServiceConfig, Source)>> {
        self.view.load_full()
    }

    /// The service in force named `name`.
    pub fn service(&self, name: &str) -> Option<(ServiceConfig, Source)> {
        self.view
            .load()
            .iter()
            .find(|(c, _)| c.name == name)
            .cloned()
    }

    /// Stores `config` as the service `name` (`None`: deletes it, with a tombstone), if the
    /// services in force with this change are valid; applies it here at once. The error of an
    /// invalid set names the key (`services[N].key`); then nothing is stored.
    pub async fn put_service(
        &self,
        name: &str,
        config: Option<ServiceConfig>,
    ) -> Result<(), ChangeError> {
        let admin = self.admin.as_ref().ok_or(ChangeError::NoStore)?;
        let json = config
            .as_ref()
            .map(|c| serde_json::to_string(c).map_err(|e| ConfigError::Parse(e.to_string())))
            .transpose()?;
        let mut overlay = self.overlay.lock().await;
        let before = overlay.stored.clone();
        overlay.stored.insert(name.to_owned(), config);
        let router = match overlay.router(&self.table) {
            Ok(router) => router,
            Err(e) => {
                overlay.stored = before;
                return Err(e.into());
            }
        };
        if let Err(e) = admin
            .put_service(name, json.as_deref(), crate::unix_now())
            .await
        {
            overlay.stored = before;
            return Err(e.into());
        }
        self.install(&overlay, router);
        Ok(())
    }

    /// Replaces the file's services (a reloaded config file), keeping the stored overlay, if
    /// the result is valid; otherwise nothing changes.
    pub async fn replace_file_services(&self, file: Vec<ServiceConfig>) -> Result<(), ConfigError> {
        let mut overlay = self.overlay.lock().await;
        let old = std::mem::replace(&mut overlay.file, file);
        match overlay.router(&self.table) {
            Ok(router) => {
                self.install(&overlay, router);
                Ok(())
            }
            Err(e) => {
                overlay.file = old;
                Err(e)
            }
        }
    }

    /// Revokes `token` in the store, and here at once.
    pub async fn revoke(&self, token: &TokenId) -> Result<(), ChangeError> {
        let admin = self.admin.as_ref().ok_or(ChangeError::NoStore)?;
        admin.revoke_token(token, crate::unix_now()).await?;
        self.revoked.rcu(|set| {
            let mut set = HashSet::clone(set);
            set.insert(*token);
            set
        });
        Ok(())
    }

    /// Reads what other replicas changed since the last look (one read of the change sequence
    /// when nothing did) and swaps it in. A stored set that would be invalid together with the
    /// file's services is logged and not applied (the services in force stay).
    pub async fn sync(&self) -> Result<(), StoreError> {
        let Some(admin) = &self.admin else {
            return Ok(());
        };
        let mut overlay = self.overlay.lock().await;
        let seq = admin.sequence().await?;
        if seq == overlay.seq {
            return Ok(());
        }
        let revoked = admin.revocations_since(overlay.seq).await?;
        if let Some(hub) = self.table.hub() {
            hub.load(admin.providers().await?);
        }
        let stored = admin.stored_services().await?;
        if !revoked.is_empty() {
            self.revoked.rcu(|set| {
                let mut set = HashSet::clone(set);
                set.extend(revoked.iter().copied());
                set
            });
        }
        let mut parsed = BTreeMap::new();
        for s in stored {
            let config = match s
                .config
                .as_deref()
                .map(serde_json::from_str::<ServiceConfig>)
            {
                None => None,
                Some(Ok(c)) => Some(c),
                Some(Err(e)) => {
                    tracing::error!(service = %s.name, error = %e, "unreadable stored service skipped");
                    continue;
                }
            };
            parsed.insert(s.name, config);
        }
        let old = std::mem::replace(&mut overlay.stored, parsed);
        match overlay.router(&self.table) {
            Ok(router) => self.install(&overlay, router),
            Err(e) => {
                tracing::error!(error = %e, "stored services refused: the services in force stay");
                overlay.stored = old;
            }
        }
        overlay.seq = seq;
        Ok(())
    }

    fn install(&self, overlay: &Overlay, router: Router) {
        self.view.store(Arc::new(overlay.effective()));
        self.table.install(router);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, path: &str) -> ServiceConfig {
        ServiceConfig {
            path: Some(path.into()),
            ..ServiceConfig::new(name, "http://127.0.0.1:1", 1)
        }
    }

    #[test]
    fn stored_services_override_hide_and_follow_the_file() {
        let mut o = Overlay {
            file: vec![svc("a", "/a"), svc("b", "/b")],
            ..Overlay::default()
        };
        o.stored.insert("b".into(), None);
        o.stored.insert("a".into(), Some(svc("a", "/a2")));
        o.stored.insert("c".into(), Some(svc("c", "/c")));
        let names: Vec<_> = o
            .effective()
            .into_iter()
            .map(|(c, s)| (c.path.unwrap(), s))
            .collect();
        assert_eq!(
            names,
            [("/a2".into(), Source::Admin), ("/c".into(), Source::Admin)]
        );
        o.stored.insert("d".into(), Some(svc("d", "no-slash")));
        let e = o
            .router(&ServiceTable::new(Router::default()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("services[2].path"), "{e}");
    }
}
