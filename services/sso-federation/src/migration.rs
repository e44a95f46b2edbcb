//! Migrations of single sign-on's tables.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

/// Single sign-on's migrator (its own history table).
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migration_table_name() -> DynIden {
        Alias::new("twig_migrations_sso").into_iden()
    }

    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(CreateDomains),
            Box::new(CreateConnections),
            Box::new(CreateIdentities),
        ]
    }
}

#[derive(DeriveIden)]
enum SsoDomains {
    Table,
    Id,
    OrgId,
    Domain,
    Token,
    ProvedDomain,
    CreatedAt,
    VerifiedAt,
    LastCheckedAt,
}

struct CreateDomains;

impl MigrationName for CreateDomains {
    fn name(&self) -> &str {
        "m0001_create_sso_domains"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateDomains {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(SsoDomains::Table)
                    .col(uuid(SsoDomains::Id).primary_key())
                    .col(uuid(SsoDomains::OrgId))
                    .col(string(SsoDomains::Domain))
                    .col(string(SsoDomains::Token))
                    .col(string_null(SsoDomains::ProvedDomain))
                    .col(timestamp_with_time_zone(SsoDomains::CreatedAt))
                    .col(timestamp_with_time_zone_null(SsoDomains::VerifiedAt))
                    .col(timestamp_with_time_zone_null(SsoDomains::LastCheckedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("sso_domains_org_domain")
                    .table(SsoDomains::Table)
                    .col(SsoDomains::OrgId)
                    .col(SsoDomains::Domain)
                    .unique()
                    .to_owned(),
            )
            .await?;
        // NULLs are distinct in both databases: many pending claims, one
        // proof per domain.
        manager
            .create_index(
                Index::create()
                    .name("sso_domains_proved_domain")
                    .table(SsoDomains::Table)
                    .col(SsoDomains::ProvedDomain)
                    .unique()
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum SsoConnections {
    Table,
    Id,
    OrgId,
    Name,
    Kind,
    Stage,
    Protocol,
    SealedSecret,
    Mapping,
    Pilot,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum SsoDomainsConnection {
    #[sea_orm(iden = "sso_domains")]
    Table,
    ConnectionId,
}

struct CreateConnections;

impl MigrationName for CreateConnections {
    fn name(&self) -> &str {
        "m0002_create_sso_connections"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateConnections {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(SsoConnections::Table)
                    .col(uuid(SsoConnections::Id).primary_key())
                    .col(uuid(SsoConnections::OrgId))
                    .col(string(SsoConnections::Name))
                    .col(string(SsoConnections::Kind))
                    .col(string(SsoConnections::Stage))
                    .col(text(SsoConnections::Protocol))
                    .col(text_null(SsoConnections::SealedSecret))
                    .col(text(SsoConnections::Mapping))
                    .col(text(SsoConnections::Pilot))
                    .col(timestamp_with_time_zone(SsoConnections::CreatedAt))
                    .col(timestamp_with_time_zone(SsoConnections::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("sso_connections_org_name")
                    .table(SsoConnections::Table)
                    .col(SsoConnections::OrgId)
                    .col(SsoConnections::Name)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(SsoDomainsConnection::Table)
                    .add_column(uuid_null(SsoDomainsConnection::ConnectionId))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("sso_domains_connection")
                    .table(SsoDomainsConnection::Table)
                    .col(SsoDomainsConnection::ConnectionId)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum SsoIdentities {
    Table,
    Id,
    UserId,
    Provider,
    Issuer,
    Subject,
    Email,
    CreatedAt,
    LastUsedAt,
}

struct CreateIdentities;

impl MigrationName for CreateIdentities {
    fn name(&self) -> &str {
        "m0003_create_sso_identities"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateIdentities {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(SsoIdentities::Table)
                    .col(uuid(SsoIdentities::Id).primary_key())
                    .col(uuid(SsoIdentities::UserId))
                    .col(string(SsoIdentities::Provider))
                    .col(text(SsoIdentities::Issuer))
                    .col(text(SsoIdentities::Subject))
                    .col(string(SsoIdentities::Email))
                    .col(timestamp_with_time_zone(SsoIdentities::CreatedAt))
                    .col(timestamp_with_time_zone_null(SsoIdentities::LastUsedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("sso_identities_issuer_subject")
                    .table(SsoIdentities::Table)
                    .col(SsoIdentities::Issuer)
                    .col(SsoIdentities::Subject)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("sso_identities_user")
                    .table(SsoIdentities::Table)
                    .col(SsoIdentities::UserId)
                    .to_owned(),
            )
            .await
    }
}
