//! Mail about the account itself: a new sign-in (when the person asked
//! for it) and a changed password.

use tonic::Code;
use twig_proto::sessions::v1 as pb;
use twig_tests::{Backend, PASSWORD, TestApp, bearer, email};

async fn new_sign_ins_are_mailed_only_when_asked_for(backend: Backend) {
    let app = TestApp::builder(backend).weak_hashing().spawn().await;
    let who = email("notify");
    app.sign_up(&who).await;
    let token = app.login(&who).await.access_token;
    let login_from = |ip: &'static str| {
        let who = who.clone();
        let app = &app;
        async move {
            app.sessions_from(ip)
                .await
                .login(pb::LoginRequest {
                    email: who,
                    password: PASSWORD.into(),
                    organization_id: String::new(),
                })
                .await
                .unwrap();
        }
    };
    // Off by default: a sign-in sends nothing.
    login_from("127.0.0.7").await;
    app.mailer.flush().await;
    let before = app.mail_count_to(&who, 0).await.len();
    assert!(
        !app.mail_count_to(&who, 0)
            .await
            .iter()
            .any(|m| m.subject.contains("new sign-in")),
        "no sign-in mail unless asked for"
    );

    let updated = app
        .sessions()
        .update_current_user(bearer(
            &token,
            pb::UpdateCurrentUserRequest {
                display_name: Some("Ada L.".into()),
                notify_new_sign_in: Some(true),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert!(updated.notify_new_sign_in);
    assert_eq!(updated.display_name, "Ada L.");

    login_from("127.0.0.9").await;
    let mail = app.mail_count_to(&who, before + 1).await;
    let note = mail
        .iter()
        .find(|m| m.subject.contains("new sign-in"))
        .expect("a new sign-in mail");
    assert!(note.text.contains("127.0.0.9"), "{}", note.text);
    assert!(note.html.contains("127.0.0.9"));

    // Bad input changes nothing.
    let bad = app
        .sessions()
        .update_current_user(bearer(
            &token,
            pb::UpdateCurrentUserRequest {
                display_name: Some("   ".into()),
                notify_new_sign_in: Some(false),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    let me = app
        .sessions()
        .get_current_user(bearer(&token, pb::GetCurrentUserRequest {}))
        .await
        .unwrap()
        .into_inner()
        .user
        .unwrap();
    assert!(me.notify_new_sign_in, "the refused call changed nothing");
    assert_eq!(me.display_name, "Ada L.");
}

on_both_backends!(new_sign_ins_are_mailed_only_when_asked_for);
