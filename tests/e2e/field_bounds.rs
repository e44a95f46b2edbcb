//! Request fields have bounds (`twig_errors::fields`): names without
//! invisible characters (bidi overrides, zero-width, control), bounded in
//! characters and NFC-normalised; repeated fields with each value once;
//! expiries within ten years. Each bad field is refused with
//! INVALID_ARGUMENT naming it, and nothing is written; the good values
//! next to them are accepted and stored normalised.

use std::future::Future;
use std::pin::Pin;

use sea_orm::{ConnectionTrait, EntityTrait, Statement};
use tonic::{Code, Status};
use tonic_types::StatusExt;
use twig_proto::apikeys::v1 as kpb;
use twig_proto::audit::v1 as apb;
use twig_proto::auth::v1 as wpb;
use twig_proto::quota::v1 as qpb;
use twig_proto::sessions::v1 as spb;
use twig_proto::vault::v1 as vpb;
use twig_tests::{Backend, PASSWORD, TestApp, bearer, email};

type Call = Pin<Box<dyn Future<Output = Result<(), Status>> + Send>>;

/// One bad request: what it is, the field it must be refused for, and
/// the call.
struct Case {
    what: &'static str,
    field: &'static str,
    call: Call,
}

fn case<T: Send + 'static>(
    what: &'static str,
    field: &'static str,
    call: impl Future<Output = Result<T, Status>> + Send + 'static,
) -> Case {
    Case {
        what,
        field,
        call: Box::pin(async move { call.await.map(|_| ()) }),
    }
}

const TABLES: [&str; 12] = [
    "users",
    "organizations",
    "memberships",
    "email_links",
    "invitations",
    "sessions",
    "api_keys",
    "api_key_secrets",
    "org_ip_allowlists",
    "quota_limits",
    "vault_secrets",
    "audit_events",
];

/// Rows per table.
async fn rows(app: &TestApp) -> Vec<(&'static str, i64)> {
    let backend = app.db.get_database_backend();
    let mut out = Vec::new();
    for table in TABLES {
        let row = app
            .db
            .query_one_raw(Statement::from_string(
                backend,
                format!("SELECT COUNT(*) AS n FROM {table}"),
            ))
            .await
            .unwrap()
            .unwrap();
        out.push((table, row.try_get::<i64>("", "n").unwrap()));
    }
    out
}

fn sign_up(name: &str, org: &str) -> spb::SignUpRequest {
    spb::SignUpRequest {
        email: email("bounds"),
        password: PASSWORD.into(),
        display_name: name.into(),
        organization_name: org.into(),
    }
}

fn create_key(
    name: &str,
    scopes: Vec<i32>,
    expires_in_days: Option<i64>,
) -> kpb::CreateApiKeyRequest {
    kpb::CreateApiKeyRequest {
        service_account_id: String::new(),
        name: name.into(),
        scopes,
        expires_at: expires_in_days.map(|days| prost_types::Timestamp {
            seconds: twig_clock::Clock::now(&twig_clock::SystemClock).timestamp() + days * 86_400,
            nanos: 0,
        }),
    }
}

fn seal(org: &str, purpose: &str, record_id: &str) -> vpb::SealRequest {
    vpb::SealRequest {
        context: Some(vpb::SealContext {
            organization_id: org.into(),
            purpose: purpose.into(),
            record_id: record_id.into(),
        }),
        plaintext: b"x".to_vec().into(),
    }
}

