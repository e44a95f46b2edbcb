//! Memberships: an organisation governs its members — suspends,
//! reinstates, removes them, changes their roles, hands ownership over —
//! and nothing beyond: never the account itself, which only a platform
//! operator may disable, and never the member's other organisations.
//! Sessions and API keys follow the membership at once, on every replica.

use std::fmt::Debug;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tonic::transport::Channel;
use tonic::{Code, Status};
use twig_config::{InternalClient, Secret};
use twig_module::{SessionClient, SessionMethod};
use twig_proto::apikeys::v1 as kpb;
use twig_proto::apikeys::v1::api_key_service_client::ApiKeyServiceClient;
use twig_proto::auth::v1 as apb;
use twig_proto::sessions::v1 as pb;
use twig_proto::sessions::v1::session_service_client::SessionServiceClient;
use twig_tests::{
    Backend, Outbox, PASSWORD, TestApp, TestDatabase, add_member_on, bearer, email, sign_up_with,
    spawn_serve, with_internal_token,
};
use uuid::Uuid;

use crate::twig_binary;

/// An internal client holding `platform.operator` (the CLI's credential).
const OPERATOR_TOKEN: &str = "platform-operator-token-0123456789abcdef";
/// An internal client with another scope only.
const RUNTIME_TOKEN: &str = "agent-runtime-token-0123456789abcdefghij";

/// What a refused login into an organisation answers (as for an
/// organisation one was never in).
const LOGIN_REFUSED: &[Code] = &[Code::NotFound];
/// What acting on your own membership (suspend, remove, change role)
/// answers: refused, leave the organisation instead.
const SELF_REFUSED: &[Code] = &[Code::PermissionDenied];
/// What a user's bearer on an internal RPC answers.
const NOT_INTERNAL: &[Code] = &[Code::PermissionDenied];

async fn app(backend: Backend) -> TestApp {
    TestApp::builder(backend)
        .weak_hashing()
        .config(|c| {
            c.auth.internal_clients = vec![
                InternalClient {
                    name: "operator-cli".into(),
                    token: Secret::new(OPERATOR_TOKEN),
                    scopes: vec!["platform.operator".into()],
                },
                InternalClient {
                    name: "agent-runtime".into(),
                    token: Secret::new(RUNTIME_TOKEN),
                    scopes: vec!["vault.reveal".into()],
                },
            ];
        })
        .spawn()
        .await
}

// ----- people and calls ---------------------------------------------------

/// A user who signed up, with the organisation sign-up made for them.
struct Person {
    email: String,
    id: String,
    /// The organisation they own since sign-up.
    home: String,
    /// The sign-up session, in `home`.
    home_token: String,
}

async fn person(app: &TestApp, name: &str) -> Person {
    let email = email(name);
    let signed = app.sign_up(&email).await;
    Person {
        email,
        id: signed.user.unwrap().id,
        home: signed.organization.unwrap().id,
        home_token: signed.tokens.unwrap().access_token,
    }
}

async fn login_to(app: &TestApp, email: &str, org: &str) -> Result<pb::SessionTokens, Status> {
    app.sessions()
        .login(pb::LoginRequest {
            email: email.into(),
            password: PASSWORD.into(),
            organization_id: org.into(),
        })
        .await
        .map(|r| r.into_inner().tokens.expect("tokens"))
}

/// `AcceptInvitation` with `invitation`'s token as the holder of `token`.
async fn accept(
    app: &TestApp,
    token: &str,
    invitation: &str,
) -> Result<pb::AcceptInvitationResponse, Status> {
    app.sessions()
        .accept_invitation(bearer(
            token,
            pb::AcceptInvitationRequest {
                token: invitation.into(),
            },
        ))
        .await
        .map(|r| r.into_inner())
}

/// The way into an organisation: the holder of `token` invites `who` to
/// `org` with `role`, and `who` accepts the mailed invitation with their
/// session at home. The first refusal of either step.
async fn add(
    app: &TestApp,
    token: &str,
    org: &str,
    who: &Person,
    role: pb::Role,
) -> Result<(), Status> {
    app.invite(token, org, &who.email, role).await?;
    let invitation = app.link_token(&who.email, "You are invited").await;
    accept(app, &who.home_token, &invitation).await.map(|_| ())
}

/// Adds `who` to `org` with `role` and signs them in there: their access
/// token in `org`.
async fn join(app: &TestApp, manager: &str, org: &str, who: &Person, role: pb::Role) -> String {
    add(app, manager, org, who, role).await.expect("add member");
    login_to(app, &who.email, org)
        .await
        .expect("login into the new organisation")
        .access_token
}

async fn suspend(
    app: &TestApp,
    token: &str,
    org: &str,
    user: &str,
) -> Result<pb::SuspendMemberResponse, Status> {
    app.sessions()
        .suspend_member(bearer(
            token,
            pb::SuspendMemberRequest {
                organization_id: org.into(),
                user_id: user.into(),
            },
        ))
        .await
        .map(|r| r.into_inner())
}

async fn reinstate(
    app: &TestApp,
    token: &str,
    org: &str,
    user: &str,
) -> Result<pb::ReinstateMemberResponse, Status> {
    app.sessions()
        .reinstate_member(bearer(
            token,
            pb::ReinstateMemberRequest {
                organization_id: org.into(),
                user_id: user.into(),
            },
        ))
        .await
        .map(|r| r.into_inner())
}

async fn remove(
    app: &TestApp,
    token: &str,
    org: &str,
    user: &str,
) -> Result<pb::RemoveMemberResponse, Status> {
    app.sessions()
        .remove_member(bearer(
            token,
            pb::RemoveMemberRequest {
                organization_id: org.into(),
                user_id: user.into(),
            },
        ))
        .await
        .map(|r| r.into_inner())
}

async fn leave(
    app: &TestApp,
    token: &str,
    org: &str,
) -> Result<pb::LeaveOrganizationResponse, Status> {
    app.sessions()
        .leave_organization(bearer(
            token,
            pb::LeaveOrganizationRequest {
                organization_id: org.into(),
            },
        ))
        .await
        .map(|r| r.into_inner())
}

async fn set_role(
    app: &TestApp,
    token: &str,
    org: &str,
    user: &str,
    role: pb::Role,
) -> Result<pb::SetMemberRoleResponse, Status> {
    app.sessions()
        .set_member_role(bearer(
            token,
            pb::SetMemberRoleRequest {
                organization_id: org.into(),
                user_id: user.into(),
                role: role as i32,
            },
        ))
        .await
        .map(|r| r.into_inner())
}

async fn transfer(
    app: &TestApp,
    token: &str,
    org: &str,
    user: &str,
) -> Result<pb::TransferOwnershipResponse, Status> {
    app.sessions()
        .transfer_ownership(bearer(
            token,
            pb::TransferOwnershipRequest {
                organization_id: org.into(),
                user_id: user.into(),
            },
        ))
        .await
        .map(|r| r.into_inner())
}

async fn set_disabled(
    app: &TestApp,
    request: tonic::Request<pb::SetUserDisabledRequest>,
) -> Result<pb::SetUserDisabledResponse, Status> {
    app.sessions()
        .set_user_disabled(request)
        .await
        .map(|r| r.into_inner())
}

fn disable(user: &str, disabled: bool) -> pb::SetUserDisabledRequest {
    pb::SetUserDisabledRequest {
        user_id: user.into(),
        disabled,
    }
}

async fn members(app: &TestApp, token: &str, org: &str) -> Vec<pb::Member> {
    app.sessions()
        .list_members(bearer(
            token,
            pb::ListMembersRequest {
                organization_id: org.into(),
            },
        ))
        .await
        .expect("list members")
        .into_inner()
        .members
}

/// `user`'s role and status in a listing; None when not listed.
fn standing(members: &[pb::Member], user: &str) -> Option<(pb::Role, pb::MembershipStatus)> {
    members
        .iter()
        .find(|m| m.user.as_ref().is_some_and(|u| u.id == user))
        .map(|m| (m.role(), m.status()))
}

async fn find_user(app: &TestApp, id: &str) -> pb::User {
    app.sessions()
        .find_user(app.internal(pb::FindUserRequest {
            by: Some(pb::find_user_request::By::UserId(id.into())),
        }))
        .await
        .expect("find user")
        .into_inner()
        .user
        .expect("the user exists")
}

async fn me(app: &TestApp, token: &str) -> Result<pb::GetCurrentUserResponse, Status> {
    app.sessions()
        .get_current_user(bearer(token, pb::GetCurrentUserRequest {}))
        .await
        .map(|r| r.into_inner())
}

async fn create_key(
    app: &TestApp,
    token: &str,
    name: &str,
    scopes: &[apb::Scope],
) -> Result<kpb::CreateApiKeyResponse, Status> {
    app.api_keys()
        .create_api_key(bearer(
            token,
            kpb::CreateApiKeyRequest {
                service_account_id: String::new(),
                name: name.into(),
                scopes: scopes.iter().map(|s| *s as i32).collect(),
                expires_at: None,
            },
        ))
        .await
        .map(|r| r.into_inner())
}

/// `VerifyApiKey` as the services ask it (read scope).
async fn verify_key(app: &TestApp, secret: &str) -> Result<apb::Principal, Status> {
    app.api_keys()
        .verify_api_key(app.internal(kpb::VerifyApiKeyRequest {
            key: secret.into(),
            required_scope: apb::Scope::Read as i32,
            client_ip: String::new(),
        }))
        .await
        .map(|r| r.into_inner().principal.expect("a principal"))
}

async fn get_key(app: &TestApp, token: &str, id: &str) -> kpb::ApiKey {
    app.api_keys()
        .get_api_key(bearer(token, kpb::GetApiKeyRequest { key_id: id.into() }))
        .await
        .expect("get key")
        .into_inner()
        .key
        .expect("a key")
}

/// The key is refused both by `VerifyApiKey` and as a bearer.
async fn assert_key_refused(app: &TestApp, secret: &str, what: &str) {
    let verified = verify_key(app, secret).await;
    assert_eq!(
        verified.as_ref().map_err(Status::code).err(),
        Some(Code::Unauthenticated),
        "{what}: VerifyApiKey answered {verified:?}"
    );
    let used = app
        .api_keys()
        .list_api_keys(bearer(secret, kpb::ListApiKeysRequest::default()))
        .await;
    assert_eq!(
        used.as_ref().map_err(Status::code).err(),
        Some(Code::Unauthenticated),
        "{what}: ListApiKeys with the key answered {used:?}"
    );
}

async fn assert_session_dead(app: &TestApp, token: &str, what: &str) {
    let verified = app.verify(token).await;
    assert_eq!(
        verified.as_ref().map_err(Status::code).err(),
        Some(Code::Unauthenticated),
        "{what}: VerifySession answered {verified:?}"
    );
}

async fn assert_session_alive(app: &TestApp, token: &str, what: &str) {
    if let Err(e) = app.verify(token).await {
        panic!("{what}: the session no longer verifies: {e:?}");
    }
}

/// The call was refused, with one of `codes`.
#[track_caller]
fn assert_refused<T: Debug>(what: &str, result: Result<T, Status>, codes: &[Code]) {
    match result {
        Ok(answer) => panic!("{what}: accepted ({answer:?}), expected one of {codes:?}"),
        Err(e) => assert!(
            codes.contains(&e.code()),
            "{what}: refused with {:?} ({}), expected one of {codes:?}",
            e.code(),
            e.message()
        ),
    }
}

