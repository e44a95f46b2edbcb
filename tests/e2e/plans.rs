//! Plans: an organisation's plan caps what its own roles may do — limits
//! of their own, IP allowlists — and only the platform operator (an
//! internal client with `platform.operator`) moves an organisation to
//! another plan or sets a limit above it. Each change, and each refused
//! attempt beyond the plan, is in the audit log with the organisation.

use tonic::Code;
use tonic_types::StatusExt;
use twig_config::{InternalClient, Secret};
use twig_proto::apikeys::v1 as kpb;
use twig_proto::auth::v1 as apb;
use twig_proto::quota::v1 as pb;
use twig_tests::{Backend, OPERATOR, TestApp, bearer, email, with_internal_token};

const RUNTIME_TOKEN: &str = "plans-runtime-token-0123456789abcdefghij";

/// A suite where new organisations are on the built-in `free` plan, with
/// an internal client that holds another scope than the operator's.
async fn app(backend: Backend) -> TestApp {
    TestApp::builder(backend)
        .weak_hashing()
        .config(|c| {
            c.plans.default_plan = "free".into();
            c.auth.internal_clients.push(InternalClient {
                name: "agent-runtime".into(),
                token: Secret::new(RUNTIME_TOKEN),
                scopes: vec!["vault.reveal".into()],
            });
        })
        .spawn()
        .await
}

/// An owner: access token, organisation, and an admin API key of theirs
/// (secret, id).
struct Owner {
    token: String,
    org: String,
    key_secret: String,
    key_id: String,
}

