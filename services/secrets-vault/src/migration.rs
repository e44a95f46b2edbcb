//! Migrations of the vault's tables.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

/// The vault's migrator (its own history table).
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migration_table_name() -> DynIden {
        Alias::new("twig_migrations_vault").into_iden()
    }

    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(CreateVaultTables)]
    }
}

#[derive(DeriveIden)]
enum VaultMasterKeys {
    Table,
    Version,
    CheckValue,
    RecordedAt,
    RetiredAt,
}

#[derive(DeriveIden)]
enum VaultSecrets {
    Table,
    Id,
    OrgId,
    Provider,
    Name,
    Masked,
    Sealed,
    KeyVersion,
    CreatedBy,
    CreatedAt,
    UpdatedAt,
    LastUsedAt,
}

#[derive(DeriveIden)]
enum VaultRewrapJobs {
    Table,
    Id,
    TargetVersion,
    Rewrapped,
    StartedAt,
    FinishedAt,
}

struct CreateVaultTables;

impl MigrationName for CreateVaultTables {
    fn name(&self) -> &str {
        "m0001_create_vault_tables"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateVaultTables {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(VaultMasterKeys::Table)
                    .col(integer(VaultMasterKeys::Version).primary_key())
                    .col(string(VaultMasterKeys::CheckValue))
                    .col(timestamp_with_time_zone(VaultMasterKeys::RecordedAt))
                    .col(timestamp_with_time_zone_null(VaultMasterKeys::RetiredAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(VaultSecrets::Table)
                    .col(uuid(VaultSecrets::Id).primary_key())
                    .col(uuid(VaultSecrets::OrgId))
                    .col(string(VaultSecrets::Provider))
                    .col(string(VaultSecrets::Name))
                    .col(string(VaultSecrets::Masked))
                    .col(text(VaultSecrets::Sealed))
                    .col(integer(VaultSecrets::KeyVersion))
                    .col(string(VaultSecrets::CreatedBy))
                    .col(timestamp_with_time_zone(VaultSecrets::CreatedAt))
                    .col(timestamp_with_time_zone(VaultSecrets::UpdatedAt))
                    .col(timestamp_with_time_zone_null(VaultSecrets::LastUsedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("vault_secrets_org_provider_name")
                    .table(VaultSecrets::Table)
                    .col(VaultSecrets::OrgId)
                    .col(VaultSecrets::Provider)
                    .col(VaultSecrets::Name)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("vault_secrets_key_version")
                    .table(VaultSecrets::Table)
                    .col(VaultSecrets::KeyVersion)
                    .col(VaultSecrets::Id)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(VaultRewrapJobs::Table)
                    .col(uuid(VaultRewrapJobs::Id).primary_key())
                    .col(integer(VaultRewrapJobs::TargetVersion))
                    .col(big_integer(VaultRewrapJobs::Rewrapped))
                    .col(timestamp_with_time_zone(VaultRewrapJobs::StartedAt))
                    .col(timestamp_with_time_zone_null(VaultRewrapJobs::FinishedAt))
                    .to_owned(),
            )
            .await
    }
}
