//! The database: one sea-orm connection from a URL (SQLite embedded,
//! PostgreSQL in production), per-service migrations, and the mapping of
//! database failures to wire errors.
//!
//! Services never branch on the backend in their queries; only DDL that
//! the two dialects spell differently (triggers) looks at it.
//!
//! Every transaction that writes starts with [`begin_write`]: on SQLite it
//! takes the database's one write lock at `BEGIN`, so concurrent writers
//! queue on the busy timeout instead of failing with "database is locked".

use std::path::Path;
use std::time::Duration;

use sea_orm::sqlx;
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend, DbErr, RuntimeErr,
    SqlErr, SqliteTransactionMode, Statement, TransactionOptions, TransactionTrait,
};
use sea_orm_migration::MigratorTrait;
use twig_errors::ApiError;

pub mod batch;

pub use sea_orm;
pub use sea_orm_migration;

/// Why the database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The folder for the SQLite file could not be created.
    #[error("cannot create the folder {folder} for the SQLite database: {source}")]
    Folder {
        /// The folder.
        folder: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The server refused or could not be reached.
    #[error(
        "cannot connect to the database ({backend}): {source}; check database.url / DATABASE_URL"
    )]
    Connect {
        /// `sqlite` or `postgres`.
        backend: &'static str,
        /// The cause.
        source: DbErr,
    },
}

/// Opens a pool for `url` (`sqlite://path?mode=rwc`, `sqlite::memory:` or
/// `postgres://…`). For a SQLite file, its folder is created and the file is
/// put in WAL mode so readers do not wait for writers.
pub async fn connect(url: &str, max_connections: u32) -> Result<DatabaseConnection, OpenError> {
    let sqlite = url.starts_with("sqlite:");
    let memory = url.contains(":memory:");
    if sqlite && !memory {
        let path = url
            .trim_start_matches("sqlite://")
            .trim_start_matches("sqlite:")
            .split('?')
            .next()
            .unwrap_or_default();
        if let Some(folder) = Path::new(path)
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
        {
            std::fs::create_dir_all(folder).map_err(|source| OpenError::Folder {
                folder: folder.display().to_string(),
                source,
            })?;
        }
    }
    let mut options = ConnectOptions::new(url);
    options
        .max_connections(if memory { 1 } else { max_connections })
        .min_connections(if memory { 1 } else { 0 })
        .connect_timeout(Duration::from_secs(5))
        .acquire_timeout(Duration::from_secs(5))
        .sqlx_logging(false);
    if sqlite {
        options.map_sqlx_sqlite_opts(|opts| {
            opts.journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sqlx::sqlite::SqliteSynchronous::Normal)
                .busy_timeout(SQLITE_BUSY_TIMEOUT)
                .foreign_keys(true)
        });
    }
    Database::connect(options)
        .await
        .map_err(|source| OpenError::Connect {
            backend: if sqlite { "sqlite" } else { "postgres" },
            source,
        })
}

/// How long a writer waits for SQLite's write lock before its call fails.
pub const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts a transaction that will write; every write transaction of every
/// service starts here.
///
/// On SQLite this is `BEGIN IMMEDIATE`: the transaction takes the write
/// lock before its first statement, waiting up to
/// [`SQLITE_BUSY_TIMEOUT`] while another connection holds it, so writers
/// run one after another. A plain (deferred) `BEGIN` that reads first
/// cannot wait: when another connection commits between its read and its
/// first write, SQLite refuses the upgrade at once ("database is locked",
/// `SQLITE_BUSY_SNAPSHOT`). On PostgreSQL it is a plain `BEGIN` (the mode
/// is SQLite's only); row locks and unique constraints order writers there.
///
/// A single statement outside a transaction (the batched background
/// writers' updates) needs nothing more: SQLite takes the write lock for
/// it before it reads, with the same busy wait.
pub async fn begin_write<C: TransactionTrait>(db: &C) -> Result<C::Transaction, DbErr> {
    db.begin_with_options(TransactionOptions {
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
        ..TransactionOptions::default()
    })
    .await
}

