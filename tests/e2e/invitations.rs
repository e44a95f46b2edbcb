//! Invitations, end to end over gRPC and HTTP/JSON with the mail read
//! back from maildev: the one way into an organisation. An owner or admin
//! invites an email; the person accepts signed in with that verified
//! email, or signs up through the link. Nobody joins without accepting;
//! tokens work once, expire, die when revoked or resent, and only for the
//! address they were sent to; the answer is the same whether or not the
//! email has an account.

use std::time::Duration;

use tonic::{Code, Status};
use twig_crypto::{Token, TokenKind};
use twig_proto::sessions::v1 as pb;
use twig_tests::{Backend, PASSWORD, TestApp, bearer, email};

use crate::accounts::{
    app_with_mail, count, events, field_of, fresh_token, http, link_token_of, login_with,
    mail_settled, mails_about, me, memberships, refused_token, refused_token_over_http,
    unverified_account, verify_email,
};

/// A signed-up account: its id, its own organisation and a session there.
struct Account {
    email: String,
    id: String,
    org: String,
    org_name: String,
    token: String,
}

async fn account(app: &TestApp, name: &str) -> Account {
    let address = email(name);
    let up = app.sign_up(&address).await;
    let org = up.organization.expect("an organisation");
    Account {
        id: up.user.expect("a user").id,
        org: org.id,
        org_name: org.name,
        token: up.tokens.expect("tokens").access_token,
        email: address,
    }
}

/// The token of an invitation mailed to `address` that is none of `known`.
async fn invitation_token(app: &TestApp, address: &str, known: &[&str]) -> String {
    let token = fresh_token(app, address, "You are invited", "/accept-invitation", known).await;
    assert!(token.starts_with("twig_iv_"), "{token}");
    token
}

async fn accept(
    app: &TestApp,
    access: &str,
    token: &str,
) -> Result<pb::AcceptInvitationResponse, Status> {
    app.sessions()
        .accept_invitation(bearer(
            access,
            pb::AcceptInvitationRequest {
                token: token.into(),
            },
        ))
        .await
        .map(|r| r.into_inner())
}

async fn sign_up_invited(
    app: &TestApp,
    token: &str,
    display_name: &str,
) -> Result<pb::SignUpWithInvitationResponse, Status> {
    app.sessions()
        .sign_up_with_invitation(pb::SignUpWithInvitationRequest {
            token: token.into(),
            password: PASSWORD.into(),
            display_name: display_name.into(),
        })
        .await
        .map(|r| r.into_inner())
}

async fn invitations(
    app: &TestApp,
    access: &str,
    org: &str,
) -> Result<Vec<pb::Invitation>, Status> {
    app.sessions()
        .list_invitations(bearer(
            access,
            pb::ListInvitationsRequest {
                organization_id: org.into(),
            },
        ))
        .await
        .map(|r| r.into_inner().invitations)
}

/// Each invitation's email and state.
async fn states(app: &TestApp, access: &str, org: &str) -> Vec<(String, pb::InvitationState)> {
    invitations(app, access, org)
        .await
        .unwrap()
        .into_iter()
        .map(|i| {
            (
                i.email,
                pb::InvitationState::try_from(i.state).expect("a state"),
            )
        })
        .collect()
}

async fn revoke(app: &TestApp, access: &str, org: &str, id: &str) -> Result<(), Status> {
    app.sessions()
        .revoke_invitation(bearer(
            access,
            pb::RevokeInvitationRequest {
                organization_id: org.into(),
                invitation_id: id.into(),
            },
        ))
        .await
        .map(|_| ())
}

async fn resend(
    app: &TestApp,
    access: &str,
    org: &str,
    id: &str,
) -> Result<pb::Invitation, Status> {
    app.sessions()
        .resend_invitation(bearer(
            access,
            pb::ResendInvitationRequest {
                organization_id: org.into(),
                invitation_id: id.into(),
            },
        ))
        .await
        .map(|r| r.into_inner().invitation.expect("an invitation"))
}

/// The members of `org` as (email, role, status).
async fn members(
    app: &TestApp,
    access: &str,
    org: &str,
) -> Vec<(String, pb::Role, pb::MembershipStatus)> {
    app.sessions()
        .list_members(bearer(
            access,
            pb::ListMembersRequest {
                organization_id: org.into(),
            },
        ))
        .await
        .expect("ListMembers")
        .into_inner()
        .members
        .into_iter()
        .map(|m| {
            (
                m.user.expect("a user").email,
                pb::Role::try_from(m.role).expect("a role"),
                pb::MembershipStatus::try_from(m.status).expect("a status"),
            )
        })
        .collect()
}

fn emails_of(members: &[(String, pb::Role, pb::MembershipStatus)]) -> Vec<&str> {
    members.iter().map(|(e, _, _)| e.as_str()).collect()
}

#[track_caller]
fn code<T: std::fmt::Debug>(result: Result<T, Status>) -> Code {
    match result {
        Ok(answer) => panic!("accepted: {answer:?}"),
        Err(status) => status.code(),
    }
}

fn seconds(t: &Option<prost_types::Timestamp>) -> i64 {
    t.as_ref().expect("a timestamp").seconds
}

const WEEK: i64 = 7 * 24 * 3600;

// ----- the flows ------------------------------------------------------------------

