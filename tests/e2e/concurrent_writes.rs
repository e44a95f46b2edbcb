//! Every write RPC of every service called from 8 clients at once, with
//! the batched background writers flushing and API-key traffic counted at
//! the same time: every call succeeds, or fails only with its own domain
//! error (ALREADY_EXISTS for a taken name, NOT_FOUND for what another
//! client deleted first), and everything written is there afterwards. On
//! SQLite this is what `twig_db::begin_write` is for: before it, writers
//! that read first failed with INTERNAL "database is locked".

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use tonic::transport::Channel;
use tonic::{Code, Status};
use twig_config::{InternalClient, Secret};
use twig_proto::apikeys::v1 as kpb;
use twig_proto::apikeys::v1::api_key_service_client::ApiKeyServiceClient;
use twig_proto::auth::v1 as apb;
use twig_proto::quota::v1 as qpb;
use twig_proto::quota::v1::quota_service_client::QuotaServiceClient;
use twig_proto::sessions::v1 as spb;
use twig_proto::sessions::v1::session_service_client::SessionServiceClient;
use twig_proto::vault::v1 as vpb;
use twig_proto::vault::v1::vault_service_client::VaultServiceClient;
use twig_tests::{Backend, PASSWORD, TEST_MASTER_KEY, TestApp, bearer, email, with_internal_token};

/// Clients at once.
const CLIENTS: usize = 8;
/// Writes each client makes in a row where the data allows it.
const ROUNDS: usize = 3;
const RUNTIME_TOKEN: &str = "agent-runtime-token-0123456789abcdefghij";
const NEW_PASSWORD: &str = "another correct horse battery";
/// Base64 of 32 bytes: the vault's master key version 2.
const SECOND_MASTER_KEY: &str = "dHdpZy10ZXN0LW1hc3Rlci1rZXktdHdvLTMyYnl0ZSE=";

fn openai(i: usize, r: usize) -> String {
    format!("sk-proj-abcdefghijklmnopqrstuvwxyz{i}x{r}")
}

/// Runs `call` once per client, all at once, each on its own connection
/// (from its own loopback address), and returns every answer in client
/// order.
async fn at_once<T, F, Fut>(clients: &[Channel], call: F) -> Vec<Result<T, Status>>
where
    T: Send + 'static,
    F: Fn(usize, Channel) -> Fut,
    Fut: Future<Output = Result<T, Status>> + Send + 'static,
{
    let tasks: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(i, channel)| tokio::spawn(call(i, channel.clone())))
        .collect();
    let mut answers = Vec::with_capacity(tasks.len());
    for task in tasks {
        answers.push(task.await.expect("client task"));
    }
    answers
}

