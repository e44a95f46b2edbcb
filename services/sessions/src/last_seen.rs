//! "Last seen" times of sessions, gathered in memory on the hot path and
//! written to the database in one batch every few seconds, so verifying a
//! token never costs a write. A [`twig_db::batch::BatchedWriter`]: the
//! latest time per session, one transaction per flush, merged back on
//! failure.

use chrono::{DateTime, Utc};
use sea_orm::QueryFilter;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, DatabaseConnection, DatabaseTransaction, DbErr, EntityTrait};
use twig_db::batch::{BatchedWriter, Max, Select, Upsert};
use uuid::Uuid;

use crate::entity::session;

/// The most sessions with a pending time; a use of another session is
/// not noted until a flush (its stored time is at most one period older).
/// About 100 bytes each.
pub const MAX_PENDING: usize = 1_000_000;

/// Moves a session's last-seen time forward, never back.
struct Write;

impl Upsert<Uuid, Max<DateTime<Utc>>> for Write {
    async fn upsert(
        &self,
        txn: &DatabaseTransaction,
        batch: &[(Uuid, Max<DateTime<Utc>>)],
    ) -> Result<(), DbErr> {
        for (id, Max(at)) in batch {
            session::Entity::update_many()
                .col_expr(session::Column::LastSeenAt, Expr::value(*at))
                .filter(session::Column::Id.eq(*id))
                .filter(session::Column::LastSeenAt.lt(*at))
                .exec(txn)
                .await?;
        }
        Ok(())
    }
}

/// Pending last-seen times.
pub struct LastSeen {
    writer: BatchedWriter<Uuid, Max<DateTime<Utc>>, Write>,
}

impl std::fmt::Debug for LastSeen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.writer.fmt(f)
    }
}

impl LastSeen {
    /// Times written to `db`.
    pub fn new(db: DatabaseConnection) -> Self {
        Self {
            writer: BatchedWriter::new("last-seen times", db, Write, MAX_PENDING),
        }
    }

    /// Notes that `session` was used at `at`.
    pub fn touch(&self, session: Uuid, at: DateTime<Utc>) {
        self.writer.record(session, Max(at));
    }

    /// The pending time for a session, if newer than what is stored.
    pub fn pending(&self, session: Uuid) -> Option<DateTime<Utc>> {
        self.writer.get(&session).map(|Max(t)| t)
    }

    /// Writes the pending times; returns how many sessions were updated.
    pub async fn flush(&self) -> Result<usize, DbErr> {
        self.writer.flush(Select::All).await
    }
}