async fn an_invited_account_accepts_then_is_suspended_and_removed_through_the_edge(
    backend: Backend,
) {
    let app = app_with_mail(backend).await;
    let owner = account(&app, "inv-owner").await;
    let bea = account(&app, "inv-bea").await;

    let invitation = app
        .invite(&owner.token, &owner.org, &bea.email, pb::Role::Member)
        .await
        .unwrap();
    assert_eq!(invitation.email, bea.email);
    assert_eq!(invitation.organization_id, owner.org);
    assert_eq!(invitation.role, pb::Role::Member as i32);
    assert_eq!(invitation.state, pb::InvitationState::Pending as i32);
    assert_eq!(invitation.invited_by, owner.id);
    assert_eq!(
        seconds(&invitation.expires_at) - seconds(&invitation.created_at),
        WEEK
    );
    // Nothing changes for Bea until she accepts.
    assert_eq!(
        memberships(&me(&app, &bea.token).await.unwrap()),
        [(bea.org.clone(), pb::Role::Owner)]
    );
    assert!(
        !emails_of(&members(&app, &owner.token, &owner.org).await).contains(&bea.email.as_str())
    );

    let mail = mails_about(&app, &bea.email, "You are invited", 1).await;
    assert_eq!(mail.len(), 1);
    assert_eq!(
        mail[0].subject,
        format!("You are invited to join {} on twig", owner.org_name)
    );
    assert!(mail[0].text.contains(&owner.org_name), "{}", mail[0].text);
    let token = link_token_of(&mail[0], "/accept-invitation");
    assert!(token.starts_with("twig_iv_"), "{token}");

    let accepted = accept(&app, &bea.token, &token).await.unwrap();
    let membership = accepted.membership.expect("a membership");
    assert_eq!(membership.organization.unwrap().id, owner.org);
    assert_eq!(membership.role, pb::Role::Member as i32);
    let listed = members(&app, &owner.token, &owner.org).await;
    assert!(
        listed.contains(&(
            bea.email.clone(),
            pb::Role::Member,
            pb::MembershipStatus::Active
        )),
        "{listed:?}"
    );
    let mut both = vec![
        (owner.org.clone(), pb::Role::Member),
        (bea.org.clone(), pb::Role::Owner),
    ];
    both.sort();
    assert_eq!(memberships(&me(&app, &bea.token).await.unwrap()), both);
    let in_org = login_with(&app, &bea.email, PASSWORD, &owner.org)
        .await
        .unwrap();
    let principal = app.verify(&in_org.access_token).await.unwrap();
    assert_eq!(principal.organization_id, owner.org);
    assert_eq!(principal.roles, ["member"]);
    assert_eq!(
        states(&app, &owner.token, &owner.org).await,
        [(bea.email.clone(), pb::InvitationState::Accepted)]
    );
    let created = events(&app, "invitation.created").await;
    assert_eq!(created.len(), 1);
    assert_eq!(created[0].org.as_deref(), Some(owner.org.as_str()));
    let accepted = events(&app, "invitation.accepted").await;
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0].org.as_deref(), Some(owner.org.as_str()));
    assert_eq!(
        accepted[0].actor.as_deref(),
        Some(format!("user:{}", bea.id).as_str())
    );

    // The token again.
    refused_token("a used invitation", accept(&app, &bea.token, &token).await);
    let refused = events(&app, "invitation.refused").await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].org.as_deref(), Some(owner.org.as_str()));
    assert_eq!(refused[0].details["reason"], "used");
    assert_eq!(
        refused[0].target.as_deref(),
        Some(format!("invitation:{}", invitation.id).as_str())
    );

    // Suspended, then removed, through the edge's routes.
    let member_path = format!("/v1/organizations/{}/members/{}", owner.org, bea.id);
    let suspended = http(
        &app,
        "POST",
        &format!("{member_path}:suspend"),
        Some(&owner.token),
        Some(serde_json::json!({})),
    )
    .await;
    assert_eq!(suspended.status, 200, "{}", suspended.text());
    assert_eq!(suspended.json()["sessionsEnded"], 1, "{}", suspended.text());
    assert_eq!(
        code(me(&app, &in_org.access_token).await),
        Code::Unauthenticated
    );
    let listed = http(
        &app,
        "GET",
        &format!("/v1/organizations/{}/members", owner.org),
        Some(&owner.token),
        None,
    )
    .await;
    assert_eq!(listed.status, 200, "{}", listed.text());
    let bea_listed = listed.json()["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["user"]["email"] == bea.email.as_str())
        .cloned()
        .expect("Bea is listed");
    assert_eq!(bea_listed["status"], "MEMBERSHIP_STATUS_SUSPENDED");
    let removed = http(&app, "DELETE", &member_path, Some(&owner.token), None).await;
    assert_eq!(removed.status, 200, "{}", removed.text());
    let listed = http(
        &app,
        "GET",
        &format!("/v1/organizations/{}/members", owner.org),
        Some(&owner.token),
        None,
    )
    .await;
    assert!(!listed.text().contains(&bea.email), "{}", listed.text());
    // Her own organisation is untouched.
    assert_eq!(
        memberships(&me(&app, &bea.token).await.unwrap()),
        [(bea.org.clone(), pb::Role::Owner)]
    );
    assert!(
        login_with(&app, &bea.email, PASSWORD, &owner.org)
            .await
            .is_err()
    );

    // Removed, she comes back only through a new invitation she accepts.
    app.invite(&owner.token, &owner.org, &bea.email, pb::Role::Admin)
        .await
        .expect("a removed member may be invited again");
    assert!(
        !emails_of(&members(&app, &owner.token, &owner.org).await).contains(&bea.email.as_str())
    );
    let again = invitation_token(&app, &bea.email, &[token.as_str()]).await;
    accept(&app, &bea.token, &again).await.unwrap();
    assert!(members(&app, &owner.token, &owner.org).await.contains(&(
        bea.email.clone(),
        pb::Role::Admin,
        pb::MembershipStatus::Active
    )));
    app.stop().await;
}

