//! "Sign in with Google / Microsoft" for individual accounts, against the
//! npm oidc-provider peer playing both (the built-in providers pointed at
//! it by `sso_federation.google_issuer` and `microsoft_authority`), with
//! curl as the browser: a first sign-in makes an account; the next signs
//! it in; a provider email that belongs to a password account links only
//! after that password; unverified emails make nothing; a person lists
//! and removes linked methods, keeping one.

use tonic::Code;
use twig_proto::sessions::v1 as spb;
use twig_proto::sso::v1 as pb;
use twig_sso_federation::SocialProviderConfig;
use twig_sso_federation::SsoConfig;
use twig_tests::curl::{CurlBrowser, Hop};
use twig_tests::dns::DnsPeer;
use twig_tests::oidc_peer::OidcPeer;
use twig_tests::{Backend, PASSWORD, TestApp, bearer, email};

const CONSUMERS: &str = "9188040d-6c67-4c5b-b112-36a304b66dad";

struct Social {
    app: TestApp,
    origin: String,
    _idp: OidcPeer,
    dns: DnsPeer,
}

async fn setup(backend: Backend) -> Social {
    // Microsoft's built-in issuer is its multi-tenant `common` address,
    // whose discovery names `…/{tenantid}/v2.0`; the peer's consumers
    // tenant answers there too.
    let idp = OidcPeer::start_providers(vec![
        serde_json::json!({"name": "google", "path": "/google"}),
        serde_json::json!({"name": "microsoft", "path": format!("/ms/{CONSUMERS}/v2.0"),
            "tenant_alias": {"path": "/ms/common/v2.0", "tenant": CONSUMERS}}),
    ])
    .await;
    let google_issuer = idp.issuer("google");
    let authority = format!("{}/ms", idp.base());
    let dns = DnsPeer::start().await;
    let server = dns.addr();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let app = TestApp::builder(backend)
        .weak_hashing()
        .config_at_origin(move |c, origin| {
            c.server.public_origins = vec![origin.to_string()];
            c.outbound.allow_networks = vec!["127.0.0.1/32".parse().unwrap()];
            c.edit::<SsoConfig>(|s| {
                s.dns_servers = vec![server];
                s.refusal_audit_period = std::time::Duration::from_secs(1);
                s.return_urls = vec![format!("{origin}/app/")];
                s.google_issuer = google_issuer;
                s.microsoft_authority = authority;
                for name in ["google", "microsoft"] {
                    s.social_providers.insert(
                        name.into(),
                        SocialProviderConfig {
                            client_id: format!("twig-{name}"),
                            client_secret: Some(twig_config::Secret::new(format!(
                                "secret-of-{name}-0123456789"
                            ))),
                            ..Default::default()
                        },
                    );
                }
            });
            let _ = tx.send(origin.to_string());
        })
        .spawn()
        .await;
    let origin = rx.await.unwrap();
    for name in ["google", "microsoft"] {
        idp.add_client(
            name,
            &format!("twig-{name}"),
            &format!("secret-of-{name}-0123456789"),
            &format!("{origin}/sso/oidc/callback"),
        )
        .await;
    }
    Social {
        app,
        origin,
        _idp: idp,
        dns,
    }
}

impl Social {
    /// Signs in with `provider` as `hint`: every hop up to the return URL.
    async fn sign_in(&self, browser: &CurlBrowser, provider: &str, hint: &str) -> Vec<Hop> {
        let back = format!("{}/app/", self.origin);
        browser
            .follow(
                &format!(
                    "{}/sso/start?provider={provider}&login_hint={}",
                    self.origin,
                    hint.replace('@', "%40")
                ),
                |next| next.starts_with(&back),
                10,
            )
            .await
    }

    /// A same-origin POST to one of the browser routes.
    async fn post(&self, browser: &CurlBrowser, path: &str, body: Option<&str>) -> Hop {
        let mut headers = vec![("Origin", self.origin.as_str()), ("x-twig-csrf", "1")];
        if body.is_some() {
            headers.push(("Content-Type", "application/json"));
        }
        browser
            .request("POST", &format!("{}{path}", self.origin), &headers, body)
            .await
    }

