//! "Last seen" times of sessions, gathered in memory on the hot path and
//! written to the database in one batch every few seconds, so verifying a
//! token never costs a write.

use chrono::{DateTime, Utc};
use dashmap::DashMap;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, DatabaseConnection, DbErr, EntityTrait, QueryFilter};
use uuid::Uuid;

use crate::entity::session;

/// Pending last-seen times.
#[derive(Debug, Default)]
pub struct LastSeen {
    pending: DashMap<Uuid, DateTime<Utc>>,
}

impl LastSeen {
    /// Notes that `session` was used at `at`.
    pub fn touch(&self, session: Uuid, at: DateTime<Utc>) {
        self.pending
            .entry(session)
            .and_modify(|t| *t = (*t).max(at))
            .or_insert(at);
    }

    /// The pending time for a session, if newer than what is stored.
    pub fn pending(&self, session: Uuid) -> Option<DateTime<Utc>> {
        self.pending.get(&session).map(|t| *t)
    }

    /// Writes the pending times; returns how many sessions were updated.
    pub async fn flush(&self, db: &DatabaseConnection) -> Result<usize, DbErr> {
        let batch: Vec<(Uuid, DateTime<Utc>)> = self
            .pending
            .iter()
            .map(|e| (*e.key(), *e.value()))
            .collect();
        for (id, at) in &batch {
            session::Entity::update_many()
                .col_expr(session::Column::LastSeenAt, Expr::value(*at))
                .filter(session::Column::Id.eq(*id))
                .filter(session::Column::LastSeenAt.lt(*at))
                .exec(db)
                .await?;
            self.pending.remove_if(id, |_, t| t <= at);
        }
        Ok(batch.len())
    }
}
