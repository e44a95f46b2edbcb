//! Service accounts: machine principals that own API keys, so an
//! integration outlives the membership of whoever set it up.

use tonic::Code;
use twig_proto::apikeys::v1 as pb;
use twig_proto::auth::v1 as apb;
use twig_proto::sessions::v1 as spb;
use twig_tests::{Backend, TestApp, bearer, email};

async fn create_account(
    app: &TestApp,
    token: &str,
    name: &str,
) -> Result<pb::ServiceAccount, tonic::Status> {
    app.api_keys()
        .create_service_account(bearer(
            token,
            pb::CreateServiceAccountRequest { name: name.into() },
        ))
        .await
        .map(|r| r.into_inner().service_account.expect("a service account"))
}

async fn create_key(
    app: &TestApp,
    token: &str,
    service_account_id: &str,
    scopes: &[apb::Scope],
) -> Result<pb::CreateApiKeyResponse, tonic::Status> {
    app.api_keys()
        .create_api_key(bearer(
            token,
            pb::CreateApiKeyRequest {
                service_account_id: service_account_id.into(),
                name: "integration".into(),
                scopes: scopes.iter().map(|s| *s as i32).collect(),
                expires_at: None,
            },
        ))
        .await
        .map(|r| r.into_inner())
}

async fn works(app: &TestApp, key: &str) -> Result<(), Code> {
    app.api_keys()
        .verify_api_key(app.internal(pb::VerifyApiKeyRequest {
            key: key.into(),
            required_scope: apb::Scope::Read as i32,
            client_ip: String::new(),
        }))
        .await
        .map(|_| ())
        .map_err(|s| s.code())
}

async fn a_service_account_key_outlives_the_admin_who_made_it(backend: Backend) {
    let app = TestApp::builder(backend).weak_hashing().spawn().await;
    let owner_email = email("sa-owner");
    let org = app.sign_up(&owner_email).await.organization.unwrap().id;
    let owner = app.login(&owner_email).await.access_token;
    let admin_email = email("sa-admin");
    let admin_id = app.sign_up(&admin_email).await.user.unwrap().id;
    app.add_member(&owner, &org, &admin_email, spb::Role::Admin)
        .await;
    let admin = app
        .sessions()
        .login(spb::LoginRequest {
            email: admin_email.clone(),
            password: twig_tests::PASSWORD.into(),
            organization_id: org.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap()
        .access_token;

    // The admin sets up an integration: a service account and its key,
    // and a key of their own.
    let robot = create_account(&app, &admin, "ci robot").await.unwrap();
    assert_eq!(robot.organization_id, org);
    let robot_key = create_key(&app, &admin, &robot.id, &[apb::Scope::Read])
        .await
        .unwrap();
    let shown = robot_key.key.clone().unwrap();
    assert_eq!(shown.owner_kind, pb::OwnerKind::ServiceAccount as i32);
    assert_eq!(shown.service_account_id, robot.id);
    let robot_key = robot_key.secret;
    let own_key = create_key(&app, &admin, "", &[apb::Scope::Read])
        .await
        .unwrap()
        .secret;
    works(&app, &robot_key).await.unwrap();
    works(&app, &own_key).await.unwrap();

    // The key acts as the service account, and says so.
    let principal = app
        .api_keys()
        .verify_api_key(app.internal(pb::VerifyApiKeyRequest {
            key: robot_key.clone(),
            required_scope: 0,
            client_ip: String::new(),
        }))
        .await
        .unwrap()
        .into_inner()
        .principal
        .unwrap();
    assert_eq!(principal.user_id, robot.id);
    let me = app
        .sessions()
        .get_current_user(bearer(&robot_key, spb::GetCurrentUserRequest {}))
        .await
        .unwrap()
        .into_inner();
    let key = me.api_key.unwrap();
    assert_eq!(key.owner_kind, pb::OwnerKind::ServiceAccount as i32);
    assert!(me.user.is_none() && me.memberships.is_empty());

    // The admin leaves the organisation: their own key dies with the
    // membership; the service account's key carries on.
    app.sessions()
        .remove_member(bearer(
            &owner,
            spb::RemoveMemberRequest {
                organization_id: org.clone(),
                user_id: admin_id,
            },
        ))
        .await
        .unwrap();
    assert_eq!(works(&app, &own_key).await, Err(Code::Unauthenticated));
    works(&app, &robot_key).await.unwrap();

    // Deleting the service account revokes its keys.
    let listed = app
        .api_keys()
        .list_service_accounts(bearer(&owner, pb::ListServiceAccountsRequest {}))
        .await
        .unwrap()
        .into_inner()
        .service_accounts;
    assert_eq!(listed.len(), 1);
    let revoked = app
        .api_keys()
        .delete_service_account(bearer(
            &owner,
            pb::DeleteServiceAccountRequest {
                service_account_id: robot.id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .keys_revoked;
    assert_eq!(revoked, 1);
    assert_eq!(works(&app, &robot_key).await, Err(Code::Unauthenticated));
    let events = twig_audit::events_with_action(&app.db, "service_account.deleted")
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].org_id.map(|o| o.to_string()), Some(org));
}

async fn only_admins_manage_service_accounts_of_their_own_organisation(backend: Backend) {
    let app = TestApp::builder(backend).weak_hashing().spawn().await;
    let owner_email = email("sa-owner");
    let org = app.sign_up(&owner_email).await.organization.unwrap().id;
    let owner = app.login(&owner_email).await.access_token;
    let member_email = email("sa-member");
    app.sign_up(&member_email).await;
    app.add_member(&owner, &org, &member_email, spb::Role::Member)
        .await;
    let member = app
        .sessions()
        .login(spb::LoginRequest {
            email: member_email,
            password: twig_tests::PASSWORD.into(),
            organization_id: org.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap()
        .access_token;
    let robot = create_account(&app, &owner, "robot").await.unwrap();

    let refused = create_account(&app, &member, "mine").await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let refused = create_key(&app, &member, &robot.id, &[apb::Scope::Read])
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);

    // Another organisation's service account is not found.
    let stranger_email = email("sa-stranger");
    app.sign_up(&stranger_email).await;
    let stranger = app.login(&stranger_email).await.access_token;
    let hidden = create_key(&app, &stranger, &robot.id, &[apb::Scope::Read])
        .await
        .unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound);
    let hidden = app
        .api_keys()
        .delete_service_account(bearer(
            &stranger,
            pb::DeleteServiceAccountRequest {
                service_account_id: robot.id.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound);

    // Bad input: an empty name, an id that is no UUID.
    let bad = create_account(&app, &owner, "  ").await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    let bad = create_key(&app, &owner, "robot", &[apb::Scope::Read])
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
}

on_both_backends!(
    a_service_account_key_outlives_the_admin_who_made_it,
    only_admins_manage_service_accounts_of_their_own_organisation,
);
