//! Usage for the dashboard: admitted and refused checks per subject per
//! minute.
//!
//! Checks are tallied in memory and added to `quota_usage` by
//! [`Usage::flush`] (every few seconds and at shutdown) through a
//! [`BatchedWriter`]: one transaction per flush, merged back on failure;
//! replicas add to the same rows. Queries include what is not yet
//! written.

use sea_orm::sea_query::{Alias, Expr, ExprTrait, OnConflict};
use sea_orm::{ActiveValue::Set, ColumnTrait, DatabaseConnection, DbErr, EntityTrait};
use sea_orm::{DatabaseTransaction, QueryFilter, QueryOrder};
use twig_db::batch::{BatchedWriter, Merge, Select, Upsert};

use crate::entity::quota_usage;
use crate::subject::Subject;

/// The longest range one query may cover, in minutes (one day).
pub const MAX_MINUTES: i64 = 24 * 60;

/// Decisions in one minute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Checks admitted (shadow refusals included).
    pub allowed: u64,
    /// Checks refused.
    pub denied: u64,
    /// Checks admitted only because their limit is in shadow mode.
    pub shadow_denied: u64,
}

impl Merge for Counts {
    fn merge(&mut self, other: Counts) {
        self.allowed = self.allowed.saturating_add(other.allowed);
        self.denied = self.denied.saturating_add(other.denied);
        self.shadow_denied = self.shadow_denied.saturating_add(other.shadow_denied);
    }
}

/// What one check adds to its minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tally {
    /// Admitted.
    Allowed,
    /// Refused.
    Denied,
    /// Admitted; a shadow limit would have refused it.
    ShadowDenied,
}

impl Tally {
    fn counts(self) -> Counts {
        match self {
            Self::Allowed => Counts {
                allowed: 1,
                ..Counts::default()
            },
            Self::Denied => Counts {
                denied: 1,
                ..Counts::default()
            },
            Self::ShadowDenied => Counts {
                allowed: 1,
                shadow_denied: 1,
                ..Counts::default()
            },
        }
    }
}

/// The most (subject, minute) pairs pending: decisions about further
/// subjects are not tallied until a flush (and are counted in
/// `twig_batch_dropped_total`). Subjects come from requests (addresses,
/// custom subjects), so this bounds what a flood of them can hold: about
/// 150 bytes each.
pub const MAX_PENDING: usize = 500_000;

/// Adds tallies to `quota_usage`.
struct WriteUsage;

impl Upsert<(Subject, i64), Counts> for WriteUsage {
    async fn upsert(
        &self,
        txn: &DatabaseTransaction,
        batch: &[((Subject, i64), Counts)],
    ) -> Result<(), DbErr> {
        write(txn, batch).await
    }
}

/// Tallies not yet written, and the table.
pub struct Usage {
    db: DatabaseConnection,
    pending: BatchedWriter<(Subject, i64), Counts, WriteUsage>,
}

impl Usage {
    /// Usage stored in `db`.
    pub fn new(db: DatabaseConnection) -> Self {
        Self {
            pending: BatchedWriter::new("quota usage", db.clone(), WriteUsage, MAX_PENDING),
            db,
        }
    }

    /// Adds one decision about `subject` in `minute`.
    pub fn record(&self, subject: &Subject, minute: i64, tally: Tally) {
        self.pending
            .record((subject.clone(), minute), tally.counts());
    }

    /// Adds the tallies to the table, in one transaction; what was written
    /// is no longer held, what failed is kept for the next flush.
    pub async fn flush(&self) -> Result<(), DbErr> {
        self.pending.flush(Select::All).await.map(|_| ())
    }

    /// Pauses the next flush inside its transaction, for tests that stop
    /// the server in the middle of one.
    #[cfg(feature = "test-hooks")]
    pub fn pause_next_flush(&self) -> twig_db::batch::hooks::Pause {
        self.pending.pause_next_flush()
    }

    /// Minutes `from..=to` of `subject` with any decision, oldest first.
    pub async fn minutes(
        &self,
        subject: &Subject,
        from: i64,
        to: i64,
    ) -> Result<Vec<(i64, Counts)>, DbErr> {
        let rows = quota_usage::Entity::find()
            .filter(quota_usage::Column::Subject.eq(subject.as_str()))
            .filter(quota_usage::Column::Minute.between(from, to))
            .order_by_asc(quota_usage::Column::Minute)
            .all(&self.db)
            .await?;
        let mut out: Vec<(i64, Counts)> = rows
            .into_iter()
            .map(|r| {
                let n = |x: i64| u64::try_from(x).unwrap_or(0);
                (
                    r.minute,
                    Counts {
                        allowed: n(r.allowed),
                        denied: n(r.denied),
                        shadow_denied: n(r.shadow_denied),
                    },
                )
            })
            .collect();
        let mut key = (subject.clone(), from);
        for minute in from..=to {
            key.1 = minute;
            if let Some(counts) = self.pending.get(&key) {
                add_to(&mut out, minute, counts);
            }
        }
        out.sort_by_key(|(m, _)| *m);
        Ok(out)
    }
}

fn add_to(minutes: &mut Vec<(i64, Counts)>, minute: i64, add: Counts) {
    match minutes.iter_mut().find(|(m, _)| *m == minute) {
        Some((_, c)) => c.merge(add),
        None => minutes.push((minute, add)),
    }
}

/// Rows per statement: well under SQLite's and PostgreSQL's limits on
/// bound parameters (five a row).
const ROWS_PER_STATEMENT: usize = 1000;

/// Adds `batch` to `quota_usage`, many rows per statement: one flush is
/// one transaction, which holds SQLite's write lock until it commits.
async fn write(db: &DatabaseTransaction, batch: &[((Subject, i64), Counts)]) -> Result<(), DbErr> {
    let n = |x: u64| i64::try_from(x).unwrap_or(i64::MAX);
    // stored + the row this statement tried to insert
    let plus = |column: quota_usage::Column| {
        Expr::col((quota_usage::Entity, column)).add(Expr::col((Alias::new("excluded"), column)))
    };
    for chunk in batch.chunks(ROWS_PER_STATEMENT) {
        quota_usage::Entity::insert_many(chunk.iter().map(|((subject, minute), counts)| {
            quota_usage::ActiveModel {
                subject: Set(subject.as_str().to_string()),
                minute: Set(*minute),
                allowed: Set(n(counts.allowed)),
                denied: Set(n(counts.denied)),
                shadow_denied: Set(n(counts.shadow_denied)),
            }
        }))
        .on_conflict(
            OnConflict::columns([quota_usage::Column::Subject, quota_usage::Column::Minute])
                .value(
                    quota_usage::Column::Allowed,
                    plus(quota_usage::Column::Allowed),
                )
                .value(
                    quota_usage::Column::Denied,
                    plus(quota_usage::Column::Denied),
                )
                .value(
                    quota_usage::Column::ShadowDenied,
                    plus(quota_usage::Column::ShadowDenied),
                )
                .to_owned(),
        )
        .exec_without_returning(db)
        .await?;
    }
    Ok(())
}