/// The roles the token carries, when it still verifies.
async fn roles_of(app: &TestApp, token: &str) -> Option<Vec<String>> {
    app.verify(token).await.ok().map(|p| p.roles)
}

fn id(raw: &str) -> Uuid {
    Uuid::parse_str(raw).unwrap()
}

async fn events(app: &TestApp, action: &str) -> Vec<twig_audit::StoredEvent> {
    twig_audit::events_with_action(&app.db, action)
        .await
        .unwrap()
}

/// The one successful event `action` in `org` about `target_user`.
async fn event_about(
    app: &TestApp,
    action: &str,
    org: &str,
    target_user: &str,
) -> twig_audit::StoredEvent {
    let all = events(app, action).await;
    let found: Vec<_> = all
        .iter()
        .filter(|e| {
            e.org_id == Some(id(org))
                && e.target.as_deref().is_some_and(|t| t.contains(target_user))
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one {action} event in org {org} about user {target_user}: {all:#?}"
    );
    assert_eq!(found[0].outcome, "success", "{:?}", found[0]);
    found[0].clone()
}

// ----- the attack that started it -------------------------------------------

/// A stranger makes the victim a member of their organisation and then
/// tries to lock them out of their account. Making someone a member took
/// no consent once (AddMember); now it takes an invitation the person
/// accepts. Once a member, the victim is governed by the stranger's
/// organisation in that membership only.
async fn a_stranger_governs_only_their_own_organisation(backend: Backend) {
    let app = app(backend).await;
    let victim = person(&app, "victim").await;
    let stranger = person(&app, "stranger").await;
    let victim_home = login_to(&app, &victim.email, &victim.home)
        .await
        .unwrap()
        .access_token;

    // An invitation alone makes nobody a member: the victim is not listed
    // there, not suspended there, and does not sign in there; the
    // stranger cannot accept it in the victim's stead.
    let invitation = app
        .invite(
            &stranger.home_token,
            &stranger.home,
            &victim.email,
            pb::Role::Member,
        )
        .await
        .unwrap();
    assert_eq!(invitation.state(), pb::InvitationState::Pending);
    let listed = members(&app, &stranger.home_token, &stranger.home).await;
    assert_eq!(standing(&listed, &victim.id), None, "{listed:?}");
    assert_refused(
        "suspending someone who was only invited",
        suspend(&app, &stranger.home_token, &stranger.home, &victim.id).await,
        &[Code::NotFound],
    );
    assert_refused(
        "the invitee signing in there before accepting",
        login_to(&app, &victim.email, &stranger.home).await,
        LOGIN_REFUSED,
    );
    let link = app.link_token(&victim.email, "You are invited").await;
    assert_refused(
        "the stranger accepting the victim's invitation",
        accept(&app, &stranger.home_token, &link).await,
        &[Code::PermissionDenied],
    );
    assert_eq!(
        standing(
            &members(&app, &stranger.home_token, &stranger.home).await,
            &victim.id
        ),
        None
    );
    // The victim accepts (in good faith).
    accept(&app, &victim_home, &link)
        .await
        .expect("the invitee accepts");
    let victim_there = login_to(&app, &victim.email, &stranger.home)
        .await
        .unwrap()
        .access_token;

    // The attack: disabling the account with the stranger's bearer, or
    // with their admin API key. Refused, and nothing happened.
    let attack = set_disabled(
        &app,
        bearer(&stranger.home_token, disable(&victim.id, true)),
    )
    .await;
    assert_refused(
        "SetUserDisabled with an owner's session",
        attack,
        NOT_INTERNAL,
    );
    let admin_key = create_key(&app, &stranger.home_token, "admin", &[apb::Scope::Admin])
        .await
        .unwrap()
        .secret;
    let attack = set_disabled(&app, bearer(&admin_key, disable(&victim.id, true))).await;
    assert_refused(
        "SetUserDisabled with an admin API key",
        attack,
        NOT_INTERNAL,
    );
    assert!(!find_user(&app, &victim.id).await.disabled);
    for token in [&victim.home_token, &victim_home, &victim_there] {
        assert_session_alive(&app, token, "after the refused attack").await;
    }
    login_to(&app, &victim.email, &victim.home)
        .await
        .expect("the victim still signs in to their own organisation");
    assert!(events(&app, "user.disabled").await.is_empty());

    // What the stranger may do: suspend the victim in the stranger's
    // organisation. Their session there ends; nothing else does.
    let suspended = suspend(&app, &stranger.home_token, &stranger.home, &victim.id)
        .await
        .unwrap();
    assert_eq!(
        suspended.sessions_ended, 1,
        "only the victim's session in the stranger's organisation"
    );
    assert_eq!(suspended.api_keys_stopped, 0);
    assert_session_dead(&app, &victim_there, "the session in the stranger's org").await;
    for token in [&victim.home_token, &victim_home] {
        assert_session_alive(&app, token, "a session in the victim's own org").await;
    }
    login_to(&app, &victim.email, &victim.home)
        .await
        .expect("the victim signs in to their own organisation");
    app.login(&victim.email).await;
    assert_refused(
        "login into the organisation that suspended them",
        login_to(&app, &victim.email, &stranger.home).await,
        LOGIN_REFUSED,
    );
    // The victim's own organisation is none of the stranger's business.
    assert_refused(
        "suspending the victim in the victim's own organisation",
        suspend(&app, &stranger.home_token, &victim.home, &victim.id).await,
        &[Code::NotFound],
    );
    assert_refused(
        "removing the victim from the victim's own organisation",
        remove(&app, &stranger.home_token, &victim.home, &victim.id).await,
        &[Code::NotFound],
    );
    let own = members(&app, &victim.home_token, &victim.home).await;
    assert_eq!(
        standing(&own, &victim.id),
        Some((pb::Role::Owner, pb::MembershipStatus::Active)),
        "{own:?}"
    );

    // Removing them leaves the account as it was.
    remove(&app, &stranger.home_token, &stranger.home, &victim.id)
        .await
        .unwrap();
    assert!(!find_user(&app, &victim.id).await.disabled);
    for token in [&victim.home_token, &victim_home] {
        assert_session_alive(&app, token, "after the removal elsewhere").await;
    }
    login_to(&app, &victim.email, &victim.home)
        .await
        .expect("the victim signs in after being removed elsewhere");
    assert!(events(&app, "user.disabled").await.is_empty());
    let suspensions = events(&app, "member.suspended").await;
    assert_eq!(suspensions.len(), 1, "{suspensions:?}");
    assert_eq!(suspensions[0].org_id, Some(id(&stranger.home)));
}

// ----- suspension ------------------------------------------------------------

async fn suspension_ends_sessions_and_stops_keys_in_that_organisation_only(backend: Backend) {
    let app = app(backend).await;
    let owner = person(&app, "owner").await;
    let org = owner.home.clone();
    let ada = person(&app, "ada").await;
    let ada_here = join(&app, &owner.home_token, &org, &ada, pb::Role::Admin).await;
    let ada_here_refresh = login_to(&app, &ada.email, &org).await.unwrap();

    // Ada's keys here: one read key, one admin key, and a key minted with
    // the admin key (hers too). Her key at home and the owner's key here
    // are other people's business.
    let read = create_key(&app, &ada_here, "read", &[apb::Scope::Read])
        .await
        .unwrap();
    let admin = create_key(&app, &ada_here, "admin", &[apb::Scope::Admin])
        .await
        .unwrap();
    let minted = create_key(&app, &admin.secret, "minted", &[apb::Scope::Read])
        .await
        .unwrap();
    let at_home = create_key(&app, &ada.home_token, "home", &[apb::Scope::Read])
        .await
        .unwrap();
    let owners_key = create_key(&app, &owner.home_token, "owner's", &[apb::Scope::Read])
        .await
        .unwrap();
    let minted_id = minted.key.clone().unwrap().id;
    let listed = get_key(&app, &owner.home_token, &minted_id).await;
    assert_eq!(listed.created_by, ada.id, "a key minted with Ada's key");
    assert_eq!(listed.owner_kind(), kpb::OwnerKind::Member);
    assert_eq!(listed.stopped_at, None);
    for key in [&read, &admin, &minted, &at_home, &owners_key] {
        // Verified, and so cached.
        verify_key(&app, &key.secret).await.unwrap();
        verify_key(&app, &key.secret).await.unwrap();
    }

    let suspended = suspend(&app, &owner.home_token, &org, &ada.id)
        .await
        .unwrap();
    assert_eq!(suspended.sessions_ended, 2, "Ada's two sessions here");
    assert_eq!(suspended.api_keys_stopped, 3, "Ada's three keys here");

    assert_session_dead(&app, &ada_here, "Ada's session in the org").await;
    let refreshed = app
        .sessions()
        .refresh(pb::RefreshRequest {
            refresh_token: ada_here_refresh.refresh_token.clone(),
        })
        .await;
    assert_refused(
        "refreshing Ada's session in the org",
        refreshed,
        &[Code::Unauthenticated],
    );
    assert_session_alive(&app, &ada.home_token, "Ada's session at home").await;
    for key in [&read, &admin, &minted] {
        assert_key_refused(&app, &key.secret, "Ada's key in the suspending org").await;
    }
    verify_key(&app, &at_home.secret)
        .await
        .expect("Ada's key at home works");
    verify_key(&app, &owners_key.secret)
        .await
        .expect("the owner's key works");
    assert!(
        get_key(&app, &owner.home_token, &minted_id)
            .await
            .stopped_at
            .is_some()
    );

    // Nor can Ada resume her keys herself, with her session at home, or
    // look one up: those are the services' internal calls.
    let resume = app
        .api_keys()
        .set_member_keys(bearer(
            &ada.home_token,
            kpb::SetMemberKeysRequest {
                organization_id: org.clone(),
                user_id: ada.id.clone(),
                change: kpb::MemberKeysChange::Resume as i32,
                scopes: Vec::new(),
            },
        ))
        .await;
    assert_refused("SetMemberKeys with a user's bearer", resume, NOT_INTERNAL);
    let lookup = app
        .api_keys()
        .lookup_api_key(bearer(
            &ada.home_token,
            kpb::LookupApiKeyRequest {
                key_id: minted_id.clone(),
            },
        ))
        .await;
    assert_refused("LookupApiKey with a user's bearer", lookup, NOT_INTERNAL);
    assert_key_refused(&app, &admin.secret, "after Ada tried to resume it").await;

    // No way back in while suspended: login, SSO, a new invitation, JIT
    // provisioning.
    assert_refused(
        "login into the org",
        login_to(&app, &ada.email, &org).await,
        LOGIN_REFUSED,
    );
    login_to(&app, &ada.email, &ada.home)
        .await
        .expect("Ada signs in at home");
    let sso = app
        .session_issuer
        .0
        .issue_session(
            id(&ada.id),
            id(&org),
            &SessionMethod::Sso(Uuid::new_v4()),
            &SessionClient::default(),
        )
        .await;
    assert_refused(
        "an SSO session in the org",
        sso.map(|s| s.session_id).map_err(Status::from),
        &[Code::PermissionDenied],
    );
    assert_refused(
        "inviting Ada again",
        add(&app, &owner.home_token, &org, &ada, pb::Role::Admin).await,
        &[Code::AlreadyExists],
    );
    let provisioned = app
        .sessions()
        .provision_user(app.internal(pb::ProvisionUserRequest {
            email: ada.email.clone(),
            display_name: String::new(),
            organization_id: org.clone(),
            role: pb::Role::Member as i32,
        }))
        .await;
    if let Ok(p) = provisioned {
        assert!(!p.into_inner().joined, "a suspended member is a member");
    }
    let listed = members(&app, &owner.home_token, &org).await;
    assert_eq!(
        standing(&listed, &ada.id),
        Some((pb::Role::Admin, pb::MembershipStatus::Suspended)),
        "{listed:?}"
    );
    assert_refused(
        "login into the org after provisioning",
        login_to(&app, &ada.email, &org).await,
        LOGIN_REFUSED,
    );
    let whoami = me(&app, &ada.home_token).await.unwrap();
    let orgs: Vec<_> = whoami
        .memberships
        .iter()
        .map(|m| m.organization.as_ref().unwrap().id.clone())
        .collect();
    assert_eq!(orgs, vec![ada.home.clone()], "only active memberships");

    // While she is away the owner revokes one key and rotates another:
    // the revoked one stays dead, the rotated one's new secret is refused
    // until she is back.
    app.api_keys()
        .revoke_api_key(bearer(
            &owner.home_token,
            kpb::RevokeApiKeyRequest {
                key_id: read.key.clone().unwrap().id,
            },
        ))
        .await
        .unwrap();
    let rotated = app
        .api_keys()
        .rotate_api_key(bearer(
            &owner.home_token,
            kpb::RotateApiKeyRequest {
                key_id: minted_id.clone(),
                overlap_seconds: 0,
            },
        ))
        .await;
    let minted_secret = match rotated {
        Ok(r) => {
            let secret = r.into_inner().secret;
            assert_key_refused(&app, &secret, "a new secret of a stopped key").await;
            secret
        }
        Err(e) => {
            assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
            minted.secret.clone()
        }
    };

    let reinstated = reinstate(&app, &owner.home_token, &org, &ada.id)
        .await
        .unwrap();
    assert_eq!(
        reinstated.api_keys_resumed, 2,
        "the admin and minted keys; the revoked one stays revoked"
    );
    verify_key(&app, &admin.secret)
        .await
        .expect("the admin key works again");
    verify_key(&app, &minted_secret)
        .await
        .expect("the minted key works again");
    assert_key_refused(&app, &read.secret, "a key revoked while stopped").await;
    assert_session_dead(&app, &ada_here, "a session ended by the suspension").await;
    assert_eq!(
        get_key(&app, &owner.home_token, &minted_id)
            .await
            .stopped_at,
        None
    );
    let back = login_to(&app, &ada.email, &org)
        .await
        .expect("Ada signs in again after reinstatement");
    assert_eq!(
        roles_of(&app, &back.access_token).await,
        Some(vec!["admin".to_string()])
    );
    let listed = members(&app, &owner.home_token, &org).await;
    assert_eq!(
        standing(&listed, &ada.id),
        Some((pb::Role::Admin, pb::MembershipStatus::Active)),
        "{listed:?}"
    );
    assert_eq!(
        standing(&listed, &owner.id),
        Some((pb::Role::Owner, pb::MembershipStatus::Active)),
        "{listed:?}"
    );
}

// ----- removal and leaving ---------------------------------------------------

async fn removal_revokes_keys_for_good(backend: Backend) {
    let app = app(backend).await;
    let owner = person(&app, "owner").await;
    let org = owner.home.clone();
    let bob = person(&app, "bob").await;
    let bob_here = join(&app, &owner.home_token, &org, &bob, pb::Role::Member).await;
    let key = create_key(&app, &bob_here, "bob's", &[apb::Scope::Read])
        .await
        .unwrap();
    let key_id = key.key.clone().unwrap().id;
    let at_home = create_key(&app, &bob.home_token, "home", &[apb::Scope::Read])
        .await
        .unwrap();
    verify_key(&app, &key.secret).await.unwrap();

    assert_refused(
        "removing someone who is no member",
        remove(&app, &owner.home_token, &org, &Uuid::new_v4().to_string()).await,
        &[Code::NotFound],
    );
    let removed = remove(&app, &owner.home_token, &org, &bob.id)
        .await
        .unwrap();
    assert_eq!(removed.sessions_ended, 1);
    assert_eq!(removed.api_keys_revoked, 1);
    assert_session_dead(&app, &bob_here, "Bob's session in the org").await;
    assert_key_refused(&app, &key.secret, "Bob's key after removal").await;
    assert_session_alive(&app, &bob.home_token, "Bob's session at home").await;
    verify_key(&app, &at_home.secret)
        .await
        .expect("Bob's key at home works");
    let listed = members(&app, &owner.home_token, &org).await;
    assert_eq!(standing(&listed, &bob.id), None, "{listed:?}");
    assert_eq!(listed.len(), 1);
    assert!(
        get_key(&app, &owner.home_token, &key_id)
            .await
            .revoked_at
            .is_some()
    );
    assert_refused(
        "login into the org after removal",
        login_to(&app, &bob.email, &org).await,
        LOGIN_REFUSED,
    );
    assert_refused(
        "removing Bob twice",
        remove(&app, &owner.home_token, &org, &bob.id).await,
        &[Code::NotFound],
    );
    assert_refused(
        "reinstating a removed member",
        reinstate(&app, &owner.home_token, &org, &bob.id).await,
        &[Code::NotFound],
    );

    // Added back: a new membership; the old key stays revoked.
    let bob_again = join(&app, &owner.home_token, &org, &bob, pb::Role::Member).await;
    assert_key_refused(&app, &key.secret, "Bob's old key after re-adding").await;
    let fresh = create_key(&app, &bob_again, "new", &[apb::Scope::Read])
        .await
        .unwrap();
    verify_key(&app, &fresh.secret).await.unwrap();

    // Suspended, then removed: the stopped keys are revoked, and re-adding
    // does not resume them.
    suspend(&app, &owner.home_token, &org, &bob.id)
        .await
        .unwrap();
    let removed = remove(&app, &owner.home_token, &org, &bob.id)
        .await
        .unwrap();
    assert_eq!(removed.api_keys_revoked, 1, "the stopped key");
    join(&app, &owner.home_token, &org, &bob, pb::Role::Member).await;
    assert_key_refused(
        &app,
        &fresh.secret,
        "a stopped key after removal and re-adding",
    )
    .await;
    let err = reinstate(&app, &owner.home_token, &org, &bob.id).await;
    if let Ok(r) = &err {
        assert_eq!(r.api_keys_resumed, 0, "reinstating an active member");
    }
    assert_key_refused(&app, &fresh.secret, "a revoked key after reinstate").await;
}

async fn a_member_leaves_an_organisation(backend: Backend) {
    let app = app(backend).await;
    let owner = person(&app, "owner").await;
    let org = owner.home.clone();
    let cleo = person(&app, "cleo").await;
    let cleo_here = join(&app, &owner.home_token, &org, &cleo, pb::Role::Member).await;
    let key = create_key(&app, &cleo_here, "cleo's", &[apb::Scope::Read])
        .await
        .unwrap();
    let at_home = create_key(&app, &cleo.home_token, "home", &[apb::Scope::Read])
        .await
        .unwrap();

    // Leaving takes a session, not a key; an organisation one is not in
    // is not found.
    assert_refused(
        "leaving with an API key",
        leave(&app, &key.secret, &org).await,
        &[Code::PermissionDenied],
    );
    let stranger = person(&app, "stranger").await;
    assert_refused(
        "leaving an organisation one is not in",
        leave(&app, &cleo_here, &stranger.home).await,
        &[Code::NotFound],
    );
    assert_refused(
        "leaving a made-up organisation",
        leave(&app, &cleo_here, &Uuid::new_v4().to_string()).await,
        &[Code::NotFound],
    );

    let left = leave(&app, &cleo_here, &org).await.unwrap();
    assert_eq!(left.sessions_ended, 1);
    assert_eq!(left.api_keys_revoked, 1);
    assert_session_dead(&app, &cleo_here, "Cleo's session in the org she left").await;
    assert_key_refused(&app, &key.secret, "Cleo's key in the org she left").await;
    assert_session_alive(&app, &cleo.home_token, "Cleo's session at home").await;
    verify_key(&app, &at_home.secret).await.unwrap();
    let listed = members(&app, &owner.home_token, &org).await;
    assert_eq!(standing(&listed, &cleo.id), None, "{listed:?}");
    assert_refused(
        "login into the org she left",
        login_to(&app, &cleo.email, &org).await,
        LOGIN_REFUSED,
    );
    event_about(&app, "member.left", &org, &cleo.id).await;

    // The last owner cannot leave, and a refused leave changes nothing:
    // their session and their keys work as before.
    let owners_key = create_key(&app, &owner.home_token, "owner's", &[apb::Scope::Read])
        .await
        .unwrap();
    assert_refused(
        "the last owner leaving",
        leave(&app, &owner.home_token, &org).await,
        &[Code::FailedPrecondition],
    );
    assert_session_alive(&app, &owner.home_token, "the owner who could not leave").await;
    let kept = get_key(&app, &owner.home_token, &owners_key.key.unwrap().id).await;
    assert_eq!(
        (kept.revoked_at, kept.stopped_at),
        (None, None),
        "the key of the owner whose leave was refused: {kept:?}"
    );
    verify_key(&app, &owners_key.secret)
        .await
        .expect("the key of the owner whose leave was refused");
    let listed = members(&app, &owner.home_token, &org).await;
    assert_eq!(
        standing(&listed, &owner.id),
        Some((pb::Role::Owner, pb::MembershipStatus::Active))
    );
}

// ----- who may do what ---------------------------------------------------------

async fn the_last_owner_stays_and_only_owners_touch_owners(backend: Backend) {
    let app = app(backend).await;
    let owner = person(&app, "owner").await;
    let org = owner.home.clone();
    let dan = person(&app, "admin-dan").await;
    let dan_here = join(&app, &owner.home_token, &org, &dan, pb::Role::Admin).await;
    let mia = person(&app, "member-mia").await;
    let mia_here = join(&app, &owner.home_token, &org, &mia, pb::Role::Member).await;
    let tom = person(&app, "member-tom").await;
    join(&app, &owner.home_token, &org, &tom, pb::Role::Member).await;

    // The last owner: not suspended, removed, demoted, nor gone.
    assert_refused(
        "the last owner suspending themself",
        suspend(&app, &owner.home_token, &org, &owner.id).await,
        SELF_REFUSED,
    );
    assert_refused(
        "the last owner removing themself",
        remove(&app, &owner.home_token, &org, &owner.id).await,
        SELF_REFUSED,
    );
    for role in [pb::Role::Admin, pb::Role::Member] {
        assert_refused(
            &format!("the last owner demoting themself to {role:?}"),
            set_role(&app, &owner.home_token, &org, &owner.id, role).await,
            SELF_REFUSED,
        );
    }
    assert_refused(
        "the last owner leaving",
        leave(&app, &owner.home_token, &org).await,
        &[Code::FailedPrecondition],
    );

    // An admin manages members, not owners, and makes no owner.
    assert_refused(
        "an admin suspending the owner",
        suspend(&app, &dan_here, &org, &owner.id).await,
        &[Code::PermissionDenied],
    );
    assert_refused(
        "an admin removing the owner",
        remove(&app, &dan_here, &org, &owner.id).await,
        &[Code::PermissionDenied],
    );
    assert_refused(
        "an admin demoting the owner",
        set_role(&app, &dan_here, &org, &owner.id, pb::Role::Member).await,
        &[Code::PermissionDenied],
    );
    assert_refused(
        "an admin making an owner",
        set_role(&app, &dan_here, &org, &mia.id, pb::Role::Owner).await,
        &[Code::PermissionDenied],
    );
    assert_refused(
        "an admin inviting an owner",
        app.invite(&dan_here, &org, &email("new-owner"), pb::Role::Owner)
            .await,
        &[Code::PermissionDenied],
    );
    assert_refused(
        "an admin making themself owner",
        set_role(&app, &dan_here, &org, &dan.id, pb::Role::Owner).await,
        &[Code::PermissionDenied],
    );
    assert_refused(
        "an admin transferring ownership",
        transfer(&app, &dan_here, &org, &mia.id).await,
        &[Code::PermissionDenied],
    );
    assert_refused(
        "an admin suspending themself",
        suspend(&app, &dan_here, &org, &dan.id).await,
        SELF_REFUSED,
    );

    // A member manages nobody.
    assert_refused(
        "a member suspending an admin",
        suspend(&app, &mia_here, &org, &dan.id).await,
        &[Code::PermissionDenied],
    );
    assert_refused(
        "a member suspending a member",
        suspend(&app, &mia_here, &org, &tom.id).await,
        &[Code::PermissionDenied],
    );
    assert_refused(
        "a member removing a member",
        remove(&app, &mia_here, &org, &tom.id).await,
        &[Code::PermissionDenied],
    );
    assert_refused(
        "a member promoting themself",
        set_role(&app, &mia_here, &org, &mia.id, pb::Role::Admin).await,
        &[Code::PermissionDenied],
    );
    assert_refused(
        "a member reinstating",
        reinstate(&app, &mia_here, &org, &tom.id).await,
        &[Code::PermissionDenied],
    );
    assert_refused(
        "a member inviting",
        app.invite(&mia_here, &org, &email("friend"), pb::Role::Member)
            .await,
        &[Code::PermissionDenied],
    );
    // Not even with their own API key.
    let mia_key = create_key(
        &app,
        &mia_here,
        "mia",
        &[apb::Scope::Read, apb::Scope::Write],
    )
    .await
    .unwrap()
    .secret;
    assert_refused(
        "a member's key suspending a member",
        suspend(&app, &mia_key, &org, &tom.id).await,
        &[Code::PermissionDenied],
    );

    // Nothing changed.
    let listed = members(&app, &owner.home_token, &org).await;
    for (who, role) in [
        (&owner.id, pb::Role::Owner),
        (&dan.id, pb::Role::Admin),
        (&mia.id, pb::Role::Member),
        (&tom.id, pb::Role::Member),
    ] {
        assert_eq!(
            standing(&listed, who),
            Some((role, pb::MembershipStatus::Active)),
            "{listed:?}"
        );
    }
    for token in [&owner.home_token, &dan_here, &mia_here] {
        assert_session_alive(&app, token, "after refused actions").await;
    }

    // An admin may manage members: Tom is suspended and reinstated by Dan.
    suspend(&app, &dan_here, &org, &tom.id).await.unwrap();
    reinstate(&app, &dan_here, &org, &tom.id).await.unwrap();
    set_role(&app, &dan_here, &org, &tom.id, pb::Role::Admin)
        .await
        .unwrap();

    // With a second owner, owners act on owners, down to the last one.
    let olga = person(&app, "owner-olga").await;
    let olga_here = join(&app, &owner.home_token, &org, &olga, pb::Role::Owner).await;
    assert_refused(
        "an admin suspending the second owner",
        suspend(&app, &dan_here, &org, &olga.id).await,
        &[Code::PermissionDenied],
    );
    set_role(&app, &olga_here, &org, &owner.id, pb::Role::Admin)
        .await
        .expect("an owner demotes another owner");
    assert_refused(
        "Olga, now the last owner, demoting herself",
        set_role(&app, &olga_here, &org, &olga.id, pb::Role::Admin).await,
        SELF_REFUSED,
    );
    assert_refused(
        "Olga, now the last owner, leaving",
        leave(&app, &olga_here, &org).await,
        &[Code::FailedPrecondition],
    );
    let listed = members(&app, &olga_here, &org).await;
    assert_eq!(
        standing(&listed, &olga.id),
        Some((pb::Role::Owner, pb::MembershipStatus::Active))
    );
    assert_eq!(
        standing(&listed, &owner.id),
        Some((pb::Role::Admin, pb::MembershipStatus::Active))
    );
}

/// The last *active* owner: a suspended owner cannot act, so suspending
/// every other owner leaves the remaining one the last.
async fn a_suspended_owner_does_not_count_as_an_owner(backend: Backend) {
    let app = app(backend).await;
    let first = person(&app, "owner-one").await;
    let org = first.home.clone();
    let second = person(&app, "owner-two").await;
    join(&app, &first.home_token, &org, &second, pb::Role::Owner).await;
    let dan = person(&app, "admin-dan").await;
    let dan_here = join(&app, &first.home_token, &org, &dan, pb::Role::Admin).await;

    suspend(&app, &first.home_token, &org, &second.id)
        .await
        .expect("an owner suspends another owner");
    assert_refused(
        "an admin reinstating a suspended owner",
        reinstate(&app, &dan_here, &org, &second.id).await,
        &[Code::PermissionDenied],
    );
    assert_refused(
        "the last active owner leaving",
        leave(&app, &first.home_token, &org).await,
        &[Code::FailedPrecondition],
    );
    assert_refused(
        "the last active owner demoting themself",
        set_role(&app, &first.home_token, &org, &first.id, pb::Role::Admin).await,
        SELF_REFUSED,
    );
    reinstate(&app, &first.home_token, &org, &second.id)
        .await
        .unwrap();
    let second_here = login_to(&app, &second.email, &org)
        .await
        .unwrap()
        .access_token;
    assert_eq!(
        roles_of(&app, &second_here).await,
        Some(vec!["owner".to_string()])
    );
}

/// Who may list an organisation's members: its members, and its API keys
/// with the read scope — not a key that may only execute (the listing
/// holds every member's email).
async fn listing_members_needs_the_read_scope(backend: Backend) {
    let app = app(backend).await;
    let owner = person(&app, "lister").await;
    let org = owner.home.clone();
    let list = async |credential: &str| {
        app.sessions()
            .list_members(bearer(
                credential,
                pb::ListMembersRequest {
                    organization_id: org.clone(),
                },
            ))
            .await
    };
    let execute = create_key(&app, &owner.home_token, "exec", &[apb::Scope::Execute])
        .await
        .unwrap();
    assert_refused(
        "an execute-only key lists members",
        list(&execute.secret).await,
        &[Code::PermissionDenied],
    );
    let read = create_key(&app, &owner.home_token, "read", &[apb::Scope::Read])
        .await
        .unwrap();
    let listed = list(&read.secret).await.unwrap().into_inner().members;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].user.as_ref().unwrap().email, owner.email);
    let listed = list(&owner.home_token).await.unwrap().into_inner().members;
    assert_eq!(listed.len(), 1);
    app.stop().await;
}

