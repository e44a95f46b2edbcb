//! Sessions minted for users another service authenticated (SSO, OAuth),
//! and users provisioned just in time: the `SessionIssuing` and
//! `UserDirectory` ports in-process and as the gRPC clients a service in
//! another process gets (`RemoteSessionIssuer`, `RemoteUserDirectory`),
//! and their internal RPCs.

use std::sync::Arc;

use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use tonic::Code;
use twig_auth::Role;
use twig_module::{SessionClient, SessionIssuing, SessionMethod, UserDirectory};
use twig_proto::sessions::v1 as pb;
use twig_tests::{Backend, TestApp, bearer, email};
use uuid::Uuid;

fn code(err: twig_errors::ApiError) -> Code {
    tonic::Status::from(err).code()
}

fn id(raw: &str) -> Uuid {
    Uuid::parse_str(raw).unwrap()
}

/// Where the ports come from.
#[derive(Clone, Copy)]
enum Ports {
    /// The sessions service in this process.
    InProcess,
    /// Its gRPC clients, as a module in another process resolves them.
    OverGrpc,
}

fn ports(app: &TestApp, ports: Ports) -> (Arc<dyn SessionIssuing>, Arc<dyn UserDirectory>) {
    match ports {
        Ports::InProcess => (app.session_issuer.0.clone(), app.user_directory.0.clone()),
        Ports::OverGrpc => {
            let credential = twig_auth::ServiceCredential::new(&twig_config::Secret::new(
                app.internal_token.clone(),
            ))
            .unwrap();
            (
                Arc::new(twig_sessions::RemoteSessionIssuer::new(
                    app.channel.clone(),
                    credential.clone(),
                )),
                Arc::new(twig_sessions::RemoteUserDirectory::new(
                    app.channel.clone(),
                    credential,
                )),
            )
        }
    }
}

async fn an_sso_session_verifies_and_shows_its_method(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // Signed up through the mailed link: its first session is a password
    // session, audited as `user.signed_up`.
    let ada = app.sign_up_by_mail(&email("ada")).await;
    let (user, org) = (id(&ada.user.unwrap().id), id(&ada.organization.unwrap().id));
    let connection = Uuid::new_v4();
    let client = SessionClient {
        ip: Some("203.0.113.7".parse().unwrap()),
        user_agent: Some("sso-test".into()),
    };
    let issued = app
        .session_issuer
        .0
        .issue_session(user, org, &SessionMethod::Sso(connection), &client)
        .await
        .unwrap();
    assert!(issued.access_token.expose().starts_with("twig_st_"));
    assert!(issued.access_expires_at <= issued.refresh_expires_at);

    let verified = app.verify(issued.access_token.expose()).await.unwrap();
    assert_eq!(verified.user_id, user.to_string());
    assert_eq!(verified.organization_id, org.to_string());
    assert_eq!(
        verified.credential,
        Some(twig_proto::auth::v1::principal::Credential::SessionId(
            issued.session_id.to_string()
        ))
    );

    let listed = app
        .sessions()
        .list_sessions(bearer(
            issued.access_token.expose(),
            pb::ListSessionsRequest {},
        ))
        .await
        .unwrap()
        .into_inner()
        .sessions;
    let sso = listed
        .iter()
        .find(|s| s.id == issued.session_id.to_string())
        .expect("the SSO session is listed");
    assert_eq!(sso.method, format!("sso:{connection}"));
    assert_eq!(sso.ip, "203.0.113.7");
    assert!(sso.current);
    let signed_up = listed.iter().find(|s| !s.current).expect("sign-up session");
    assert_eq!(signed_up.method, "password");

    let events = twig_audit::events_with_action(&app.db, "session.login")
        .await
        .unwrap();
    let event = events
        .iter()
        .find(|e| e.target.as_deref() == Some(&format!("session:{}", issued.session_id)))
        .expect("the issued session's login is audited");
    let details: serde_json::Value = serde_json::from_str(&event.details).unwrap();
    assert_eq!(details["method"], format!("sso:{connection}"));
    assert_eq!(event.org_id, Some(org));
    let signed_up_event = twig_audit::events_with_action(&app.db, "user.signed_up")
        .await
        .unwrap();
    let details: serde_json::Value = serde_json::from_str(&signed_up_event[0].details).unwrap();
    assert_eq!(details["method"], "password");
    app.stop().await;
}

async fn issuing_is_refused_for_disabled_users_non_members_and_unknown_orgs(backend: Backend) {
    refusals_of_issuing(backend, Ports::InProcess).await
}

async fn issuing_over_grpc_is_refused_for_disabled_users_non_members_and_unknown_orgs(
    backend: Backend,
) {
    refusals_of_issuing(backend, Ports::OverGrpc).await
}