    /// The browser's session: an access token through `/auth/refresh`.
    async fn access_token(&self, browser: &CurlBrowser) -> String {
        let refreshed = self.post(browser, "/auth/refresh", None).await;
        assert_eq!(refreshed.status, 200, "{refreshed:#?}");
        let answer: serde_json::Value = serde_json::from_str(&refreshed.body).unwrap();
        answer["access_token"].as_str().unwrap().to_string()
    }

    async fn me(&self, token: &str) -> spb::GetCurrentUserResponse {
        self.app
            .sessions()
            .get_current_user(bearer(token, spb::GetCurrentUserRequest {}))
            .await
            .unwrap()
            .into_inner()
    }

    async fn methods(&self, token: &str) -> pb::ListSignInMethodsResponse {
        self.app
            .sso()
            .list_sign_in_methods(bearer(token, pb::ListSignInMethodsRequest {}))
            .await
            .unwrap()
            .into_inner()
    }
}

fn has_session_cookie(hop: &Hop) -> bool {
    hop.set_cookies()
        .iter()
        .any(|c| c.starts_with("__Secure-twig_refresh=") && !c.contains("Max-Age=0"))
}

async fn a_first_sign_in_makes_an_account_and_the_next_signs_it_in(backend: Backend) {
    let s = setup(backend).await;
    let idp = &s._idp;
    let carol = email("carol");
    let dave = email("dave");
    idp.add_user(
        "google",
        serde_json::json!({"sub": "g-carol", "email": carol, "email_verified": true, "name": "Carol C"}),
    )
    .await;
    idp.add_user(
        "microsoft",
        serde_json::json!({"sub": "m-dave", "email": dave, "email_verified": true,
            "claims": {"tid": CONSUMERS}}),
    )
    .await;

    let providers = s
        .app
        .sso()
        .list_sign_in_providers(pb::ListSignInProvidersRequest {})
        .await
        .unwrap()
        .into_inner()
        .providers;
    let names: Vec<_> = providers.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["google", "microsoft"]);
    assert_eq!(providers[0].start_path, "/sso/start?provider=google");

    // Carol's first sign-in with Google makes her account and organisation.
    let browser = CurlBrowser::new();
    let hops = s.sign_in(&browser, "google", &carol).await;
    let last = hops.last().unwrap();
    assert_eq!(last.status, 303, "{hops:#?}");
    assert!(has_session_cookie(last));
    let token = s.access_token(&browser).await;
    let me = s.me(&token).await;
    let carol_id = me.user.as_ref().unwrap().id.clone();
    assert_eq!(me.user.as_ref().unwrap().email, carol);
    assert_eq!(me.memberships.len(), 1);
    assert_eq!(me.memberships[0].role, spb::Role::Owner as i32);
    // Her only way in is Google: it cannot be removed.
    let methods = s.methods(&token).await;
    assert!(!methods.has_password);
    assert_eq!(methods.linked.len(), 1);
    assert_eq!(methods.linked[0].provider, "google");
    let refused = s
        .app
        .sso()
        .remove_sign_in_method(bearer(
            &token,
            pb::RemoveSignInMethodRequest {
                method_id: methods.linked[0].id.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");

    // The next sign-in, from another browser, is into the same account.
    let other = CurlBrowser::new();
    s.sign_in(&other, "google", &carol).await;
    let again = s.me(&s.access_token(&other).await).await;
    assert_eq!(again.user.unwrap().id, carol_id);

    // Microsoft (the built-in multi-tenant issuer; a personal account's
    // token names the consumers directory) works the same.
    let browser = CurlBrowser::new();
    s.sign_in(&browser, "microsoft", &dave).await;
    let me = s.me(&s.access_token(&browser).await).await;
    assert_eq!(me.user.unwrap().email, dave);

    // A token whose tid names another directory than its issuer's does
    // not pass, nor one without a tid.
    for (sub, claims) in [
        (
            "m-liar",
            serde_json::json!({"tid": "11111111-2222-4333-8444-555555555555"}),
        ),
        ("m-none", serde_json::json!({})),
    ] {
        let who = email(sub);
        idp.add_user(
            "microsoft",
            serde_json::json!({"sub": sub, "email": who, "email_verified": true, "claims": claims}),
        )
        .await;
        let hops = s.sign_in(&CurlBrowser::new(), "microsoft", &who).await;
        let last = hops.last().unwrap();
        assert_eq!(last.status, 403, "{sub}: {hops:#?}");
        assert!(!has_session_cookie(last));
    }

    let events = twig_audit::events_with_action(&s.app.db, "sso.social_sign_in")
        .await
        .unwrap();
    let hows: Vec<_> = events
        .iter()
        .map(|e| serde_json::from_str::<serde_json::Value>(&e.details).unwrap()["how"].clone())
        .collect();
    assert_eq!(hows, ["signed_up", "linked", "signed_up"]);
    s.app.stop().await;
}

async fn an_existing_account_is_linked_only_with_its_password(backend: Backend) {
    let s = setup(backend).await;
    let idp = &s._idp;
    let erin = email("erin");
    let signed = s.app.sign_up(&erin).await;
    let erin_id = signed.user.unwrap().id;
    idp.add_user(
        "google",
        serde_json::json!({"sub": "g-erin", "email": erin.to_uppercase(), "email_verified": true}),
    )
    .await;

    // Google says it is Erin's email: no session, a link waits.
    let browser = CurlBrowser::new();
    let hops = s.sign_in(&browser, "google", &erin).await;
    let last = hops.last().unwrap();
    assert_eq!(last.status, 303, "{hops:#?}");
    assert!(
        !has_session_cookie(last),
        "never signed in silently: {last:#?}"
    );
    assert_eq!(
        last.location().unwrap(),
        format!("{}/app/?twig_link=google", s.origin)
    );
    assert!(
        last.set_cookies()
            .iter()
            .any(|c| c.starts_with("__Secure-twig_sso_link=") && c.contains("SameSite=Strict"))
    );

    // A wrong password links nothing; another browser has no link.
    let wrong = s
        .post(
            &browser,
            "/sso/social/link",
            Some(r#"{"password": "not the password"}"#),
        )
        .await;
    assert_eq!(wrong.status, 401, "{wrong:#?}");
    assert!(!has_session_cookie(&wrong));
    let elsewhere = s
        .post(
            &CurlBrowser::new(),
            "/sso/social/link",
            Some(&serde_json::json!({"password": PASSWORD}).to_string()),
        )
        .await;
    assert_eq!(elsewhere.status, 412, "{elsewhere:#?}");
    // Without the CSRF header, refused before anything.
    let forged = browser
        .request(
            "POST",
            &format!("{}/sso/social/link", s.origin),
            &[
                ("Origin", "https://evil.example"),
                ("Content-Type", "application/json"),
            ],
            Some(&serde_json::json!({"password": PASSWORD}).to_string()),
        )
        .await;
    assert_eq!(forged.status, 403);

    // The right password links Google and signs the browser in.
    let linked = s
        .post(
            &browser,
            "/sso/social/link",
            Some(&serde_json::json!({"password": PASSWORD}).to_string()),
        )
        .await;
    assert_eq!(linked.status, 200, "{linked:#?}");
    assert!(has_session_cookie(&linked));
    let answer: serde_json::Value = serde_json::from_str(&linked.body).unwrap();
    assert_eq!(answer["linked"], "google");
    let token = s.access_token(&browser).await;
    assert_eq!(s.me(&token).await.user.unwrap().id, erin_id);
    let methods = s.methods(&token).await;
    assert!(methods.has_password);
    assert_eq!(methods.linked.len(), 1);

    // From now on Google signs Erin in directly.
    let next = CurlBrowser::new();
    let hops = s.sign_in(&next, "google", &erin).await;
    assert!(has_session_cookie(hops.last().unwrap()), "{hops:#?}");
    assert_eq!(
        s.me(&s.access_token(&next).await).await.user.unwrap().id,
        erin_id
    );

    // She keeps her password, so Google can go.
    s.app
        .sso()
        .remove_sign_in_method(bearer(
            &token,
            pb::RemoveSignInMethodRequest {
                method_id: methods.linked[0].id.clone(),
            },
        ))
        .await
        .unwrap();
    assert!(s.methods(&token).await.linked.is_empty());
    let audited: Vec<_> = twig_audit::events_with_action(&s.app.db, "sso.method_linked")
        .await
        .unwrap()
        .into_iter()
        .chain(
            twig_audit::events_with_action(&s.app.db, "sso.method_unlinked")
                .await
                .unwrap(),
        )
        .collect();
    assert_eq!(audited.len(), 2);
    s.app.stop().await;
}

async fn an_unverified_email_makes_and_finds_nothing(backend: Backend) {
    let s = setup(backend).await;
    let idp = &s._idp;
    let victim = email("victim");
    s.app.sign_up(&victim).await;
    let stranger = email("stranger");
    for (sub, address) in [("g-victim", &victim), ("g-stranger", &stranger)] {
        idp.add_user(
            "google",
            serde_json::json!({"sub": sub, "email": address, "email_verified": false}),
        )
        .await;
        let browser = CurlBrowser::new();
        let hops = s.sign_in(&browser, "google", address).await;
        let last = hops.last().unwrap();
        assert_eq!(last.status, 403, "{address}: {hops:#?}");
        assert!(!has_session_cookie(last));
        assert!(
            last.set_cookies()
                .iter()
                .all(|c| !c.starts_with("__Secure-twig_sso_link=")),
            "no link offered for an unverified email"
        );
    }
    let users = &s.app.user_directory.0;
    assert!(users.find_user_by_email(&stranger).await.unwrap().is_none());
    // An unknown provider is a clear 404.
    let unknown = CurlBrowser::new()
        .get(&format!("{}/sso/start?provider=myspace", s.origin))
        .await;
    assert_eq!(unknown.status, 404);
    s.app.stop().await;
}

async fn enforced_single_sign_on_shuts_social_sign_in_out(backend: Backend) {
    let mut s = setup(backend).await;
    let (token, _) = crate::sso_oidc::owner(&s.app).await;
    let domain = format!(
        "corp-{}.test",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    );
    crate::sso_oidc::prove(&s.app, &mut s.dns, &token, &domain).await;
    let alice = format!("alice@{domain}");
    let bob = format!("bob@{domain}");
    for (sub, who) in [("g-alice", &alice), ("g-bob", &bob)] {
        s._idp
            .add_user(
                "google",
                serde_json::json!({"sub": sub, "email": who, "email_verified": true}),
            )
            .await;
    }
    // Before the organisation enforces its sign-in, Alice signs up with
    // Google.
    let browser = CurlBrowser::new();
    let hops = s.sign_in(&browser, "google", &alice).await;
    assert!(has_session_cookie(hops.last().unwrap()), "{hops:#?}");

    // The organisation enforces single sign-on for the domain (through
    // its own provider; the peer's Google provider serves as one here).
    let connection = s
        .app
        .sso()
        .create_connection(bearer(
            &token,
            pb::CreateConnectionRequest {
                connection: Some(crate::sso_oidc::oidc_spec(
                    "Corp IdP",
                    pb::OidcPreset::Generic,
                    s._idp.issuer("google"),
                    String::new(),
                    ("twig-google".into(), "secret-of-google-0123456789".into()),
                    &[&domain],
                    pb::Pilot::default(),
                )),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .connection
        .unwrap();
    crate::sso_oidc::set_stage(
        &s.app,
        &token,
        &connection.id,
        pb::ConnectionStage::Enforced,
    )
    .await
    .unwrap();

    // Now neither Alice's linked Google identity nor a new one in the
    // domain gets in past it.
    for who in [&alice, &bob] {
        let browser = CurlBrowser::new();
        let hops = s.sign_in(&browser, "google", who).await;
        let last = hops.last().unwrap();
        assert_eq!(last.status, 403, "{who}: {hops:#?}");
        assert!(last.body.contains("single sign-on"), "{}", last.body);
        assert!(!has_session_cookie(last));
    }
    assert!(
        s.app
            .user_directory
            .0
            .find_user_by_email(&bob)
            .await
            .unwrap()
            .is_none()
    );
    // Counted among the refused sign-ins.
    s.app.clock.advance(std::time::Duration::from_secs(2));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let counted: u64 = twig_audit::events_with_action(&s.app.db, "sso.sign_in")
            .await
            .unwrap()
            .iter()
            .map(|e| serde_json::from_str::<serde_json::Value>(&e.details).unwrap())
            .filter(|d| d["reason"] == "sso_enforced")
            .map(|d| d["count"].as_u64().unwrap_or(0))
            .sum();
        if counted == 2 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "counted {counted}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    s.app.stop().await;
}

on_both_backends!(
    a_first_sign_in_makes_an_account_and_the_next_signs_it_in,
    an_existing_account_is_linked_only_with_its_password,
    an_unverified_email_makes_and_finds_nothing,
    enforced_single_sign_on_shuts_social_sign_in_out,
);
