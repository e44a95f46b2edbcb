//! Migrations of the sessions service's tables.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

/// The sessions service's migrator (its own history table).
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migration_table_name() -> DynIden {
        Alias::new("twig_migrations_sessions").into_iden()
    }

    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(CreateSessionTables),
            Box::new(AddSessionMethod),
            Box::new(NormaliseEmails),
            Box::new(AddMembershipStatus),
            Box::new(AddEmailLinksAndInvitations),
            Box::new(AddNotifySignIn),
            Box::new(NormaliseEmailDomains),
        ]
    }
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    Email,
    DisplayName,
    PasswordHash,
    CreatedAt,
    DisabledAt,
    EmailVerifiedAt,
    NotifySignIn,
}

#[derive(DeriveIden)]
enum Organizations {
    Table,
    Id,
    Name,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Memberships {
    Table,
    OrgId,
    UserId,
    Role,
    CreatedAt,
    Status,
}

#[derive(DeriveIden)]
enum Sessions {
    Table,
    Id,
    UserId,
    OrgId,
    AccessTokenHash,
    AccessExpiresAt,
    IdleExpiresAt,
    AbsoluteExpiresAt,
    CreatedAt,
    LastSeenAt,
    Ip,
    UserAgent,
    RevokedAt,
    RevokedReason,
    Method,
}

#[derive(DeriveIden)]
enum RefreshTokens {
    Table,
    TokenHash,
    SessionId,
    IssuedAt,
    ExpiresAt,
    UsedAt,
}

#[derive(DeriveIden)]
enum LoginFailures {
    Table,
    EmailHash,
    Failures,
    LastFailureAt,
}

struct CreateSessionTables;

impl MigrationName for CreateSessionTables {
    fn name(&self) -> &str {
        "m0001_create_session_tables"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateSessionTables {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Users::Table)
                    .col(uuid(Users::Id).primary_key())
                    .col(string_uniq(Users::Email))
                    .col(string(Users::DisplayName))
                    .col(string(Users::PasswordHash))
                    .col(timestamp_with_time_zone(Users::CreatedAt))
                    .col(timestamp_with_time_zone_null(Users::DisabledAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Organizations::Table)
                    .col(uuid(Organizations::Id).primary_key())
                    .col(string(Organizations::Name))
                    .col(timestamp_with_time_zone(Organizations::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Memberships::Table)
                    .col(uuid(Memberships::OrgId))
                    .col(uuid(Memberships::UserId))
                    .col(string(Memberships::Role))
                    .col(timestamp_with_time_zone(Memberships::CreatedAt))
                    .primary_key(
                        Index::create()
                            .col(Memberships::OrgId)
                            .col(Memberships::UserId),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(Memberships::Table, Memberships::OrgId)
                            .to(Organizations::Table, Organizations::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(Memberships::Table, Memberships::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("memberships_user")
                    .table(Memberships::Table)
                    .col(Memberships::UserId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Sessions::Table)
                    .col(uuid(Sessions::Id).primary_key())
                    .col(uuid(Sessions::UserId))
                    .col(uuid(Sessions::OrgId))
                    .col(blob(Sessions::AccessTokenHash).unique_key())
                    .col(timestamp_with_time_zone(Sessions::AccessExpiresAt))
                    .col(timestamp_with_time_zone(Sessions::IdleExpiresAt))
                    .col(timestamp_with_time_zone(Sessions::AbsoluteExpiresAt))
                    .col(timestamp_with_time_zone(Sessions::CreatedAt))
                    .col(timestamp_with_time_zone(Sessions::LastSeenAt))
                    .col(string_null(Sessions::Ip))
                    .col(string_null(Sessions::UserAgent))
                    .col(timestamp_with_time_zone_null(Sessions::RevokedAt))
                    .col(string_null(Sessions::RevokedReason))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Sessions::Table, Sessions::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("sessions_user")
                    .table(Sessions::Table)
                    .col(Sessions::UserId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(RefreshTokens::Table)
                    .col(blob(RefreshTokens::TokenHash).primary_key())
                    .col(uuid(RefreshTokens::SessionId))
                    .col(timestamp_with_time_zone(RefreshTokens::IssuedAt))
                    .col(timestamp_with_time_zone(RefreshTokens::ExpiresAt))
                    .col(timestamp_with_time_zone_null(RefreshTokens::UsedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(RefreshTokens::Table, RefreshTokens::SessionId)
                            .to(Sessions::Table, Sessions::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("refresh_tokens_session")
                    .table(RefreshTokens::Table)
                    .col(RefreshTokens::SessionId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(LoginFailures::Table)
                    .col(blob(LoginFailures::EmailHash).primary_key())
                    .col(integer(LoginFailures::Failures))
                    .col(timestamp_with_time_zone(LoginFailures::LastFailureAt))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }
}

/// `sessions.method`: how each session was authenticated; sessions made
/// before it were all password logins.
struct AddSessionMethod;

impl MigrationName for AddSessionMethod {
    fn name(&self) -> &str {
        "m0002_add_session_method"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddSessionMethod {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Sessions::Table)
                    .add_column(string(Sessions::Method).default("password"))
                    .to_owned(),
            )
            .await
    }
}

/// `memberships.status`: `active`, `suspended` or `removed`
/// ([`crate::members::MembershipStatus`]); every earlier membership was
/// active.
struct AddMembershipStatus;

impl MigrationName for AddMembershipStatus {
    fn name(&self) -> &str {
        "m0004_add_membership_status"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddMembershipStatus {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Memberships::Table)
                    .add_column(string(Memberships::Status).default("active"))
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum EmailLinks {
    Table,
    TokenHash,
    Purpose,
    Email,
    UserId,
    Details,
    CreatedAt,
    ExpiresAt,
    UsedAt,
}

#[derive(DeriveIden)]
enum Invitations {
    Table,
    Id,
    OrgId,
    Email,
    Role,
    TokenHash,
    InvitedBy,
    CreatedAt,
    ExpiresAt,
    AcceptedAt,
    AcceptedBy,
    RevokedAt,
}

/// `users.email_verified_at` (accounts made before are unverified until
/// they follow a link), `email_links` (sign-up, verification and reset
/// links: hashed tokens, single use, expiring) and `invitations`.
struct AddEmailLinksAndInvitations;

impl MigrationName for AddEmailLinksAndInvitations {
    fn name(&self) -> &str {
        "m0005_add_email_links_and_invitations"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddEmailLinksAndInvitations {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .add_column(timestamp_with_time_zone_null(Users::EmailVerifiedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(EmailLinks::Table)
                    .col(blob(EmailLinks::TokenHash).primary_key())
                    .col(string(EmailLinks::Purpose))
                    .col(string(EmailLinks::Email))
                    .col(uuid_null(EmailLinks::UserId))
                    .col(text(EmailLinks::Details))
                    .col(timestamp_with_time_zone(EmailLinks::CreatedAt))
                    .col(timestamp_with_time_zone(EmailLinks::ExpiresAt))
                    .col(timestamp_with_time_zone_null(EmailLinks::UsedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("email_links_purpose_email")
                    .table(EmailLinks::Table)
                    .col(EmailLinks::Purpose)
                    .col(EmailLinks::Email)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("email_links_expires")
                    .table(EmailLinks::Table)
                    .col(EmailLinks::ExpiresAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Invitations::Table)
                    .col(uuid(Invitations::Id).primary_key())
                    .col(uuid(Invitations::OrgId))
                    .col(string(Invitations::Email))
                    .col(string(Invitations::Role))
                    .col(blob(Invitations::TokenHash).unique_key())
                    .col(uuid(Invitations::InvitedBy))
                    .col(timestamp_with_time_zone(Invitations::CreatedAt))
                    .col(timestamp_with_time_zone(Invitations::ExpiresAt))
                    .col(timestamp_with_time_zone_null(Invitations::AcceptedAt))
                    .col(uuid_null(Invitations::AcceptedBy))
                    .col(timestamp_with_time_zone_null(Invitations::RevokedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Invitations::Table, Invitations::OrgId)
                            .to(Organizations::Table, Organizations::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("invitations_org")
                    .table(Invitations::Table)
                    .col(Invitations::OrgId)
                    .col(Invitations::CreatedAt)
                    .to_owned(),
            )
            .await
    }
}

/// `users.notify_sign_in`: whether new sign-ins are mailed (off for every
/// earlier account).
struct AddNotifySignIn;

impl MigrationName for AddNotifySignIn {
    fn name(&self) -> &str {
        "m0006_add_notify_sign_in"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddNotifySignIn {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Users::Table)
                    .add_column(boolean(Users::NotifySignIn).default(false))
                    .to_owned(),
            )
            .await
    }
}

/// Stored emails in today's form ([`crate::Email`]): addresses
/// stored before the rule took Unicode composition (NFC) into account
/// are rewritten, so their owners still sign in. An address whose new
/// form another account already holds is left as it is and logged (two
/// accounts the old rule let look the same: an operator decides which
/// one stays); one the rule now refuses is left as it is.
struct NormaliseEmails;

impl MigrationName for NormaliseEmails {
    fn name(&self) -> &str {
        "m0003_normalise_emails"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for NormaliseEmails {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        normalise_stored_emails(manager).await
    }
}

/// `m0007`: the email rule learned that a Punycode domain (`xn--…`) is its
/// Unicode form, and refuses quoted names, comments and IP-literal
/// domains; stored emails take today's form again, as in `m0003` (a
/// form another account holds, or one the rule now refuses, is left and
/// logged).
struct NormaliseEmailDomains;

impl MigrationName for NormaliseEmailDomains {
    fn name(&self) -> &str {
        "m0007_normalise_email_domains"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for NormaliseEmailDomains {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        normalise_stored_emails(manager).await
    }
}

/// Rewrites every stored account email to [`crate::Email`]'s form
/// of today. An address whose new form another account holds is left as
/// it is and logged (an operator decides which account stays); one the
/// rule refuses is left as it is and logged.
async fn normalise_stored_emails(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    let db = manager.get_connection();
    let backend = manager.get_database_backend();
    let select = Query::select()
        .columns([Users::Id, Users::Email])
        .from(Users::Table)
        .to_owned();
    let mut rows = Vec::new();
    for row in db.query_all_raw(backend.build(&select)).await? {
        let id: uuid::Uuid = row.try_get("", "id")?;
        let email: String = row.try_get("", "email")?;
        rows.push((id, email));
    }
    let mut taken: std::collections::HashSet<String> =
        rows.iter().map(|(_, email)| email.clone()).collect();
    for (id, stored) in rows {
        let Ok(normal) = crate::Email::parse(&stored) else {
            tracing::warn!(
                %id,
                "an account's stored email is not a valid address by today's rule; left as it is"
            );
            continue;
        };
        let normal = normal.as_str();
        if normal == stored {
            continue;
        }
        if taken.contains(normal) {
            tracing::warn!(
                %id,
                "an account's email is another account's in normal form; left as it is \
                 (decide which account stays)"
            );
            continue;
        }
        let update = Query::update()
            .table(Users::Table)
            .value(Users::Email, normal)
            .and_where(Expr::col(Users::Id).eq(id))
            .to_owned();
        db.execute_raw(backend.build(&update)).await?;
        taken.remove(&stored);
        taken.insert(normal.to_string());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use sea_orm::{ConnectionTrait, Database, EntityTrait};
    use twig_testkit::{Backend, TestDatabase};

    use super::*;
    use crate::entity::user;

    /// A user row with `email`, as an earlier version stored it: its id
    /// and the statement that inserts it.
    fn insert_user(
        db: &sea_orm::DatabaseConnection,
        email: &str,
    ) -> (uuid::Uuid, sea_orm::Statement) {
        let now = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let id = uuid::Uuid::new_v4();
        let query = Query::insert()
            .into_table(Users::Table)
            .columns([
                Users::Id,
                Users::Email,
                Users::DisplayName,
                Users::PasswordHash,
                Users::CreatedAt,
            ])
            .values_panic([id.into(), email.into(), "".into(), "".into(), now.into()])
            .to_owned();
        (id, db.get_database_backend().build(&query))
    }

    async fn stored_emails_take_todays_form(backend: Backend) {
        let database = TestDatabase::new(backend).await;
        let db = Database::connect(&database.url).await.unwrap();
        Migrator::up(&db, Some(2)).await.unwrap();
        let insert = |email: &str| insert_user(&db, email);
        // Stored by the old rule: decomposed; a decomposed twin of a
        // composed address; an address the rule now refuses.
        let rows = [
            insert("jose\u{301}@example.com"),
            insert("rene\u{301}@example.com"),
            insert("ren\u{e9}@example.com"),
            insert("\u{ff41}da@example.com"),
        ];
        for (_, statement) in &rows {
            db.execute_raw(statement.clone()).await.unwrap();
        }
        Migrator::up(&db, None).await.unwrap();
        let email_of = |id| {
            let db = db.clone();
            async move {
                user::Entity::find_by_id(id)
                    .one(&db)
                    .await
                    .unwrap()
                    .unwrap()
                    .email
            }
        };
        assert_eq!(email_of(rows[0].0).await, "jos\u{e9}@example.com");
        assert_eq!(
            email_of(rows[1].0).await,
            "rene\u{301}@example.com",
            "left: its normal form is another account's"
        );
        assert_eq!(email_of(rows[2].0).await, "ren\u{e9}@example.com");
        assert_eq!(email_of(rows[3].0).await, "\u{ff41}da@example.com");
    }

    async fn punycode_domains_take_their_unicode_form(backend: Backend) {
        let database = TestDatabase::new(backend).await;
        let db = Database::connect(&database.url).await.unwrap();
        Migrator::up(&db, Some(6)).await.unwrap();
        let mut ids = Vec::new();
        // A Punycode domain; a Punycode twin of a stored Unicode address;
        // a quoted name the rule now refuses.
        for email in [
            "u1@xn--bcher-kva.example",
            "u2@xn--bcher-kva.example",
            "u2@b\u{fc}cher.example",
            "\"q\"@example.com",
        ] {
            let (id, statement) = insert_user(&db, email);
            db.execute_raw(statement).await.unwrap();
            ids.push(id);
        }
        Migrator::up(&db, None).await.unwrap();
        let mut emails = Vec::new();
        for id in &ids {
            let row = user::Entity::find_by_id(*id).one(&db).await.unwrap();
            emails.push(row.unwrap().email);
        }
        assert_eq!(
            emails,
            [
                "u1@b\u{fc}cher.example",
                "u2@xn--bcher-kva.example",
                "u2@b\u{fc}cher.example",
                "\"q\"@example.com",
            ],
            "the twin and the refused address are left as they were"
        );
    }

    #[tokio::test]
    async fn punycode_domains_take_their_unicode_form_on_sqlite() {
        punycode_domains_take_their_unicode_form(Backend::Sqlite).await
    }

    #[tokio::test]
    async fn punycode_domains_take_their_unicode_form_on_postgres() {
        punycode_domains_take_their_unicode_form(Backend::Postgres).await
    }

    #[tokio::test]
    async fn stored_emails_take_todays_form_on_sqlite() {
        stored_emails_take_todays_form(Backend::Sqlite).await
    }

    #[tokio::test]
    async fn stored_emails_take_todays_form_on_postgres() {
        stored_emails_take_todays_form(Backend::Postgres).await
    }
}