async fn refusals_of_issuing(backend: Backend, from: Ports) {
    let app = TestApp::spawn(backend).await;
    let (issuer, users) = ports(&app, from);
    let ada = app.sign_up(&email("ada")).await;
    let ada_token = ada.tokens.unwrap().access_token;
    let org = id(&ada.organization.unwrap().id);
    let carol = app.sign_up(&email("carol")).await;
    let carol_id = id(&carol.user.unwrap().id);
    let method = SessionMethod::oauth("github").unwrap();
    let client = SessionClient::default();

    // Carol is a member of her own organisation only.
    let err = issuer
        .issue_session(carol_id, org, &method, &client)
        .await
        .unwrap_err();
    assert_eq!(code(err), Code::PermissionDenied);
    let err = issuer
        .issue_session(carol_id, Uuid::new_v4(), &method, &client)
        .await
        .unwrap_err();
    assert_eq!(code(err), Code::NotFound);
    let err = issuer
        .issue_session(Uuid::new_v4(), org, &method, &client)
        .await
        .unwrap_err();
    assert_eq!(code(err), Code::NotFound);

    // Bob, provisioned into Ada's organisation, then disabled.
    let bob = users
        .provision_user(&email("bob"), "Bob", org, Role::Member)
        .await
        .unwrap();
    issuer
        .issue_session(bob.user.id, org, &method, &client)
        .await
        .expect("a member may have a session");
    // Suspended in the organisation: no session there.
    app.sessions()
        .suspend_member(bearer(
            &ada_token,
            pb::SuspendMemberRequest {
                organization_id: org.to_string(),
                user_id: bob.user.id.to_string(),
            },
        ))
        .await
        .unwrap();
    let err = issuer
        .issue_session(bob.user.id, org, &method, &client)
        .await
        .unwrap_err();
    let suspended = code(err);
    assert_eq!(
        suspended,
        Code::PermissionDenied,
        "a suspended member is no member there"
    );
    app.sessions()
        .reinstate_member(bearer(
            &ada_token,
            pb::ReinstateMemberRequest {
                organization_id: org.to_string(),
                user_id: bob.user.id.to_string(),
            },
        ))
        .await
        .unwrap();
    issuer
        .issue_session(bob.user.id, org, &method, &client)
        .await
        .expect("a reinstated member may have a session");
    // Disabled by the platform operator (not by the organisation).
    app.sessions()
        .set_user_disabled(app.operator(pb::SetUserDisabledRequest {
            user_id: bob.user.id.to_string(),
            disabled: true,
        }))
        .await
        .unwrap();
    let err = issuer
        .issue_session(bob.user.id, org, &method, &client)
        .await
        .unwrap_err();
    assert_eq!(code(err), Code::FailedPrecondition);
    app.stop().await;
}

async fn provisioning_creates_a_member_once_and_never_raises_a_role(backend: Backend) {
    provisioning(backend, Ports::InProcess).await
}

async fn provisioning_over_grpc_creates_a_member_once_and_never_raises_a_role(backend: Backend) {
    provisioning(backend, Ports::OverGrpc).await
}