async fn another_organisations_ids_are_not_found(backend: Backend) {
    let app = app(backend).await;
    let mallory = person(&app, "mallory").await;
    let owner = person(&app, "owner").await;
    let org = owner.home.clone();
    let quinn = person(&app, "quinn").await;
    let quinn_here = join(&app, &owner.home_token, &org, &quinn, pb::Role::Member).await;
    let quinn_key = create_key(&app, &quinn_here, "quinn", &[apb::Scope::Read])
        .await
        .unwrap();

    let m = &mallory.home_token;
    assert_refused(
        "suspend in another org",
        suspend(&app, m, &org, &quinn.id).await,
        &[Code::NotFound],
    );
    assert_refused(
        "reinstate in another org",
        reinstate(&app, m, &org, &quinn.id).await,
        &[Code::NotFound],
    );
    assert_refused(
        "remove in another org",
        remove(&app, m, &org, &quinn.id).await,
        &[Code::NotFound],
    );
    assert_refused(
        "set a role in another org",
        set_role(&app, m, &org, &quinn.id, pb::Role::Admin).await,
        &[Code::NotFound],
    );
    assert_refused(
        "transfer another org",
        transfer(&app, m, &org, &mallory.id).await,
        &[Code::NotFound],
    );
    assert_refused(
        "invite into another org",
        app.invite(m, &org, &email("mallory-friend"), pb::Role::Member)
            .await,
        &[Code::NotFound],
    );
    assert_refused(
        "suspend the other org's owner",
        suspend(&app, m, &org, &owner.id).await,
        &[Code::NotFound],
    );
    // Someone of another organisation, in one's own: not found either.
    assert_refused(
        "suspend a non-member in one's own org",
        suspend(&app, m, &mallory.home, &quinn.id).await,
        &[Code::NotFound],
    );
    assert_refused(
        "set the role of a non-member",
        set_role(&app, m, &mallory.home, &quinn.id, pb::Role::Admin).await,
        &[Code::NotFound],
    );
    assert_refused(
        "transfer to a non-member",
        transfer(&app, m, &mallory.home, &quinn.id).await,
        &[Code::NotFound],
    );
    assert_refused(
        "suspend in a made-up org",
        suspend(&app, m, &Uuid::new_v4().to_string(), &quinn.id).await,
        &[Code::NotFound],
    );
    assert_refused(
        "a malformed user id",
        suspend(&app, m, &mallory.home, "not-a-uuid").await,
        &[Code::InvalidArgument],
    );
    assert_refused(
        "a malformed organisation id",
        remove(&app, m, "not-a-uuid", &quinn.id).await,
        &[Code::InvalidArgument],
    );

    assert_session_alive(&app, &quinn_here, "Quinn, whom Mallory tried to suspend").await;
    verify_key(&app, &quinn_key.secret).await.unwrap();
    let listed = members(&app, &owner.home_token, &org).await;
    assert_eq!(
        standing(&listed, &quinn.id),
        Some((pb::Role::Member, pb::MembershipStatus::Active))
    );
    assert!(events(&app, "member.suspended").await.is_empty());
    assert!(events(&app, "member.removed").await.is_empty());
}

