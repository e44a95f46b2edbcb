//! Migrations of the audit log.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

/// The audit log's migrator (its own history table).
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migration_table_name() -> DynIden {
        Alias::new("twig_migrations_audit").into_iden()
    }

    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![Box::new(CreateAuditEvents)]
    }
}

#[derive(DeriveIden)]
enum AuditEvents {
    Table,
    Id,
    OccurredAt,
    OrgId,
    Actor,
    Action,
    Outcome,
    Target,
    Ip,
    Details,
}

struct CreateAuditEvents;

impl MigrationName for CreateAuditEvents {
    fn name(&self) -> &str {
        "m0001_create_audit_events"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateAuditEvents {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(AuditEvents::Table)
                    .col(uuid(AuditEvents::Id).primary_key())
                    .col(timestamp_with_time_zone(AuditEvents::OccurredAt))
                    .col(uuid_null(AuditEvents::OrgId))
                    .col(string_null(AuditEvents::Actor))
                    .col(string(AuditEvents::Action))
                    .col(string(AuditEvents::Outcome))
                    .col(string_null(AuditEvents::Target))
                    .col(string_null(AuditEvents::Ip))
                    .col(text(AuditEvents::Details))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("audit_events_org_time")
                    .table(AuditEvents::Table)
                    .col(AuditEvents::OrgId)
                    .col(AuditEvents::OccurredAt)
                    .to_owned(),
            )
            .await?;
        let db = manager.get_connection();
        if twig_db::is_postgres(db) {
            db.execute_unprepared(
                "CREATE FUNCTION audit_events_append_only() RETURNS trigger AS $$ \
                 BEGIN RAISE EXCEPTION 'audit_events is append-only'; END; $$ LANGUAGE plpgsql;
                 CREATE TRIGGER audit_events_no_update BEFORE UPDATE OR DELETE ON audit_events \
                 FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();",
            )
            .await?;
        } else {
            db.execute_unprepared(
                "CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events \
                 BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;",
            )
            .await?;
            db.execute_unprepared(
                "CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events \
                 BEGIN SELECT RAISE(ABORT, 'audit_events is append-only'); END;",
            )
            .await?;
        }
        Ok(())
    }
}
