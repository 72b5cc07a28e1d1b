//! The embedded SQLite store.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Sqlite};

use crate::batch::ConsumeRequest;
use crate::sql::{
    Dialect, SqlStore, consume_insert, consume_upsert, invoice_insert, invoice_upsert, migrations,
    select_entry,
};
use crate::{InvoiceRecord, StoreError, to_i64};

/// A [`Store`](crate::Store) in one SQLite file (WAL mode), shared safely by several connections
/// and processes. Single-statement operations are atomic on their own; multi-step ones
/// (idempotency begin and abort, migrations) run in a `BEGIN IMMEDIATE` transaction, which takes
/// the database's write lock first. One batch writer, as SQLite has one write lock.
///
/// The database file and its `-wal` and `-shm` files are readable by their owner only (0600).
///
/// Durability: `synchronous=NORMAL` in WAL mode, so a crash of the process (even SIGKILL) loses
/// no committed write; only a power loss may drop the last few commits.
pub type SqliteStore = SqlStore<Sqlite>;

impl Dialect for Sqlite {
    const BEGIN_WRITE: &'static str = "BEGIN IMMEDIATE";
    // The transaction holds the database's write lock already.
    const SELECT_ENTRY: &'static str = select_entry!("");
    const CREATE_MIGRATIONS: &'static str = "CREATE TABLE IF NOT EXISTS turnpike_migrations
        (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)";
    const LOCK_MIGRATIONS: Option<&'static str> = None;
    const MIGRATIONS: &'static [(i64, &'static str)] = migrations!("sqlite");
    const BATCH_WRITERS: usize = 1;

    async fn consume_rows(
        conn: &mut SqliteConnection,
        batch: &[ConsumeRequest],
    ) -> Result<Vec<crate::ConsumedRow>, sqlx::Error> {
        let mut query = QueryBuilder::<Sqlite>::new(consume_insert!());
        query.push_values(batch, |mut row, r| {
            row.push_bind(r.token.0.to_vec())
                .push_bind(r.service.clone())
                .push_bind(to_i64(r.calls_total))
                .push("1")
                .push_bind(to_i64(r.now_unix))
                .push_bind(to_i64(r.now_unix));
        });
        query.push(consume_upsert!());
        query.build_query_as().fetch_all(conn).await
    }

    async fn invoice_rows(
        conn: &mut SqliteConnection,
        batch: &[InvoiceRecord],
    ) -> Result<Vec<Vec<u8>>, sqlx::Error> {
        let mut query = QueryBuilder::<Sqlite>::new(invoice_insert!());
        query.push_values(batch, |mut row, inv| {
            row.push_bind(inv.payment_hash.0.to_vec())
                .push_bind(inv.token_id.0.to_vec())
                .push_bind(inv.service.clone())
                .push_bind(to_i64(inv.amount.0))
                .push_bind(inv.calls.map(to_i64))
                .push_bind(to_i64(inv.created_at))
                .push_bind(to_i64(inv.expires_at));
        });
        query.push(invoice_upsert!());
        query.build_query_scalar().fetch_all(conn).await
    }
}

/// Bytes of the database file SQLite maps into memory.
const SQLITE_MMAP_BYTES: u64 = 1 << 30;
/// SQLite's page cache per connection, in KiB (a negative `cache_size` counts KiB).
const SQLITE_CACHE_KIB: i64 = -16 * 1024;

impl SqlStore<Sqlite> {
    /// Opens (creating if needed, owner-only) the database at `url` (`sqlite://PATH` or
    /// `sqlite::memory:`) and applies pending migrations.
    pub async fn open(url: &str) -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            // Charging a call inserts at a random place in `token_usage` (token ids are random):
            // once the table outgrows SQLite's default 2 MiB page cache, every insert would read
            // pages back through the file. Mapped, the pages are read in place from the OS cache
            // (address space, not memory, is reserved), and a larger cache keeps the hot interior
            // pages parsed.
            .pragma("mmap_size", SQLITE_MMAP_BYTES.to_string())
            .pragma("cache_size", SQLITE_CACHE_KIB.to_string());
        if !(url.contains(":memory:") || url.contains("mode=memory")) {
            owner_only(options.get_filename())?;
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .min_connections(1)
            .connect_with(options)
            .await?;
        SqlStore::start(pool).await
    }
}

/// Creates the database file at `path` with mode 0600 if it is missing (SQLite then creates its
/// `-wal` and `-shm` files with the same mode), and takes group and other access away from the
/// file and those companions where they exist.
fn owner_only(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let io = |e: std::io::Error| StoreError::Database(sqlx::Error::Io(e));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io(e)),
    }
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    let mut shm = path.as_os_str().to_owned();
    shm.push("-shm");
    for file in [path.as_os_str(), &wal, &shm] {
        let mode = match std::fs::metadata(file) {
            Ok(meta) => meta.permissions().mode(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(e)),
        };
        if mode & 0o077 != 0 {
            std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        }
    }
    Ok(())
}