/// Fails unless `token` is dead or carries exactly `role` now.
async fn assert_no_old_role(app: &TestApp, token: &str, role: &str, what: &str) {
    if let Some(roles) = roles_of(app, token).await {
        assert_eq!(roles, vec![role.to_string()], "{what}");
    }
}

async fn a_role_change_reaches_every_token_in_that_organisation(backend: Backend) {
    let app = app(backend).await;
    let owner = person(&app, "owner").await;
    let org = owner.home.clone();
    let rita = person(&app, "rita").await;
    let rita_here = join(&app, &owner.home_token, &org, &rita, pb::Role::Member).await;
    assert_eq!(
        roles_of(&app, &rita_here).await,
        Some(vec!["member".to_string()])
    );

    assert_refused(
        "an unspecified role",
        set_role(
            &app,
            &owner.home_token,
            &org,
            &rita.id,
            pb::Role::Unspecified,
        )
        .await,
        &[Code::InvalidArgument],
    );
    set_role(&app, &owner.home_token, &org, &rita.id, pb::Role::Admin)
        .await
        .unwrap();
    // The token verified (and cached) a moment ago as a member's: from
    // now on an admin's, or dead.
    assert_no_old_role(&app, &rita_here, "admin", "Rita's token after promotion").await;
    assert_eq!(
        roles_of(&app, &rita.home_token).await,
        Some(vec!["owner".to_string()]),
        "Rita's session at home"
    );
    let again = login_to(&app, &rita.email, &org)
        .await
        .unwrap()
        .access_token;
    assert_eq!(
        roles_of(&app, &again).await,
        Some(vec!["admin".to_string()])
    );
    let listed = members(&app, &owner.home_token, &org).await;
    assert_eq!(
        standing(&listed, &rita.id),
        Some((pb::Role::Admin, pb::MembershipStatus::Active))
    );
    let whoami = me(&app, &again).await.unwrap();
    let here = whoami
        .memberships
        .iter()
        .find(|m| m.organization.as_ref().unwrap().id == org)
        .expect("the membership is listed");
    assert_eq!(here.role(), pb::Role::Admin);
    // The new role works: an admin suspends a member.
    let sam = person(&app, "sam").await;
    join(&app, &owner.home_token, &org, &sam, pb::Role::Member).await;
    suspend(&app, &again, &org, &sam.id).await.unwrap();

    // And back down: no token of hers manages anything any more, though
    // each was just used (and cached) as an admin's.
    set_role(&app, &owner.home_token, &org, &rita.id, pb::Role::Member)
        .await
        .unwrap();
    for token in [&rita_here, &again] {
        assert_no_old_role(&app, token, "member", "Rita's token after demotion").await;
        assert_refused(
            "the demoted admin's earlier token reinstating",
            reinstate(&app, token, &org, &sam.id).await,
            &[Code::Unauthenticated, Code::PermissionDenied],
        );
    }
    let demoted = login_to(&app, &rita.email, &org)
        .await
        .unwrap()
        .access_token;
    assert_refused(
        "a demoted admin reinstating",
        reinstate(&app, &demoted, &org, &sam.id).await,
        &[Code::PermissionDenied],
    );
    let listed = members(&app, &owner.home_token, &org).await;
    assert_eq!(
        standing(&listed, &sam.id),
        Some((pb::Role::Member, pb::MembershipStatus::Suspended))
    );
    let events = events(&app, "member.role_changed").await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(events.iter().all(|e| e.org_id == Some(id(&org))));
}

