//! Usage for the dashboard: admitted and refused checks per subject per
//! minute.
//!
//! Checks are tallied in memory and added to `quota_usage` by
//! [`Usage::flush`] (every few seconds and at shutdown); replicas add to
//! the same rows. Queries include what is not yet written.

use dashmap::DashMap;
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{ActiveValue::Set, ColumnTrait, DatabaseConnection, DbErr, EntityTrait};
use sea_orm::{QueryFilter, QueryOrder};

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

impl Counts {
    fn add(&mut self, other: Counts) {
        self.allowed += other.allowed;
        self.denied += other.denied;
        self.shadow_denied += other.shadow_denied;
    }

    fn sub(&mut self, other: Counts) {
        self.allowed = self.allowed.saturating_sub(other.allowed);
        self.denied = self.denied.saturating_sub(other.denied);
        self.shadow_denied = self.shadow_denied.saturating_sub(other.shadow_denied);
    }

    fn is_zero(&self) -> bool {
        *self == Counts::default()
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

/// Tallies not yet written, and the table.
pub struct Usage {
    db: DatabaseConnection,
    pending: DashMap<Subject, Vec<(i64, Counts)>>,
    /// Held while tallies are written: two flushes at once (the
    /// background one and a caller's) would both add the same counts.
    flushing: tokio::sync::Mutex<()>,
}

impl Usage {
    /// Usage stored in `db`.
    pub fn new(db: DatabaseConnection) -> Self {
        Self {
            db,
            pending: DashMap::new(),
            flushing: tokio::sync::Mutex::new(()),
        }
    }

    /// Adds one decision about `subject` in `minute`.
    pub fn record(&self, subject: &Subject, minute: i64, tally: Tally) {
        let add = tally.counts();
        if let Some(mut minutes) = self.pending.get_mut(subject) {
            add_to(&mut minutes, minute, add);
            return;
        }
        add_to(
            &mut self.pending.entry(subject.clone()).or_default(),
            minute,
            add,
        );
    }

    /// Adds the tallies to the table; what was written is no longer held.
    pub async fn flush(&self) -> Result<(), DbErr> {
        let _one_at_a_time = self.flushing.lock().await;
        let snapshot: Vec<(Subject, Vec<(i64, Counts)>)> = self
            .pending
            .iter()
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect();
        for (subject, minutes) in snapshot {
            for (minute, counts) in minutes {
                write(&self.db, &subject, minute, counts).await?;
                if let Some(mut held) = self.pending.get_mut(&subject)
                    && let Some((_, c)) = held.iter_mut().find(|(m, _)| *m == minute)
                {
                    c.sub(counts);
                }
            }
            if let Some(mut held) = self.pending.get_mut(&subject) {
                held.retain(|(_, c)| !c.is_zero());
            }
            self.pending.remove_if(&subject, |_, held| held.is_empty());
        }
        Ok(())
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
        if let Some(held) = self.pending.get(subject) {
            for &(minute, counts) in held.iter().filter(|(m, _)| (from..=to).contains(m)) {
                add_to(&mut out, minute, counts);
            }
        }
        out.sort_by_key(|(m, _)| *m);
        Ok(out)
    }
}

fn add_to(minutes: &mut Vec<(i64, Counts)>, minute: i64, add: Counts) {
    match minutes.iter_mut().find(|(m, _)| *m == minute) {
        Some((_, c)) => c.add(add),
        None => minutes.push((minute, add)),
    }
}

async fn write(
    db: &DatabaseConnection,
    subject: &Subject,
    minute: i64,
    counts: Counts,
) -> Result<(), DbErr> {
    let n = |x: u64| i64::try_from(x).unwrap_or(i64::MAX);
    let plus =
        |column: quota_usage::Column, x: u64| Expr::col((quota_usage::Entity, column)).add(n(x));
    quota_usage::Entity::insert(quota_usage::ActiveModel {
        subject: Set(subject.as_str().to_string()),
        minute: Set(minute),
        allowed: Set(n(counts.allowed)),
        denied: Set(n(counts.denied)),
        shadow_denied: Set(n(counts.shadow_denied)),
    })
    .on_conflict(
        OnConflict::columns([quota_usage::Column::Subject, quota_usage::Column::Minute])
            .value(
                quota_usage::Column::Allowed,
                plus(quota_usage::Column::Allowed, counts.allowed),
            )
            .value(
                quota_usage::Column::Denied,
                plus(quota_usage::Column::Denied, counts.denied),
            )
            .value(
                quota_usage::Column::ShadowDenied,
                plus(quota_usage::Column::ShadowDenied, counts.shadow_denied),
            )
            .to_owned(),
    )
    .exec_without_returning(db)
    .await?;
    Ok(())
}