async fn invitations_over_http_json(backend: Backend) {
    let app = app_with_mail(backend).await;
    let owner = account(&app, "http-inv-owner").await;
    let carl = account(&app, "http-inv-carl").await;
    let base = format!("/v1/organizations/{}", owner.org);
    let invite = |address: &str, role: &str| {
        let app = &app;
        let path = format!("{base}/invitations");
        let body = serde_json::json!({ "email": address, "role": role });
        let token = owner.token.clone();
        async move { http(app, "POST", &path, Some(&token), Some(body)).await }
    };

    let created = invite(&carl.email, "ROLE_MEMBER").await;
    assert_eq!(created.status, 200, "{}", created.text());
    let json = created.json();
    assert_eq!(json["invitation"]["email"], carl.email.as_str(), "{json}");
    assert_eq!(json["invitation"]["role"], "ROLE_MEMBER", "{json}");
    assert_eq!(
        json["invitation"]["state"], "INVITATION_STATE_PENDING",
        "{json}"
    );
    assert_eq!(json["invitation"]["organizationId"], owner.org.as_str());
    let token = invitation_token(&app, &carl.email, &[]).await;
    let accepted = http(
        &app,
        "POST",
        "/v1/invitations:accept",
        Some(&carl.token),
        Some(serde_json::json!({ "token": token })),
    )
    .await;
    assert_eq!(accepted.status, 200, "{}", accepted.text());
    let json = accepted.json();
    assert_eq!(
        json["membership"]["organization"]["id"],
        owner.org.as_str(),
        "{json}"
    );
    assert_eq!(json["membership"]["role"], "ROLE_MEMBER", "{json}");
    let replay = http(
        &app,
        "POST",
        "/v1/invitations:accept",
        Some(&carl.token),
        Some(serde_json::json!({ "token": token })),
    )
    .await;
    refused_token_over_http("an accepted invitation again", &replay);
    let member_status = |listed: &serde_json::Value, address: &str| {
        listed["members"]
            .as_array()
            .expect("members")
            .iter()
            .find(|m| m["user"]["email"] == address)
            .map(|m| m["status"].as_str().unwrap_or_default().to_string())
    };
    let listed = http(
        &app,
        "GET",
        &format!("{base}/members"),
        Some(&owner.token),
        None,
    )
    .await;
    assert_eq!(
        member_status(&listed.json(), &carl.email).as_deref(),
        Some("MEMBERSHIP_STATUS_ACTIVE"),
        "{}",
        listed.text()
    );

    // Carl in the organisation: suspended, then removed.
    let login = http(
        &app,
        "POST",
        "/v1/sessions:login",
        None,
        Some(serde_json::json!({
            "email": carl.email,
            "password": PASSWORD,
            "organizationId": owner.org,
        })),
    )
    .await;
    assert_eq!(login.status, 200, "{}", login.text());
    let carl_here = login.json()["tokens"]["accessToken"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        http(&app, "GET", "/v1/me", Some(&carl_here), None)
            .await
            .status,
        200
    );
    let suspended = http(
        &app,
        "POST",
        &format!("{base}/members/{}:suspend", carl.id),
        Some(&owner.token),
        Some(serde_json::json!({})),
    )
    .await;
    assert_eq!(suspended.status, 200, "{}", suspended.text());
    assert_eq!(
        http(&app, "GET", "/v1/me", Some(&carl_here), None)
            .await
            .status,
        401
    );
    let listed = http(
        &app,
        "GET",
        &format!("{base}/members"),
        Some(&owner.token),
        None,
    )
    .await;
    assert_eq!(
        member_status(&listed.json(), &carl.email).as_deref(),
        Some("MEMBERSHIP_STATUS_SUSPENDED")
    );
    let removed = http(
        &app,
        "DELETE",
        &format!("{base}/members/{}", carl.id),
        Some(&owner.token),
        None,
    )
    .await;
    assert_eq!(removed.status, 200, "{}", removed.text());
    let listed = http(
        &app,
        "GET",
        &format!("{base}/members"),
        Some(&owner.token),
        None,
    )
    .await;
    assert_eq!(member_status(&listed.json(), &carl.email), None);
    let home = http(&app, "GET", "/v1/me", Some(&carl.token), None).await;
    assert_eq!(home.status, 200, "{}", home.text());
    assert_eq!(home.json()["memberships"].as_array().unwrap().len(), 1);

    // Dora has no account: she signs up through the link.
    let dora = email("http-inv-dora");
    assert_eq!(invite(&dora, "ROLE_ADMIN").await.status, 200);
    let token = invitation_token(&app, &dora, &[]).await;
    let signed_up = http(
        &app,
        "POST",
        "/v1/invitations:signUp",
        None,
        Some(serde_json::json!({
            "token": token,
            "password": PASSWORD,
            "displayName": "Dora",
        })),
    )
    .await;
    assert_eq!(signed_up.status, 200, "{}", signed_up.text());
    let json = signed_up.json();
    assert_eq!(json["user"]["email"], dora.as_str(), "{json}");
    assert_eq!(json["user"]["displayName"], "Dora", "{json}");
    assert_eq!(json["user"]["emailVerified"], true, "{json}");
    assert_eq!(json["organization"]["id"], owner.org.as_str(), "{json}");
    let dora_token = json["tokens"]["accessToken"].as_str().unwrap().to_string();
    let who = http(&app, "GET", "/v1/me", Some(&dora_token), None)
        .await
        .json();
    let dora_memberships = who["memberships"].as_array().unwrap();
    assert_eq!(dora_memberships.len(), 1, "{who}");
    assert_eq!(
        dora_memberships[0]["organization"]["id"],
        owner.org.as_str()
    );
    assert_eq!(dora_memberships[0]["role"], "ROLE_ADMIN");

    // Erin's invitation is resent, then revoked.
    let erin = email("http-inv-erin");
    let created = invite(&erin, "ROLE_MEMBER").await;
    let id = created.json()["invitation"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let old = invitation_token(&app, &erin, &[]).await;
    let resent = http(
        &app,
        "POST",
        &format!("{base}/invitations/{id}:resend"),
        Some(&owner.token),
        Some(serde_json::json!({})),
    )
    .await;
    assert_eq!(resent.status, 200, "{}", resent.text());
    assert_eq!(
        resent.json()["invitation"]["state"],
        "INVITATION_STATE_PENDING"
    );
    let new = invitation_token(&app, &erin, &[old.as_str()]).await;
    assert_ne!(old, new);
    let sign_up_with = |token: &str| serde_json::json!({ "token": token, "password": PASSWORD });
    let with_old = http(
        &app,
        "POST",
        "/v1/invitations:signUp",
        None,
        Some(sign_up_with(&old)),
    )
    .await;
    refused_token_over_http("a resent invitation's old token", &with_old);
    let revoked = http(
        &app,
        "DELETE",
        &format!("{base}/invitations/{id}"),
        Some(&owner.token),
        None,
    )
    .await;
    assert_eq!(revoked.status, 200, "{}", revoked.text());
    let with_new = http(
        &app,
        "POST",
        "/v1/invitations:signUp",
        None,
        Some(sign_up_with(&new)),
    )
    .await;
    refused_token_over_http("a revoked invitation", &with_new);

    let listed = http(
        &app,
        "GET",
        &format!("{base}/invitations"),
        Some(&owner.token),
        None,
    )
    .await;
    assert_eq!(listed.status, 200, "{}", listed.text());
    let state_of = |address: &str| {
        listed.json()["invitations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["email"] == address)
            .map(|i| i["state"].as_str().unwrap().to_string())
    };
    assert_eq!(
        state_of(&carl.email).as_deref(),
        Some("INVITATION_STATE_ACCEPTED")
    );
    assert_eq!(
        state_of(&dora).as_deref(),
        Some("INVITATION_STATE_ACCEPTED")
    );
    assert_eq!(state_of(&erin).as_deref(), Some("INVITATION_STATE_REVOKED"));
    app.stop().await;
}

async fn signing_up_through_an_invitation_joins_that_org_and_owns_none(backend: Backend) {
    let app = app_with_mail(backend).await;
    let owner = account(&app, "inv-signup-owner").await;
    let dora = email("inv-signup-dora");
    app.invite(&owner.token, &owner.org, &dora, pb::Role::Admin)
        .await
        .unwrap();
    let token = invitation_token(&app, &dora, &[]).await;
    let orgs_before = count(&app, "SELECT COUNT(*) AS n FROM organizations").await;

    let done = sign_up_invited(&app, &token, "Dora").await.unwrap();
    let user = done.user.expect("the new account");
    assert_eq!(user.email, dora);
    assert_eq!(user.display_name, "Dora");
    assert!(user.email_verified, "the link proved the address");
    assert_eq!(done.organization.unwrap().id, owner.org);
    let tokens = done.tokens.expect("a session");
    let principal = app.verify(&tokens.access_token).await.unwrap();
    assert_eq!(principal.organization_id, owner.org);
    assert_eq!(principal.roles, ["admin"]);
    assert_eq!(
        memberships(&me(&app, &tokens.access_token).await.unwrap()),
        [(owner.org.clone(), pb::Role::Admin)],
        "a member of the inviting organisation, owner of none"
    );
    assert_eq!(
        count(&app, "SELECT COUNT(*) AS n FROM organizations").await,
        orgs_before
    );
    let login = login_with(&app, &dora, PASSWORD, "").await.unwrap();
    assert_eq!(
        app.verify(&login.access_token)
            .await
            .unwrap()
            .organization_id,
        owner.org
    );
    assert!(members(&app, &owner.token, &owner.org).await.contains(&(
        dora.clone(),
        pb::Role::Admin,
        pb::MembershipStatus::Active
    )));
    assert_eq!(
        states(&app, &owner.token, &owner.org).await,
        [(dora.clone(), pb::InvitationState::Accepted)]
    );
    let accepted = events(&app, "invitation.accepted").await;
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0].details["signed_up"], true);
    assert_eq!(accepted[0].org.as_deref(), Some(owner.org.as_str()));

    // The token again, either way.
    refused_token(
        "an invitation used to sign up, again",
        sign_up_invited(&app, &token, "Dora again").await,
    );
    refused_token(
        "an invitation used to sign up, accepted",
        accept(&app, &tokens.access_token, &token).await,
    );
    let refused = events(&app, "invitation.refused").await;
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(
        refused
            .iter()
            .all(|e| e.details["reason"] == "used" && e.org.as_deref() == Some(owner.org.as_str())),
        "{refused:?}"
    );

    // An address that got an account after it was invited: the link does
    // not make a second one, and the invitation still waits for it.
    let fay = email("inv-signup-fay");
    app.invite(&owner.token, &owner.org, &fay, pb::Role::Member)
        .await
        .unwrap();
    let fay_token = invitation_token(&app, &fay, &[]).await;
    let fay_home = app.sign_up(&fay).await.tokens.unwrap().access_token;
    let taken = sign_up_invited(&app, &fay_token, "").await.unwrap_err();
    assert_eq!(taken.code(), Code::AlreadyExists, "{taken:?}");
    assert!(
        states(&app, &owner.token, &owner.org)
            .await
            .contains(&(fay.clone(), pb::InvitationState::Pending))
    );
    accept(&app, &fay_home, &fay_token).await.unwrap();
    app.stop().await;
}