async fn ownership_is_handed_over_in_one_step(backend: Backend) {
    let app = app(backend).await;
    let owner = person(&app, "owner").await;
    let org = owner.home.clone();
    let owner_here = login_to(&app, &owner.email, &org)
        .await
        .unwrap()
        .access_token;
    let nina = person(&app, "nina").await;
    let nina_here = join(&app, &owner.home_token, &org, &nina, pb::Role::Member).await;
    let sid = person(&app, "sid").await;
    join(&app, &owner.home_token, &org, &sid, pb::Role::Member).await;
    suspend(&app, &owner.home_token, &org, &sid.id)
        .await
        .unwrap();
    let owner_key = create_key(&app, &owner.home_token, "admin", &[apb::Scope::Admin])
        .await
        .unwrap()
        .secret;

    assert_refused(
        "transferring with an API key",
        transfer(&app, &owner_key, &org, &nina.id).await,
        &[Code::PermissionDenied],
    );
    assert_refused(
        "transferring to a suspended member",
        transfer(&app, &owner.home_token, &org, &sid.id).await,
        &[Code::FailedPrecondition],
    );
    assert_refused(
        "a member transferring",
        transfer(&app, &nina_here, &org, &nina.id).await,
        &[Code::PermissionDenied],
    );
    assert_refused(
        "transferring to oneself",
        transfer(&app, &owner.home_token, &org, &owner.id).await,
        &[Code::PermissionDenied],
    );

    transfer(&app, &owner_here, &org, &nina.id).await.unwrap();
    let listed = members(&app, &nina.home_token, &nina.home).await;
    assert_eq!(listed.len(), 1, "Nina's own organisation is untouched");
    let new_login = login_to(&app, &nina.email, &org)
        .await
        .unwrap()
        .access_token;
    let listed = members(&app, &new_login, &org).await;
    assert_eq!(
        standing(&listed, &nina.id),
        Some((pb::Role::Owner, pb::MembershipStatus::Active)),
        "{listed:?}"
    );
    assert_eq!(
        standing(&listed, &owner.id),
        Some((pb::Role::Admin, pb::MembershipStatus::Active)),
        "{listed:?}"
    );
    assert_eq!(
        roles_of(&app, &new_login).await,
        Some(vec!["owner".to_string()])
    );
    // No token carries an old role.
    for (token, now) in [
        (&owner.home_token, "admin"),
        (&owner_here, "admin"),
        (&nina_here, "owner"),
    ] {
        if let Some(roles) = roles_of(&app, token).await {
            assert_eq!(roles, vec![now.to_string()], "a token after the transfer");
        }
    }
    // The former owner's old sessions make no owner.
    for token in [&owner.home_token, &owner_here] {
        assert_refused(
            "the former owner's old token acting as owner",
            set_role(&app, token, &org, &nina.id, pb::Role::Member).await,
            &[Code::Unauthenticated, Code::PermissionDenied],
        );
    }
    let former = login_to(&app, &owner.email, &org)
        .await
        .unwrap()
        .access_token;
    assert_eq!(
        roles_of(&app, &former).await,
        Some(vec!["admin".to_string()])
    );
    assert_refused(
        "the former owner transferring again",
        transfer(&app, &former, &org, &owner.id).await,
        &[Code::PermissionDenied],
    );

    // The new owner may demote the former one, and cannot leave.
    set_role(&app, &new_login, &org, &owner.id, pb::Role::Member)
        .await
        .expect("the new owner demotes the former owner");
    let former = login_to(&app, &owner.email, &org)
        .await
        .unwrap()
        .access_token;
    assert_eq!(
        roles_of(&app, &former).await,
        Some(vec!["member".to_string()])
    );
    assert_refused(
        "the new (last) owner leaving",
        leave(&app, &new_login, &org).await,
        &[Code::FailedPrecondition],
    );
    event_about(&app, "org.ownership_transferred", &org, &nina.id).await;
}

// ----- platform operators ------------------------------------------------------

async fn only_platform_operators_disable_accounts(backend: Backend) {
    let app = app(backend).await;
    let owner = person(&app, "owner").await;
    let org = owner.home.clone();
    let uma = person(&app, "uma").await;
    let uma_here = join(&app, &owner.home_token, &org, &uma, pb::Role::Member).await;

    assert_refused(
        "SetUserDisabled with an owner's bearer",
        set_disabled(&app, bearer(&owner.home_token, disable(&uma.id, true))).await,
        NOT_INTERNAL,
    );
    assert_refused(
        "SetUserDisabled by the user themself",
        set_disabled(&app, bearer(&uma.home_token, disable(&uma.id, false))).await,
        NOT_INTERNAL,
    );
    let plain = set_disabled(
        &app,
        with_internal_token(&app.internal_token, disable(&uma.id, true)),
    )
    .await
    .unwrap_err();
    assert_eq!(plain.code(), Code::PermissionDenied, "{plain:?}");
    assert!(
        plain.message().contains("platform.operator"),
        "{}",
        plain.message()
    );
    let runtime = set_disabled(
        &app,
        with_internal_token(RUNTIME_TOKEN, disable(&uma.id, true)),
    )
    .await
    .unwrap_err();
    assert_eq!(runtime.code(), Code::PermissionDenied, "{runtime:?}");
    let mut both = bearer(&owner.home_token, disable(&uma.id, true));
    both.metadata_mut()
        .insert("x-twig-internal-token", "internal-guess".parse().unwrap());
    assert_refused(
        "a bearer and a guessed internal token",
        set_disabled(&app, both).await,
        NOT_INTERNAL,
    );
    assert!(!find_user(&app, &uma.id).await.disabled);
    for token in [&uma_here, &uma.home_token] {
        assert_session_alive(&app, token, "after refused disabling").await;
    }

    // The operator disables: every session of the account ends, in every
    // organisation, and no login works.
    let operator = |disabled| with_internal_token(OPERATOR_TOKEN, disable(&uma.id, disabled));
    let key_here = create_key(&app, &uma_here, "here", &[apb::Scope::Read])
        .await
        .unwrap()
        .secret;
    let key_home = create_key(&app, &uma.home_token, "home", &[apb::Scope::Read])
        .await
        .unwrap()
        .secret;
    let ended = set_disabled(&app, operator(true)).await.unwrap();
    assert_eq!(ended.sessions_ended, 2, "at home and in the owner's org");
    assert!(find_user(&app, &uma.id).await.disabled);
    for token in [&uma_here, &uma.home_token] {
        assert_session_dead(&app, token, "a session of a disabled account").await;
    }
    for org in [&uma.home, &org] {
        assert_refused(
            "a disabled account signing in",
            login_to(&app, &uma.email, org).await,
            &[Code::Unauthenticated],
        );
    }
    let unknown = set_disabled(
        &app,
        with_internal_token(OPERATOR_TOKEN, disable(&Uuid::new_v4().to_string(), true)),
    )
    .await;
    assert_refused("disabling nobody", unknown, &[Code::NotFound]);
    // A disabled account's keys stop too, and an organisation reinstating
    // the member does not bring them back while the account is disabled.
    for key in [&key_here, &key_home] {
        assert_key_refused(&app, key, "a key of a disabled account").await;
    }
    suspend(&app, &owner.home_token, &org, &uma.id)
        .await
        .unwrap();
    let reinstated = reinstate(&app, &owner.home_token, &org, &uma.id)
        .await
        .unwrap();
    assert_eq!(reinstated.api_keys_resumed, 0);
    assert_key_refused(&app, &key_here, "reinstated while the account is disabled").await;

    // And enables again.
    set_disabled(&app, operator(false)).await.unwrap();
    assert!(!find_user(&app, &uma.id).await.disabled);
    login_to(&app, &uma.email, &org)
        .await
        .expect("an enabled account signs in");
    login_to(&app, &uma.email, &uma.home).await.unwrap();
    for key in [&key_here, &key_home] {
        verify_key(&app, key)
            .await
            .expect("a key of the enabled account works again");
    }

    // Each organisation of the account sees the operator's act in its
    // own log, naming the operator.
    for action in ["user.disabled", "user.enabled"] {
        let found = events(&app, action).await;
        let mut orgs: Vec<_> = found.iter().map(|e| e.org_id).collect();
        orgs.sort();
        let mut expected = vec![Some(id(&uma.home)), Some(id(&org))];
        expected.sort();
        assert_eq!(orgs, expected, "{action}: {found:#?}");
        for e in &found {
            assert_eq!(
                e.target.as_deref(),
                Some(format!("user:{}", uma.id).as_str()),
                "{e:?}"
            );
            assert!(
                e.actor
                    .as_deref()
                    .is_some_and(|a| a.contains("operator-cli")),
                "who did it: {e:?}"
            );
        }
    }
}

// ----- "who am I" for a key ---------------------------------------------------