async fn owner(app: &TestApp) -> Owner {
    let who = email("plans");
    let signed = app.sign_up(&who).await;
    let token = app.login(&who).await.access_token;
    let created = app
        .api_keys()
        .create_api_key(bearer(
            &token,
            kpb::CreateApiKeyRequest {
                service_account_id: String::new(),
                name: "owner's".into(),
                scopes: vec![apb::Scope::Admin as i32],
                expires_at: None,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    Owner {
        token,
        org: signed.organization.unwrap().id,
        key_secret: created.secret,
        key_id: created.key.unwrap().id,
    }
}

/// A new read key of the owner's; its id.
async fn new_key(app: &TestApp, token: &str) -> String {
    app.api_keys()
        .create_api_key(bearer(
            token,
            kpb::CreateApiKeyRequest {
                service_account_id: String::new(),
                name: "another".into(),
                scopes: vec![apb::Scope::Read as i32],
                expires_at: None,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap()
        .id
}

fn limit(subject: &str, n: u64, period_s: i64) -> pb::Limit {
    pb::Limit {
        subject: subject.into(),
        limit: n,
        period: Some(prost_types::Duration {
            seconds: period_s,
            nanos: 0,
        }),
        ..Default::default()
    }
}

async fn set_limit(
    app: &TestApp,
    credential: &str,
    limit: pb::Limit,
) -> Result<pb::Limit, tonic::Status> {
    app.quota()
        .set_limit(bearer(
            credential,
            pb::SetLimitRequest { limit: Some(limit) },
        ))
        .await
        .map(|r| r.into_inner().limit.unwrap())
}

async fn operator_limit(
    app: &TestApp,
    org: &str,
    limit: pb::Limit,
) -> Result<pb::Limit, tonic::Status> {
    app.quota()
        .set_organization_limit(app.operator(pb::SetOrganizationLimitRequest {
            organization_id: org.into(),
            limit: Some(limit),
        }))
        .await
        .map(|r| r.into_inner().limit.unwrap())
}

async fn plan_of(app: &TestApp, token: &str) -> pb::GetOrganizationPlanResponse {
    app.quota()
        .get_organization_plan(bearer(token, pb::GetOrganizationPlanRequest::default()))
        .await
        .unwrap()
        .into_inner()
}

async fn check(app: &TestApp, subject: &str, org: &str) -> pb::CheckResponse {
    app.quota()
        .check(app.internal(pb::CheckRequest {
            subject: subject.into(),
            cost: 1,
            org_id: org.into(),
        }))
        .await
        .unwrap()
        .into_inner()
}

async fn events(app: &TestApp, action: &str) -> Vec<twig_audit::StoredEvent> {
    twig_audit::events_with_action(&app.db, action)
        .await
        .unwrap()
}

fn details(event: &twig_audit::StoredEvent) -> serde_json::Value {
    serde_json::from_str(&event.details).unwrap()
}

fn field(status: &tonic::Status) -> String {
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations[0].field.clone())
        .unwrap_or_default()
}

/// The issue replayed: the owner of a free organisation gives it 10^12
/// requests a minute. Refused, audited, nothing stored, and the plan's
/// 100 a minute still holds.
async fn an_owner_cannot_lift_their_own_limit(backend: Backend) {
    let app = app(backend).await;
    let me = owner(&app).await;
    let org_subject = format!("org:{}", me.org);
    let key_subject = format!("key:{}", me.key_id);

    for (credential, subject) in [
        (&me.token, &org_subject),
        (&me.key_secret, &org_subject),
        (&me.token, &key_subject),
    ] {
        let err = set_limit(&app, credential, limit(subject, 1_000_000_000_000, 60))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{subject}: {err:?}");
        let message = err.message();
        assert!(
            message.contains("plan `free` has no custom limits")
                && message.contains("100 requests per 60 s")
                && message.contains("platform operator")
                && message.contains("enterprise"),
            "the plan, its default and what to do: {message}"
        );
    }
    // A shadow limit is never enforced: not an admin's to set either.
    let err = set_limit(
        &app,
        &me.token,
        pb::Limit {
            shadow: true,
            ..limit(&org_subject, 1, 60)
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");

    let refused = events(&app, "quota.limit_refused").await;
    assert_eq!(refused.len(), 4, "{refused:?}");
    for event in &refused {
        assert_eq!(event.org_id.map(|o| o.to_string()), Some(me.org.clone()));
        assert_eq!(event.outcome, "failure");
        assert_eq!(details(event)["plan"], "free");
    }
    assert_eq!(details(&refused[0])["limit"], 1_000_000_000_000u64);
    assert_eq!(details(&refused[0])["reason"], "no_custom_limits");
    assert_eq!(details(&refused[3])["reason"], "shadow");
    assert!(events(&app, "quota.limit_set").await.is_empty());
    let listed = app
        .quota()
        .list_limits(bearer(&me.token, pb::ListLimitsRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert!(listed.limits.is_empty(), "nothing stored: {listed:?}");

    // The default still applies, from the plan: a burst past it is refused.
    let got = app
        .quota()
        .get_limit(bearer(
            &me.token,
            pb::GetLimitRequest {
                subject: key_subject.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.source(), pb::LimitSource::Plan);
    assert_eq!(got.limit.unwrap().limit, 100);
    let mut keys = app.api_keys();
    // The key's refused SetLimit above was its first request.
    for i in 1..100 {
        keys.get_api_key(bearer(
            &me.key_secret,
            kpb::GetApiKeyRequest {
                key_id: me.key_id.clone(),
            },
        ))
        .await
        .unwrap_or_else(|e| panic!("request {i}: {e:?}"));
    }
    let over = keys
        .get_api_key(bearer(
            &me.key_secret,
            kpb::GetApiKeyRequest {
                key_id: me.key_id.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(over.code(), Code::ResourceExhausted);
    assert!(
        over.message().contains("100 requests per 60 s"),
        "{}",
        over.message()
    );
}

/// Moving plans and setting limits beyond them are the operator's: a
/// member's bearer, the plain internal credential and an internal client
/// with another scope are refused, before anything is written.
async fn only_the_operator_moves_plans_and_sets_limits_beyond_them(backend: Backend) {
    let app = app(backend).await;
    let me = owner(&app).await;
    let move_to = |plan: &str| pb::SetOrganizationPlanRequest {
        organization_id: me.org.clone(),
        plan: plan.into(),
    };
    let beyond = || pb::SetOrganizationLimitRequest {
        organization_id: me.org.clone(),
        limit: Some(limit(&format!("org:{}", me.org), 1_000_000_000_000, 60)),
    };
    for (who, request) in [
        (
            "the owner's session",
            bearer(&me.token, move_to("enterprise")),
        ),
        (
            "the owner's admin key",
            bearer(&me.key_secret, move_to("enterprise")),
        ),
        (
            "the plain internal credential",
            app.internal(move_to("enterprise")),
        ),
        (
            "an internal client without the scope",
            with_internal_token(RUNTIME_TOKEN, move_to("enterprise")),
        ),
    ] {
        let err = app
            .quota()
            .set_organization_plan(request)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{who}: {err:?}");
    }
    for (who, request) in [
        ("the owner's session", bearer(&me.token, beyond())),
        ("the plain internal credential", app.internal(beyond())),
        (
            "an internal client without the scope",
            with_internal_token(RUNTIME_TOKEN, beyond()),
        ),
    ] {
        let err = app
            .quota()
            .set_organization_limit(request)
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{who}: {err:?}");
        if who.starts_with("an internal") {
            assert!(err.message().contains("platform.operator"), "{err:?}");
        }
    }
    let plan = plan_of(&app, &me.token).await;
    assert_eq!(plan.plan.unwrap().name, "free");
    assert!(!plan.assigned && plan.updated_by.is_empty());
    assert!(events(&app, "quota.plan_set").await.is_empty());
    assert!(events(&app, "quota.limit_set").await.is_empty());

    // Members read their own organisation's plan only; internal callers
    // name the organisation.
    let stranger = owner(&app).await;
    let err = app
        .quota()
        .get_organization_plan(bearer(
            &stranger.token,
            pb::GetOrganizationPlanRequest {
                organization_id: me.org.clone(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = app
        .quota()
        .get_organization_plan(app.internal(pb::GetOrganizationPlanRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), field(&err)),
        (Code::InvalidArgument, "organization_id".into())
    );
    let read = app
        .quota()
        .get_organization_plan(app.internal(pb::GetOrganizationPlanRequest {
            organization_id: me.org.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read.plan.unwrap().name, "free");

    // The operator's own mistakes are clear field errors.
    let err = app
        .quota()
        .set_organization_plan(app.operator(move_to("platinum")))
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), field(&err)),
        (Code::InvalidArgument, "plan".into())
    );
    assert!(
        err.message().contains("enterprise, free, team"),
        "{}",
        err.message()
    );
    let err = app
        .quota()
        .set_organization_plan(app.operator(pb::SetOrganizationPlanRequest {
            organization_id: "acme".into(),
            plan: "team".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(field(&err), "organization_id");
    let err = operator_limit(
        &app,
        &me.org,
        limit(&format!("org:{}", stranger.org), 5, 60),
    )
    .await
    .unwrap_err();
    assert_eq!(
        (err.code(), field(&err)),
        (Code::InvalidArgument, "limit.subject".into())
    );
    let err = operator_limit(
        &app,
        &me.org,
        limit(&format!("key:{}", stranger.key_id), 5, 60),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "another organisation's key");
}

/// The operator moves an organisation to `enterprise`: its admins may now
/// set limits up to the plan's maximum and no further; the operator sets
/// one above it. Its keys' default follows the plan.
async fn the_plan_decides_what_admins_may_set(backend: Backend) {
    let app = TestApp::builder(backend)
        .weak_hashing()
        .config(|c| {
            c.plans.default_plan = "free".into();
            c.plans.plan_mut("team").unwrap().default_limit.requests = 7;
        })
        .spawn()
        .await;
    let me = owner(&app).await;
    let org_subject = format!("org:{}", me.org);
    let key_subject = format!("key:{}", me.key_id);

    // The default follows the plan while there is no limit of its own.
    assert_eq!(check(&app, &key_subject, &me.org).await.limit, 100);
    app.set_plan(&me.org, "team").await;
    let d = check(&app, &key_subject, &me.org).await;
    assert_eq!(
        (d.limit, d.counted_subject.as_str()),
        (7, key_subject.as_str())
    );

    let moved = app
        .quota()
        .set_organization_plan(app.operator(pb::SetOrganizationPlanRequest {
            organization_id: me.org.clone(),
            plan: "enterprise".into(),
        }))
        .await
        .unwrap()
        .into_inner()
        .plan
        .unwrap();
    let plan = moved.plan.unwrap();
    assert_eq!(plan.name, "enterprise");
    assert_eq!(plan.max_custom_limit.unwrap().requests, 1_000_000);
    assert_eq!(plan.features, ["ip_allowlists", "sso", "custom_limits"]);
    assert!(moved.assigned);
    assert_eq!(moved.updated_by, format!("operator:{OPERATOR}"));
    assert_eq!(check(&app, &key_subject, &me.org).await.limit, 100);
    let seen = plan_of(&app, &me.key_secret).await;
    assert_eq!(seen.plan.unwrap().name, "enterprise");
    assert!(seen.updated_at.is_some());

    // Within the plan: stored.
    let stored = set_limit(&app, &me.token, limit(&org_subject, 1_000_000, 60))
        .await
        .unwrap();
    assert_eq!(stored.limit, 1_000_000);
    set_limit(&app, &me.key_secret, limit(&key_subject, 16_666, 1))
        .await
        .expect("the same rate per second");
    // Beyond it: a higher rate, or more in one period than the maximum's.
    for (n, period_s) in [(1_000_001, 60), (16_667, 1), (1_000_001, 3600)] {
        let err = set_limit(&app, &me.token, limit(&org_subject, n, period_s))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{n}/{period_s}s");
        assert!(
            err.message().contains("plan `enterprise`")
                && err.message().contains("up to 1000000 requests per 60 s")
                && err.message().contains("platform operator"),
            "{}",
            err.message()
        );
    }
    let refused = events(&app, "quota.limit_refused").await;
    assert_eq!(refused.len(), 3);
    assert!(
        refused
            .iter()
            .all(|e| details(e)["reason"] == "above_plan_maximum"
                && e.org_id.map(|o| o.to_string()) == Some(me.org.clone()))
    );
    assert_eq!(check(&app, &org_subject, &me.org).await.limit, 1_000_000);

    // The operator goes beyond the plan.
    let beyond = operator_limit(&app, &me.org, limit(&org_subject, 1_000_000_000_000, 60))
        .await
        .unwrap();
    assert_eq!(beyond.updated_by, format!("operator:{OPERATOR}"));
    assert_eq!(
        check(&app, &org_subject, &me.org).await.limit,
        1_000_000_000_000
    );
    operator_limit(&app, &me.org, limit(&key_subject, 50_000_000, 60))
        .await
        .expect("a key of the organisation");
    assert_eq!(check(&app, &key_subject, &me.org).await.limit, 50_000_000);

    // Every change is in the organisation's audit log.
    let plans = events(&app, "quota.plan_set").await;
    assert_eq!(plans.len(), 2);
    assert_eq!(details(&plans[0])["previous"], serde_json::Value::Null);
    assert_eq!(details(&plans[1])["previous"], "team");
    assert_eq!(details(&plans[1])["plan"], "enterprise");
    let set = events(&app, "quota.limit_set").await;
    assert_eq!(set.len(), 4);
    for e in &set {
        assert_eq!(e.org_id.map(|o| o.to_string()), Some(me.org.clone()));
    }
    let by_operator: Vec<_> = set
        .iter()
        .filter(|e| e.actor.as_deref() == Some(&format!("operator:{OPERATOR}")))
        .collect();
    assert_eq!(by_operator.len(), 2);
    assert!(
        by_operator
            .iter()
            .all(|e| details(e)["beyond_plan"] == true)
    );
    assert!(
        set.iter()
            .filter(|e| !by_operator.contains(e))
            .all(|e| details(e)["beyond_plan"] == false && details(e)["plan"] == "enterprise")
    );

    // A move to a smaller plan takes back what only the bigger one
    // allowed: admins' limits above `team` go, the operator's and those
    // within `team` stay.
    let big = format!("key:{}", new_key(&app, &me.token).await);
    let small = format!("key:{}", new_key(&app, &me.token).await);
    set_limit(&app, &me.token, limit(&big, 500_000, 60))
        .await
        .unwrap();
    set_limit(&app, &me.token, limit(&small, 5_000, 60))
        .await
        .unwrap();
    app.set_plan(&me.org, "team").await;
    let listed = app
        .quota()
        .list_limits(bearer(&me.token, pb::ListLimitsRequest {}))
        .await
        .unwrap()
        .into_inner()
        .limits;
    let mut kept: Vec<(String, u64)> = listed
        .iter()
        .map(|l| (l.subject.clone(), l.limit))
        .collect();
    kept.sort();
    let mut expected = vec![
        (org_subject.clone(), 1_000_000_000_000),
        (key_subject.clone(), 50_000_000),
        (small.clone(), 5_000),
    ];
    expected.sort();
    assert_eq!(kept, expected);
    let d = check(&app, &big, &me.org).await;
    assert_eq!(
        (d.limit, d.counted_subject.as_str()),
        (1_000_000_000_000, org_subject.as_str()),
        "the key counts under the organisation's limit again"
    );
    let deleted = events(&app, "quota.limit_deleted").await;
    assert_eq!(deleted.len(), 1, "{deleted:?}");
    assert_eq!(deleted[0].target.as_deref(), Some(big.as_str()));
    assert_eq!(details(&deleted[0])["reason"], "plan_changed");
    assert_eq!(details(&deleted[0])["plan"], "team");

    // Members see the plan over HTTP/JSON too.
    let (status, _, body) = twig_tests::http1(
        app.addr,
        &format!(
            "GET /v1/quota/plan HTTP/1.1\r\nAuthorization: Bearer {}",
            me.token
        ),
        b"",
    )
    .await;
    assert!(status.contains("200"), "{status}");
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["plan"]["name"], "team", "{body}");
    assert_eq!(body["plan"]["defaultLimit"]["requests"], "7", "{body}");
    assert_eq!(
        body["plan"]["maxCustomLimit"]["requests"], "10000",
        "{body}"
    );
    assert_eq!(body["updatedBy"], format!("operator:{OPERATOR}"), "{body}");
}

/// IP allowlists are a feature of some plans: refused (and audited) on
/// `free`, allowed once the operator grants a plan with them. Clearing a
/// list works on any plan, and a move back to `free` does not open a
/// fence that stands.
/// An admin sets a limit only enterprise admits while the operator moves
/// the organisation to free, at once, again and again: the limit is set
/// before the move (which removes it) or refused after it — never left
/// above the plan the organisation ends on.
async fn a_move_to_a_smaller_plan_never_leaves_a_limit_it_does_not_admit(backend: Backend) {
    let app = app(backend).await;
    let me = owner(&app).await;
    let org_subject = format!("org:{}", me.org);
    let (mut set, mut refused) = (0, 0);
    for round in 0..12 {
        app.set_plan(&me.org, "enterprise").await;
        let move_to_free = async {
            app.quota()
                .set_organization_plan(app.operator(pb::SetOrganizationPlanRequest {
                    organization_id: me.org.clone(),
                    plan: "free".into(),
                }))
                .await
        };
        let (limit_set, moved) = tokio::join!(
            set_limit(&app, &me.token, limit(&org_subject, 500_000 + round, 60)),
            move_to_free,
        );
        moved.expect("the move to free");
        match limit_set {
            Ok(_) => set += 1,
            Err(e) => {
                assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
                refused += 1;
            }
        }
        let left = crate::accounts::count(
            &app,
            &format!("SELECT COUNT(*) AS n FROM quota_limits WHERE subject = '{org_subject}'"),
        )
        .await;
        assert_eq!(left, 0, "round {round}: a limit free does not admit");
    }
    assert_eq!(set + refused, 12);
    app.stop().await;
}

async fn allowlists_need_a_plan_with_them(backend: Backend) {
    let app = app(backend).await;
    let me = owner(&app).await;
    let set_org = |cidrs: &[&str]| {
        let request = bearer(
            &me.token,
            kpb::SetOrgAllowlistRequest {
                allowlist: Some(kpb::CidrList {
                    cidrs: cidrs.iter().map(|c| c.to_string()).collect(),
                }),
            },
        );
        let mut client = app.api_keys();
        async move { client.set_org_allowlist(request).await }
    };
    let set_key = |cidrs: &[&str]| {
        let request = bearer(
            &me.token,
            kpb::UpdateApiKeyRequest {
                key_id: me.key_id.clone(),
                name: Some("renamed".into()),
                allowed_cidrs: Some(kpb::CidrList {
                    cidrs: cidrs.iter().map(|c| c.to_string()).collect(),
                }),
                ..Default::default()
            },
        );
        let mut client = app.api_keys();
        async move { client.update_api_key(request).await }
    };
    let verify_from = |ip: &str| {
        let request = app.internal(kpb::VerifyApiKeyRequest {
            key: me.key_secret.clone(),
            required_scope: 0,
            client_ip: ip.into(),
        });
        let mut client = app.api_keys();
        async move { client.verify_api_key(request).await.map(|_| ()) }
    };

    for err in [
        set_org(&["10.0.0.0/8"]).await.unwrap_err(),
        set_key(&["10.0.0.0/8"]).await.unwrap_err(),
    ] {
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
        assert!(
            err.message()
                .contains("plan `free` does not include IP allowlists")
                && err.message().contains("platform operator"),
            "{}",
            err.message()
        );
    }
    // Bad input is still a field error first.
    let err = set_org(&["not-a-network"]).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    // Nothing changed: no list, the key not even renamed.
    let key = app
        .api_keys()
        .get_api_key(bearer(
            &me.token,
            kpb::GetApiKeyRequest {
                key_id: me.key_id.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert_eq!(key.name, "owner's");
    assert!(key.allowed_cidrs.is_empty());
    verify_from("203.0.113.1").await.expect("no fence");
    let refused = events(&app, "plan.feature_refused").await;
    assert_eq!(refused.len(), 2);
    for (event, target) in refused
        .iter()
        .zip([format!("org:{}", me.org), format!("key:{}", me.key_id)])
    {
        assert_eq!(event.org_id.map(|o| o.to_string()), Some(me.org.clone()));
        assert_eq!(event.target.as_deref(), Some(target.as_str()));
        assert_eq!(details(event)["feature"], "ip_allowlists");
        assert_eq!(details(event)["plan"], "free");
    }
    // Clearing is no feature.
    set_org(&[]).await.expect("an empty list on any plan");
    set_key(&[]).await.expect("an empty list on any plan");

    // The operator grants a plan with allowlists.
    app.set_plan(&me.org, "team").await;
    let stored = set_org(&["10.0.0.0/8"]).await.unwrap().into_inner();
    assert_eq!(stored.allowlist.unwrap().cidrs, ["10.0.0.0/8"]);
    set_key(&["10.1.0.0/16"]).await.unwrap();
    verify_from("10.1.2.3").await.unwrap();
    assert_eq!(
        verify_from("203.0.113.1").await.unwrap_err().code(),
        Code::PermissionDenied
    );

    // Back on `free`: the fences stand, new ones are refused, clearing works.
    app.set_plan(&me.org, "free").await;
    assert_eq!(
        verify_from("203.0.113.1").await.unwrap_err().code(),
        Code::PermissionDenied
    );
    assert_eq!(
        set_org(&["192.0.2.0/24"]).await.unwrap_err().code(),
        Code::FailedPrecondition
    );
    set_org(&[]).await.unwrap();
    set_key(&[]).await.unwrap();
    verify_from("203.0.113.1").await.unwrap();
}

on_both_backends!(
    an_owner_cannot_lift_their_own_limit,
    only_the_operator_moves_plans_and_sets_limits_beyond_them,
    the_plan_decides_what_admins_may_set,
    allowlists_need_a_plan_with_them,
    a_move_to_a_smaller_plan_never_leaves_a_limit_it_does_not_admit,
);