/// Orders the write transactions about one thing — `id` in `namespace`
/// (`"quota.plan"` and an organisation's id, `"sessions.sign_up"` and an
/// email) — that may find no row to lock, or would lock rows in an order
/// two of them could cross:
/// inside `txn`, waits until no other transaction holds the same lock,
/// and holds it until `txn` ends. On PostgreSQL a transaction-scoped
/// advisory lock; on SQLite nothing more is needed, as [`begin_write`]
/// already runs writers one after another.
pub async fn lock_key(txn: &impl ConnectionTrait, namespace: &str, id: &[u8]) -> Result<(), DbErr> {
    if !is_postgres(txn) {
        return Ok(());
    }
    // FNV-1a over the namespace and the id: a stable 64-bit key.
    let mut key: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in namespace.bytes().chain([0]).chain(id.iter().copied()) {
        key = (key ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    txn.query_one_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "SELECT pg_advisory_xact_lock($1)",
        [i64::from_ne_bytes(key.to_ne_bytes()).into()],
    ))
    .await?;
    Ok(())
}

/// Applies every pending migration of one service's migrator.
pub async fn migrate<M: MigratorTrait>(db: &DatabaseConnection) -> Result<(), DbErr> {
    M::up(db, None).await
}

/// True for PostgreSQL.
pub fn is_postgres(db: &impl ConnectionTrait) -> bool {
    db.get_database_backend() == DbBackend::Postgres
}

/// True when the error means the database cannot be reached (down, pool
/// exhausted, connection lost) rather than that the query was wrong.
pub fn is_unavailable(err: &DbErr) -> bool {
    match err {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => matches!(
            e.as_ref(),
            sqlx::Error::Io(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed
                | sqlx::Error::Tls(_)
        ),
        _ => false,
    }
}

/// True when the error is a unique-constraint violation.
pub fn is_unique_violation(err: &DbErr) -> bool {
    matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
}

/// The wire error for a database failure: UNAVAILABLE when the database
/// is down (so verification never answers OK), INTERNAL otherwise.
pub fn api_error(err: &DbErr) -> ApiError {
    if is_unavailable(err) {
        tracing::warn!(error = %err, "database unavailable");
        ApiError::unavailable("the database is unavailable; retry later")
    } else {
        ApiError::internal(err)
    }
}

/// Crash-test hook: when the `TWIG_FAILPOINT` environment variable names
/// this step, the process aborts here, as a `kill -9` would stop it. Tests
/// use it to prove that a crash at that step loses nothing; unset, it does
/// nothing.
pub fn failpoint(step: &str) {
    if std::env::var("TWIG_FAILPOINT").is_ok_and(|v| v == step) {
        eprintln!("failpoint {step}: aborting");
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sea_orm::Statement;

    async fn count(db: &impl ConnectionTrait) -> i64 {
        db.query_one_raw(Statement::from_string(
            DbBackend::Sqlite,
            "SELECT COUNT(*) FROM t",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index(0)
        .unwrap()
    }

    async fn insert(db: &impl ConnectionTrait) -> Result<(), DbErr> {
        db.execute_raw(Statement::from_string(
            DbBackend::Sqlite,
            "INSERT INTO t (n) VALUES (1)",
        ))
        .await
        .map(|_| ())
    }

    async fn two_connections() -> (tempfile::TempDir, DatabaseConnection) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/db.sqlite?mode=rwc", dir.path().display());
        let db = connect(&url, 2).await.unwrap();
        db.execute_unprepared("CREATE TABLE t (n INTEGER)")
            .await
            .unwrap();
        (dir, db)
    }

    /// The failure `begin_write` exists for: a deferred transaction that
    /// read before another connection committed cannot write, and SQLite
    /// does not wait for it.
    #[tokio::test]
    #[allow(clippy::disallowed_methods)] // the plain BEGIN, to show why not
    async fn a_deferred_reader_cannot_write_after_another_commit() {
        let (_dir, db) = two_connections().await;
        let first = db.begin().await.unwrap();
        count(&first).await;
        let second = db.begin().await.unwrap();
        insert(&second).await.unwrap();
        second.commit().await.unwrap();
        let err = insert(&first).await.unwrap_err();
        assert!(err.to_string().contains("locked"), "{err}");
    }

    /// With `begin_write` the second writer waits for the first to commit,
    /// then reads what it wrote: no write fails.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writers_queue_for_the_write_lock() {
        let (_dir, db) = two_connections().await;
        let first = begin_write(&db).await.unwrap();
        assert_eq!(count(&first).await, 0);
        let db2 = db.clone();
        let second = tokio::spawn(async move {
            let txn = begin_write(&db2).await?;
            let seen = count(&txn).await;
            insert(&txn).await?;
            txn.commit().await?;
            Ok::<_, DbErr>(seen)
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !second.is_finished(),
            "the second writer waits for the lock"
        );
        insert(&first).await.unwrap();
        first.commit().await.unwrap();
        assert_eq!(second.await.unwrap().unwrap(), 1, "it saw the first write");
        assert_eq!(count(&db).await, 2);
    }
}