fn describe<T>(answers: &[Result<T, Status>]) -> String {
    answers
        .iter()
        .enumerate()
        .filter_map(|(i, a)| {
            a.as_ref()
                .err()
                .map(|s| format!("client {i}: {:?} {}", s.code(), s.message()))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Every call succeeded; their answers.
fn all_ok<T>(what: &str, answers: Vec<Result<T, Status>>) -> Vec<T> {
    let failures = describe(&answers);
    assert!(failures.is_empty(), "{what}: {failures}");
    answers.into_iter().map(Result::unwrap).collect()
}

/// Exactly one call succeeded and every other failed with `loser`.
fn one_winner<T>(what: &str, answers: Vec<Result<T, Status>>, loser: Code) {
    let won = answers.iter().filter(|a| a.is_ok()).count();
    let unexpected = answers
        .iter()
        .any(|a| a.as_ref().is_err_and(|s| s.code() != loser));
    assert!(
        won == 1 && !unexpected,
        "{what}: {won} succeeded, expected one and otherwise {loser:?}: {}",
        describe(&answers)
    );
}

fn sessions(channel: Channel) -> SessionServiceClient<Channel> {
    SessionServiceClient::new(channel)
}

fn keys(channel: Channel) -> ApiKeyServiceClient<Channel> {
    ApiKeyServiceClient::new(channel)
}

fn quota(channel: Channel) -> QuotaServiceClient<Channel> {
    QuotaServiceClient::new(channel)
}

fn vault(channel: Channel) -> VaultServiceClient<Channel> {
    VaultServiceClient::new(channel)
}

async fn sign_up(channel: Channel, who: String) -> Result<spb::SignUpResponse, Status> {
    sessions(channel)
        .sign_up(spb::SignUpRequest {
            email: who,
            password: PASSWORD.into(),
            display_name: String::new(),
            organization_name: String::new(),
        })
        .await
        .map(|r| r.into_inner())
}

/// Follows a sign-up link: the new account, its organisation, a session.
async fn verify_email(channel: Channel, token: String) -> Result<spb::VerifyEmailResponse, Status> {
    sessions(channel)
        .verify_email(spb::VerifyEmailRequest {
            token,
            password: PASSWORD.into(),
        })
        .await
        .map(|r| r.into_inner())
}

/// The token of every sign-up link mailed to `who` (waiting for `count`).
async fn sign_up_links(app: &TestApp, who: &str, count: usize) -> Vec<String> {
    app.mail_count_to(who, count)
        .await
        .iter()
        .filter(|m| m.subject.contains("Verify your email"))
        .flat_map(|m| {
            m.links
                .iter()
                .filter_map(|l| twig_tests::token_from_link(l))
        })
        .collect()
}

async fn login(
    channel: Channel,
    who: String,
    password: &str,
) -> Result<spb::SessionTokens, Status> {
    sessions(channel)
        .login(spb::LoginRequest {
            email: who,
            password: password.into(),
            organization_id: String::new(),
        })
        .await
        .map(|r| r.into_inner().tokens.expect("tokens"))
}

async fn add_provider_key(
    channel: Channel,
    owner: Arc<String>,
    name: String,
    value: String,
) -> Result<String, Status> {
    vault(channel)
        .add_provider_key(bearer(
            &owner,
            vpb::AddProviderKeyRequest {
                provider: "openai".into(),
                name,
                value,
            },
        ))
        .await
        .map(|r| r.into_inner().key.expect("key").id)
}

async fn invite(
    channel: Channel,
    owner: &str,
    org: &str,
    who: String,
) -> Result<spb::CreateInvitationResponse, Status> {
    sessions(channel)
        .create_invitation(bearer(
            owner,
            spb::CreateInvitationRequest {
                organization_id: org.into(),
                email: who,
                role: spb::Role::Member as i32,
            },
        ))
        .await
        .map(|r| r.into_inner())
}

fn member(i: usize, r: usize) -> String {
    format!("member-{i}-{r}@example.com")
}

/// Flushes every batched writer and sends API-key traffic (verified,
/// counted for usage and quota) until told to stop; returns what failed.
fn background(
    app: &TestApp,
    read_key: String,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<String>> {
    let api_keys = app.api_keys_service.clone();
    let sessions = app.sessions_service.clone();
    let quota = app.quota_service.clone();
    let channel = app.channel.clone();
    tokio::spawn(async move {
        let mut failures = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            for _ in 0..4 {
                if let Err(e) = keys(channel.clone())
                    .list_api_keys(bearer(&read_key, kpb::ListApiKeysRequest::default()))
                    .await
                {
                    failures.push(format!("ListApiKeys with a key: {e}"));
                }
            }
            if let Err(e) = api_keys.flush().await {
                failures.push(format!("api-keys flush: {e}"));
            }
            if let Err(e) = sessions.flush_last_seen().await {
                failures.push(format!("last-seen flush: {e}"));
            }
            if let Err(e) = quota.flush().await {
                failures.push(format!("quota usage flush: {e}"));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        failures
    })
}

async fn every_write_rpc_from_eight_clients_at_once(backend: Backend) {
    let app = TestApp::builder(backend)
        .weak_hashing()
        .config(|c| {
            // Key traffic runs throughout, on whichever plan the operator
            // calls below leave the organisation.
            for plan in c.plans.plans.values_mut() {
                plan.default_limit.requests = 1_000_000;
                if let Some(max) = &mut plan.max_custom_limit {
                    max.requests = max.requests.max(1_000_000);
                }
            }
            // This test is about concurrent writes, not the brakes on
            // public requests (tests/e2e/brakes.rs): eight clients at once
            // from one address must all reach the write.
            c.edit::<twig_sessions::SessionsConfig>(|s| {
                for rule in [
                    &mut s.brakes.sign_ups_per_address,
                    &mut s.brakes.sign_ups_per_email,
                    &mut s.brakes.resets_per_address,
                    &mut s.brakes.resets_per_email,
                    &mut s.brakes.invitations_per_address,
                    &mut s.brakes.invitations_per_email,
                    &mut s.brakes.refreshes_per_address,
                    &mut s.brakes.link_attempts_per_address,
                ] {
                    rule.count = 1_000_000;
                }
            });
            c.edit::<twig_secrets_vault::VaultConfig>(|vault| {
                vault
                    .master_keys
                    .insert("1".into(), Secret::new(TEST_MASTER_KEY));
                vault
                    .master_keys
                    .insert("2".into(), Secret::new(SECOND_MASTER_KEY));
            });
            // The platform operator's client is the app's own
            // (`app.operator_token`).
            c.auth.internal_clients = vec![InternalClient {
                name: "agent-runtime".into(),
                token: Secret::new(RUNTIME_TOKEN),
                scopes: vec!["vault.reveal".into()],
            }];
        })
        .spawn()
        .await;
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        clients.push(app.channel_from(&format!("127.0.0.{}", i + 1)).await);
    }
    let db = &app.db;
    let owner_email = email("owner");
    let signed = app.sign_up(&owner_email).await;
    let owner = Arc::new(signed.tokens.unwrap().access_token);
    let org = signed.organization.unwrap().id;

    let read_key = keys(app.channel.clone())
        .create_api_key(bearer(
            &owner,
            kpb::CreateApiKeyRequest {
                service_account_id: String::new(),
                name: "traffic".into(),
                scopes: vec![apb::Scope::Read as i32],
                expires_at: None,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .secret;
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = background(&app, read_key, stop.clone());

    // ----- sessions ----------------------------------------------------
    use twig_sessions::entity::{login_failure, membership, session, user};

    // SignUp answers at once and writes its link in the background;
    // following the link (VerifyEmail) makes the account.
    all_ok(
        "SignUp",
        at_once(&clients, |i, ch| async move {
            for r in 0..ROUNDS {
                sign_up(ch.clone(), member(i, r)).await?;
            }
            Ok(())
        })
        .await,
    );
    let mut links = Vec::new();
    for i in 0..CLIENTS {
        let mut of_client = Vec::new();
        for r in 0..ROUNDS {
            let mut sent = sign_up_links(&app, &member(i, r), 1).await;
            assert_eq!(sent.len(), 1, "one sign-up link to {}", member(i, r));
            of_client.push(sent.remove(0));
        }
        links.push(of_client);
    }
    let members = all_ok(
        "VerifyEmail",
        at_once(&clients, |i, ch| {
            let links = links[i].clone();
            async move {
                let mut out = Vec::new();
                for token in links {
                    out.push(verify_email(ch.clone(), token).await?);
                }
                Ok(out)
            }
        })
        .await,
    );
    assert_eq!(
        user::Entity::find().count(db).await.unwrap(),
        1 + (CLIENTS * ROUNDS) as u64
    );
    // One email signed up from every client at once: every SignUp is
    // answered alike, and of the links mailed exactly one makes the
    // account; the others are voided by a newer link (INVALID_ARGUMENT on
    // the token) or lose to the account that link made (ALREADY_EXISTS:
    // whoever holds the link holds the mailbox).
    all_ok(
        "SignUp of one email",
        at_once(&clients, |_, ch| sign_up(ch, "same@example.com".into())).await,
    );
    let same = sign_up_links(&app, "same@example.com", CLIENTS).await;
    assert_eq!(same.len(), CLIENTS, "a link for each sign-up");
    let followed = at_once(&clients, |i, ch| verify_email(ch, same[i].clone())).await;
    let won = followed.iter().filter(|a| a.is_ok()).count();
    assert!(
        won == 1
            && followed.iter().all(|a| a.as_ref().is_ok()
                || a.as_ref().is_err_and(|s| matches!(
                    s.code(),
                    Code::InvalidArgument | Code::AlreadyExists
                ))),
        "VerifyEmail of one email's links: {won} succeeded: {}",
        describe(&followed)
    );
    assert_eq!(
        user::Entity::find()
            .filter(user::Column::Email.eq("same@example.com"))
            .count(db)
            .await
            .unwrap(),
        1
    );
    // The operator's CreateAccount of one email: one account.
    one_winner(
        "CreateAccount of one email",
        at_once(&clients, |_, ch| {
            let operator = app.operator_token.clone();
            async move {
                sessions(ch)
                    .create_account(with_internal_token(
                        &operator,
                        spb::CreateAccountRequest {
                            email: "made@example.com".into(),
                            password: PASSWORD.into(),
                            display_name: String::new(),
                            organization_name: String::new(),
                        },
                    ))
                    .await
            }
        })
        .await,
        Code::AlreadyExists,
    );

    // Logins of member-i-1, three each: sessions to refresh and revoke.
    let logins = all_ok(
        "Login",
        at_once(&clients, |i, ch| async move {
            let mut out = Vec::new();
            for _ in 0..ROUNDS {
                out.push(login(ch.clone(), member(i, 1), PASSWORD).await?);
            }
            Ok(out)
        })
        .await,
    );
    let failed = at_once(&clients, |i, ch| async move {
        for _ in 0..ROUNDS {
            match login(ch.clone(), format!("nobody-{i}@example.com"), PASSWORD).await {
                Err(s) if s.code() == Code::Unauthenticated => {}
                Err(s) => return Err(s),
                Ok(_) => return Err(Status::internal("a login without an account succeeded")),
            }
        }
        Ok(())
    })
    .await;
    all_ok("failed Login (UNAUTHENTICATED expected)", failed);
    assert_eq!(
        login_failure::Entity::find().count(db).await.unwrap(),
        CLIENTS as u64
    );

    // Each client refreshes its first login three times in a row.
    let refreshed = all_ok(
        "Refresh",
        at_once(&clients, |i, ch| {
            let mut refresh = logins[i][0].refresh_token.clone();
            async move {
                let mut tokens = None;
                for _ in 0..ROUNDS {
                    let t = sessions(ch.clone())
                        .refresh(spb::RefreshRequest {
                            refresh_token: refresh.clone(),
                        })
                        .await?
                        .into_inner()
                        .tokens
                        .expect("tokens");
                    refresh = t.refresh_token.clone();
                    tokens = Some(t);
                }
                Ok(tokens.expect("refreshed"))
            }
        })
        .await,
    );
    let contested = logins[0][1].refresh_token.clone();
    one_winner(
        "Refresh of one token",
        at_once(&clients, |_, ch| {
            let refresh_token = contested.clone();
            async move {
                sessions(ch)
                    .refresh(spb::RefreshRequest { refresh_token })
                    .await
            }
        })
        .await,
        Code::Unauthenticated,
    );

    // Member-i-1 revokes its other two logins with its sign-up session.
    all_ok(
        "RevokeSession",
        at_once(&clients, |i, ch| {
            let token = members[i][1].tokens.as_ref().unwrap().access_token.clone();
            let ids: Vec<String> = logins[i][1..]
                .iter()
                .map(|t| t.session_id.clone())
                .collect();
            async move {
                for session_id in ids {
                    sessions(ch.clone())
                        .revoke_session(bearer(&token, spb::RevokeSessionRequest { session_id }))
                        .await?;
                }
                Ok(())
            }
        })
        .await,
    );
    all_ok(
        "Logout",
        at_once(&clients, |i, ch| {
            let token = refreshed[i].access_token.clone();
            async move {
                sessions(ch)
                    .logout(bearer(&token, spb::LogoutRequest {}))
                    .await
            }
        })
        .await,
    );
    let live_of_member_1 = session::Entity::find()
        .filter(session::Column::RevokedAt.is_null())
        .all(db)
        .await
        .unwrap()
        .into_iter()
        .filter(|s| {
            logins
                .iter()
                .flatten()
                .any(|t| t.session_id == s.id.to_string())
        })
        .count();
    assert_eq!(live_of_member_1, 0, "every login of member-i-1 ended");
    all_ok(
        "LogoutEverywhere",
        at_once(&clients, |i, ch| {
            let token = members[i][2].tokens.as_ref().unwrap().access_token.clone();
            async move {
                sessions(ch)
                    .logout_everywhere(bearer(&token, spb::LogoutEverywhereRequest {}))
                    .await
            }
        })
        .await,
    );
    all_ok(
        "ChangePassword",
        at_once(&clients, |i, ch| {
            let token = members[i][0].tokens.as_ref().unwrap().access_token.clone();
            async move {
                sessions(ch)
                    .change_password(bearer(
                        &token,
                        spb::ChangePasswordRequest {
                            current_password: PASSWORD.into(),
                            new_password: NEW_PASSWORD.into(),
                        },
                    ))
                    .await
            }
        })
        .await,
    );
    all_ok(
        "Login with the changed password",
        at_once(&clients, |i, ch| login(ch, member(i, 0), NEW_PASSWORD)).await,
    );

    // Joining: the owner invites every member, then each accepts its
    // invitation, signed in with its own (verified) email.
    all_ok(
        "CreateInvitation",
        at_once(&clients, |i, ch| {
            let (owner, org) = (owner.clone(), org.clone());
            async move {
                for r in 0..ROUNDS {
                    invite(ch.clone(), &owner, &org, member(i, r)).await?;
                }
                Ok(())
            }
        })
        .await,
    );
    let mut invitations = Vec::new();
    for i in 0..CLIENTS {
        let mut of_client = Vec::new();
        for r in 0..ROUNDS {
            of_client.push(app.link_token(&member(i, r), "You are invited").await);
        }
        invitations.push(of_client);
    }
    all_ok(
        "AcceptInvitation",
        at_once(&clients, |i, ch| {
            let tokens = invitations[i].clone();
            async move {
                for (r, token) in tokens.into_iter().enumerate() {
                    // member-i-0 changed its password; member-i-2 logged
                    // out everywhere: each signs in afresh.
                    let password = if r == 0 { NEW_PASSWORD } else { PASSWORD };
                    let session = login(ch.clone(), member(i, r), password).await?;
                    sessions(ch.clone())
                        .accept_invitation(bearer(
                            &session.access_token,
                            spb::AcceptInvitationRequest { token },
                        ))
                        .await?;
                }
                Ok(())
            }
        })
        .await,
    );
    let owner_org = uuid::Uuid::parse_str(&org).unwrap();
    assert_eq!(
        membership::Entity::find()
            .filter(membership::Column::OrgId.eq(owner_org))
            .count(db)
            .await
            .unwrap(),
        1 + (CLIENTS * ROUNDS) as u64
    );
    one_winner(
        "CreateInvitation of one email",
        at_once(&clients, |_, ch| {
            let (owner, org) = (owner.clone(), org.clone());
            async move { invite(ch, &owner, &org, "same@example.com".into()).await }
        })
        .await,
        Code::AlreadyExists,
    );
    assert_eq!(
        twig_sessions::entity::invitation::Entity::find()
            .filter(twig_sessions::entity::invitation::Column::Email.eq("same@example.com"))
            .count(db)
            .await
            .unwrap(),
        1,
        "one pending invitation"
    );
    // same@example.com accepts it: a member too.
    let same_invitation = app.link_token("same@example.com", "You are invited").await;
    let same_session = login(app.channel.clone(), "same@example.com".into(), PASSWORD)
        .await
        .unwrap();
    sessions(app.channel.clone())
        .accept_invitation(bearer(
            &same_session.access_token,
            spb::AcceptInvitationRequest {
                token: same_invitation,
            },
        ))
        .await
        .unwrap();
    for disabled in [true, false] {
        all_ok(
            "SetUserDisabled",
            at_once(&clients, |i, ch| {
                // The platform operator's, never an organisation's.
                let operator = app.operator_token.clone();
                let user_id = members[i][2].user.as_ref().unwrap().id.clone();
                async move {
                    sessions(ch)
                        .set_user_disabled(with_internal_token(
                            &operator,
                            spb::SetUserDisabledRequest { user_id, disabled },
                        ))
                        .await
                }
            })
            .await,
        );
        let now_disabled = user::Entity::find()
            .filter(user::Column::DisabledAt.is_not_null())
            .count(db)
            .await
            .unwrap();
        assert_eq!(now_disabled, if disabled { CLIENTS as u64 } else { 0 });
    }

    // Memberships: member-i-0 leaves, member-i-1 is suspended, reinstated
    // and made admin, member-i-2 is removed; all at once.
    let user_of = |i: usize, r: usize| members[i][r].user.as_ref().unwrap().id.clone();
    let in_org = all_ok(
        "Login into the owner's organisation",
        at_once(&clients, |i, ch| {
            let org = org.clone();
            async move {
                sessions(ch)
                    .login(spb::LoginRequest {
                        email: member(i, 0),
                        password: NEW_PASSWORD.into(),
                        organization_id: org,
                    })
                    .await
                    .map(|r| r.into_inner().tokens.expect("tokens").access_token)
            }
        })
        .await,
    );
    all_ok(
        "LeaveOrganization",
        at_once(&clients, |i, ch| {
            let (token, org) = (in_org[i].clone(), org.clone());
            async move {
                sessions(ch)
                    .leave_organization(bearer(
                        &token,
                        spb::LeaveOrganizationRequest {
                            organization_id: org,
                        },
                    ))
                    .await
            }
        })
        .await,
    );
    let manage = |what: &'static str, user_id: String| {
        let (owner, org) = (owner.clone(), org.clone());
        move |ch: Channel| async move {
            let mut client = sessions(ch);
            match what {
                "suspend" => client
                    .suspend_member(bearer(
                        &owner,
                        spb::SuspendMemberRequest {
                            organization_id: org,
                            user_id,
                        },
                    ))
                    .await
                    .map(|_| ()),
                "reinstate" => client
                    .reinstate_member(bearer(
                        &owner,
                        spb::ReinstateMemberRequest {
                            organization_id: org,
                            user_id,
                        },
                    ))
                    .await
                    .map(|_| ()),
                "admin" => client
                    .set_member_role(bearer(
                        &owner,
                        spb::SetMemberRoleRequest {
                            organization_id: org,
                            user_id,
                            role: spb::Role::Admin as i32,
                        },
                    ))
                    .await
                    .map(|_| ()),
                _ => client
                    .remove_member(bearer(
                        &owner,
                        spb::RemoveMemberRequest {
                            organization_id: org,
                            user_id,
                        },
                    ))
                    .await
                    .map(|_| ()),
            }
        }
    };
    for what in ["suspend", "reinstate", "admin"] {
        all_ok(
            what,
            at_once(&clients, |i, ch| manage(what, user_of(i, 1))(ch)).await,
        );
    }
    all_ok(
        "RemoveMember",
        at_once(&clients, |i, ch| manage("remove", user_of(i, 2))(ch)).await,
    );
    let contested = user_of(0, 1);
    let removed_once = at_once(&clients, |_, ch| manage("remove", contested.clone())(ch)).await;
    assert!(
        removed_once.iter().filter(|a| a.is_ok()).count() == 1
            && removed_once.iter().all(
                |a| a.as_ref().is_ok() || a.as_ref().is_err_and(|s| s.code() == Code::NotFound)
            ),
        "RemoveMember of one member: {}",
        describe(&removed_once)
    );
    let listed = sessions(app.channel.clone())
        .list_members(bearer(
            &owner,
            spb::ListMembersRequest {
                organization_id: org.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .members;
    // The owner, same@example.com, and member-i-1 but member-0-1.
    assert_eq!(listed.len(), 2 + CLIENTS - 1, "{listed:?}");
    let admins = listed
        .iter()
        .filter(|m| {
            m.role == spb::Role::Admin as i32 && m.status == spb::MembershipStatus::Active as i32
        })
        .count();
    assert_eq!(admins, CLIENTS - 1, "{listed:?}");

    // ----- api-keys ----------------------------------------------------
    use twig_api_keys::entity::{api_key, api_key_secret, org_ip_allowlist};

    let created = all_ok(
        "CreateApiKey",
        at_once(&clients, |i, ch| {
            let owner = owner.clone();
            async move {
                let mut out = Vec::new();
                for r in 0..ROUNDS {
                    out.push(
                        keys(ch.clone())
                            .create_api_key(bearer(
                                &owner,
                                kpb::CreateApiKeyRequest {
                                    service_account_id: String::new(),
                                    name: format!("key-{i}-{r}"),
                                    scopes: vec![apb::Scope::Read as i32],
                                    expires_at: None,
                                },
                            ))
                            .await?
                            .into_inner()
                            .key
                            .expect("key")
                            .id,
                    );
                }
                Ok(out)
            }
        })
        .await,
    );
    assert_eq!(
        api_key::Entity::find().count(db).await.unwrap(),
        1 + (CLIENTS * ROUNDS) as u64
    );
    let update = |key_id: String, name: String| {
        let owner = owner.clone();
        move |ch: Channel| async move {
            keys(ch)
                .update_api_key(bearer(
                    &owner,
                    kpb::UpdateApiKeyRequest {
                        key_id,
                        name: Some(name),
                        scopes: Vec::new(),
                        allowed_cidrs: None,
                    },
                ))
                .await
        }
    };
    all_ok(
        "UpdateApiKey",
        at_once(&clients, |i, ch| {
            update(created[i][0].clone(), format!("renamed-{i}"))(ch)
        })
        .await,
    );
    all_ok(
        "UpdateApiKey of one key",
        at_once(&clients, |i, ch| {
            update(created[0][1].clone(), format!("same-{i}"))(ch)
        })
        .await,
    );
    assert_eq!(
        api_key::Entity::find()
            .filter(api_key::Column::Name.starts_with("renamed-"))
            .count(db)
            .await
            .unwrap(),
        CLIENTS as u64
    );
    let rotate = |key_id: String| {
        let owner = owner.clone();
        move |ch: Channel| async move {
            keys(ch)
                .rotate_api_key(bearer(
                    &owner,
                    kpb::RotateApiKeyRequest {
                        key_id,
                        overlap_seconds: 60,
                    },
                ))
                .await
        }
    };
    all_ok(
        "RotateApiKey",
        at_once(&clients, |i, ch| rotate(created[i][1].clone())(ch)).await,
    );
    all_ok(
        "RotateApiKey of one key",
        at_once(&clients, |_, ch| rotate(created[0][2].clone())(ch)).await,
    );
    let rotated = uuid::Uuid::parse_str(&created[0][2]).unwrap();
    assert_eq!(
        api_key_secret::Entity::find()
            .filter(api_key_secret::Column::KeyId.eq(rotated))
            .count(db)
            .await
            .unwrap(),
        1 + CLIENTS as u64,
        "every rotation added its secret"
    );
    let lists: Vec<Vec<String>> = (0..CLIENTS)
        .map(|i| vec!["127.0.0.0/8".to_string(), format!("10.0.0.{i}/32")])
        .collect();
    all_ok(
        "SetOrgAllowlist",
        at_once(&clients, |i, ch| {
            let owner = owner.clone();
            let cidrs = lists[i].clone();
            async move {
                keys(ch)
                    .set_org_allowlist(bearer(
                        &owner,
                        kpb::SetOrgAllowlistRequest {
                            allowlist: Some(kpb::CidrList { cidrs }),
                        },
                    ))
                    .await
            }
        })
        .await,
    );
    let stored = org_ip_allowlist::Entity::find().all(db).await.unwrap();
    assert_eq!(stored.len(), 1, "one allowlist row: {stored:?}");
    let mut kept: Vec<&str> = stored[0].cidrs.split_whitespace().collect();
    kept.sort_unstable();
    assert!(
        lists.iter().any(|l| {
            let mut sent: Vec<&str> = l.iter().map(String::as_str).collect();
            sent.sort_unstable();
            sent == kept
        }),
        "the allowlist is one client's: {stored:?}"
    );
    let revoke = |key_id: String| {
        let owner = owner.clone();
        move |ch: Channel| async move {
            keys(ch)
                .revoke_api_key(bearer(&owner, kpb::RevokeApiKeyRequest { key_id }))
                .await
        }
    };
    all_ok(
        "RevokeApiKey",
        at_once(&clients, |i, ch| revoke(created[i][2].clone())(ch)).await,
    );
    all_ok(
        "RevokeApiKey of one key",
        at_once(&clients, |_, ch| revoke(created[1][0].clone())(ch)).await,
    );
    assert_eq!(
        api_key::Entity::find()
            .filter(api_key::Column::RevokedAt.is_not_null())
            .count(db)
            .await
            .unwrap(),
        1 + CLIENTS as u64
    );

    // ----- quota -------------------------------------------------------
    use twig_quota::entity::quota_limit;

    let set_limit = |subject: String, limit: u64| {
        let owner = owner.clone();
        move |ch: Channel| async move {
            quota(ch)
                .set_limit(bearer(
                    &owner,
                    qpb::SetLimitRequest {
                        limit: Some(qpb::Limit {
                            subject,
                            limit,
                            period: Some(prost_types::Duration {
                                seconds: 60,
                                nanos: 0,
                            }),
                            ..Default::default()
                        }),
                    },
                ))
                .await
        }
    };
    all_ok(
        "SetLimit",
        at_once(&clients, |i, ch| {
            set_limit(format!("key:{}", created[i][1]), 1000 + i as u64)(ch)
        })
        .await,
    );
    all_ok(
        "SetLimit of one subject",
        at_once(&clients, |i, ch| {
            set_limit(format!("org:{org}"), 100_000 + i as u64)(ch)
        })
        .await,
    );
    assert_eq!(
        quota_limit::Entity::find().count(db).await.unwrap(),
        1 + CLIENTS as u64
    );
    // The operator's: plans and limits beyond them.
    let operator = app.operator_token.clone();
    let set_plan = |plan: &'static str| {
        let (operator, org) = (operator.clone(), org.clone());
        move |ch: Channel| async move {
            quota(ch)
                .set_organization_plan(with_internal_token(
                    &operator,
                    qpb::SetOrganizationPlanRequest {
                        organization_id: org,
                        plan: plan.into(),
                    },
                ))
                .await
        }
    };
    all_ok(
        "SetOrganizationPlan of one organisation",
        at_once(&clients, |i, ch| {
            set_plan(if i % 2 == 0 { "team" } else { "enterprise" })(ch)
        })
        .await,
    );
    let plans = twig_quota::entity::quota_org_plan::Entity::find()
        .all(db)
        .await
        .unwrap();
    assert_eq!(plans.len(), 1, "one plan row: {plans:?}");
    let set_org_limit = |limit: u64| {
        let (operator, org) = (operator.clone(), org.clone());
        move |ch: Channel| async move {
            quota(ch)
                .set_organization_limit(with_internal_token(
                    &operator,
                    qpb::SetOrganizationLimitRequest {
                        organization_id: org.clone(),
                        limit: Some(qpb::Limit {
                            subject: format!("org:{org}"),
                            limit,
                            period: Some(prost_types::Duration {
                                seconds: 60,
                                nanos: 0,
                            }),
                            ..Default::default()
                        }),
                    },
                ))
                .await
        }
    };
    all_ok(
        "SetOrganizationLimit of one subject",
        at_once(&clients, |i, ch| set_org_limit(50_000_000 + i as u64)(ch)).await,
    );
    assert_eq!(
        quota_limit::Entity::find().count(db).await.unwrap(),
        1 + CLIENTS as u64
    );
    let delete_limit = |subject: String| {
        let owner = owner.clone();
        move |ch: Channel| async move {
            quota(ch)
                .delete_limit(bearer(&owner, qpb::DeleteLimitRequest { subject }))
                .await
        }
    };
    all_ok(
        "DeleteLimit",
        at_once(&clients, |i, ch| {
            delete_limit(format!("key:{}", created[i][1]))(ch)
        })
        .await,
    );
    one_winner(
        "DeleteLimit of one subject",
        at_once(&clients, |_, ch| delete_limit(format!("org:{org}"))(ch)).await,
        Code::NotFound,
    );
    assert_eq!(quota_limit::Entity::find().count(db).await.unwrap(), 0);

    // ----- vault -------------------------------------------------------
    use twig_secrets_vault::entity::{master_key, secret};

    let add = |name: String, value: String| {
        let owner = owner.clone();
        move |ch: Channel| add_provider_key(ch, owner, name, value)
    };
    let added = all_ok(
        "AddProviderKey",
        at_once(&clients, |i, ch| {
            let owner = owner.clone();
            async move {
                let mut out = Vec::new();
                for r in 0..ROUNDS {
                    let name = format!("k-{i}-{r}");
                    out.push(
                        add_provider_key(ch.clone(), owner.clone(), name, openai(i, r)).await?,
                    );
                }
                Ok(out)
            }
        })
        .await,
    );
    one_winner(
        "AddProviderKey of one name",
        at_once(&clients, |i, ch| add("same".into(), openai(i, 9))(ch)).await,
        Code::AlreadyExists,
    );
    assert_eq!(
        secret::Entity::find().count(db).await.unwrap(),
        1 + (CLIENTS * ROUNDS) as u64
    );
    let same_id = secret::Entity::find()
        .filter(secret::Column::Name.eq("same"))
        .one(db)
        .await
        .unwrap()
        .unwrap()
        .id
        .to_string();
    let update = |id: String, value: String| {
        let owner = owner.clone();
        move |ch: Channel| async move {
            vault(ch)
                .update_provider_key(bearer(&owner, vpb::UpdateProviderKeyRequest { id, value }))
                .await
        }
    };
    all_ok(
        "UpdateProviderKey",
        at_once(&clients, |i, ch| {
            update(added[i][0].clone(), openai(i, 7))(ch)
        })
        .await,
    );
    all_ok(
        "UpdateProviderKey of one key",
        at_once(&clients, |i, ch| update(same_id.clone(), openai(i, 8))(ch)).await,
    );
    let revealed = all_ok(
        "RevealProviderKey",
        at_once(&clients, |i, ch| {
            let request = vpb::RevealProviderKeyRequest {
                organization_id: org.clone(),
                id: added[i][0].clone(),
            };
            async move {
                vault(ch)
                    .reveal_provider_key(with_internal_token(RUNTIME_TOKEN, request))
                    .await
                    .map(|r| r.into_inner().value)
            }
        })
        .await,
    );
    for (i, value) in revealed.iter().enumerate() {
        assert_eq!(*value, openai(i, 7), "client {i}'s update is stored");
    }
    let delete = |id: String| {
        let owner = owner.clone();
        move |ch: Channel| async move {
            vault(ch)
                .delete_provider_key(bearer(&owner, vpb::DeleteProviderKeyRequest { id }))
                .await
        }
    };
    all_ok(
        "DeleteProviderKey",
        at_once(&clients, |i, ch| delete(added[i][2].clone())(ch)).await,
    );
    let deleted_once = at_once(&clients, |_, ch| delete(same_id.clone())(ch)).await;
    assert!(
        deleted_once.iter().any(Result::is_ok)
            && deleted_once.iter().all(
                |a| a.as_ref().is_ok() || a.as_ref().is_err_and(|s| s.code() == Code::NotFound)
            ),
        "DeleteProviderKey of one key: {}",
        describe(&deleted_once)
    );
    assert_eq!(
        secret::Entity::find().count(db).await.unwrap(),
        (CLIENTS * (ROUNDS - 1)) as u64
    );
    let internal_token = app.internal_token.clone();
    all_ok(
        "StartRewrap",
        at_once(&clients, |_, ch| {
            let token = internal_token.clone();
            async move {
                vault(ch)
                    .start_rewrap(with_internal_token(&token, vpb::StartRewrapRequest {}))
                    .await
            }
        })
        .await,
    );
    let mut finished = false;
    for _ in 0..200 {
        let keys = vault(app.channel.clone())
            .list_master_keys(app.internal(vpb::ListMasterKeysRequest {}))
            .await
            .unwrap()
            .into_inner();
        let job = keys.rewrap.expect("a re-wrap job");
        if job.finished_at.is_some() && job.remaining == 0 {
            finished = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(finished, "the re-wrap finishes");
    all_ok(
        "RetireMasterKey",
        at_once(&clients, |_, ch| {
            let token = internal_token.clone();
            async move {
                vault(ch)
                    .retire_master_key(with_internal_token(
                        &token,
                        vpb::RetireMasterKeyRequest { version: 1 },
                    ))
                    .await
            }
        })
        .await,
    );
    assert!(
        master_key::Entity::find_by_id(1)
            .one(db)
            .await
            .unwrap()
            .unwrap()
            .retired_at
            .is_some()
    );

    stop.store(true, Ordering::Relaxed);
    let failures = traffic.await.unwrap();
    assert!(
        failures.is_empty(),
        "background writers and key traffic: {failures:?}"
    );
    app.api_keys_service.flush().await.unwrap();
    app.sessions_service.flush_last_seen().await.unwrap();
    app.quota_service.flush().await.unwrap();
}

on_both_backends!(every_write_rpc_from_eight_clients_at_once);
