//! Aperture's root keys, read from its own database, and the verification of the tokens it
//! minted.
//!
//! Aperture stores one random 32-byte root key per minted macaroon in its `secrets` table,
//! keyed by `sha256(identifier)`:
//!
//! ```sql
//! CREATE TABLE secrets (
//!     id INTEGER PRIMARY KEY,          -- SERIAL on PostgreSQL
//!     hash BLOB UNIQUE NOT NULL,       -- sha256 of the 66-byte L402 identifier (BYTEA)
//!     secret BLOB UNIQUE NOT NULL,     -- the root key, 32 bytes
//!     created_at TIMESTAMP NOT NULL
//! );
//! ```
//!
//! [`ApertureTokens`] verifies a credential as Aperture does (identifier, preimage, location
//! `lsat`, HMAC chain under the stored root key, `services` and `<service>_valid_until`
//! caveats), with root keys looked up through a bounded in-memory cache ([`CachedRootKeys`]):
//! a key found is kept `cache_secs`, a miss [`MISS_TTL`], so a revocation in Aperture (it
//! deletes the row) takes effect within `cache_secs` and repeated bogus identifiers do not
//! reach the database.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use turnpike_l402::credential::Credential;
use turnpike_l402::token::{
    VerifiedToken, VerifyError, check_payment, check_signature_and_caveats,
};

/// The macaroon location Aperture mints with.
pub const APERTURE_LOCATION: &str = "lsat";
/// How long an identifier found in no row is remembered as unknown.
pub const MISS_TTL: Duration = Duration::from_secs(10);
/// Most identifiers the cache remembers (found or not).
pub const CACHE_CAPACITY: usize = 10_000;
/// Most connections to Aperture's database (lookups beyond wait for one).
const POOL_SIZE: u32 = 4;
/// Longest wait for a database connection or answer.
const DB_TIMEOUT: Duration = Duration::from_secs(3);

/// A root key, 32 bytes (Aperture's `SecretSize`).
pub type RootKey = [u8; 32];

/// Why Aperture's database could not answer.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// The URL is not `sqlite://…` or `postgres://…`.
    #[error("unsupported Aperture database: expected sqlite://PATH or postgres://USER@HOST/DB")]
    UnsupportedUrl,
    /// The database could not be opened or queried (the message never holds the URL).
    #[error("Aperture's database: {0}")]
    Database(String),
}

impl From<sqlx::Error> for SecretsError {
    fn from(e: sqlx::Error) -> SecretsError {
        SecretsError::Database(e.to_string())
    }
}

/// Where root keys are looked up.
///
/// Obligations: `root_key` returns the key stored for exactly this `sha256(identifier)`, or
/// `None` when there is none (a revoked or never minted token); it never invents a key, and it
/// reports a database it cannot reach as an error, not as `None`.
#[async_trait]
pub trait RootKeys: Send + Sync + 'static {
    /// The root key stored under `id_hash`, if any.
    async fn root_key(&self, id_hash: &[u8; 32]) -> Result<Option<RootKey>, SecretsError>;
}

/// Aperture's `secrets` table in SQLite or PostgreSQL, opened read-only.
pub enum SqlRootKeys {
    /// `sqlite://PATH`, opened read-only (Aperture may keep writing it).
    Sqlite(sqlx::SqlitePool),
    /// `postgres://…`, every transaction read-only.
    Postgres(sqlx::PgPool),
}

impl std::fmt::Debug for SqlRootKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SqlRootKeys::Sqlite(_) => "SqlRootKeys::Sqlite",
            SqlRootKeys::Postgres(_) => "SqlRootKeys::Postgres",
        })
    }
}

impl SqlRootKeys {
    /// Opens Aperture's database read-only and checks that its `secrets` table can be read.
    pub async fn open(url: &str) -> Result<SqlRootKeys, SecretsError> {
        use std::str::FromStr;
        let pool = sqlx::pool::PoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(DB_TIMEOUT);
        let keys = if url.starts_with("sqlite:") {
            let options = sqlx::sqlite::SqliteConnectOptions::from_str(url)?
                .read_only(true)
                .create_if_missing(false)
                .busy_timeout(DB_TIMEOUT);
            SqlRootKeys::Sqlite(pool.connect_with(options).await?)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = sqlx::postgres::PgConnectOptions::from_str(url)?
                .options([("default_transaction_read_only", "on")]);
            let pool = sqlx::pool::PoolOptions::new()
                .max_connections(POOL_SIZE)
                .acquire_timeout(DB_TIMEOUT);
            SqlRootKeys::Postgres(pool.connect_with(options).await?)
        } else {
            return Err(SecretsError::UnsupportedUrl);
        };
        keys.root_key(&[0; 32]).await?;
        Ok(keys)
    }
}