async fn used_expired_revoked_and_replaced_invitations_are_refused(backend: Backend) {
    let app = app_with_mail(backend).await;
    let owner = account(&app, "inv-refused-owner").await;
    let mut messages = Vec::new();

    // Revoked.
    let gus = account(&app, "inv-refused-gus").await;
    let to_gus = app
        .invite(&owner.token, &owner.org, &gus.email, pb::Role::Member)
        .await
        .unwrap();
    let gus_token = invitation_token(&app, &gus.email, &[]).await;
    revoke(&app, &owner.token, &owner.org, &to_gus.id)
        .await
        .unwrap();
    messages.push(refused_token(
        "a revoked invitation",
        accept(&app, &gus.token, &gus_token).await,
    ));
    let refused = events(&app, "invitation.refused").await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].org.as_deref(), Some(owner.org.as_str()));
    assert_eq!(
        refused[0].actor.as_deref(),
        Some(format!("user:{}", gus.id).as_str())
    );
    assert_ne!(refused[0].details["reason"], serde_json::Value::Null);
    assert_eq!(refused[0].details["reason"], "revoked");
    assert_eq!(
        memberships(&me(&app, &gus.token).await.unwrap()),
        [(gus.org.clone(), pb::Role::Owner)]
    );
    revoke(&app, &owner.token, &owner.org, &to_gus.id)
        .await
        .expect("revoking twice changes nothing");
    assert_eq!(
        code(resend(&app, &owner.token, &owner.org, &to_gus.id).await),
        Code::FailedPrecondition,
        "a revoked invitation is not sent again"
    );
    assert_eq!(events(&app, "invitation.revoked").await.len(), 1);

    // Resent: the old token dies, the new one works.
    let hal = email("inv-refused-hal");
    let to_hal = app
        .invite(&owner.token, &owner.org, &hal, pb::Role::Member)
        .await
        .unwrap();
    let old = invitation_token(&app, &hal, &[]).await;
    let resent = resend(&app, &owner.token, &owner.org, &to_hal.id)
        .await
        .unwrap();
    assert_eq!(resent.state, pb::InvitationState::Pending as i32);
    assert_eq!(resent.id, to_hal.id);
    let new = invitation_token(&app, &hal, &[old.as_str()]).await;
    assert_ne!(old, new);
    messages.push(refused_token(
        "a resent invitation's old token",
        sign_up_invited(&app, &old, "").await,
    ));
    sign_up_invited(&app, &new, "").await.unwrap();

    // Guesses.
    let refused_before = events(&app, "invitation.refused").await.len();
    let never_issued = Token::generate(TokenKind::Invitation);
    let other_kind = Token::generate(TokenKind::PasswordReset);
    for (what, presented) in [
        ("empty", ""),
        ("a guess", "twig_iv_guess"),
        ("well formed, never issued", never_issued.expose()),
        ("a reset token's form", other_kind.expose()),
    ] {
        messages.push(refused_token(
            what,
            accept(&app, &gus.token, presented).await,
        ));
        messages.push(refused_token(
            what,
            sign_up_invited(&app, presented, "").await,
        ));
    }
    assert_eq!(
        events(&app, "invitation.refused").await.len(),
        refused_before,
        "guesses name no invitation and are audited nowhere"
    );

    // Expired (seven days by default), then sent again.
    let ivy = account(&app, "inv-refused-ivy").await;
    let to_ivy = app
        .invite(&owner.token, &owner.org, &ivy.email, pb::Role::Member)
        .await
        .unwrap();
    let ivy_token = invitation_token(&app, &ivy.email, &[]).await;
    app.clock.advance(Duration::from_secs(WEEK as u64 + 1));
    let ivy_now = login_with(&app, &ivy.email, PASSWORD, "")
        .await
        .unwrap()
        .access_token;
    let owner_now = login_with(&app, &owner.email, PASSWORD, "")
        .await
        .unwrap()
        .access_token;
    messages.push(refused_token(
        "an expired invitation",
        accept(&app, &ivy_now, &ivy_token).await,
    ));
    let refused = events(&app, "invitation.refused").await;
    let last = refused.last().unwrap();
    assert_eq!(last.details["reason"], "expired", "{last:?}");
    assert_eq!(last.org.as_deref(), Some(owner.org.as_str()));
    assert!(
        states(&app, &owner_now, &owner.org)
            .await
            .contains(&(ivy.email.clone(), pb::InvitationState::Expired))
    );
    let again = resend(&app, &owner_now, &owner.org, &to_ivy.id)
        .await
        .unwrap();
    assert_eq!(again.state, pb::InvitationState::Pending as i32);
    assert_eq!(
        seconds(&again.expires_at),
        app.clock_now() + WEEK,
        "a new week from now"
    );
    let ivy_new = invitation_token(&app, &ivy.email, &[ivy_token.as_str()]).await;
    messages.push(refused_token(
        "an expired invitation's token after a resend",
        accept(&app, &ivy_now, &ivy_token).await,
    ));
    accept(&app, &ivy_now, &ivy_new).await.unwrap();

    assert!(
        messages.windows(2).all(|w| w[0] == w[1]),
        "one answer for every refused invitation: {messages:#?}"
    );
    app.stop().await;
}

