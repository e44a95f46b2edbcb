//! Sessions: the everyday flows and who may do what.

use tonic::Code;
use twig_proto::sessions::v1 as pb;
use twig_tests::{Backend, PASSWORD, TestApp, bearer, email};

async fn sign_up_login_verify_refresh_logout(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let ada = email("ada");
    // The way a person signs up: SignUp, then the mailed link.
    let signed_up = app.sign_up_by_mail(&ada).await;
    let user = signed_up.user.unwrap();
    let org = signed_up.organization.unwrap();
    assert_eq!(user.email, ada);
    assert!(user.email_verified, "the link proved the address");
    app.verify(&signed_up.tokens.unwrap().access_token)
        .await
        .expect("the sign-up's first session");

    let tokens = app.login(&ada).await;
    assert!(tokens.access_token.starts_with("twig_st_"));
    assert!(tokens.refresh_token.starts_with("twig_rt_"));

    let verified = app.verify(&tokens.access_token).await.unwrap();
    assert_eq!(verified.user_id, user.id);
    assert_eq!(verified.organization_id, org.id);
    assert_eq!(verified.roles, vec!["owner".to_string()]);
    assert_eq!(
        verified.credential,
        Some(twig_proto::auth::v1::principal::Credential::SessionId(
            tokens.session_id.clone()
        ))
    );

    let me = app
        .sessions()
        .get_current_user(bearer(&tokens.access_token, pb::GetCurrentUserRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(me.user.unwrap().id, user.id);
    assert_eq!(me.memberships.len(), 1);

    let refreshed = app
        .sessions()
        .refresh(pb::RefreshRequest {
            refresh_token: tokens.refresh_token.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap();
    assert_ne!(refreshed.access_token, tokens.access_token);
    assert_ne!(refreshed.refresh_token, tokens.refresh_token);
    assert_eq!(refreshed.session_id, tokens.session_id);
    // The access token the refresh replaced is dead.
    assert_eq!(
        app.verify(&tokens.access_token).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    app.verify(&refreshed.access_token).await.unwrap();

    app.sessions()
        .logout(bearer(&refreshed.access_token, pb::LogoutRequest {}))
        .await
        .unwrap();
    assert_eq!(
        app.verify(&refreshed.access_token)
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    let after = app
        .sessions()
        .refresh(pb::RefreshRequest {
            refresh_token: refreshed.refresh_token,
        })
        .await
        .unwrap_err();
    assert_eq!(after.code(), Code::Unauthenticated);
    let audit: Vec<_> = twig_audit::all_events(&app.db)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.action, e.outcome))
        .collect();
    for wanted in [
        "user.sign_up_started",
        "user.signed_up",
        "session.login",
        "session.logout",
    ] {
        assert!(
            audit.iter().any(|(a, o)| a == wanted && o == "success"),
            "{wanted}: {audit:?}"
        );
    }
}

async fn sign_up_refuses_bad_input_and_duplicates(backend: Backend) {
    let app = TestApp::builder(backend).weak_hashing().spawn().await;
    let mut client = app.sessions();
    let cases = [
        ("not-an-email", PASSWORD, "email"),
        ("ok@example.com", "short", "password"),
    ];
    for (mail, password, field) in cases {
        let err = client
            .sign_up(pb::SignUpRequest {
                email: mail.into(),
                password: password.into(),
                display_name: String::new(),
                organization_name: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        use tonic_types::StatusExt;
        let details = err.get_error_details();
        let bad = details.bad_request().expect("field violations");
        assert_eq!(bad.field_violations[0].field, field);
    }
    // A duplicate makes no second account, and says so only to the
    // mailbox: the caller gets the answer of any sign-up (answering
    // ALREADY_EXISTS told anyone which emails have accounts).
    let ada = email("ada");
    app.sign_up(&ada).await;
    let dup = client
        .sign_up(pb::SignUpRequest {
            email: ada.to_uppercase(),
            password: PASSWORD.into(),
            display_name: String::new(),
            organization_name: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(dup, pb::SignUpResponse {});
    let mail = app.mail_to(&ada).await;
    assert_eq!(mail.len(), 1, "{mail:?}");
    assert!(mail[0].subject.contains("You already have"), "{mail:?}");
    assert!(
        mail[0].links.iter().all(|l| !l.contains("token=")),
        "no link that would make an account: {:?}",
        mail[0].links
    );
}

async fn sessions_are_listed_and_revoked_one_by_one(backend: Backend) {
    let app = TestApp::builder(backend).weak_hashing().spawn().await;
    let ada = email("ada");
    app.sign_up(&ada).await;
    let a = app.login(&ada).await;
    let b = app.login(&ada).await;
    let list = app
        .sessions()
        .list_sessions(bearer(&a.access_token, pb::ListSessionsRequest {}))
        .await
        .unwrap()
        .into_inner()
        .sessions;
    assert_eq!(list.len(), 3, "sign-up, a and b");
    assert_eq!(list.iter().filter(|s| s.current).count(), 1);
    assert!(list.iter().all(|s| s.ip == "127.0.0.1"));
    assert!(
        list.iter().all(|s| s.user_agent.contains("tonic")),
        "{list:?}"
    );

    // Using a session moves its "last seen" time, in the listing at once
    // and in the database at the next batch flush.
    app.clock.advance(std::time::Duration::from_secs(300));
    app.verify(&a.access_token).await.unwrap();
    let listed = app
        .sessions()
        .list_sessions(bearer(&b.access_token, pb::ListSessionsRequest {}))
        .await
        .unwrap()
        .into_inner()
        .sessions;
    let seen = |id: &str| {
        let s = listed.iter().find(|s| s.id == id).unwrap();
        s.last_seen_at.unwrap().seconds - s.created_at.unwrap().seconds
    };
    assert!(
        (299..=301).contains(&seen(&a.session_id)),
        "a was used 300 s after login"
    );
    assert!(seen(&b.session_id) >= 299, "b is listing right now");
    let flushed = app.sessions_service.flush_last_seen().await.unwrap();
    assert!(flushed >= 2);
    use sea_orm::EntityTrait;
    let row = twig_sessions::entity::session::Entity::find_by_id(
        uuid::Uuid::parse_str(&a.session_id).unwrap(),
    )
    .one(&app.db)
    .await
    .unwrap()
    .unwrap();
    assert_eq!((row.last_seen_at - row.created_at).num_seconds(), 300);

    app.sessions()
        .revoke_session(bearer(
            &a.access_token,
            pb::RevokeSessionRequest {
                session_id: b.session_id.clone(),
            },
        ))
        .await
        .unwrap();
    assert_eq!(
        app.verify(&b.access_token).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    app.verify(&a.access_token).await.unwrap();

    // Someone else's session is not found, and stays alive.
    let eve = email("eve");
    app.sign_up(&eve).await;
    let e = app.login(&eve).await;
    let err = app
        .sessions()
        .revoke_session(bearer(
            &a.access_token,
            pb::RevokeSessionRequest {
                session_id: e.session_id.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    app.verify(&e.access_token).await.unwrap();
}

async fn logout_everywhere_and_password_change_end_sessions(backend: Backend) {
    let app = TestApp::builder(backend).weak_hashing().spawn().await;
    let ada = email("ada");
    app.sign_up(&ada).await;
    let a = app.login(&ada).await;
    let b = app.login(&ada).await;
    let c = app.login(&ada).await;

    let changed = app
        .sessions()
        .change_password(bearer(
            &a.access_token,
            pb::ChangePasswordRequest {
                current_password: PASSWORD.into(),
                new_password: "another long passphrase".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(changed.other_sessions_ended, 3, "sign-up session, b and c");
    app.verify(&a.access_token).await.unwrap();
    for t in [&b, &c] {
        assert_eq!(
            app.verify(&t.access_token).await.unwrap_err().code(),
            Code::Unauthenticated
        );
    }
    // Old password no longer works; the new one does.
    let old = app
        .sessions()
        .login(pb::LoginRequest {
            email: ada.clone(),
            password: PASSWORD.into(),
            organization_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(old.code(), Code::Unauthenticated);
    let d = app
        .sessions()
        .login(pb::LoginRequest {
            email: ada.clone(),
            password: "another long passphrase".into(),
            organization_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .tokens
        .unwrap();

    let wrong = app
        .sessions()
        .change_password(bearer(
            &a.access_token,
            pb::ChangePasswordRequest {
                current_password: "not the password at all".into(),
                new_password: "yet another passphrase".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::InvalidArgument);

    let ended = app
        .sessions()
        .logout_everywhere(bearer(&d.access_token, pb::LogoutEverywhereRequest {}))
        .await
        .unwrap()
        .into_inner()
        .sessions_ended;
    assert_eq!(ended, 2, "a and d");
    for t in [&a, &d] {
        assert_eq!(
            app.verify(&t.access_token).await.unwrap_err().code(),
            Code::Unauthenticated
        );
    }
    let events = twig_audit::events_with_action(&app.db, "user.password_changed")
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
}

async fn members_roles_and_org_scoping(backend: Backend) {
    let app = TestApp::builder(backend).weak_hashing().spawn().await;
    let owner_email = email("owner");
    let org = app.sign_up(&owner_email).await.organization.unwrap();
    let owner = app.login(&owner_email).await;
    let bob_email = email("bob");
    let bob_signed_up = app.sign_up(&bob_email).await;
    let bob_org = bob_signed_up.organization.unwrap();
    let bob_home = bob_signed_up.tokens.unwrap().access_token;

    let add = |token: String, org_id: String, mail: String, role: pb::Role| {
        let app = &app;
        async move { app.invite(&token, &org_id, &mail, role).await }
    };
    app.add_member(&owner.access_token, &org.id, &bob_email, pb::Role::Member)
        .await;
    // Bob is a member now: inviting him again is refused.
    let again = add(
        owner.access_token.clone(),
        org.id.clone(),
        bob_email.clone(),
        pb::Role::Member,
    )
    .await
    .unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists);

    // Bob signs in to the owner's organisation as a member.
    let bob = app
        .sessions()
        .login(pb::LoginRequest {
            email: bob_email.clone(),
            password: PASSWORD.into(),
            organization_id: org.id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(bob.organization_id, org.id);
    let bob = bob.tokens.unwrap();
    assert_eq!(
        app.verify(&bob.access_token).await.unwrap().roles,
        vec!["member".to_string()]
    );

    // A member may not invite members.
    let carol = email("carol");
    app.sign_up(&carol).await;
    let denied = add(
        bob.access_token.clone(),
        org.id.clone(),
        carol.clone(),
        pb::Role::Member,
    )
    .await
    .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);

    // Another organisation's members are not revealed.
    let hidden = app
        .sessions()
        .list_members(bearer(
            &owner.access_token,
            pb::ListMembersRequest {
                organization_id: bob_org.id.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound);
    let members = app
        .sessions()
        .list_members(bearer(
            &bob.access_token,
            pb::ListMembersRequest {
                organization_id: org.id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .members;
    assert_eq!(members.len(), 2);

    // An owner cannot disable bob's account: that is for platform
    // operators (an internal RPC); bob's sessions live on.
    let bob_id = members
        .iter()
        .find(|m| m.role == pb::Role::Member as i32)
        .unwrap()
        .user
        .clone()
        .unwrap()
        .id;
    assert_eq!(
        members.iter().map(|m| m.status).collect::<Vec<_>>(),
        vec![pb::MembershipStatus::Active as i32; 2]
    );
    let refused = app
        .sessions()
        .set_user_disabled(bearer(
            &owner.access_token,
            pb::SetUserDisabledRequest {
                user_id: bob_id.clone(),
                disabled: true,
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    app.verify(&bob.access_token).await.unwrap();
    app.verify(&bob_home).await.unwrap();

    // Suspending bob here ends his session here only; he cannot sign in
    // here until reinstated, and signs in at home all along.
    let suspended = app
        .sessions()
        .suspend_member(bearer(
            &owner.access_token,
            pb::SuspendMemberRequest {
                organization_id: org.id.clone(),
                user_id: bob_id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        suspended.sessions_ended, 1,
        "bob's session in this org, not his sign-up session at home"
    );
    assert_eq!(
        app.verify(&bob.access_token).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    app.verify(&bob_home).await.unwrap();
    let login_here = |org_id: String| {
        let mut client = app.sessions();
        let bob_email = bob_email.clone();
        async move {
            client
                .login(pb::LoginRequest {
                    email: bob_email,
                    password: PASSWORD.into(),
                    organization_id: org_id,
                })
                .await
        }
    };
    assert_eq!(
        login_here(org.id.clone()).await.unwrap_err().code(),
        Code::NotFound
    );
    login_here(bob_org.id.clone()).await.unwrap();
    app.sessions()
        .reinstate_member(bearer(
            &owner.access_token,
            pb::ReinstateMemberRequest {
                organization_id: org.id.clone(),
                user_id: bob_id,
            },
        ))
        .await
        .unwrap();
    let back = login_here(org.id.clone()).await.unwrap().into_inner();
    assert_eq!(back.organization_id, org.id);
}

async fn protected_calls_need_a_valid_bearer(backend: Backend) {
    let app = TestApp::builder(backend).weak_hashing().spawn().await;
    let mut client = app.sessions();
    let none = client
        .get_current_user(pb::GetCurrentUserRequest {})
        .await
        .unwrap_err();
    assert_eq!(none.code(), Code::Unauthenticated);
    let garbage = client
        .get_current_user(bearer("twig_st_garbage", pb::GetCurrentUserRequest {}))
        .await
        .unwrap_err();
    assert_eq!(garbage.code(), Code::Unauthenticated);
    let mut basic = tonic::Request::new(pb::GetCurrentUserRequest {});
    basic
        .metadata_mut()
        .insert("authorization", "Basic YWRhOnB3".parse().unwrap());
    assert_eq!(
        client.get_current_user(basic).await.unwrap_err().code(),
        Code::Unauthenticated
    );

    // VerifySession is internal: a valid token without the service credential is refused.
    let ada = email("ada");
    app.sign_up(&ada).await;
    let t = app.login(&ada).await;
    let outside = client
        .verify_session(pb::VerifySessionRequest {
            access_token: t.access_token.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(outside.code(), Code::PermissionDenied);
    let mut wrong = tonic::Request::new(pb::VerifySessionRequest {
        access_token: t.access_token.clone(),
    });
    wrong
        .metadata_mut()
        .insert("x-twig-internal-token", "internal-guess".parse().unwrap());
    assert_eq!(
        client.verify_session(wrong).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    // Even with a bearer token of a signed-in user.
    let as_user = client
        .verify_session(bearer(
            &t.access_token,
            pb::VerifySessionRequest {
                access_token: t.access_token.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(as_user.code(), Code::PermissionDenied);
}

on_both_backends!(
    sign_up_login_verify_refresh_logout,
    sign_up_refuses_bad_input_and_duplicates,
    sessions_are_listed_and_revoked_one_by_one,
    logout_everywhere_and_password_change_end_sessions,
    members_roles_and_org_scoping,
    protected_calls_need_a_valid_bearer,
);