async fn an_api_key_learns_only_about_itself(backend: Backend) {
    let app = app(backend).await;
    let owner = person(&app, "owner").await;
    let org = owner.home.clone();
    let kim = person(&app, "kim").await;
    let kim_here = join(&app, &owner.home_token, &org, &kim, pb::Role::Member).await;
    let created = create_key(&app, &kim_here, "kim's bot", &[apb::Scope::Read])
        .await
        .unwrap();
    let key = created.key.unwrap();

    let answer = me(&app, &created.secret).await.unwrap();
    assert_eq!(answer.user, None, "{answer:?}");
    assert!(answer.memberships.is_empty(), "{answer:?}");
    assert_eq!(answer.session_id, "");
    assert_eq!(answer.organization_id, org);
    let caller = answer.api_key.clone().expect("the key");
    assert_eq!(caller.id, key.id);
    assert_eq!(caller.name, "kim's bot");
    assert_eq!(caller.organization_id, org);
    assert_eq!(caller.scopes, vec![apb::Scope::Read as i32]);
    assert_eq!(caller.owner_kind(), kpb::OwnerKind::Member);
    let text = format!("{answer:?}");
    for secret in [&kim.email, &kim.id, &kim.home] {
        assert!(!text.contains(secret.as_str()), "{secret} in {text}");
    }

    // Over HTTP/JSON too.
    let (status, json) = http(&app, "GET", "/v1/me", Some(&created.secret), None).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["apiKey"]["id"], key.id.as_str(), "{json}");
    assert_eq!(json["apiKey"]["ownerKind"], "OWNER_KIND_MEMBER", "{json}");
    assert!(json.get("user").is_none_or(|u| u.is_null()), "{json}");
    assert!(
        json.get("memberships")
            .is_none_or(|m| m.as_array().is_none_or(Vec::is_empty)),
        "{json}"
    );
    let text = json.to_string();
    for secret in [&kim.email, &kim.id, &kim.home] {
        assert!(!text.contains(secret.as_str()), "{secret} in {text}");
    }

    // A session still learns about its user.
    let session = me(&app, &kim_here).await.unwrap();
    assert_eq!(session.user.as_ref().unwrap().id, kim.id);
    assert_eq!(session.memberships.len(), 2);
    assert_eq!(session.api_key, None);
    let (status, json) = http(&app, "GET", "/v1/me", Some(&kim_here), None).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["user"]["email"], kim.email.as_str());

    // A stopped key learns nothing.
    suspend(&app, &owner.home_token, &org, &kim.id)
        .await
        .unwrap();
    assert_refused(
        "GetCurrentUser with a stopped key",
        me(&app, &created.secret).await,
        &[Code::Unauthenticated],
    );
    let (status, json) = http(&app, "GET", "/v1/me", Some(&created.secret), None).await;
    assert_eq!(status, 401, "{json}");
}

// ----- the audit log -----------------------------------------------------------