async fn provisioning(backend: Backend, from: Ports) {
    let app = TestApp::spawn(backend).await;
    let (issuer, users) = ports(&app, from);
    let ada = app.sign_up(&email("ada")).await;
    let ada_token = ada.tokens.unwrap().access_token;
    let ada_user = ada.user.unwrap();
    let org = id(&ada.organization.unwrap().id);
    let dave = email("dave");

    let first = users
        .provision_user(&dave, "Dave", org, Role::Member)
        .await
        .unwrap();
    assert!(first.created_user && first.joined);
    assert_eq!(first.role, Role::Member);
    assert_eq!(first.user.email, dave);
    let again = users
        .provision_user(
            &format!("  {}", dave.to_uppercase()),
            "Dave",
            org,
            Role::Admin,
        )
        .await
        .unwrap();
    assert_eq!(again.user, first.user);
    assert!(!again.created_user && !again.joined);
    assert_eq!(again.role, Role::Member, "the role is not raised");

    // An existing owner keeps their role; owners are not provisioned.
    let owner = users
        .provision_user(&ada_user.email, "", org, Role::Member)
        .await
        .unwrap();
    assert_eq!(owner.role, Role::Owner);
    assert_eq!(owner.user.id, id(&ada_user.id));
    let err = users
        .provision_user(&email("eve"), "", org, Role::Owner)
        .await
        .unwrap_err();
    assert_eq!(code(err), Code::PermissionDenied);
    let err = users
        .provision_user(&email("eve"), "", Uuid::new_v4(), Role::Member)
        .await
        .unwrap_err();
    assert_eq!(code(err), Code::NotFound);

    let members = app
        .sessions()
        .list_members(bearer(
            &ada_token,
            pb::ListMembersRequest {
                organization_id: org.to_string(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .members;
    assert_eq!(members.len(), 2, "{members:?}");
    let users_with_dave = twig_sessions::entity::user::Entity::find()
        .filter(twig_sessions::entity::user::Column::Email.eq(dave.as_str()))
        .count(&app.db)
        .await
        .unwrap();
    assert_eq!(users_with_dave, 1);
    assert_eq!(
        twig_audit::events_with_action(&app.db, "user.provisioned")
            .await
            .unwrap()
            .len(),
        1
    );

    let found = users
        .find_user_by_email(&dave.to_uppercase())
        .await
        .unwrap();
    assert_eq!(found.as_ref(), Some(&first.user));
    assert_eq!(users.find_user(first.user.id).await.unwrap(), found);
    assert_eq!(users.find_user(Uuid::new_v4()).await.unwrap(), None);
    assert_eq!(
        users.find_user_by_email(&email("nobody")).await.unwrap(),
        None
    );

    // A provisioned member may be given a session by another service.
    let issued = issuer
        .issue_session(
            first.user.id,
            org,
            &SessionMethod::Sso(Uuid::new_v4()),
            &SessionClient::default(),
        )
        .await
        .unwrap();
    let verified = app.verify(issued.access_token.expose()).await.unwrap();
    assert_eq!(verified.user_id, first.user.id.to_string());

    // A provisioned user has no password to sign in with.
    let err = app
        .sessions()
        .login(pb::LoginRequest {
            email: dave.clone(),
            password: twig_tests::PASSWORD.into(),
            organization_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    app.stop().await;
}

async fn the_internal_rpcs_need_the_internal_credential(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ada = app.sign_up(&email("ada")).await;
    let token = ada.tokens.unwrap().access_token;
    let user = ada.user.unwrap().id;
    let org = ada.organization.unwrap().id;
    let issue = pb::IssueSessionRequest {
        user_id: user.clone(),
        organization_id: org.clone(),
        method: "oauth:github".into(),
        ip: String::new(),
        user_agent: String::new(),
    };
    let find = pb::FindUserRequest {
        by: Some(pb::find_user_request::By::UserId(user.clone())),
    };
    let provision = pb::ProvisionUserRequest {
        email: email("frank"),
        display_name: String::new(),
        organization_id: org.clone(),
        role: pb::Role::Member as i32,
    };
    let mut sessions = app.sessions();
    for refused in [
        sessions
            .issue_session(issue.clone())
            .await
            .map(|_| ())
            .unwrap_err(),
        sessions
            .issue_session(bearer(&token, issue.clone()))
            .await
            .map(|_| ())
            .unwrap_err(),
        sessions
            .find_user(find.clone())
            .await
            .map(|_| ())
            .unwrap_err(),
        sessions
            .find_user(bearer(&token, find.clone()))
            .await
            .map(|_| ())
            .unwrap_err(),
        sessions
            .provision_user(provision.clone())
            .await
            .map(|_| ())
            .unwrap_err(),
        sessions
            .provision_user(bearer(&token, provision.clone()))
            .await
            .map(|_| ())
            .unwrap_err(),
    ] {
        assert!(
            matches!(
                refused.code(),
                Code::Unauthenticated | Code::PermissionDenied
            ),
            "{refused:?}"
        );
    }
    let none = twig_audit::events_with_action(&app.db, "user.provisioned")
        .await
        .unwrap();
    assert!(none.is_empty(), "a refused call changed nothing");

    // With the credential they answer.
    let tokens = sessions
        .issue_session(app.internal(issue.clone()))
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap();
    let verified = app.verify(&tokens.access_token).await.unwrap();
    assert_eq!(verified.user_id, user);
    let bad_method = sessions
        .issue_session(app.internal(pb::IssueSessionRequest {
            method: "oauth:GitHub".into(),
            ..issue
        }))
        .await
        .unwrap_err();
    assert_eq!(bad_method.code(), Code::InvalidArgument);
    let found = sessions
        .find_user(app.internal(find))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.user.unwrap().id, user);
    let provisioned = sessions
        .provision_user(app.internal(provision))
        .await
        .unwrap()
        .into_inner();
    assert!(provisioned.created_user && provisioned.joined);
    assert_eq!(provisioned.role, pb::Role::Member as i32);
    app.stop().await;
}

on_both_backends!(
    an_sso_session_verifies_and_shows_its_method,
    issuing_is_refused_for_disabled_users_non_members_and_unknown_orgs,
    provisioning_creates_a_member_once_and_never_raises_a_role,
    issuing_over_grpc_is_refused_for_disabled_users_non_members_and_unknown_orgs,
    provisioning_over_grpc_creates_a_member_once_and_never_raises_a_role,
    the_internal_rpcs_need_the_internal_credential,
);