#[async_trait]
impl RootKeys for SqlRootKeys {
    async fn root_key(&self, id_hash: &[u8; 32]) -> Result<Option<RootKey>, SecretsError> {
        let query = async {
            match self {
                SqlRootKeys::Sqlite(pool) => {
                    sqlx::query_scalar::<_, Vec<u8>>("SELECT secret FROM secrets WHERE hash = ?")
                        .bind(&id_hash[..])
                        .fetch_optional(pool)
                        .await
                }
                SqlRootKeys::Postgres(pool) => {
                    sqlx::query_scalar::<_, Vec<u8>>("SELECT secret FROM secrets WHERE hash = $1")
                        .bind(&id_hash[..])
                        .fetch_optional(pool)
                        .await
                }
            }
        };
        let row = tokio::time::timeout(DB_TIMEOUT, query)
            .await
            .map_err(|_| SecretsError::Database("no answer in time".into()))??;
        Ok(
            row.and_then(|secret| match RootKey::try_from(secret.as_slice()) {
                Ok(key) => Some(key),
                Err(_) => {
                    tracing::warn!(
                        len = secret.len(),
                        "an Aperture secret is not 32 bytes: its token is refused"
                    );
                    None
                }
            }),
        )
    }
}

struct Entry {
    key: Option<RootKey>,
    until: Instant,
}

/// A bounded in-memory cache in front of [`RootKeys`]: keys found are kept `hit_ttl`, misses
/// [`MISS_TTL`]; when full, expired entries go first, then arbitrary ones.
pub struct CachedRootKeys<R> {
    inner: R,
    hit_ttl: Duration,
    entries: Mutex<HashMap<[u8; 32], Entry>>,
}

