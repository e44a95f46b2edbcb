//! Single sign-on through OpenID Connect, end to end: an organisation
//! proves its domain (dnsmasq), adds a connection to a real provider (npm
//! `oidc-provider`, `tests/node/oidc_idp.mjs`), pilots it, then enforces
//! it; people sign in with curl from the start URL through the provider
//! and back, into a session cookie that works. Refusals — stage, pilot,
//! domains the organisation has not proved, passwords once enforced —
//! are checked with their audit events.

use std::time::Duration;

use tonic::Code;
use twig_proto::sessions::v1 as spb;
use twig_proto::sso::v1 as pb;
use twig_sso_federation::SsoConfig;
use twig_tests::curl::{CurlBrowser, Hop};
use twig_tests::dns::DnsPeer;
use twig_tests::oidc_peer::OidcPeer;
use twig_tests::{Backend, PASSWORD, TestApp, bearer, email};

/// The app, its own origin and the peers it trusts.
pub struct Setup {
    pub app: TestApp,
    pub origin: String,
    pub dns: DnsPeer,
    pub idp: OidcPeer,
}

/// The return URL every sign-in asks for.
pub fn return_url(origin: &str) -> String {
    format!("{origin}/app/")
}

/// With `extra`, a module of the test's own runs too.
pub async fn setup(backend: Backend, extra: Option<&'static dyn twig_module::Module>) -> Setup {
    let dns = DnsPeer::start().await;
    let idp = OidcPeer::start(&[("acme", "/acme"), ("other", "/other")]).await;
    let server = dns.addr();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let mut builder = TestApp::builder(backend);
    if let Some(module) = extra {
        builder = builder.with_module(module);
    }
    let app = builder
        .weak_hashing()
        .config_at_origin(move |c, origin| {
            c.server.public_origins = vec![origin.to_string()];
            c.outbound.allow_networks = vec!["127.0.0.1/32".parse().unwrap()];
            c.edit::<SsoConfig>(|s| {
                s.dns_servers = vec![server];
                s.dns_timeout = Duration::from_secs(2);
                s.return_urls = vec![return_url(origin)];
            });
            let _ = tx.send(origin.to_string());
        })
        .spawn()
        .await;
    let origin = rx.await.unwrap();
    Setup {
        app,
        origin,
        dns,
        idp,
    }
}

/// An owner's access token and organisation.
pub async fn owner(app: &TestApp) -> (String, String) {
    let who = email("sso-owner");
    let signed = app.sign_up(&who).await;
    let token = app.login(&who).await.access_token;
    (token, signed.organization.expect("organisation").id)
}

/// A fresh domain under `.test`, claimed and proved by `token`'s
/// organisation through `dns`.
pub async fn proved_domain(app: &TestApp, dns: &mut DnsPeer, token: &str, name: &str) -> String {
    let domain = format!(
        "{name}-{}.test",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    );
    prove(app, dns, token, &domain).await;
    domain
}