async fn each_bad_field_is_refused_by_name_and_nothing_is_written(backend: Backend) {
    let app = TestApp::builder(backend).weak_hashing().spawn().await;
    let signed = app.sign_up(&email("owner")).await;
    let owner = signed.tokens.unwrap().access_token;
    let org = signed.organization.unwrap().id;
    let key_id = app
        .api_keys()
        .create_api_key(bearer(
            &owner,
            create_key("existing", vec![wpb::Scope::Read as i32], None),
        ))
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap()
        .id;
    let (sessions, keys, quota, vault, audit) = (
        app.sessions(),
        app.api_keys(),
        app.quota(),
        app.vault(),
        app.audit(),
    );
    let read = wpb::Scope::Read as i32;
    let long = |n: usize| "x".repeat(n);
    let cases = vec![
        // sessions
        case("bidi override in a display name", "display_name", {
            let mut c = sessions.clone();
            async move { c.sign_up(sign_up("evil\u{202E}gpj.exe", "")).await }
        }),
        case("zero-width space in a display name", "display_name", {
            let mut c = sessions.clone();
            async move { c.sign_up(sign_up("zero\u{200B}width", "")).await }
        }),
        case("display name of 201 characters", "display_name", {
            let mut c = sessions.clone();
            async move { c.sign_up(sign_up(&"é".repeat(201), "")).await }
        }),
        case(
            "bidi override in an organisation name",
            "organization_name",
            {
                let mut c = sessions.clone();
                async move { c.sign_up(sign_up("", "Acme\u{202E}cipher")).await }
            },
        ),
        case(
            "bidi isolate in an organisation name",
            "organization_name",
            {
                let mut c = sessions.clone();
                async move { c.sign_up(sign_up("", "Acme\u{2067}x")).await }
            },
        ),
        case(
            "control character in an organisation name",
            "organization_name",
            {
                let mut c = sessions.clone();
                async move { c.sign_up(sign_up("", "Acme\u{7}")).await }
            },
        ),
        case("right-to-left mark in an email", "email", {
            let mut c = sessions.clone();
            async move {
                let mut r = sign_up("", "");
                r.email = "ada\u{200F}@example.com".into();
                c.sign_up(r).await
            }
        }),
        case("bidi override in an invited email", "email", {
            let (mut c, owner, org) = (sessions.clone(), owner.clone(), org.clone());
            async move {
                c.create_invitation(bearer(
                    &owner,
                    spb::CreateInvitationRequest {
                        organization_id: org,
                        email: "ada\u{202E}moc@example.com".into(),
                        role: spb::Role::Member as i32,
                    },
                ))
                .await
            }
        }),
        case(
            "bidi override in an operator-made account's display name",
            "display_name",
            {
                let mut c = sessions.clone();
                async move {
                    c.create_account(twig_tests::with_internal_token(
                        twig_tests::TEST_OPERATOR_TOKEN,
                        spb::CreateAccountRequest {
                            email: email("bounds"),
                            password: PASSWORD.into(),
                            display_name: "evil\u{202E}gpj.exe".into(),
                            organization_name: String::new(),
                        },
                    ))
                    .await
                }
            },
        ),
        // api-keys
        case("a scope repeated 1,000 times", "scopes", {
            let (mut c, owner) = (keys.clone(), owner.clone());
            async move {
                c.create_api_key(bearer(&owner, create_key("k", vec![read; 1000], None)))
                    .await
            }
        }),
        case("a scope twice", "scopes", {
            let (mut c, owner) = (keys.clone(), owner.clone());
            async move {
                c.create_api_key(bearer(&owner, create_key("k", vec![read, read], None)))
                    .await
            }
        }),
        case("an expiry in the year 9999", "expires_at", {
            let (mut c, owner) = (keys.clone(), owner.clone());
            async move {
                let mut r = create_key("k", vec![read], None);
                r.expires_at = Some(prost_types::Timestamp {
                    seconds: 253_402_300_799, // 9999-12-31T23:59:59Z
                    nanos: 0,
                });
                c.create_api_key(bearer(&owner, r)).await
            }
        }),
        case("an expiry 11 years ahead", "expires_at", {
            let (mut c, owner) = (keys.clone(), owner.clone());
            async move {
                c.create_api_key(bearer(&owner, create_key("k", vec![read], Some(11 * 366))))
                    .await
            }
        }),
        case("an expiry in the past", "expires_at", {
            let (mut c, owner) = (keys.clone(), owner.clone());
            async move {
                c.create_api_key(bearer(&owner, create_key("k", vec![read], Some(-1))))
                    .await
            }
        }),
        case("bidi override in a key name", "name", {
            let (mut c, owner) = (keys.clone(), owner.clone());
            async move {
                c.create_api_key(bearer(
                    &owner,
                    create_key("ci\u{202E}dorp", vec![read], None),
                ))
                .await
            }
        }),
        case("key name of 101 characters", "name", {
            let (mut c, owner) = (keys.clone(), owner.clone());
            async move {
                c.create_api_key(bearer(&owner, create_key(&long(101), vec![read], None)))
                    .await
            }
        }),
        case("a key renamed with a bidi isolate", "name", {
            let (mut c, owner, key_id) = (keys.clone(), owner.clone(), key_id.clone());
            async move {
                c.update_api_key(bearer(
                    &owner,
                    kpb::UpdateApiKeyRequest {
                        key_id,
                        name: Some("renamed\u{2066}".into()),
                        scopes: Vec::new(),
                        allowed_cidrs: None,
                    },
                ))
                .await
            }
        }),
        case("a key narrowed to a scope twice", "scopes", {
            let (mut c, owner, key_id) = (keys.clone(), owner.clone(), key_id.clone());
            async move {
                c.update_api_key(bearer(
                    &owner,
                    kpb::UpdateApiKeyRequest {
                        key_id,
                        name: None,
                        scopes: vec![read, read],
                        allowed_cidrs: None,
                    },
                ))
                .await
            }
        }),
        case("an allowlist of 101 networks", "cidrs", {
            let (mut c, owner) = (keys.clone(), owner.clone());
            async move {
                let cidrs = (0..101).map(|i| format!("10.0.{i}.0/24")).collect();
                c.set_org_allowlist(bearer(
                    &owner,
                    kpb::SetOrgAllowlistRequest {
                        allowlist: Some(kpb::CidrList { cidrs }),
                    },
                ))
                .await
            }
        }),
        case("a rotation overlap of 8 days", "overlap_seconds", {
            let (mut c, owner, key_id) = (keys.clone(), owner.clone(), key_id.clone());
            async move {
                c.rotate_api_key(bearer(
                    &owner,
                    kpb::RotateApiKeyRequest {
                        key_id,
                        overlap_seconds: 8 * 86_400,
                    },
                ))
                .await
            }
        }),
        // quota
        case("bidi override in a checked subject", "subject", {
            let (mut c, token) = (quota.clone(), app.internal_token.clone());
            async move {
                c.check(twig_tests::with_internal_token(
                    &token,
                    qpb::CheckRequest {
                        subject: "custom:tenant\u{202E}a".into(),
                        cost: 1,
                        org_id: String::new(),
                    },
                ))
                .await
            }
        }),
        case("zero-width space in a limit's subject", "subject", {
            let (mut c, owner, org) = (quota.clone(), owner.clone(), org.clone());
            async move {
                c.set_limit(bearer(
                    &owner,
                    qpb::SetLimitRequest {
                        limit: Some(qpb::Limit {
                            subject: format!("org:\u{200B}{org}"),
                            limit: 10,
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
        }),
        // vault
        case("bidi override in a provider key name", "name", {
            let (mut c, owner) = (vault.clone(), owner.clone());
            async move {
                c.add_provider_key(bearer(
                    &owner,
                    vpb::AddProviderKeyRequest {
                        provider: "openai".into(),
                        name: "prod\u{202E}".into(),
                        value: "sk-proj-abcdefghijklmnopqrstuvwxyz".into(),
                    },
                ))
                .await
            }
        }),
        case("zero-width space in a custom provider value", "value", {
            let (mut c, owner) = (vault.clone(), owner.clone());
            async move {
                c.add_provider_key(bearer(
                    &owner,
                    vpb::AddProviderKeyRequest {
                        provider: "custom:llm".into(),
                        name: "llm".into(),
                        value: "secret\u{200B}value".into(),
                    },
                ))
                .await
            }
        }),
        case("bidi override in a transit purpose", "context.purpose", {
            let (mut c, token, org) = (vault.clone(), app.internal_token.clone(), org.clone());
            async move {
                c.seal(twig_tests::with_internal_token(
                    &token,
                    seal(&org, "notes\u{202E}", "r1"),
                ))
                .await
            }
        }),
        case(
            "transit record id of 201 characters",
            "context.record_id",
            {
                let (mut c, token, org) = (vault.clone(), app.internal_token.clone(), org.clone());
                async move {
                    c.seal(twig_tests::with_internal_token(
                        &token,
                        seal(&org, "notes", &long(201)),
                    ))
                    .await
                }
            },
        ),
        // audit
        case("an actor filter of 257 characters", "actor", {
            let (mut c, owner) = (audit.clone(), owner.clone());
            async move {
                c.list_events(bearer(
                    &owner,
                    apb::ListEventsRequest {
                        actor: long(257),
                        ..Default::default()
                    },
                ))
                .await
            }
        }),
        case("a control character in an action filter", "action", {
            let (mut c, owner) = (audit.clone(), owner.clone());
            async move {
                c.list_events(bearer(
                    &owner,
                    apb::ListEventsRequest {
                        action: "user.signed_up\n".into(),
                        ..Default::default()
                    },
                ))
                .await
            }
        }),
    ];

    let before = rows(&app).await;
    let mut wrong = Vec::new();
    for Case { what, field, call } in cases {
        match call.await {
            Ok(()) => wrong.push(format!("{what}: accepted")),
            Err(status) => {
                let named = status
                    .get_error_details()
                    .bad_request()
                    .and_then(|b| b.field_violations.first().map(|v| v.field.clone()))
                    .unwrap_or_default();
                if status.code() != Code::InvalidArgument || named != field {
                    wrong.push(format!(
                        "{what}: {:?} naming {named:?} ({}), expected INVALID_ARGUMENT naming {field:?}",
                        status.code(),
                        status.message()
                    ));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert_eq!(rows(&app).await, before, "nothing was written");
}

/// `SignUp` with `request`, then its mailed link: the account it made.
async fn sign_up_through_link(
    app: &TestApp,
    request: spb::SignUpRequest,
) -> spb::VerifyEmailResponse {
    let address = request.email.clone();
    let password = request.password.clone();
    let started = app.sessions().sign_up(request).await.unwrap().into_inner();
    assert_eq!(started, spb::SignUpResponse {});
    let token = app.link_token(&address, "Verify your email").await;
    app.sessions()
        .verify_email(spb::VerifyEmailRequest { token, password })
        .await
        .unwrap()
        .into_inner()
}

async fn good_values_next_to_the_bounds_are_stored_normalised(backend: Backend) {
    let app = TestApp::builder(backend).weak_hashing().spawn().await;
    // Trimmed and NFC-normalised: "e" + combining acute is stored as "é".
    let signed = sign_up_through_link(&app, sign_up("  Cafe\u{301} 🌱  ", "株式会社 Twig")).await;
    assert_eq!(signed.user.unwrap().display_name, "Caf\u{e9} 🌱");
    assert_eq!(signed.organization.unwrap().name, "株式会社 Twig");
    let owner = signed.tokens.unwrap().access_token;
    let longest = sign_up_through_link(&app, sign_up(&"é".repeat(200), &"ß".repeat(200))).await;
    assert_eq!(longest.user.unwrap().display_name.chars().count(), 200);
    assert_eq!(longest.organization.unwrap().name.chars().count(), 200);

    // Every scope once, an expiry nine years ahead, a name of 100.
    let all = [
        wpb::Scope::Read,
        wpb::Scope::Write,
        wpb::Scope::Execute,
        wpb::Scope::Admin,
    ]
    .map(|s| s as i32)
    .to_vec();
    let key = app
        .api_keys()
        .create_api_key(bearer(
            &owner,
            create_key(&"k".repeat(100), all, Some(9 * 365)),
        ))
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert_eq!(key.scopes.len(), 4);

    // Provider key names are normalised before the uniqueness check.
    let add = |name: &str| {
        let mut vault = app.vault();
        let request = bearer(
            &owner,
            vpb::AddProviderKeyRequest {
                provider: "openai".into(),
                name: name.into(),
                value: "sk-proj-abcdefghijklmnopqrstuvwxyz".into(),
            },
        );
        async move { vault.add_provider_key(request).await }
    };
    let stored = add("Cafe\u{301}").await.unwrap().into_inner().key.unwrap();
    assert_eq!(stored.name, "Caf\u{e9}");
    let same = add("Caf\u{e9}").await.unwrap_err();
    assert_eq!(same.code(), Code::AlreadyExists, "{same:?}");

    let users = twig_sessions::entity::user::Entity::find()
        .all(&app.db)
        .await
        .unwrap();
    assert!(users.iter().any(|u| u.display_name == "Caf\u{e9} 🌱"));
}

on_both_backends!(
    each_bad_field_is_refused_by_name_and_nothing_is_written,
    good_values_next_to_the_bounds_are_stored_normalised,
);