async fn only_the_invited_account_with_a_verified_email_may_accept(backend: Backend) {
    let app = app_with_mail(backend).await;
    let owner = account(&app, "inv-who-owner").await;
    let vic = account(&app, "inv-who-vic").await;
    let mallory = account(&app, "inv-who-mallory").await;

    let invitation = app
        .invite(&owner.token, &owner.org, &vic.email, pb::Role::Member)
        .await
        .unwrap();
    let token = invitation_token(&app, &vic.email, &[]).await;
    // Mallory got hold of the link: signed in as herself, she is refused.
    let other = accept(&app, &mallory.token, &token).await.unwrap_err();
    assert_eq!(other.code(), Code::PermissionDenied, "{other:?}");
    let refused = events(&app, "invitation.refused").await;
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].details["reason"], "other_account");
    assert_eq!(refused[0].org.as_deref(), Some(owner.org.as_str()));
    assert_eq!(
        refused[0].actor.as_deref(),
        Some(format!("user:{}", mallory.id).as_str())
    );
    assert_eq!(
        refused[0].target.as_deref(),
        Some(format!("invitation:{}", invitation.id).as_str())
    );
    assert_eq!(
        memberships(&me(&app, &mallory.token).await.unwrap()),
        [(mallory.org.clone(), pb::Role::Owner)]
    );
    assert!(
        !emails_of(&members(&app, &owner.token, &owner.org).await)
            .contains(&mallory.email.as_str())
    );
    assert_eq!(
        states(&app, &owner.token, &owner.org).await,
        [(vic.email.clone(), pb::InvitationState::Pending)]
    );
    // The invitee still can.
    accept(&app, &vic.token, &token).await.unwrap();

    // An account whose address is not proved is refused until it is.
    let other_owner = account(&app, "inv-who-other-owner").await;
    let sam = email("inv-who-sam");
    let (sam_user, sam_tokens) = unverified_account(&app, &sam, &other_owner.org).await;
    app.invite(&owner.token, &owner.org, &sam, pb::Role::Member)
        .await
        .unwrap();
    let sam_invite = invitation_token(&app, &sam, &[]).await;
    let unverified = accept(&app, &sam_tokens.access_token, &sam_invite)
        .await
        .unwrap_err();
    assert_eq!(
        unverified.code(),
        Code::FailedPrecondition,
        "{unverified:?}"
    );
    let refused = events(&app, "invitation.refused").await;
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert_eq!(refused[1].details["reason"], "email_not_verified");
    assert_eq!(
        refused[1].actor.as_deref(),
        Some(format!("user:{}", sam_user.id).as_str())
    );
    assert!(!emails_of(&members(&app, &owner.token, &owner.org).await).contains(&sam.as_str()));

    app.sessions()
        .request_email_verification(bearer(
            &sam_tokens.access_token,
            pb::RequestEmailVerificationRequest {},
        ))
        .await
        .unwrap();
    let verify = fresh_token(&app, &sam, "Verify your email", "/verify-email", &[]).await;
    assert!(
        verify_email(&app, &verify)
            .await
            .unwrap()
            .user
            .unwrap()
            .email_verified
    );
    let joined = accept(&app, &sam_tokens.access_token, &sam_invite)
        .await
        .unwrap();
    assert_eq!(
        joined.membership.unwrap().organization.unwrap().id,
        owner.org
    );
    assert!(members(&app, &owner.token, &owner.org).await.contains(&(
        sam.clone(),
        pb::Role::Member,
        pb::MembershipStatus::Active
    )));
    app.stop().await;
}