impl<R: RootKeys> CachedRootKeys<R> {
    /// A cache keeping keys found for `hit_ttl`.
    pub fn new(inner: R, hit_ttl: Duration) -> CachedRootKeys<R> {
        CachedRootKeys {
            inner,
            hit_ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The root key under `id_hash`, from the cache while it is fresh.
    pub async fn root_key(&self, id_hash: &[u8; 32]) -> Result<Option<RootKey>, SecretsError> {
        let now = Instant::now();
        if let Some(e) = self.lock().get(id_hash)
            && e.until > now
        {
            return Ok(e.key);
        }
        let key = self.inner.root_key(id_hash).await?;
        let ttl = if key.is_some() {
            self.hit_ttl
        } else {
            MISS_TTL
        };
        let mut entries = self.lock();
        if entries.len() >= CACHE_CAPACITY && !entries.contains_key(id_hash) {
            entries.retain(|_, e| e.until > now);
            if entries.len() >= CACHE_CAPACITY
                && let Some(victim) = entries.keys().next().copied()
            {
                entries.remove(&victim);
            }
        }
        entries.insert(
            *id_hash,
            Entry {
                key,
                until: now + ttl,
            },
        );
        Ok(key)
    }

    /// How many identifiers are remembered.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Entry>> {
        // A panic while holding the lock leaves a consistent map: keep using it.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Why a credential is not a valid Aperture token.
#[derive(Debug, thiserror::Error)]
pub enum ApertureError {
    /// The credential fails a check (malformed, wrong preimage, bad signature, caveats).
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// Aperture's database has no root key for its identifier (never minted, or revoked).
    #[error("token unknown to Aperture (never minted there, or revoked)")]
    Unknown,
    /// Aperture's database could not be asked.
    #[error(transparent)]
    Unavailable(#[from] SecretsError),
}

/// How a verified Aperture token is charged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AperturePolicy {
    /// Calls one Aperture token may make in all (per service), counted in Turnpike's store;
    /// `None` (the default): unlimited until its caveats expire, as Aperture served it.
    pub calls_per_token: Option<u64>,
}

/// Verifies tokens an Aperture minted, with its root keys.
pub struct ApertureTokens<R = SqlRootKeys> {
    keys: CachedRootKeys<R>,
    policy: AperturePolicy,
}

impl ApertureTokens<SqlRootKeys> {
    /// Opens Aperture's database (`sqlite://…` or `postgres://…`) read-only.
    pub async fn open(
        url: &str,
        cache: Duration,
        policy: AperturePolicy,
    ) -> Result<ApertureTokens<SqlRootKeys>, SecretsError> {
        let keys = SqlRootKeys::open(url).await?;
        Ok(ApertureTokens::new(keys, cache, policy))
    }
}

impl<R: RootKeys> ApertureTokens<R> {
    /// Verifies with root keys from `keys`, kept `cache` once found.
    pub fn new(keys: R, cache: Duration, policy: AperturePolicy) -> ApertureTokens<R> {
        ApertureTokens {
            keys: CachedRootKeys::new(keys, cache),
            policy,
        }
    }

    /// The cache in front of the database.
    pub fn cache(&self) -> &CachedRootKeys<R> {
        &self.keys
    }

    /// Verifies `cred` for `service` at `now_unix` as Aperture does: the identifier is L402 v0,
    /// the preimage hashes to its payment hash, the location is `lsat` (the database is asked
    /// only after these), the HMAC chain verifies under the root key stored for
    /// `sha256(identifier)`, every `services` caveat lists `service`, and `now` is before every
    /// `<service>_valid_until`. Capabilities and other caveats are not enforced (Aperture does
    /// not either). The grant's call count is the policy's, if it sets one.
    pub async fn verify(
        &self,
        cred: &Credential,
        service: &str,
        now_unix: u64,
    ) -> Result<VerifiedToken, ApertureError> {
        let id = check_payment(cred, APERTURE_LOCATION)?;
        let id_hash: [u8; 32] = Sha256::digest(cred.macaroon.identifier()).into();
        let root = self
            .keys
            .root_key(&id_hash)
            .await?
            .ok_or(ApertureError::Unknown)?;
        let mut token = check_signature_and_caveats(cred, &id, &root, service, now_unix)?;
        if let Some(n) = self.policy.calls_per_token {
            token.grant.calls = Some(token.grant.calls.map_or(n, |c| c.min(n)));
        }
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use turnpike_l402::identifier::Identifier;
    use turnpike_l402::macaroon::Macaroon;
    use turnpike_l402::{Preimage, TokenId};

    use super::*;

    /// Keys in memory, counting lookups.
    #[derive(Default)]
    struct Memory {
        keys: HashMap<[u8; 32], RootKey>,
        lookups: AtomicUsize,
    }

    #[async_trait]
    impl RootKeys for std::sync::Arc<Memory> {
        async fn root_key(&self, h: &[u8; 32]) -> Result<Option<RootKey>, SecretsError> {
            self.lookups.fetch_add(1, Ordering::SeqCst);
            Ok(self.keys.get(h).copied())
        }
    }

    fn mint(root: &RootKey, preimage: &Preimage, caveats: &[&str]) -> Macaroon {
        let id = Identifier::new(preimage.payment_hash(), TokenId([7; 32])).encode();
        let mut mac = Macaroon::new(root, id, APERTURE_LOCATION);
        for c in caveats {
            mac.add_first_party_caveat(c);
        }
        mac
    }

    fn setup(caveats: &[&str]) -> (std::sync::Arc<Memory>, Credential) {
        let root = [5u8; 32];
        let preimage = Preimage([9; 32]);
        let mac = mint(&root, &preimage, caveats);
        let mut memory = Memory::default();
        memory
            .keys
            .insert(Sha256::digest(mac.identifier()).into(), root);
        let cred = Credential {
            macaroon: mac,
            preimage,
        };
        (std::sync::Arc::new(memory), cred)
    }

    #[tokio::test]
    async fn a_token_verifies_once_looked_up_and_then_from_the_cache() {
        let (memory, cred) = setup(&["services=svc:0", "svc_capabilities=", "svc_valid_until=100"]);
        let tokens = ApertureTokens::new(
            memory.clone(),
            Duration::from_secs(60),
            AperturePolicy::default(),
        );
        let t = tokens.verify(&cred, "svc", 99).await.unwrap();
        assert_eq!(t.grant.calls, None);
        assert_eq!(t.grant.valid_until, Some(100));
        tokens.verify(&cred, "svc", 99).await.unwrap();
        assert_eq!(memory.lookups.load(Ordering::SeqCst), 1);
        assert!(matches!(
            tokens.verify(&cred, "svc", 100).await,
            Err(ApertureError::Verify(VerifyError::Caveat(_)))
        ));
        assert!(matches!(
            tokens.verify(&cred, "other", 1).await,
            Err(ApertureError::Verify(VerifyError::Caveat(_)))
        ));
    }

    #[tokio::test]
    async fn the_policy_can_count_calls() {
        let (memory, cred) = setup(&["services=svc:0"]);
        let policy = AperturePolicy {
            calls_per_token: Some(3),
        };
        let tokens = ApertureTokens::new(memory, Duration::from_secs(60), policy);
        assert_eq!(
            tokens.verify(&cred, "svc", 1).await.unwrap().grant.calls,
            Some(3)
        );
    }

    #[tokio::test]
    async fn forgeries_are_refused_and_misses_cached() {
        let (memory, cred) = setup(&["services=svc:0"]);
        let tokens = ApertureTokens::new(
            memory.clone(),
            Duration::from_secs(60),
            AperturePolicy::default(),
        );
        // Wrong preimage: refused before any lookup.
        let wrong = Credential {
            preimage: Preimage([1; 32]),
            ..cred.clone()
        };
        assert!(matches!(
            tokens.verify(&wrong, "svc", 1).await,
            Err(ApertureError::Verify(VerifyError::PaymentNotProven))
        ));
        assert_eq!(memory.lookups.load(Ordering::SeqCst), 0);
        // A holder may append caveats (the chain still verifies), but only to narrow: a
        // `services` caveat naming another service takes this one away.
        let mut narrowed = cred.clone();
        narrowed.macaroon.add_first_party_caveat("services=other:0");
        assert!(tokens.verify(&narrowed, "svc", 1).await.is_err());
        // A changed caveat: bad signature.
        let forged = mint(&[5; 32], &cred.preimage, &["services=evil:0"]);
        let mut bytes = forged.to_binary();
        let sig_at = bytes.len() - 32;
        bytes[sig_at..].copy_from_slice(cred.macaroon.signature());
        let forged = Credential {
            macaroon: Macaroon::from_binary(&bytes).unwrap(),
            preimage: cred.preimage,
        };
        assert!(matches!(
            tokens.verify(&forged, "evil", 1).await,
            Err(ApertureError::Verify(VerifyError::BadSignature))
        ));
        // An unknown identifier, asked once then remembered as unknown.
        let stranger = Credential {
            macaroon: {
                let id = Identifier::new(cred.preimage.payment_hash(), TokenId([8; 32])).encode();
                Macaroon::new(&[5; 32], id, APERTURE_LOCATION)
            },
            preimage: cred.preimage,
        };
        let before = memory.lookups.load(Ordering::SeqCst);
        for _ in 0..5 {
            assert!(matches!(
                tokens.verify(&stranger, "svc", 1).await,
                Err(ApertureError::Unknown)
            ));
        }
        assert_eq!(memory.lookups.load(Ordering::SeqCst), before + 1);
        // Another location: refused before any lookup.
        let elsewhere = Credential {
            macaroon: Macaroon::new(&[5; 32], cred.macaroon.identifier().to_vec(), "aperture"),
            preimage: cred.preimage,
        };
        assert!(matches!(
            tokens.verify(&elsewhere, "svc", 1).await,
            Err(ApertureError::Verify(VerifyError::WrongLocation))
        ));
    }

    #[tokio::test]
    async fn the_cache_is_bounded() {
        let memory = std::sync::Arc::new(Memory::default());
        let cache = CachedRootKeys::new(memory, Duration::from_secs(60));
        for i in 0..(CACHE_CAPACITY + 50) {
            let mut h = [0u8; 32];
            h[..8].copy_from_slice(&(i as u64).to_be_bytes());
            cache.root_key(&h).await.unwrap();
        }
        assert_eq!(cache.len(), CACHE_CAPACITY);
    }
}