/// Claims and proves `domain` for `token`'s organisation, publishing its
/// record in `dns`: the claim's id.
pub async fn prove(app: &TestApp, dns: &mut DnsPeer, token: &str, domain: &str) -> String {
    let claimed = app
        .sso()
        .claim_domain(bearer(
            token,
            pb::ClaimDomainRequest {
                domain: domain.into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .domain
        .unwrap();
    dns.set_txt(&[(&claimed.txt_record_name, &claimed.txt_record_value)])
        .await;
    app.sso()
        .verify_domain(bearer(
            token,
            pb::VerifyDomainRequest {
                domain_id: claimed.id.clone(),
            },
        ))
        .await
        .unwrap();
    claimed.id
}

/// A generic OIDC connection to the peer's `provider`, with a client
/// registered there.
pub async fn connect(
    s: &Setup,
    token: &str,
    provider: &str,
    domains: &[&str],
    pilot: pb::Pilot,
) -> pb::Connection {
    let client_id = format!("twig-{}", uuid::Uuid::new_v4().simple());
    let secret = format!("secret-{}", uuid::Uuid::new_v4().simple());
    s.idp
        .add_client(
            provider,
            &client_id,
            &secret,
            &format!("{}/sso/oidc/callback", s.origin),
        )
        .await;
    s.app
        .sso()
        .create_connection(bearer(
            token,
            pb::CreateConnectionRequest {
                connection: Some(oidc_spec(
                    &format!("{provider} IdP"),
                    pb::OidcPreset::Generic,
                    s.idp.issuer(provider),
                    String::new(),
                    (client_id, secret),
                    domains,
                    pilot,
                )),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .connection
        .unwrap()
}

/// A connection's settings for OpenID Connect: `preset` with `issuer` (or
/// `tenant`), the client `(id, secret)`, the `groups` scope, and the
/// mapping of the tests (group `admins` → ADMIN).
pub fn oidc_spec(
    name: &str,
    preset: pb::OidcPreset,
    issuer: String,
    tenant: String,
    (client_id, client_secret): (String, String),
    domains: &[&str],
    pilot: pb::Pilot,
) -> pb::ConnectionSpec {
    pb::ConnectionSpec {
        name: name.into(),
        protocol: Some(pb::connection_spec::Protocol::Oidc(pb::OidcSettings {
            preset: preset as i32,
            issuer,
            tenant,
            client_id,
            client_secret,
            client_secret_set: false,
            extra_scopes: vec!["groups".into()],
        })),
        mapping: Some(pb::AttributeMapping {
            group_roles: vec![pb::GroupRole {
                group: "admins".into(),
                role: spb::Role::Admin as i32,
            }],
            ..Default::default()
        }),
        pilot: Some(pilot),
        domains: domains.iter().map(|d| d.to_string()).collect(),
    }
}

pub async fn set_stage(
    app: &TestApp,
    token: &str,
    connection: &str,
    stage: pb::ConnectionStage,
) -> Result<pb::Connection, tonic::Status> {
    app.sso()
        .set_connection_stage(bearer(
            token,
            pb::SetConnectionStageRequest {
                connection_id: connection.into(),
                stage: stage as i32,
            },
        ))
        .await
        .map(|r| r.into_inner().connection.unwrap())
}

/// Signs in through the start path on the server at `origin`: every hop
/// up to (not including) the return URL.
pub async fn sign_in(origin: &str, browser: &CurlBrowser, start_path: &str) -> Vec<Hop> {
    let back = return_url(origin);
    browser
        .follow(
            &format!("{origin}{start_path}"),
            |next| next.starts_with(&back),
            10,
        )
        .await
}

/// The refresh token a sign-in's last hop set in the session cookie.
pub fn refresh_token_of(hop: &Hop) -> String {
    let cookie = hop
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("__Secure-twig_refresh="))
        .unwrap_or_else(|| panic!("no session cookie in {hop:#?}"))
        .to_string();
    assert!(
        cookie.contains("HttpOnly")
            && cookie.contains("Secure")
            && cookie.contains("SameSite=Strict")
            && cookie.contains("Path=/auth/"),
        "{cookie}"
    );
    cookie
        .trim_start_matches("__Secure-twig_refresh=")
        .split(';')
        .next()
        .unwrap()
        .to_string()
}

/// The session a browser holds, as its page finds it: `POST
/// /auth/refresh` with the session cookie (same origin, CSRF header),
/// then the access token used.
pub async fn whoami(
    app: &TestApp,
    origin: &str,
    browser: &CurlBrowser,
) -> spb::GetCurrentUserResponse {
    let refreshed = browser
        .request(
            "POST",
            &format!("{origin}/auth/refresh"),
            &[("Origin", origin), ("x-twig-csrf", "1")],
            None,
        )
        .await;
    assert_eq!(refreshed.status, 200, "{refreshed:#?}");
    let answer: serde_json::Value = serde_json::from_str(&refreshed.body).unwrap();
    let token = answer["access_token"].as_str().unwrap();
    app.sessions()
        .get_current_user(bearer(token, spb::GetCurrentUserRequest {}))
        .await
        .unwrap()
        .into_inner()
}

async fn sso_events(app: &TestApp) -> Vec<(String, serde_json::Value)> {
    twig_audit::events_with_action(&app.db, "sso.sign_in")
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.outcome, serde_json::from_str(&e.details).unwrap()))
        .collect()
}

async fn an_organisation_pilots_then_enforces_sign_in(backend: Backend) {
    let mut s = setup(backend, None).await;
    let (token, org) = owner(&s.app).await;
    let domain = proved_domain(&s.app, &mut s.dns, &token, "acme").await;
    let alice = format!("alice@{domain}");
    let bob = format!("bob@{domain}");
    s.idp
        .add_user(
            "acme",
            serde_json::json!({"sub": "u-alice", "email": alice, "email_verified": true,
                "name": "Alice A", "groups": ["admins", "staff"]}),
        )
        .await;
    s.idp
        .add_user(
            "acme",
            serde_json::json!({"sub": "u-bob", "email": bob.to_uppercase(), "email_verified": true,
                "name": "Bob B", "groups": ["staff"]}),
        )
        .await;
    // Bob has a password account already, in an organisation of his own.
    s.app.sign_up(&bob).await;

    let connection = connect(
        &s,
        &token,
        "acme",
        &[&domain],
        pb::Pilot {
            group: String::new(),
            emails: vec![alice.clone()],
        },
    )
    .await;
    assert_eq!(connection.stage, pb::ConnectionStage::Off as i32);
    assert_eq!(connection.domains, std::slice::from_ref(&domain));
    let Some(pb::connection::Protocol::Oidc(oidc)) = &connection.protocol else {
        panic!("an OIDC connection");
    };
    assert!(oidc.client_secret.is_empty() && oidc.client_secret_set);

    // Off: nobody signs in through it; discovery says password.
    let browser = CurlBrowser::new();
    let off = browser
        .get(&format!("{}{}", s.origin, connection.start_path))
        .await;
    assert_eq!(off.status, 404, "{off:#?}");
    let discover = |email: String| {
        let app = &s.app;
        async move {
            app.sso()
                .discover_sign_in(pb::DiscoverSignInRequest { email })
                .await
                .unwrap()
                .into_inner()
        }
    };
    assert_eq!(
        discover(alice.clone()).await.method,
        pb::SignInMethod::Password as i32
    );

    // Pilot: Alice (listed) is sent to SSO; Bob keeps his password.
    set_stage(&s.app, &token, &connection.id, pb::ConnectionStage::Pilot)
        .await
        .unwrap();
    let found = discover(alice.clone()).await;
    assert_eq!(found.method, pb::SignInMethod::Sso as i32);
    assert!(found.password_allowed);
    assert!(
        found.start_path.starts_with("/sso/start?connection="),
        "{found:?}"
    );
    let for_bob = discover(bob.clone()).await;
    assert_eq!(for_bob.method, pb::SignInMethod::Password as i32);
    assert!(for_bob.password_allowed);
    let outsider = discover(email("outsider")).await;
    assert_eq!(outsider.method, pb::SignInMethod::Password as i32);
    assert!(outsider.start_path.is_empty());

    let hops = sign_in(&s.origin, &browser, &found.start_path).await;
    let last = hops.last().unwrap();
    assert_eq!(last.status, 303, "{hops:#?}");
    assert_eq!(last.location().unwrap(), return_url(&s.origin));
    assert!(
        hops.iter()
            .all(|h| !h.location().unwrap_or_default().contains("twig_rt_")
                && !h.location().unwrap_or_default().contains("access_token")),
        "no token in any URL: {hops:#?}"
    );
    // The provider saw PKCE (S256), a state and a nonce.
    let to_idp = hops[0].location().unwrap();
    for part in [
        "code_challenge_method=S256",
        "code_challenge=",
        "state=",
        "nonce=",
        "login_hint=",
    ] {
        assert!(to_idp.contains(part), "{part} in {to_idp}");
    }
    refresh_token_of(last);
    let me = whoami(&s.app, &s.origin, &browser).await;
    assert_eq!(me.user.as_ref().unwrap().email, alice);
    assert_eq!(me.organization_id, org);
    let membership = me
        .memberships
        .iter()
        .find(|m| m.organization.as_ref().unwrap().id == org)
        .unwrap();
    assert_eq!(membership.role, spb::Role::Admin as i32, "admins → ADMIN");

    // Bob is not in the pilot: refused, audited with the reason, and he
    // joins nothing.
    let bob_start = for_bob.start_path.clone();
    assert!(!bob_start.is_empty());
    let hops = sign_in(&s.origin, &CurlBrowser::new(), &bob_start).await;
    let last = hops.last().unwrap();
    assert_eq!(last.status, 403, "{hops:#?}");
    assert!(last.body.contains("pilot"), "{}", last.body);
    let events = sso_events(&s.app).await;
    assert!(
        events
            .iter()
            .any(|(o, d)| o == "failure" && d["reason"] == "not_in_pilot"),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|(o, d)| o == "success" && d["email"] == alice.as_str())
    );
    // Bob's password still works.
    s.app.login(&bob).await;

    // Enforced: passwords are refused for the domain, with a pointer.
    set_stage(
        &s.app,
        &token,
        &connection.id,
        pb::ConnectionStage::Enforced,
    )
    .await
    .unwrap();
    let refused = s
        .app
        .sessions()
        .login(spb::LoginRequest {
            email: bob.clone(),
            password: PASSWORD.into(),
            organization_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains("/sso/start?connection="),
        "{}",
        refused.message()
    );
    let reset = s
        .app
        .sessions()
        .request_password_reset(spb::RequestPasswordResetRequest { email: bob.clone() })
        .await
        .unwrap_err();
    assert_eq!(reset.code(), Code::FailedPrecondition);
    let sign_up = s
        .app
        .sessions()
        .sign_up(spb::SignUpRequest {
            email: format!("new@{domain}"),
            password: PASSWORD.into(),
            display_name: String::new(),
            organization_name: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(sign_up.code(), Code::FailedPrecondition);
    // The same answer for an address with no account.
    let nobody = s
        .app
        .sessions()
        .login(spb::LoginRequest {
            email: format!("nobody@{domain}"),
            password: PASSWORD.into(),
            organization_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(nobody.code(), refused.code());
    assert_eq!(
        nobody.message().split("connection=").next(),
        refused.message().split("connection=").next()
    );
    let password_refusals = twig_audit::events_with_action(&s.app.db, "session.password_refused")
        .await
        .unwrap();
    assert_eq!(password_refusals.len(), 4);
    assert!(
        password_refusals
            .iter()
            .all(|e| e.org_id.map(|o| o.to_string()) == Some(org.clone()))
    );

    // Bob now signs in through SSO, joining as a member (staff gives no
    // more), into his existing account.
    let found = discover(bob.clone()).await;
    assert_eq!(found.method, pb::SignInMethod::Sso as i32);
    assert!(!found.password_allowed);
    let bob_browser = CurlBrowser::new();
    let hops = sign_in(&s.origin, &bob_browser, &found.start_path).await;
    refresh_token_of(hops.last().unwrap());
    let me = whoami(&s.app, &s.origin, &bob_browser).await;
    assert_eq!(me.user.as_ref().unwrap().email, bob);
    assert_eq!(me.organization_id, org);
    assert_eq!(
        me.memberships.len(),
        2,
        "his own organisation, and this one"
    );
    let here = me
        .memberships
        .iter()
        .find(|m| m.organization.as_ref().unwrap().id == org)
        .unwrap();
    assert_eq!(here.role, spb::Role::Member as i32);

    // The connection's changes are all in the audit log.
    for action in ["sso.connection_created", "sso.connection_stage_changed"] {
        assert!(
            !twig_audit::events_with_action(&s.app.db, action)
                .await
                .unwrap()
                .is_empty(),
            "{action}"
        );
    }
    s.app.stop().await;
}

async fn a_provider_cannot_sign_anyone_into_an_unproved_domain(backend: Backend) {
    let mut s = setup(backend, None).await;
    let (token, org) = owner(&s.app).await;
    let domain = proved_domain(&s.app, &mut s.dns, &token, "acme").await;
    // Another organisation proves a domain of its own.
    let (other_token, _) = owner(&s.app).await;
    let theirs = proved_domain(&s.app, &mut s.dns, &other_token, "theirs").await;
    let connection = connect(&s, &token, "acme", &[&domain], pb::Pilot::default()).await;
    set_stage(
        &s.app,
        &token,
        &connection.id,
        pb::ConnectionStage::Enforced,
    )
    .await
    .unwrap();
    // A victim with an account in the other organisation's domain.
    let victim = format!("victim@{theirs}");
    s.app.sign_up(&victim).await;
    for (sub, claimed) in [
        ("u-victim", victim.clone()),
        (
            "u-stranger",
            format!("someone@unproved-{}.test", uuid::Uuid::new_v4().simple()),
        ),
        ("u-lookalike", format!("eve@{domain}.evil.test")),
    ] {
        s.idp
            .add_user(
                "acme",
                serde_json::json!({"sub": sub, "email": claimed, "email_verified": true,
                    "groups": ["admins"]}),
            )
            .await;
        let start = format!(
            "/sso/start?connection={}&login_hint={}",
            connection.id,
            claimed.replace('@', "%40")
        );
        let hops = sign_in(&s.origin, &CurlBrowser::new(), &start).await;
        let last = hops.last().unwrap();
        assert_eq!(last.status, 403, "{claimed}: {hops:#?}");
        assert!(
            last.set_cookies()
                .iter()
                .all(|c| !c.starts_with("__Secure-twig_refresh="))
        );
    }
    // No account was made, none was joined to this organisation.
    let members = s
        .app
        .sessions()
        .list_members(bearer(
            &token,
            spb::ListMembersRequest {
                organization_id: org.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .members;
    assert_eq!(members.len(), 1, "the owner only: {members:?}");
    let events = sso_events(&s.app).await;
    let reasons: Vec<_> = events.iter().map(|(_, d)| d["reason"].clone()).collect();
    assert_eq!(
        reasons,
        vec![serde_json::json!("domain_not_proved"); 3],
        "{events:?}"
    );
    // A domain proved by another organisation cannot be served either.
    let taken = s
        .app
        .sso()
        .update_connection(bearer(
            &token,
            pb::UpdateConnectionRequest {
                connection_id: connection.id.clone(),
                connection: Some(pb::ConnectionSpec {
                    name: "acme IdP".into(),
                    protocol: connection.protocol.clone().map(|p| match p {
                        pb::connection::Protocol::Oidc(o) => pb::connection_spec::Protocol::Oidc(o),
                    }),
                    mapping: connection.mapping.clone(),
                    pilot: connection.pilot.clone(),
                    domains: vec![domain.clone(), theirs.clone()],
                }),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(taken.code(), Code::InvalidArgument, "{taken:?}");
    s.app.stop().await;
}

on_both_backends!(
    an_organisation_pilots_then_enforces_sign_in,
    a_provider_cannot_sign_anyone_into_an_unproved_domain,
    the_entra_preset_and_the_mapping_dry_run,
);

async fn the_entra_preset_and_the_mapping_dry_run(backend: Backend) {
    let tenant = "2b7c6f1e-4d1a-4c1e-9a55-0d6f3c2b8a11";
    let dns = DnsPeer::start().await;
    let idp = OidcPeer::start(&[("entra", &format!("/ms/{tenant}/v2.0"))]).await;
    let server = dns.addr();
    let authority = format!("{}/ms", idp.base());
    let (tx, rx) = tokio::sync::oneshot::channel();
    let app = TestApp::builder(backend)
        .weak_hashing()
        .config_at_origin(move |c, origin| {
            c.server.public_origins = vec![origin.to_string()];
            c.outbound.allow_networks = vec!["127.0.0.1/32".parse().unwrap()];
            c.edit::<SsoConfig>(|s| {
                s.dns_servers = vec![server];
                s.return_urls = vec![return_url(origin)];
                s.microsoft_authority = authority;
            });
            let _ = tx.send(origin.to_string());
        })
        .spawn()
        .await;
    let origin = rx.await.unwrap();
    let mut s = Setup {
        app,
        origin,
        dns,
        idp,
    };
    let (token, org) = owner(&s.app).await;
    let domain = proved_domain(&s.app, &mut s.dns, &token, "contoso").await;
    s.idp
        .add_client(
            "entra",
            "twig-entra",
            "entra-secret-0123456789",
            &format!("{}/sso/oidc/callback", s.origin),
        )
        .await;
    for (sub, tid, who) in [
        ("e-ok", tenant, "ok"),
        ("e-other", "00000000-0000-4000-8000-000000000001", "other"),
    ] {
        s.idp
            .add_user(
                "entra",
                serde_json::json!({"sub": sub, "email": format!("{who}@{domain}"),
                    "claims": {"tid": tid}, "groups": ["g-admins"]}),
            )
            .await;
    }
    let spec = |tenant: &str| pb::ConnectionSpec {
        name: "Entra".into(),
        protocol: Some(pb::connection_spec::Protocol::Oidc(pb::OidcSettings {
            preset: pb::OidcPreset::MicrosoftEntra as i32,
            issuer: String::new(),
            tenant: tenant.into(),
            client_id: "twig-entra".into(),
            client_secret: "entra-secret-0123456789".into(),
            client_secret_set: false,
            extra_scopes: vec!["groups".into()],
        })),
        mapping: Some(pb::AttributeMapping {
            group_roles: vec![pb::GroupRole {
                group: "g-admins".into(),
                role: spb::Role::Admin as i32,
            }],
            ..Default::default()
        }),
        pilot: None,
        domains: vec![domain.clone()],
    };
    // A preset needs a directory id, and derives its issuer from it.
    let bad = s
        .app
        .sso()
        .create_connection(bearer(
            &token,
            pb::CreateConnectionRequest {
                connection: Some(spec("contoso")),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");
    let owner_role = pb::CreateConnectionRequest {
        connection: Some(pb::ConnectionSpec {
            mapping: Some(pb::AttributeMapping {
                group_roles: vec![pb::GroupRole {
                    group: "g-admins".into(),
                    role: spb::Role::Owner as i32,
                }],
                ..Default::default()
            }),
            ..spec(tenant)
        }),
    };
    let refused = s
        .app
        .sso()
        .create_connection(bearer(&token, owner_role))
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        Code::InvalidArgument,
        "never OWNER: {refused:?}"
    );
    let connection = s
        .app
        .sso()
        .create_connection(bearer(
            &token,
            pb::CreateConnectionRequest {
                connection: Some(spec(tenant)),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .connection
        .unwrap();
    let Some(pb::connection::Protocol::Oidc(oidc)) = &connection.protocol else {
        panic!("OIDC");
    };
    assert_eq!(oidc.issuer, s.idp.issuer("entra"));

    // The dry run: what claims would map to, and why not.
    let dry = |claims: serde_json::Value| {
        let app = &s.app;
        let token = token.clone();
        let id = connection.id.clone();
        async move {
            app.sso()
                .test_mapping(bearer(
                    &token,
                    pb::TestMappingRequest {
                        connection_id: id,
                        claims_json: claims.to_string(),
                    },
                ))
                .await
                .unwrap()
                .into_inner()
        }
    };
    // At stage off nobody is let in, but the mapping still shows.
    let off = dry(
        serde_json::json!({"email": format!("Ok@{domain}"), "tid": tenant, "groups": ["g-admins"]}),
    )
    .await;
    assert!(!off.accepted);
    assert_eq!(off.email, format!("ok@{domain}"));
    set_stage(
        &s.app,
        &token,
        &connection.id,
        pb::ConnectionStage::Enforced,
    )
    .await
    .unwrap();
    let ok = dry(
        serde_json::json!({"email": format!("ok@{domain}"), "tid": tenant,
        "groups": ["g-admins"], "name": "Ok"}),
    )
    .await;
    assert!(ok.accepted, "{ok:?}");
    assert_eq!(ok.role, spb::Role::Admin as i32);
    assert_eq!(ok.groups, ["g-admins"]);
    let wrong_tenant = dry(serde_json::json!({"email": format!("ok@{domain}"), "tid": "x"})).await;
    assert!(
        !wrong_tenant.accepted && wrong_tenant.refusal.contains("tid"),
        "{wrong_tenant:?}"
    );
    let elsewhere = dry(serde_json::json!({"email": "ok@elsewhere.test", "tid": tenant})).await;
    assert!(
        !elsewhere.accepted && elsewhere.refusal.contains("domain"),
        "{elsewhere:?}"
    );
    let bad_json = s
        .app
        .sso()
        .test_mapping(bearer(
            &token,
            pb::TestMappingRequest {
                connection_id: connection.id.clone(),
                claims_json: "[1, 2]".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(bad_json.code(), Code::InvalidArgument);
    // The dry run made nobody.
    assert!(
        s.app
            .user_directory
            .0
            .find_user_by_email(&format!("ok@{domain}"))
            .await
            .unwrap()
            .is_none()
    );

    // The real thing: the tenant's user is let in as an admin; a user of
    // another directory is refused.
    let browser = CurlBrowser::new();
    let hops = sign_in(
        &s.origin,
        &browser,
        &format!(
            "/sso/start?connection={}&login_hint=ok%40{domain}",
            connection.id
        ),
    )
    .await;
    assert_eq!(hops.last().unwrap().status, 303, "{hops:#?}");
    let me = whoami(&s.app, &s.origin, &browser).await;
    let here = me
        .memberships
        .iter()
        .find(|m| m.organization.as_ref().unwrap().id == org)
        .unwrap();
    assert_eq!(here.role, spb::Role::Admin as i32);
    let hops = sign_in(
        &s.origin,
        &CurlBrowser::new(),
        &format!(
            "/sso/start?connection={}&login_hint=other%40{domain}",
            connection.id
        ),
    )
    .await;
    assert_eq!(hops.last().unwrap().status, 403, "{hops:#?}");
    let events = sso_events(&s.app).await;
    assert!(
        events
            .iter()
            .any(|(o, d)| o == "failure" && d["reason"] == "wrong_tenant"),
        "{events:?}"
    );
    s.app.stop().await;
}