async fn every_membership_action_is_audited_in_its_organisation(backend: Backend) {
    let app = app(backend).await;
    let owner = person(&app, "owner").await;
    let org = owner.home.clone();
    let actor = format!("user:{}", owner.id);
    let amy = person(&app, "amy").await;
    join(&app, &owner.home_token, &org, &amy, pb::Role::Member).await;
    let leo = person(&app, "leo").await;
    let leo_here = join(&app, &owner.home_token, &org, &leo, pb::Role::Member).await;
    let ned = person(&app, "ned").await;
    join(&app, &owner.home_token, &org, &ned, pb::Role::Member).await;

    suspend(&app, &owner.home_token, &org, &amy.id)
        .await
        .unwrap();
    reinstate(&app, &owner.home_token, &org, &amy.id)
        .await
        .unwrap();
    set_role(&app, &owner.home_token, &org, &amy.id, pb::Role::Admin)
        .await
        .unwrap();
    remove(&app, &owner.home_token, &org, &amy.id)
        .await
        .unwrap();
    leave(&app, &leo_here, &org).await.unwrap();
    transfer(&app, &owner.home_token, &org, &ned.id)
        .await
        .unwrap();

    for action in [
        "member.suspended",
        "member.reinstated",
        "member.role_changed",
        "member.removed",
    ] {
        let event = event_about(&app, action, &org, &amy.id).await;
        assert_eq!(event.actor.as_deref(), Some(actor.as_str()), "{event:?}");
    }
    let left = event_about(&app, "member.left", &org, &leo.id).await;
    assert_eq!(
        left.actor.as_deref(),
        Some(format!("user:{}", leo.id).as_str()),
        "{left:?}"
    );
    let transferred = event_about(&app, "org.ownership_transferred", &org, &ned.id).await;
    assert_eq!(
        transferred.actor.as_deref(),
        Some(actor.as_str()),
        "{transferred:?}"
    );
    // None of it lands in another organisation's log.
    for action in [
        "member.suspended",
        "member.reinstated",
        "member.role_changed",
        "member.removed",
        "member.left",
        "org.ownership_transferred",
    ] {
        for e in events(&app, action).await {
            assert_eq!(e.org_id, Some(id(&org)), "{e:?}");
        }
    }
    // And the organisation's admins read it through the audit API.
    let listed = app
        .audit()
        .list_events(bearer(
            &login_to(&app, &ned.email, &org).await.unwrap().access_token,
            twig_proto::audit::v1::ListEventsRequest {
                action: "member.suspended".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(listed.len(), 1, "{listed:?}");
}

// ----- races -------------------------------------------------------------------

/// Two owners act on each other at the same moment; whatever wins, the
/// organisation keeps an active owner.
async fn two_owners_racing_never_leave_the_organisation_without_one(backend: Backend) {
    let app = app(backend).await;
    let modes = ["remove", "demote", "leave", "suspend"];
    let mut problems = Vec::new();
    for round in 0..12 {
        let mode = modes[round % modes.len()];
        let a = person(&app, "owner-a").await;
        let org = a.home.clone();
        let b = person(&app, "owner-b").await;
        let b_here = join(&app, &a.home_token, &org, &b, pb::Role::Owner).await;
        let c = person(&app, "admin-c").await;
        let c_here = join(&app, &a.home_token, &org, &c, pb::Role::Admin).await;
        let a_key = create_key(&app, &a.home_token, "a", &[apb::Scope::Read])
            .await
            .unwrap()
            .secret;
        let b_key = create_key(&app, &b_here, "b", &[apb::Scope::Read])
            .await
            .unwrap()
            .secret;

        let act = |token: String, other: String| {
            let mut client = app.sessions();
            let org = org.clone();
            tokio::spawn(async move {
                let result = match mode {
                    "remove" => client
                        .remove_member(bearer(
                            &token,
                            pb::RemoveMemberRequest {
                                organization_id: org,
                                user_id: other,
                            },
                        ))
                        .await
                        .map(|_| ()),
                    "demote" => client
                        .set_member_role(bearer(
                            &token,
                            pb::SetMemberRoleRequest {
                                organization_id: org,
                                user_id: other,
                                role: pb::Role::Admin as i32,
                            },
                        ))
                        .await
                        .map(|_| ()),
                    "leave" => client
                        .leave_organization(bearer(
                            &token,
                            pb::LeaveOrganizationRequest {
                                organization_id: org,
                            },
                        ))
                        .await
                        .map(|_| ()),
                    _ => client
                        .suspend_member(bearer(
                            &token,
                            pb::SuspendMemberRequest {
                                organization_id: org,
                                user_id: other,
                            },
                        ))
                        .await
                        .map(|_| ()),
                };
                result.map_err(|e| (e.code(), e.message().to_string()))
            })
        };
        let first = act(a.home_token.clone(), b.id.clone());
        let second = act(b_here.clone(), a.id.clone());
        let (first, second) = (first.await.unwrap(), second.await.unwrap());

        let listed = members(&app, &c_here, &org).await;
        let active_owners = listed
            .iter()
            .filter(|m| m.role() == pb::Role::Owner && m.status() == pb::MembershipStatus::Active)
            .count();
        let round = format!("round {round} ({mode}): A → {first:?}, B → {second:?}");
        if active_owners == 0 {
            problems.push(format!("{round}: no active owner left: {listed:?}"));
        }
        if first.is_ok() == second.is_ok() {
            problems.push(format!("{round}: expected exactly one winner"));
        }
        // Each one's key follows their membership as it ended up: the
        // refused call changed nothing.
        for (who, id, key) in [("A", &a.id, &a_key), ("B", &b.id, &b_key)] {
            let standing = standing(&listed, id);
            let active = standing.map(|(_, s)| s) == Some(pb::MembershipStatus::Active);
            let works = verify_key(&app, key)
                .await
                .map(|_| ())
                .map_err(|e| e.code());
            if works.is_ok() != active {
                problems.push(format!(
                    "{round}: {who} is {standing:?}, and {who}'s key answers {works:?}"
                ));
            }
        }
        for (code, message) in [&first, &second]
            .into_iter()
            .filter_map(|r| r.as_ref().err())
        {
            if !matches!(
                code,
                Code::Unauthenticated
                    | Code::PermissionDenied
                    | Code::FailedPrecondition
                    | Code::NotFound
            ) {
                problems.push(format!("{round}: refused with {code:?} {message}"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ----- HTTP/JSON -----------------------------------------------------------------

/// One HTTP/1.1 request: the status code and the JSON body (Null if none).
async fn http(
    app: &TestApp,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut head = format!("{method} {path} HTTP/1.1");
    if let Some(token) = token {
        head.push_str(&format!("\r\nAuthorization: Bearer {token}"));
    }
    if body.is_some() {
        head.push_str("\r\nContent-Type: application/json");
    }
    let (status, _, bytes) =
        twig_tests::http1(app.addr, &head, body.unwrap_or("").as_bytes()).await;
    let code = status
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("a status line: {status}"));
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (code, json)
}

/// The JSON listing's `user`: (role, status), None when not listed.
fn json_standing(listing: &serde_json::Value, user: &str) -> Option<(String, String)> {
    listing["members"]
        .as_array()
        .unwrap_or_else(|| panic!("members in {listing}"))
        .iter()
        .find(|m| m["user"]["id"] == user)
        .map(|m| {
            (
                m["role"].as_str().unwrap_or_default().to_string(),
                m["status"].as_str().unwrap_or_default().to_string(),
            )
        })
}

fn standing_json(role: &str, status: &str) -> Option<(String, String)> {
    Some((role.to_string(), status.to_string()))
}

async fn members_are_governed_over_http_json(backend: Backend) {
    let app = app(backend).await;
    let owner = person(&app, "owner").await;
    let org = owner.home.clone();
    let o = Some(owner.home_token.as_str());
    let zoe = person(&app, "zoe").await;
    let members_path = format!("/v1/organizations/{org}/members");
    let member_path = |user: &str| format!("/v1/organizations/{org}/members/{user}");

    // The old route that made anyone a member is gone; joining is an
    // invitation Zoe accepts, signed in as herself.
    let (status, json) = http(
        &app,
        "POST",
        &members_path,
        o,
        Some(&format!(
            r#"{{"email":"{}","role":"ROLE_MEMBER"}}"#,
            zoe.email
        )),
    )
    .await;
    assert_eq!(status, 405, "the AddMember route: {json}");
    let (status, json) = http(
        &app,
        "POST",
        &format!("/v1/organizations/{org}/invitations"),
        o,
        Some(&format!(
            r#"{{"email":"{}","role":"ROLE_MEMBER"}}"#,
            zoe.email
        )),
    )
    .await;
    assert_eq!(status, 200, "CreateInvitation: {json}");
    assert_eq!(
        json["invitation"]["state"], "INVITATION_STATE_PENDING",
        "{json}"
    );
    let link = app.link_token(&zoe.email, "You are invited").await;
    let (status, json) = http(
        &app,
        "POST",
        "/v1/invitations:accept",
        Some(&zoe.home_token),
        Some(&format!(r#"{{"token":"{link}"}}"#)),
    )
    .await;
    assert_eq!(status, 200, "AcceptInvitation: {json}");
    assert_eq!(
        json["membership"]["organization"]["id"],
        org.as_str(),
        "{json}"
    );
    assert_eq!(json["membership"]["role"], "ROLE_MEMBER", "{json}");
    let (status, json) = http(
        &app,
        "POST",
        "/v1/sessions:login",
        None,
        Some(&format!(
            r#"{{"email":"{}","password":"{PASSWORD}","organizationId":"{org}"}}"#,
            zoe.email
        )),
    )
    .await;
    assert_eq!(status, 200, "login: {json}");
    let zoe_here = json["tokens"]["accessToken"].as_str().unwrap().to_string();
    let (status, json) = http(
        &app,
        "POST",
        "/v1/api-keys",
        Some(&zoe_here),
        Some(r#"{"name":"zoe","scopes":["SCOPE_READ"]}"#),
    )
    .await;
    assert_eq!(status, 200, "CreateApiKey: {json}");
    let zoe_key = json["secret"].as_str().unwrap().to_string();

    // The old account-wide route is gone: no organisation disables anyone.
    let (status, json) = http(
        &app,
        "POST",
        &format!("/v1/users/{}:setDisabled", zoe.id),
        o,
        Some(r#"{"disabled":true}"#),
    )
    .await;
    assert_eq!(status, 404, "setDisabled: {json}");
    assert!(!find_user(&app, &zoe.id).await.disabled);

    // Refusals, with their HTTP statuses.
    let suspend_path = |user: &str| format!("{}:suspend", member_path(user));
    let (status, json) = http(
        &app,
        "POST",
        &suspend_path(&owner.id),
        Some(&zoe_here),
        Some("{}"),
    )
    .await;
    assert_eq!(status, 403, "a member suspending the owner: {json}");
    assert_eq!(json["code"], "PERMISSION_DENIED");
    let (status, json) = http(&app, "POST", &suspend_path(&owner.id), o, Some("{}")).await;
    assert_eq!(status, 403, "the owner suspending themself: {json}");
    let elsewhere = format!("/v1/organizations/{}/members/{}:suspend", zoe.home, zoe.id);
    let (status, json) = http(&app, "POST", &elsewhere, o, Some("{}")).await;
    assert_eq!(status, 404, "another organisation: {json}");
    let (status, json) = http(
        &app,
        "POST",
        &format!("/v1/organizations/{org}:leave"),
        o,
        Some("{}"),
    )
    .await;
    assert_eq!(status, 412, "the last owner leaving: {json}");
    assert_eq!(json["code"], "FAILED_PRECONDITION");

    // Suspend: Zoe's session and key stop answering.
    let (status, json) = http(&app, "POST", &suspend_path(&zoe.id), o, Some("{}")).await;
    assert_eq!(status, 200, "suspend: {json}");
    assert_eq!(json["sessionsEnded"], 1, "{json}");
    assert_eq!(json["apiKeysStopped"], 1, "{json}");
    let (status, _) = http(&app, "GET", "/v1/api-keys", Some(&zoe_key), None).await;
    assert_eq!(status, 401);
    let (status, _) = http(&app, "GET", "/v1/me", Some(&zoe_here), None).await;
    assert_eq!(status, 401);
    let (status, listing) = http(&app, "GET", &members_path, o, None).await;
    assert_eq!(status, 200, "{listing}");
    assert_eq!(
        json_standing(&listing, &zoe.id),
        standing_json("ROLE_MEMBER", "MEMBERSHIP_STATUS_SUSPENDED"),
        "{listing}"
    );

    // Reinstate: the key works again.
    let (status, json) = http(
        &app,
        "POST",
        &format!("{}:reinstate", member_path(&zoe.id)),
        o,
        Some("{}"),
    )
    .await;
    assert_eq!(status, 200, "reinstate: {json}");
    assert_eq!(json["apiKeysResumed"], 1, "{json}");
    let (status, json) = http(&app, "GET", "/v1/api-keys", Some(&zoe_key), None).await;
    assert_eq!(status, 200, "the key after reinstatement: {json}");

    // A new role.
    let (status, json) = http(
        &app,
        "POST",
        &format!("{}:setRole", member_path(&zoe.id)),
        o,
        Some(r#"{"role":"ROLE_ADMIN"}"#),
    )
    .await;
    assert_eq!(status, 200, "setRole: {json}");
    let (status, listing) = http(&app, "GET", &members_path, o, None).await;
    assert_eq!(status, 200);
    assert_eq!(
        json_standing(&listing, &zoe.id),
        standing_json("ROLE_ADMIN", "MEMBERSHIP_STATUS_ACTIVE"),
        "{listing}"
    );

    // Ownership handed to Zoe; the former owner, now admin, cannot remove
    // her, and she removes him.
    let (status, json) = http(
        &app,
        "POST",
        &format!("/v1/organizations/{org}:transferOwnership"),
        o,
        Some(&format!(r#"{{"userId":"{}"}}"#, zoe.id)),
    )
    .await;
    assert_eq!(status, 200, "transferOwnership: {json}");
    let former = login_to(&app, &owner.email, &org)
        .await
        .unwrap()
        .access_token;
    let (status, json) = http(&app, "DELETE", &member_path(&zoe.id), Some(&former), None).await;
    assert_eq!(status, 403, "an admin removing the owner: {json}");
    let zoe_owner = login_to(&app, &zoe.email, &org).await.unwrap().access_token;
    let (status, json) = http(
        &app,
        "POST",
        &format!("/v1/organizations/{org}:leave"),
        Some(&zoe_key),
        Some("{}"),
    )
    .await;
    assert_eq!(status, 403, "leaving with an API key: {json}");
    let (status, json) = http(
        &app,
        "DELETE",
        &member_path(&owner.id),
        Some(&zoe_owner),
        None,
    )
    .await;
    assert_eq!(status, 200, "removing the former owner: {json}");
    let (status, _) = http(&app, "GET", "/v1/me", Some(&former), None).await;
    assert_eq!(status, 401, "the removed member's session");
    let (status, listing) = http(&app, "GET", &members_path, Some(&zoe_owner), None).await;
    assert_eq!(status, 200);
    assert_eq!(json_standing(&listing, &owner.id), None, "{listing}");
    // Their sign-up session was in this organisation too; their account
    // is untouched.
    let (status, _) = http(&app, "GET", "/v1/me", Some(&owner.home_token), None).await;
    assert_eq!(status, 401, "the removed member's sign-up session");
    assert!(!find_user(&app, &owner.id).await.disabled);
}

on_both_backends!(
    a_stranger_governs_only_their_own_organisation,
    listing_members_needs_the_read_scope,
    suspension_ends_sessions_and_stops_keys_in_that_organisation_only,
    removal_revokes_keys_for_good,
    a_member_leaves_an_organisation,
    the_last_owner_stays_and_only_owners_touch_owners,
    a_suspended_owner_does_not_count_as_an_owner,
    another_organisations_ids_are_not_found,
    a_role_change_reaches_every_token_in_that_organisation,
    ownership_is_handed_over_in_one_step,
    only_platform_operators_disable_accounts,
    an_api_key_learns_only_about_itself,
    every_membership_action_is_audited_in_its_organisation,
    two_owners_racing_never_leave_the_organisation_without_one,
    members_are_governed_over_http_json,
);

// ----- replicas ------------------------------------------------------------------

const REPLICA_INTERNAL: &str = "memberships-internal-token-0123456789abcdef";

fn replica(db_url: &str, redis_prefix: &str) -> Command {
    let mut cmd = Command::new(twig_binary());
    cmd.env("DATABASE_URL", db_url)
        .env("REDIS_URL", "redis://127.0.0.1:6379")
        .env("TWIG__REDIS__KEY_PREFIX", redis_prefix)
        // Long enough that only the fan-out can explain a sub-second change.
        .env("TWIG__API_KEYS__VERIFY_CACHE_TTL", "30s")
        .env("TWIG__SESSIONS__VERIFY_CACHE_TTL", "30s")
        .env("TWIG__AUTH__INTERNAL_TOKEN", REPLICA_INTERNAL)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

/// Server processes, stopped however the test ends.
struct Replicas(Vec<std::process::Child>);

impl Drop for Replicas {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

async fn key_verifies(channel: &Channel, key: &str) -> Result<(), Code> {
    ApiKeyServiceClient::new(channel.clone())
        .verify_api_key(with_internal_token(
            REPLICA_INTERNAL,
            kpb::VerifyApiKeyRequest {
                key: key.into(),
                required_scope: apb::Scope::Read as i32,
                client_ip: String::new(),
            },
        ))
        .await
        .map(|_| ())
        .map_err(|e| e.code())
}

async fn session_verifies(channel: &Channel, token: &str) -> Result<(), Code> {
    session_roles(channel, token).await.map(|_| ())
}

/// The roles a session token carries on a replica.
async fn session_roles(channel: &Channel, token: &str) -> Result<Vec<String>, Code> {
    SessionServiceClient::new(channel.clone())
        .verify_session(with_internal_token(
            REPLICA_INTERNAL,
            pb::VerifySessionRequest {
                access_token: token.into(),
            },
        ))
        .await
        .map(|r| r.into_inner().principal.expect("a principal").roles)
        .map_err(|e| e.code())
}

/// Polls until `done` says true; how long that took, or None after `limit`.
async fn time_until(limit: Duration, mut done: impl AsyncFnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done().await {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// Suspending on replica A stops the member's key and session on replica
/// B — which verified (and cached) both — within a second; reinstating
/// and removing do as well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspension_reaches_the_other_replica_within_a_second() {
    let db = TestDatabase::new(Backend::Postgres).await;
    let prefix = twig_testkit::redis_prefix();
    let outbox = Outbox::new();
    let replica = || {
        let mut command = replica(&db.url, &prefix);
        outbox.configure(&mut command);
        command
    };
    // One after the other: the first one runs the migrations.
    let (a, chan_a) = spawn_serve(replica()).await;
    let mut replicas = Replicas(vec![a]);
    let (b, chan_b) = spawn_serve(replica()).await;
    replicas.0.push(b);

    let mut sessions_a = SessionServiceClient::new(chan_a.clone());
    let owner = sign_up_with(&chan_a, &email("replica-owner")).await;
    let owner_token = owner.tokens.unwrap().access_token;
    let org = owner.organization.unwrap().id;
    let member_email = email("replica-member");
    let member = sign_up_with(&chan_a, &member_email).await;
    let member_id = member.user.unwrap().id;
    let member_home = member.tokens.unwrap().access_token;
    add_member_on(
        &chan_a,
        &outbox,
        &owner_token,
        &org,
        &member_email,
        pb::Role::Member,
    )
    .await;
    let member_here = sessions_a
        .login(pb::LoginRequest {
            email: member_email.clone(),
            password: PASSWORD.into(),
            organization_id: org.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap()
        .access_token;
    let key = ApiKeyServiceClient::new(chan_a.clone())
        .create_api_key(bearer(
            &member_here,
            kpb::CreateApiKeyRequest {
                service_account_id: String::new(),
                name: "replicated".into(),
                scopes: vec![apb::Scope::Read as i32],
                expires_at: None,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .secret;

    // B verifies (and caches for 30 s) the key and both sessions.
    for _ in 0..2 {
        key_verifies(&chan_b, &key).await.unwrap();
        session_verifies(&chan_b, &member_here).await.unwrap();
        session_verifies(&chan_b, &member_home).await.unwrap();
    }

    let member_action = |what: &'static str| {
        let mut client = SessionServiceClient::new(chan_a.clone());
        let (token, org, user) = (owner_token.clone(), org.clone(), member_id.clone());
        async move {
            let done = match what {
                "suspend" => client
                    .suspend_member(bearer(
                        &token,
                        pb::SuspendMemberRequest {
                            organization_id: org,
                            user_id: user,
                        },
                    ))
                    .await
                    .map(|_| ()),
                "reinstate" => client
                    .reinstate_member(bearer(
                        &token,
                        pb::ReinstateMemberRequest {
                            organization_id: org,
                            user_id: user,
                        },
                    ))
                    .await
                    .map(|_| ()),
                "promote" => client
                    .set_member_role(bearer(
                        &token,
                        pb::SetMemberRoleRequest {
                            organization_id: org,
                            user_id: user,
                            role: pb::Role::Admin as i32,
                        },
                    ))
                    .await
                    .map(|_| ()),
                _ => client
                    .remove_member(bearer(
                        &token,
                        pb::RemoveMemberRequest {
                            organization_id: org,
                            user_id: user,
                        },
                    ))
                    .await
                    .map(|_| ()),
            };
            done.unwrap_or_else(|e| panic!("{what} on A: {e:?}"))
        }
    };
    let limit = Duration::from_secs(3);
    let refused = |r: Result<(), Code>| r == Err(Code::Unauthenticated);

    member_action("suspend").await;
    let key_stopped = time_until(limit, async || refused(key_verifies(&chan_b, &key).await)).await;
    let session_ended = time_until(limit, async || {
        refused(session_verifies(&chan_b, &member_here).await)
    })
    .await;
    let home_after = session_verifies(&chan_b, &member_home).await;

    member_action("reinstate").await;
    let key_resumed = time_until(limit, async || key_verifies(&chan_b, &key).await.is_ok()).await;
    // B caches it again before the removal.
    let _ = key_verifies(&chan_b, &key).await;

    // A new session, cached on B as a member's; promoted on A, it is no
    // member's token on B within a second.
    let member_again = sessions_a
        .login(pb::LoginRequest {
            email: member_email.clone(),
            password: PASSWORD.into(),
            organization_id: org.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap()
        .access_token;
    let as_member = Ok(vec!["member".to_string()]);
    for _ in 0..2 {
        assert_eq!(session_roles(&chan_b, &member_again).await, as_member);
    }
    member_action("promote").await;
    let role_changed = time_until(limit, async || {
        session_roles(&chan_b, &member_again).await != as_member
    })
    .await;
    let role_now = session_roles(&chan_b, &member_again).await;

    member_action("remove").await;
    let key_revoked = time_until(limit, async || refused(key_verifies(&chan_b, &key).await)).await;
    drop(replicas);

    println!(
        "on B: key stopped after {key_stopped:?}, session ended after {session_ended:?}, \
         key resumed after {key_resumed:?}, role changed after {role_changed:?}, \
         key revoked after {key_revoked:?}"
    );
    let second = Duration::from_secs(1);
    assert!(
        key_stopped.is_some_and(|t| t < second),
        "the suspended member's key on B: {key_stopped:?}"
    );
    assert!(
        session_ended.is_some_and(|t| t < second),
        "the suspended member's session on B: {session_ended:?}"
    );
    assert_eq!(home_after, Ok(()), "the member's session elsewhere, on B");
    assert!(
        key_resumed.is_some_and(|t| t < second),
        "the reinstated member's key on B: {key_resumed:?}"
    );
    assert!(
        role_changed.is_some_and(|t| t < second),
        "the promoted member's cached session on B: {role_changed:?}"
    );
    assert!(
        matches!(&role_now, Ok(roles) if roles == &["admin".to_string()])
            || role_now == Err(Code::Unauthenticated),
        "the promoted member's session on B: {role_now:?}"
    );
    assert!(
        key_revoked.is_some_and(|t| t < second),
        "the removed member's key on B: {key_revoked:?}"
    );
}

// ----- services in processes of their own ------------------------------------------

const SPLIT_EDGE: &str = "memberships-split-edge-token-0123456789ab";

/// `serve --services <service>` on `db_url`, knowing where the others are
/// (as the Helm chart's split mode does: every service every other).
fn split_process(db_url: &str, prefix: &str, service: &str, remotes: &[(&str, String)]) -> Command {
    let mut cmd = Command::new(twig_binary());
    cmd.env("DATABASE_URL", db_url)
        .env("REDIS_URL", "redis://127.0.0.1:6379")
        .env("TWIG__REDIS__KEY_PREFIX", prefix)
        .env("TWIG__AUTH__INTERNAL_TOKEN", REPLICA_INTERNAL)
        .env("TWIG__AUTH__EDGE_TOKEN", SPLIT_EDGE)
        .env("TWIG__REMOTE__TOKEN", SPLIT_EDGE)
        .env("TWIG__REMOTE__VERIFY_CACHE_TTL", "30s")
        .env("TWIG__API_KEYS__VERIFY_CACHE_TTL", "30s")
        .env("TWIG__SESSIONS__VERIFY_CACHE_TTL", "30s")
        .env("RUST_LOG", "warn")
        .env("TWIG_SERVICES", service)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (name, url) in remotes {
        cmd.env(name, url);
    }
    cmd
}

/// Sessions, api-keys and the edge in three processes: a suspension made
/// through the edge stops the member's key in the api-keys process
/// (`SetMemberKeys` over gRPC), the edge stops accepting it within a
/// second although it cached it, and "who am I" for a key is answered
/// across processes (`LookupApiKey`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_separate_processes_a_suspension_stops_the_members_keys() {
    let db = TestDatabase::new(Backend::Postgres).await;
    let prefix = twig_testkit::redis_prefix();
    let [sessions_addr, keys_addr, edge_addr] = [(); 3].map(|_| twig_tests::free_addr());
    let url = |addr: std::net::SocketAddr| format!("http://{addr}");
    let mut processes = Replicas(Vec::new());
    // The sessions process mails the invitation here.
    let outbox = Outbox::new();
    let mut sessions_process = split_process(
        &db.url,
        &prefix,
        "sessions",
        &[("TWIG__REMOTE__API_KEYS", url(keys_addr))],
    );
    outbox.configure(&mut sessions_process);
    let (child, _, _) = twig_tests::spawn_serve_at(sessions_process, Some(sessions_addr)).await;
    processes.0.push(child);
    let (child, keys_direct, _) = twig_tests::spawn_serve_at(
        split_process(
            &db.url,
            &prefix,
            "api-keys",
            &[("TWIG__REMOTE__SESSIONS", url(sessions_addr))],
        ),
        Some(keys_addr),
    )
    .await;
    processes.0.push(child);
    let (child, edge, _) = twig_tests::spawn_serve_at(
        split_process(
            &db.url,
            &prefix,
            "edge",
            &[
                ("TWIG__REMOTE__SESSIONS", url(sessions_addr)),
                ("TWIG__REMOTE__API_KEYS", url(keys_addr)),
            ],
        ),
        Some(edge_addr),
    )
    .await;
    processes.0.push(child);

    let mut sessions = SessionServiceClient::new(edge.clone());
    // Accounts made by the operator's client, and the invitation sent and
    // accepted, all through the edge.
    let owner = sign_up_with(&edge, &email("split-owner")).await;
    let owner_token = owner.tokens.unwrap().access_token;
    let org = owner.organization.unwrap().id;
    let member_email = email("split-member");
    let member = sign_up_with(&edge, &member_email).await;
    let member_id = member.user.unwrap().id;
    let member_home = member.organization.unwrap().id;
    add_member_on(
        &edge,
        &outbox,
        &owner_token,
        &org,
        &member_email,
        pb::Role::Member,
    )
    .await;
    let member_here = sessions
        .login(pb::LoginRequest {
            email: member_email.clone(),
            password: PASSWORD.into(),
            organization_id: org.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap()
        .access_token;
    let created = ApiKeyServiceClient::new(edge.clone())
        .create_api_key(bearer(
            &member_here,
            kpb::CreateApiKeyRequest {
                service_account_id: String::new(),
                name: "split".into(),
                scopes: vec![apb::Scope::Read as i32],
                expires_at: None,
            },
        ))
        .await
        .expect("create a key through the edge")
        .into_inner();
    let key = created.secret;
    let key_id = created.key.unwrap().id;

    // "Who am I" for the key, answered by sessions asking api-keys.
    let whoami = sessions
        .get_current_user(bearer(&key, pb::GetCurrentUserRequest {}))
        .await
        .expect("GetCurrentUser with a key through the edge")
        .into_inner();
    assert_eq!(whoami.user, None, "{whoami:?}");
    assert!(whoami.memberships.is_empty(), "{whoami:?}");
    assert_eq!(
        whoami.api_key.as_ref().map(|k| k.id.as_str()),
        Some(key_id.as_str()),
        "{whoami:?}"
    );
    let text = format!("{whoami:?}");
    for secret in [&member_email, &member_id, &member_home] {
        assert!(!text.contains(secret.as_str()), "{secret} in {text}");
    }

    let key_used = async |key: &str| {
        ApiKeyServiceClient::new(edge.clone())
            .list_api_keys(bearer(key, kpb::ListApiKeysRequest::default()))
            .await
            .map(|_| ())
            .map_err(|e| e.code())
    };
    // The edge verified the key and keeps the answer (30 s).
    key_used(&key).await.unwrap();
    key_used(&key).await.unwrap();

    let suspended = sessions
        .suspend_member(bearer(
            &owner_token,
            pb::SuspendMemberRequest {
                organization_id: org.clone(),
                user_id: member_id.clone(),
            },
        ))
        .await
        .expect("suspend through the edge")
        .into_inner();
    let limit = Duration::from_secs(3);
    let at_edge = time_until(limit, async || {
        key_used(&key).await == Err(Code::Unauthenticated)
    })
    .await;
    let at_source = key_verifies(&keys_direct, &key).await;
    let session_at_edge = sessions
        .get_current_user(bearer(&member_here, pb::GetCurrentUserRequest {}))
        .await
        .map(|_| ())
        .map_err(|e| e.code());

    let reinstated = sessions
        .reinstate_member(bearer(
            &owner_token,
            pb::ReinstateMemberRequest {
                organization_id: org.clone(),
                user_id: member_id.clone(),
            },
        ))
        .await
        .expect("reinstate through the edge")
        .into_inner();
    let back = time_until(limit, async || key_used(&key).await.is_ok()).await;

    let removed = sessions
        .remove_member(bearer(
            &owner_token,
            pb::RemoveMemberRequest {
                organization_id: org.clone(),
                user_id: member_id.clone(),
            },
        ))
        .await
        .expect("remove through the edge")
        .into_inner();
    let gone = time_until(limit, async || {
        key_used(&key).await == Err(Code::Unauthenticated)
    })
    .await;
    drop(processes);

    assert_eq!(suspended.api_keys_stopped, 1, "{suspended:?}");
    assert_eq!(suspended.sessions_ended, 1, "{suspended:?}");
    assert!(
        at_edge.is_some_and(|t| t < Duration::from_secs(1)),
        "the suspended member's key at the edge: {at_edge:?}"
    );
    assert_eq!(
        at_source,
        Err(Code::Unauthenticated),
        "VerifyApiKey at the api-keys process"
    );
    assert_eq!(
        session_at_edge,
        Err(Code::Unauthenticated),
        "the suspended member's session at the edge"
    );
    assert_eq!(reinstated.api_keys_resumed, 1, "{reinstated:?}");
    assert!(back.is_some(), "the reinstated member's key at the edge");
    assert_eq!(removed.api_keys_revoked, 1, "{removed:?}");
    assert!(
        gone.is_some_and(|t| t < Duration::from_secs(1)),
        "the removed member's key at the edge: {gone:?}"
    );
}