async fn who_may_invite_whom(backend: Backend) {
    let app = app_with_mail(backend).await;
    let owner = account(&app, "inv-rules-owner").await;
    let admin = email("inv-rules-admin");
    let member = email("inv-rules-member");
    app.sign_up(&admin).await;
    app.sign_up(&member).await;
    app.add_member(&owner.token, &owner.org, &admin, pb::Role::Admin)
        .await;
    app.add_member(&owner.token, &owner.org, &member, pb::Role::Member)
        .await;
    let admin_here = login_with(&app, &admin, PASSWORD, &owner.org)
        .await
        .unwrap()
        .access_token;
    let member_here = login_with(&app, &member, PASSWORD, &owner.org)
        .await
        .unwrap()
        .access_token;

    // Members, the owner included, and pending invitations: ALREADY_EXISTS.
    for address in [&member, &admin, &owner.email] {
        assert_eq!(
            code(
                app.invite(&owner.token, &owner.org, address, pb::Role::Member)
                    .await
            ),
            Code::AlreadyExists,
            "{address}"
        );
    }
    let xena = email("inv-rules-xena");
    app.invite(&owner.token, &owner.org, &xena, pb::Role::Member)
        .await
        .unwrap();
    for (who, address) in [
        (&owner.token, xena.clone()),
        (&admin_here, xena.clone()),
        (&owner.token, xena.to_uppercase()),
    ] {
        assert_eq!(
            code(app.invite(who, &owner.org, &address, pb::Role::Admin).await),
            Code::AlreadyExists,
            "{address} again"
        );
    }

    // A member invites nobody and lists nothing.
    let yves = email("inv-rules-yves");
    assert_eq!(
        code(
            app.invite(&member_here, &owner.org, &yves, pb::Role::Member)
                .await
        ),
        Code::PermissionDenied
    );
    assert_eq!(
        code(invitations(&app, &member_here, &owner.org).await),
        Code::PermissionDenied
    );
    let over_http = http(
        &app,
        "POST",
        &format!("/v1/organizations/{}/invitations", owner.org),
        Some(&member_here),
        Some(serde_json::json!({ "email": yves, "role": "ROLE_MEMBER" })),
    )
    .await;
    assert_eq!(over_http.status, 403, "{}", over_http.text());

    // An admin invites admins and members, never an owner; an owner may.
    let zoe = email("inv-rules-zoe");
    let denied = app
        .invite(&admin_here, &owner.org, &zoe, pb::Role::Owner)
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    app.invite(&admin_here, &owner.org, &zoe, pb::Role::Admin)
        .await
        .unwrap();
    app.invite(&admin_here, &owner.org, &yves, pb::Role::Member)
        .await
        .unwrap();
    let will = email("inv-rules-will");
    let as_owner = app
        .invite(&owner.token, &owner.org, &will, pb::Role::Owner)
        .await
        .unwrap();
    assert_eq!(as_owner.role, pb::Role::Owner as i32);
    let unspecified = app
        .invite(
            &owner.token,
            &owner.org,
            &email("inv-rules-u"),
            pb::Role::Unspecified,
        )
        .await
        .unwrap_err();
    assert_eq!(
        (unspecified.code(), field_of(&unspecified).as_str()),
        (Code::InvalidArgument, "role")
    );

    // Another organisation's invitations: NOT_FOUND, both ways.
    let stranger = account(&app, "inv-rules-stranger").await;
    let theirs = app
        .invite(
            &stranger.token,
            &stranger.org,
            &email("inv-rules-q"),
            pb::Role::Member,
        )
        .await
        .unwrap();
    let ours = as_owner.id.clone();
    assert_eq!(
        code(invitations(&app, &stranger.token, &owner.org).await),
        Code::NotFound
    );
    assert_eq!(
        code(
            app.invite(
                &stranger.token,
                &owner.org,
                &email("inv-rules-r"),
                pb::Role::Member
            )
            .await
        ),
        Code::NotFound
    );
    assert_eq!(
        code(revoke(&app, &stranger.token, &owner.org, &ours).await),
        Code::NotFound
    );
    assert_eq!(
        code(resend(&app, &stranger.token, &owner.org, &ours).await),
        Code::NotFound
    );
    assert_eq!(
        code(revoke(&app, &stranger.token, &stranger.org, &ours).await),
        Code::NotFound,
        "our invitation under their organisation"
    );
    assert_eq!(
        code(revoke(&app, &owner.token, &owner.org, &theirs.id).await),
        Code::NotFound,
        "their invitation under ours"
    );
    assert_eq!(
        code(resend(&app, &owner.token, &owner.org, &theirs.id).await),
        Code::NotFound
    );
    for (method, path) in [
        (
            "GET",
            format!("/v1/organizations/{}/invitations", owner.org),
        ),
        (
            "DELETE",
            format!("/v1/organizations/{}/invitations/{ours}", owner.org),
        ),
    ] {
        let answer = http(&app, method, &path, Some(&stranger.token), None).await;
        assert_eq!(answer.status, 404, "{method} {path}: {}", answer.text());
    }
    // Nothing changed on either side.
    assert!(
        states(&app, &owner.token, &owner.org)
            .await
            .contains(&(will.clone(), pb::InvitationState::Pending))
    );
    assert_eq!(
        states(&app, &stranger.token, &stranger.org).await[0].1,
        pb::InvitationState::Pending
    );
    app.stop().await;
}

