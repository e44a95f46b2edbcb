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
        vec![Box::new(CreateDomains), Box::new(CreateConnections)]
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
