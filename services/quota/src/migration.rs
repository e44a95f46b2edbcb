//! Migrations of the quota service's tables.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

/// The quota service's migrator (its own history table).
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migration_table_name() -> DynIden {
        Alias::new("twig_migrations_quota").into_iden()
    }

    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(CreateQuotaTables), Box::new(CreateOrgPlans)]
    }
}

#[derive(DeriveIden)]
enum QuotaLimits {
    Table,
    Subject,
    OrgId,
    Limit,
    PeriodMs,
    Buckets,
    Shadow,
    UpdatedAt,
    UpdatedBy,
}

#[derive(DeriveIden)]
enum QuotaUsage {
    Table,
    Subject,
    Minute,
    Allowed,
    Denied,
    ShadowDenied,
}

struct CreateQuotaTables;

impl MigrationName for CreateQuotaTables {
    fn name(&self) -> &str {
        "m0001_create_quota_tables"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateQuotaTables {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(QuotaLimits::Table)
                    .col(string_len(QuotaLimits::Subject, 300).primary_key())
                    .col(uuid(QuotaLimits::OrgId))
                    .col(big_integer(QuotaLimits::Limit))
                    .col(big_integer(QuotaLimits::PeriodMs))
                    .col(integer(QuotaLimits::Buckets))
                    .col(boolean(QuotaLimits::Shadow))
                    .col(timestamp_with_time_zone(QuotaLimits::UpdatedAt))
                    .col(string(QuotaLimits::UpdatedBy))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("quota_limits_org")
                    .table(QuotaLimits::Table)
                    .col(QuotaLimits::OrgId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(QuotaUsage::Table)
                    .col(string_len(QuotaUsage::Subject, 300))
                    .col(big_integer(QuotaUsage::Minute))
                    .col(big_integer(QuotaUsage::Allowed))
                    .col(big_integer(QuotaUsage::Denied))
                    .col(big_integer(QuotaUsage::ShadowDenied))
                    .primary_key(
                        Index::create()
                            .col(QuotaUsage::Subject)
                            .col(QuotaUsage::Minute),
                    )
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum QuotaOrgPlans {
    Table,
    OrgId,
    Plan,
    UpdatedAt,
    UpdatedBy,
}

/// `quota_org_plans`: the operator's plan assignments.
struct CreateOrgPlans;

impl MigrationName for CreateOrgPlans {
    fn name(&self) -> &str {
        "m0002_create_quota_org_plans"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateOrgPlans {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(QuotaOrgPlans::Table)
                    .col(uuid(QuotaOrgPlans::OrgId).primary_key())
                    .col(string_len(QuotaOrgPlans::Plan, 32))
                    .col(timestamp_with_time_zone(QuotaOrgPlans::UpdatedAt))
                    .col(string(QuotaOrgPlans::UpdatedBy))
                    .to_owned(),
            )
            .await
    }
}