async fn create_invitation_answers_alike_with_or_without_an_account(backend: Backend) {
    let app = app_with_mail(backend).await;
    let owner = account(&app, "inv-alike-owner").await;
    // Addresses of one length, so that the answers may match byte for byte.
    let has = account(&app, "inv-alike-has").await.email;
    let none = email("inv-alike-non");

    let create = |address: &str| {
        let mut client = app.sessions();
        let request = bearer(
            &owner.token,
            pb::CreateInvitationRequest {
                organization_id: owner.org.clone(),
                email: address.into(),
                role: pb::Role::Member as i32,
            },
        );
        async move { client.create_invitation(request).await }
    };
    let for_has = create(&has).await.unwrap();
    let for_none = create(&none).await.unwrap();
    let anonymised = |r: &tonic::Response<pb::CreateInvitationResponse>| {
        let mut invitation = r.get_ref().invitation.clone().expect("an invitation");
        invitation.id.clear();
        invitation.email.clear();
        invitation
    };
    assert_eq!(anonymised(&for_has), anonymised(&for_none));
    let metadata = |r: &tonic::Response<pb::CreateInvitationResponse>| {
        let mut m: Vec<String> = r
            .metadata()
            .clone()
            .into_headers()
            .iter()
            .filter(|(k, _)| k.as_str() != "date")
            .map(|(k, v)| format!("{k}: {v:?}"))
            .collect();
        m.sort();
        m
    };
    assert_eq!(metadata(&for_has), metadata(&for_none));

    // Over HTTP: the same bytes but for the id and the address.
    let has_too = account(&app, "inv-alike-has2").await.email;
    let none_too = email("inv-alike-non2");
    let path = format!("/v1/organizations/{}/invitations", owner.org);
    let mut bodies = Vec::new();
    let mut heads = Vec::new();
    for address in [&has_too, &none_too] {
        let answer = http(
            &app,
            "POST",
            &path,
            Some(&owner.token),
            Some(serde_json::json!({ "email": address, "role": "ROLE_MEMBER" })),
        )
        .await;
        assert_eq!(answer.status, 200, "{}", answer.text());
        let id = answer.json()["invitation"]["id"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(id.len(), 36, "{id}");
        bodies.push(
            answer
                .text()
                .replace(&id, &"I".repeat(36))
                .replace(address.as_str(), &"E".repeat(address.len())),
        );
        heads.push((answer.status_line.clone(), answer.stable_headers()));
    }
    assert_eq!(has_too.len(), none_too.len());
    assert_eq!(
        bodies[0], bodies[1],
        "the same bytes but for the id and address"
    );
    assert_eq!(heads[0], heads[1]);

    // Both addresses get the same invitation but for the link.
    for (a, b) in [(&has, &none), (&has_too, &none_too)] {
        let mail_a = &mails_about(&app, a, "You are invited", 1).await[0];
        let mail_b = &mails_about(&app, b, "You are invited", 1).await[0];
        assert_eq!(mail_a.subject, mail_b.subject);
        let token_a = link_token_of(mail_a, "/accept-invitation");
        let token_b = link_token_of(mail_b, "/accept-invitation");
        assert_eq!(
            mail_a.text.replace(&token_a, "TOKEN"),
            mail_b.text.replace(&token_b, "TOKEN")
        );
    }
    let created = events(&app, "invitation.created").await;
    assert_eq!(created.len(), 4);
    app.stop().await;
}

async fn list_invitations_shows_each_state(backend: Backend) {
    let app = app_with_mail(backend).await;
    let owner = account(&app, "inv-list-owner").await;
    let expiring = email("inv-list-expiring");
    let accepting = account(&app, "inv-list-accepting").await;
    let revoked = email("inv-list-revoked");
    let pending = email("inv-list-pending");

    app.invite(&owner.token, &owner.org, &expiring, pb::Role::Member)
        .await
        .unwrap();
    // Six days later the others are invited, a second apart (the order is
    // by creation time).
    app.clock.advance(Duration::from_secs(6 * 24 * 3600));
    let owner_token = login_with(&app, &owner.email, PASSWORD, "")
        .await
        .unwrap()
        .access_token;
    app.invite(&owner_token, &owner.org, &accepting.email, pb::Role::Admin)
        .await
        .unwrap();
    app.clock.advance(Duration::from_secs(1));
    let to_revoke = app
        .invite(&owner_token, &owner.org, &revoked, pb::Role::Member)
        .await
        .unwrap();
    app.clock.advance(Duration::from_secs(1));
    app.invite(&owner_token, &owner.org, &pending, pb::Role::Member)
        .await
        .unwrap();
    let accepting_now = login_with(&app, &accepting.email, PASSWORD, "")
        .await
        .unwrap()
        .access_token;
    let token = invitation_token(&app, &accepting.email, &[]).await;
    accept(&app, &accepting_now, &token).await.unwrap();
    revoke(&app, &owner_token, &owner.org, &to_revoke.id)
        .await
        .unwrap();
    // A day and a minute later the first has expired, the others not.
    app.clock.advance(Duration::from_secs(24 * 3600 + 60));
    let owner_token = login_with(&app, &owner.email, PASSWORD, "")
        .await
        .unwrap()
        .access_token;
    assert_eq!(
        states(&app, &owner_token, &owner.org).await,
        [
            (pending.clone(), pb::InvitationState::Pending),
            (revoked.clone(), pb::InvitationState::Revoked),
            (accepting.email.clone(), pb::InvitationState::Accepted),
            (expiring.clone(), pb::InvitationState::Expired),
        ],
        "newest first"
    );
    let over_http = http(
        &app,
        "GET",
        &format!("/v1/organizations/{}/invitations", owner.org),
        Some(&owner_token),
        None,
    )
    .await;
    assert_eq!(over_http.status, 200, "{}", over_http.text());
    let listed: Vec<(String, String)> = over_http.json()["invitations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["email"].as_str().unwrap().to_string(),
                i["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            (pending, "INVITATION_STATE_PENDING".to_string()),
            (revoked, "INVITATION_STATE_REVOKED".to_string()),
            (accepting.email, "INVITATION_STATE_ACCEPTED".to_string()),
            (expiring, "INVITATION_STATE_EXPIRED".to_string()),
        ]
    );
    app.stop().await;
}

/// The issue's attack: a stranger used to add any existing account to
/// their organisation (`AddMember`) without its owner's consent. Now the
/// route is gone, and an invitation sits pending until the person accepts.
async fn a_stranger_cannot_add_an_account_to_their_org_without_consent(backend: Backend) {
    let app = app_with_mail(backend).await;
    let victim = account(&app, "attack-victim").await;
    let stranger = account(&app, "attack-stranger").await;

    // The old way in is gone.
    let old_route = http(
        &app,
        "POST",
        &format!("/v1/organizations/{}/members", stranger.org),
        Some(&stranger.token),
        Some(serde_json::json!({ "email": victim.email, "role": "ROLE_ADMIN" })),
    )
    .await;
    assert!(
        old_route.status == 404 || old_route.status == 405,
        "{} {}",
        old_route.status_line,
        old_route.text()
    );

    // An invitation is all a stranger can make; it changes nothing.
    let invitation = app
        .invite(
            &stranger.token,
            &stranger.org,
            &victim.email,
            pb::Role::Admin,
        )
        .await
        .unwrap();
    assert_eq!(invitation.state, pb::InvitationState::Pending as i32);
    let first = invitation_token(&app, &victim.email, &[]).await;
    let victim_before = memberships(&me(&app, &victim.token).await.unwrap());
    assert_eq!(victim_before, [(victim.org.clone(), pb::Role::Owner)]);
    assert_eq!(
        emails_of(&members(&app, &stranger.token, &stranger.org).await),
        [stranger.email.as_str()]
    );
    assert!(
        login_with(&app, &victim.email, PASSWORD, &stranger.org)
            .await
            .is_err(),
        "no session in the stranger's organisation"
    );
    let as_member = |rpc: &str| format!("{rpc} on an account that never accepted");
    let suspend = app
        .sessions()
        .suspend_member(bearer(
            &stranger.token,
            pb::SuspendMemberRequest {
                organization_id: stranger.org.clone(),
                user_id: victim.id.clone(),
            },
        ))
        .await;
    assert_eq!(
        code(suspend),
        Code::NotFound,
        "{}",
        as_member("SuspendMember")
    );
    let role = app
        .sessions()
        .set_member_role(bearer(
            &stranger.token,
            pb::SetMemberRoleRequest {
                organization_id: stranger.org.clone(),
                user_id: victim.id.clone(),
                role: pb::Role::Owner as i32,
            },
        ))
        .await;
    assert_eq!(code(role), Code::NotFound, "{}", as_member("SetMemberRole"));
    let transfer = app
        .sessions()
        .transfer_ownership(bearer(
            &stranger.token,
            pb::TransferOwnershipRequest {
                organization_id: stranger.org.clone(),
                user_id: victim.id.clone(),
            },
        ))
        .await;
    assert!(transfer.is_err(), "{}", as_member("TransferOwnership"));
    // Nor through the internal RPC that joins accounts (SSO's): a session
    // is not the service credential.
    let provision = app
        .sessions()
        .provision_user(bearer(
            &stranger.token,
            pb::ProvisionUserRequest {
                email: victim.email.clone(),
                display_name: String::new(),
                organization_id: stranger.org.clone(),
                role: pb::Role::Member as i32,
            },
        ))
        .await;
    assert!(
        matches!(
            code(provision),
            Code::Unauthenticated | Code::PermissionDenied
        ),
        "ProvisionUser with a session"
    );
    // Resending, again and again, changes nothing either.
    resend(&app, &stranger.token, &stranger.org, &invitation.id)
        .await
        .unwrap();
    let second = invitation_token(&app, &victim.email, &[first.as_str()]).await;
    assert_eq!(
        memberships(&me(&app, &victim.token).await.unwrap()),
        victim_before
    );
    assert_eq!(
        states(&app, &stranger.token, &stranger.org).await,
        [(victim.email.clone(), pb::InvitationState::Pending)]
    );
    assert!(events(&app, "invitation.accepted").await.is_empty());
    // Nothing about the victim's own organisation was touched or logged
    // by the stranger.
    let stranger_actor = format!("user:{}", stranger.id);
    let in_victims_org: Vec<_> = twig_audit::all_events(&app.db)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.org_id.map(|o| o.to_string()).as_deref() == Some(victim.org.as_str()))
        .filter(|e| e.actor.as_deref() == Some(stranger_actor.as_str()))
        .collect();
    assert!(in_victims_org.is_empty(), "{in_victims_org:?}");

    // Left alone, the invitation expires and the victim never joined.
    app.clock.advance(Duration::from_secs(WEEK as u64 + 1));
    let victim_now = login_with(&app, &victim.email, PASSWORD, "")
        .await
        .unwrap()
        .access_token;
    let stranger_now = login_with(&app, &stranger.email, PASSWORD, "")
        .await
        .unwrap()
        .access_token;
    refused_token(
        "an expired invitation",
        accept(&app, &victim_now, &second).await,
    );
    assert_eq!(
        memberships(&me(&app, &victim_now).await.unwrap()),
        victim_before
    );
    // Only the victim's own consent makes them a member.
    let fresh = resend(&app, &stranger_now, &stranger.org, &invitation.id)
        .await
        .unwrap();
    assert_eq!(fresh.state, pb::InvitationState::Pending as i32);
    let token = invitation_token(&app, &victim.email, &[first.as_str(), second.as_str()]).await;
    accept(&app, &victim_now, &token).await.unwrap();
    let mut both = vec![
        (victim.org.clone(), pb::Role::Owner),
        (stranger.org.clone(), pb::Role::Admin),
    ];
    both.sort();
    assert_eq!(memberships(&me(&app, &victim_now).await.unwrap()), both);
    app.stop().await;
}

