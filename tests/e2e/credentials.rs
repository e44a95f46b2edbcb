//! A credential is its exact bytes, everywhere: `Authorize`,
//! `VerifyApiKey`, `VerifySession` and the auth layer's `authorization`
//! header all refuse a real token with anything around it.

use tonic::Code;
use tonic::metadata::MetadataValue;
use twig_proto::apikeys::v1 as kpb;
use twig_proto::auth::v1 as apb;
use twig_proto::edge::v1 as pb;
use twig_proto::edge::v1::authorize_request::Target;
use twig_proto::edge::v1::authorize_service_client::AuthorizeServiceClient;
use twig_proto::sessions::v1 as spb;
use twig_tests::{Backend, TestApp, bearer, email, http1};

/// What clients have put around a real token.
const DECORATIONS: [(&str, &str); 11] = [
    ("", "\n"),
    ("", "\r\n"),
    ("", " "),
    (" ", ""),
    ("", "\t"),
    ("", "\u{a0}"),
    ("", "\u{3000}"),
    ("", "\u{2028}"),
    ("\u{feff}", ""),
    ("", "\u{200b}"),
    ("Bearer ", ""),
];

async fn authorize(app: &TestApp, credential: &str) -> pb::AuthorizeResponse {
    AuthorizeServiceClient::new(app.channel.clone())
        .authorize(app.internal(pb::AuthorizeRequest {
            credential: credential.into(),
            target: Some(Target::Method(
                "/twig.sessions.v1.SessionService/GetCurrentUser".into(),
            )),
            client_ip: "203.0.113.9".into(),
            cost: 1,
        }))
        .await
        .expect("a refusal is an answer, not an error")
        .into_inner()
}

async fn verify_key(app: &TestApp, key: &str) -> Result<kpb::VerifyApiKeyResponse, tonic::Status> {
    app.api_keys()
        .verify_api_key(app.internal(kpb::VerifyApiKeyRequest {
            key: key.into(),
            required_scope: apb::Scope::Unspecified as i32,
            client_ip: String::new(),
        }))
        .await
        .map(|r| r.into_inner())
}

/// `GetCurrentUser` with `value` as the whole `authorization` header.
async fn current_user_with_header(app: &TestApp, values: &[&str]) -> Result<(), tonic::Status> {
    let mut request = tonic::Request::new(spb::GetCurrentUserRequest {});
    for value in values {
        let value: MetadataValue<_> = value.parse().expect("a header value");
        request.metadata_mut().append("authorization", value);
    }
    app.sessions().get_current_user(request).await.map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decorated_credentials_are_refused_everywhere() {
    let app = TestApp::builder(Backend::Sqlite)
        .weak_hashing()
        .spawn()
        .await;
    let signed_up = app.sign_up(&email("exact")).await;
    let session = signed_up.tokens.unwrap().access_token;
    let key = app
        .api_keys()
        .create_api_key(bearer(
            &session,
            kpb::CreateApiKeyRequest {
                service_account_id: String::new(),
                name: "agent".into(),
                scopes: vec![apb::Scope::Read as i32],
                expires_at: None,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .secret;

    // The exact tokens are good on every path.
    for token in [&key, &session] {
        assert!(authorize(&app, token).await.allowed, "{token}");
    }
    verify_key(&app, &key).await.expect("the key verifies");
    app.verify(&session).await.expect("the session verifies");

    for (before, after) in DECORATIONS {
        let decorated_key = format!("{before}{key}{after}");
        let decorated_session = format!("{before}{session}{after}");
        for token in [&decorated_key, &decorated_session] {
            let answer = authorize(&app, token).await;
            assert!(!answer.allowed, "Authorize took {token:?}");
            assert_eq!(
                answer.denial,
                pb::Denial::Unauthenticated as i32,
                "{token:?}"
            );
            assert!(answer.principal.is_none());
        }
        let by_key = verify_key(&app, &decorated_key).await.unwrap_err();
        assert_eq!(by_key.code(), Code::Unauthenticated, "{decorated_key:?}");
        let by_session = app.verify(&decorated_session).await.unwrap_err();
        assert_eq!(
            by_session.code(),
            Code::Unauthenticated,
            "{decorated_session:?}"
        );
    }

    // The bearer header: the scheme, one space, the token, nothing else
    // (what HTTP/2 carries as it is; HTTP/1.1 drops surrounding blanks
    // before any code sees the header).
    current_user_with_header(&app, &[&format!("Bearer {session}")])
        .await
        .expect("the exact header is good");
    current_user_with_header(&app, &[&format!("bearer {key}")])
        .await
        .expect("the scheme in any case");
    for bad in [
        format!("Bearer {session} "),
        format!("Bearer  {session}"),
        format!("Bearer {session}\t"),
        format!("Bearer\t{session}"),
        format!("Bearer {key} x"),
        session.clone(),
    ] {
        let refused = current_user_with_header(&app, &[&bad]).await.unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated, "{bad:?}");
    }

    // Two authorization headers are refused, not resolved by taking one,
    // whether or not they agree.
    for pair in [
        [
            format!("Bearer {session}"),
            "Bearer twig_st_forged".to_string(),
        ],
        [format!("Bearer {session}"), format!("Bearer {session}")],
    ] {
        let refused = current_user_with_header(&app, &[&pair[0], &pair[1]])
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated);
        assert!(
            refused
                .message()
                .contains("more than one authorization header"),
            "{refused:?}"
        );
    }

    // The same over HTTP/JSON: one header is good, two are a 401.
    let me = |headers: String| format!("GET /v1/me HTTP/1.1{headers}");
    let (status, _, _) = http1(
        app.addr,
        &me(format!("\r\nAuthorization: Bearer {session}")),
        b"",
    )
    .await;
    assert!(status.contains(" 200"), "{status}");
    let (status, _, body) = http1(
        app.addr,
        &me(format!(
            "\r\nAuthorization: Bearer {session}\r\nAuthorization: Bearer {session}"
        )),
        b"",
    )
    .await;
    assert!(status.contains(" 401"), "{status}");
    assert!(
        String::from_utf8_lossy(&body).contains("more than one authorization header"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    app.stop().await;
}
