//! Migrations of the api-keys service's tables.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

/// The api-keys service's migrator (its own history table).
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migration_table_name() -> DynIden {
        Alias::new("twig_migrations_apikeys").into_iden()
    }

    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(CreateApiKeyTables),
            Box::new(AddIpAllowlists),
            Box::new(AddUsage),
            Box::new(AddStoppedAt),
            Box::new(AddServiceAccounts),
        ]
    }
}

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Id,
    OrgId,
    Name,
    Scopes,
    Prefix,
    CreatedBy,
    CreatedAt,
    ExpiresAt,
    RevokedAt,
    LastUsedAt,
}

#[derive(DeriveIden)]
enum ApiKeySecrets {
    Table,
    SecretHash,
    KeyId,
    Prefix,
    CreatedAt,
    ExpiresAt,
}

struct CreateApiKeyTables;

impl MigrationName for CreateApiKeyTables {
    fn name(&self) -> &str {
        "m0001_create_api_key_tables"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateApiKeyTables {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ApiKeys::Table)
                    .col(uuid(ApiKeys::Id).primary_key())
                    .col(uuid(ApiKeys::OrgId))
                    .col(string(ApiKeys::Name))
                    .col(string(ApiKeys::Scopes))
                    .col(string(ApiKeys::Prefix))
                    .col(uuid(ApiKeys::CreatedBy))
                    .col(timestamp_with_time_zone(ApiKeys::CreatedAt))
                    .col(timestamp_with_time_zone_null(ApiKeys::ExpiresAt))
                    .col(timestamp_with_time_zone_null(ApiKeys::RevokedAt))
                    .col(timestamp_with_time_zone_null(ApiKeys::LastUsedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("api_keys_org_created")
                    .table(ApiKeys::Table)
                    .col(ApiKeys::OrgId)
                    .col(ApiKeys::CreatedAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ApiKeySecrets::Table)
                    .col(blob(ApiKeySecrets::SecretHash).primary_key())
                    .col(uuid(ApiKeySecrets::KeyId))
                    .col(string(ApiKeySecrets::Prefix))
                    .col(timestamp_with_time_zone(ApiKeySecrets::CreatedAt))
                    .col(timestamp_with_time_zone_null(ApiKeySecrets::ExpiresAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(ApiKeySecrets::Table, ApiKeySecrets::KeyId)
                            .to(ApiKeys::Table, ApiKeys::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("api_key_secrets_key")
                    .table(ApiKeySecrets::Table)
                    .col(ApiKeySecrets::KeyId)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }
}

#[derive(DeriveIden)]
enum OrgIpAllowlists {
    Table,
    OrgId,
    Cidrs,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum ApiKeysAllowlist {
    #[sea_orm(iden = "api_keys")]
    Table,
    AllowedCidrs,
}

struct AddIpAllowlists;

impl MigrationName for AddIpAllowlists {
    fn name(&self) -> &str {
        "m0002_add_ip_allowlists"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddIpAllowlists {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(ApiKeysAllowlist::Table)
                    .add_column(string(ApiKeysAllowlist::AllowedCidrs).default(""))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(OrgIpAllowlists::Table)
                    .col(uuid(OrgIpAllowlists::OrgId).primary_key())
                    .col(text(OrgIpAllowlists::Cidrs))
                    .col(timestamp_with_time_zone(OrgIpAllowlists::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }
}

#[derive(DeriveIden)]
enum ApiKeyUsage {
    Table,
    KeyId,
    Minute,
    Requests,
}

struct AddUsage;

impl MigrationName for AddUsage {
    fn name(&self) -> &str {
        "m0003_add_usage"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddUsage {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ApiKeyUsage::Table)
                    .col(uuid(ApiKeyUsage::KeyId))
                    .col(big_integer(ApiKeyUsage::Minute))
                    .col(big_integer(ApiKeyUsage::Requests))
                    .primary_key(
                        Index::create()
                            .col(ApiKeyUsage::KeyId)
                            .col(ApiKeyUsage::Minute),
                    )
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum ApiKeysStopped {
    #[sea_orm(iden = "api_keys")]
    Table,
    StoppedAt,
}

/// `api_keys.stopped_at`: set while the membership of the key's creator
/// is suspended.
struct AddStoppedAt;

impl MigrationName for AddStoppedAt {
    fn name(&self) -> &str {
        "m0004_add_stopped_at"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddStoppedAt {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(ApiKeysStopped::Table)
                    .add_column(timestamp_with_time_zone_null(ApiKeysStopped::StoppedAt))
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum ServiceAccounts {
    Table,
    Id,
    OrgId,
    Name,
    CreatedBy,
    CreatedAt,
    DeletedAt,
}

#[derive(DeriveIden)]
enum ApiKeysOwner {
    #[sea_orm(iden = "api_keys")]
    Table,
    ServiceAccountId,
}

/// `service_accounts`, and `api_keys.service_account_id` (keys made before
/// belong to their creator's membership).
struct AddServiceAccounts;

impl MigrationName for AddServiceAccounts {
    fn name(&self) -> &str {
        "m0005_add_service_accounts"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddServiceAccounts {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ServiceAccounts::Table)
                    .col(uuid(ServiceAccounts::Id).primary_key())
                    .col(uuid(ServiceAccounts::OrgId))
                    .col(string(ServiceAccounts::Name))
                    .col(uuid(ServiceAccounts::CreatedBy))
                    .col(timestamp_with_time_zone(ServiceAccounts::CreatedAt))
                    .col(timestamp_with_time_zone_null(ServiceAccounts::DeletedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("service_accounts_org")
                    .table(ServiceAccounts::Table)
                    .col(ServiceAccounts::OrgId)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(ApiKeysOwner::Table)
                    .add_column(uuid_null(ApiKeysOwner::ServiceAccountId))
                    .to_owned(),
            )
            .await
    }
}