/// One email has at most one pending invitation to an organisation: a
/// second invitation is ALREADY_EXISTS while one is pending, and sending an
/// expired one again must not make a second pending one beside a newer.
async fn one_pending_invitation_per_email_even_through_a_resend(backend: Backend) {
    let app = app_with_mail(backend).await;
    let owner = account(&app, "inv-one-owner").await;
    let xavier = email("inv-one-xavier");
    let first = app
        .invite(&owner.token, &owner.org, &xavier, pb::Role::Member)
        .await
        .unwrap();
    app.clock.advance(Duration::from_secs(WEEK as u64 + 1));
    let owner_now = login_with(&app, &owner.email, PASSWORD, "")
        .await
        .unwrap()
        .access_token;
    // The first expired: a new invitation may be made.
    app.invite(&owner_now, &owner.org, &xavier, pb::Role::Admin)
        .await
        .expect("an expired invitation does not block a new one");
    assert_eq!(
        code(
            app.invite(&owner_now, &owner.org, &xavier, pb::Role::Member)
                .await
        ),
        Code::AlreadyExists
    );
    // Sending the expired one again would make two pending invitations
    // for one address (with different roles).
    let resent = resend(&app, &owner_now, &owner.org, &first.id).await;
    let pending: Vec<_> = states(&app, &owner_now, &owner.org)
        .await
        .into_iter()
        .filter(|(_, state)| *state == pb::InvitationState::Pending)
        .collect();
    assert!(
        pending.len() <= 1,
        "ResendInvitation of an expired invitation answered {resent:?} and left {} pending \
         invitations for one email: {pending:?}",
        pending.len()
    );
    app.stop().await;
}

/// "An owner role only by an owner" holds for sending an invitation again
/// too: an admin who may not invite an owner may not renew an owner's
/// invitation (a new link and a new week), pending or expired, nor revoke
/// it.
async fn an_admin_cannot_renew_an_owner_invitation(backend: Backend) {
    let app = app_with_mail(backend).await;
    let owner = account(&app, "inv-renew-owner").await;
    let admin = email("inv-renew-admin");
    app.sign_up(&admin).await;
    app.add_member(&owner.token, &owner.org, &admin, pb::Role::Admin)
        .await;
    let admin_here = login_with(&app, &admin, PASSWORD, &owner.org)
        .await
        .unwrap()
        .access_token;
    let co_owner = email("inv-renew-co-owner");
    let invitation = app
        .invite(&owner.token, &owner.org, &co_owner, pb::Role::Owner)
        .await
        .unwrap();
    let first = invitation_token(&app, &co_owner, &[]).await;

    let pending = resend(&app, &admin_here, &owner.org, &invitation.id).await;
    app.clock.advance(Duration::from_secs(WEEK as u64 + 1));
    let admin_now = login_with(&app, &admin, PASSWORD, &owner.org)
        .await
        .unwrap()
        .access_token;
    let expired = resend(&app, &admin_now, &owner.org, &invitation.id).await;
    let outcomes = [
        ("pending", pending.map(|i| i.state).map_err(|e| e.code())),
        ("expired", expired.map(|i| i.state).map_err(|e| e.code())),
    ];
    let mailed = mail_settled(&app, &co_owner)
        .await
        .into_iter()
        .filter(|m| m.subject.contains("You are invited"))
        .count();
    assert!(
        outcomes
            .iter()
            .all(|(_, o)| *o == Err(Code::PermissionDenied)),
        "an admin resending an owner's invitation: {outcomes:?}; {mailed} invitations \
         mailed to the future owner (1 expected)"
    );
    assert_eq!(mailed, 1);
    // The owner may.
    let owner_now = login_with(&app, &owner.email, PASSWORD, "")
        .await
        .unwrap()
        .access_token;
    resend(&app, &owner_now, &owner.org, &invitation.id)
        .await
        .unwrap();
    let renewed = invitation_token(&app, &co_owner, &[first.as_str()]).await;
    // Nor may the admin revoke it: the link still works afterwards.
    let admin_later = login_with(&app, &admin, PASSWORD, &owner.org)
        .await
        .unwrap()
        .access_token;
    assert_eq!(
        revoke(&app, &admin_later, &owner.org, &invitation.id)
            .await
            .unwrap_err()
            .code(),
        Code::PermissionDenied,
        "an admin revoking an owner's invitation"
    );
    let done = sign_up_invited(&app, &renewed, "").await.unwrap();
    let who = me(&app, &done.tokens.unwrap().access_token).await.unwrap();
    assert_eq!(memberships(&who), [(owner.org.clone(), pb::Role::Owner)]);
    app.stop().await;
}

on_both_backends!(
    an_invited_account_accepts_then_is_suspended_and_removed_through_the_edge,
    invitations_over_http_json,
    signing_up_through_an_invitation_joins_that_org_and_owns_none,
    used_expired_revoked_and_replaced_invitations_are_refused,
    only_the_invited_account_with_a_verified_email_may_accept,
    who_may_invite_whom,
    create_invitation_answers_alike_with_or_without_an_account,
    list_invitations_shows_each_state,
    a_stranger_cannot_add_an_account_to_their_org_without_consent,
    one_pending_invitation_per_email_even_through_a_resend,
    an_admin_cannot_renew_an_owner_invitation,
);
