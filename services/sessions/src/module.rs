//! The sessions service as a module of the suite.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use sea_orm::{DatabaseConnection, DbErr};
use twig_config::Owners;
use twig_crypto::TokenKind;
use twig_module::{
    Context, CredentialCheck, MemberKeys, Module, ModuleError, PasswordRules, Port, RemoteContext,
    SessionIssuer, Throttles, Users,
};
use twig_proto::sessions::v1::session_service_server::SessionServiceServer;

use crate::config::SessionsConfig;
use crate::{Migrator, SERVICE_NAME, SessionAuthenticator, Sessions};

/// How often links that expired a day ago are deleted.
const LINK_SWEEP_PERIOD: Duration = Duration::from_secs(600);

/// How often last-seen times are written.
const LAST_SEEN_PERIOD: Duration = Duration::from_secs(10);

/// The sessions service: sign-up, login, tokens.
pub struct SessionsModule;

/// The module the binary lists.
pub static MODULE: SessionsModule = SessionsModule;

impl Module for SessionsModule {
    fn name(&self) -> &'static str {
        "sessions"
    }

    fn grpc_services(&self) -> &'static [&'static str] {
        &[SERVICE_NAME]
    }

    fn owns(&self, owners: &mut Owners) {
        owners
            .section::<SessionsConfig>()
            .internal_scopes(&[twig_auth::OPERATOR_SCOPE]);
    }

    fn migrate<'a>(&'a self, db: &'a DatabaseConnection) -> BoxFuture<'a, Result<(), DbErr>> {
        Box::pin(twig_db::migrate::<Migrator>(db))
    }

    fn browser_prefix(&self) -> Option<&'static str> {
        Some(crate::browser::PREFIX)
    }

    fn needs(&self) -> &'static [&'static str] {
        &[MemberKeys::NAME, Throttles::NAME, PasswordRules::NAME]
    }

    fn provides(&self) -> &'static [&'static str] {
        &[CredentialCheck::NAME, SessionIssuer::NAME, Users::NAME]
    }

    fn build<'a>(&'a self, cx: &'a mut Context) -> BoxFuture<'a, Result<(), ModuleError>> {
        Box::pin(async move {
            let config = cx
                .config()
                .section::<SessionsConfig>()
                .map_err(|e| ModuleError::setup(self.name(), "cannot read [sessions]", e))?;
            let member_keys = cx.need::<MemberKeys>();
            let throttles = cx.need::<Throttles>();
            let password_rules = cx.need::<PasswordRules>();
            let sessions = Arc::new(
                Sessions::new(
                    cx.db().clone(),
                    config,
                    cx.hasher(),
                    cx.clock(),
                    cx.fanout().clone(),
                    cx.mailer().clone(),
                )
                .with_member_keys(member_keys)
                .with_throttles(throttles)
                .with_password_rules(password_rules),
            );
            cx.workers().listen(
                "ended sessions",
                sessions.clone().listen_for_ended_sessions(),
            );
            let last_seen = sessions.clone();
            cx.workers()
                .periodic("last-seen times", LAST_SEEN_PERIOD, move |_| {
                    let sessions = last_seen.clone();
                    async move {
                        if let Err(e) = sessions.flush_last_seen().await {
                            tracing::warn!(error = %e, "could not write last-seen times; will retry");
                        }
                    }
                });
            let links = sessions.clone();
            cx.workers()
                .periodic("expired email links", LINK_SWEEP_PERIOD, move |_| {
                    let sessions = links.clone();
                    async move {
                        if let Err(e) = sessions.delete_expired_links().await {
                            tracing::warn!(error = %e, "could not delete expired email links; will retry");
                        }
                    }
                });
            let csrf = twig_web::Csrf::from_config(cx.config());
            cx.browser_routes(
                crate::browser::PREFIX,
                crate::browser::router(sessions.clone(), &csrf),
            );
            let max_message = cx.max_message_bytes();
            cx.serve(
                SessionServiceServer::new(crate::grpc::SessionsGrpc::new(sessions.clone()))
                    .max_decoding_message_size(max_message),
            );
            cx.provide(CredentialCheck {
                kind: TokenKind::SessionAccess,
                check: Arc::new(SessionAuthenticator(sessions.clone())),
            });
            let issuer = SessionIssuer(sessions.clone());
            let users = Users(sessions.identity().clone());
            cx.provide(issuer.clone());
            cx.provide(users.clone());
            // The same ports by type from the built suite (tests, the CLI).
            cx.expose(issuer);
            cx.expose(users);
            cx.expose(sessions.identity().clone());
            cx.expose(sessions);
            Ok(())
        })
    }

    fn remote(&self, cx: &mut RemoteContext<'_>) -> Result<(), ModuleError> {
        let remote = Arc::new(crate::remote::RemoteSessionAuthenticator::new(
            cx.channel(),
            cx.credential(),
        ));
        let check = cx.keep_answers(remote, crate::remote::stale_of);
        cx.provide(SessionIssuer(Arc::new(
            crate::remote::RemoteSessionIssuer::new(cx.channel(), cx.credential()),
        )));
        cx.provide(Users(Arc::new(crate::remote::RemoteUserDirectory::new(
            cx.channel(),
            cx.credential(),
        ))));
        cx.provide(CredentialCheck {
            kind: TokenKind::SessionAccess,
            check,
        });
        Ok(())
    }
}
