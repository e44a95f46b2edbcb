//! `twig.sessions.v1.SessionService` on the wire: decoding requests,
//! reading the caller, encoding answers. The logic is in the identity
//! store ([`IdentityStore`]: users, organisations, memberships) and the
//! session side ([`Sessions`]).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tonic::{Request, Response, Status};
use twig_auth::{
    Credential, OPERATOR_SCOPE, Principal, Role, principal, require_internal,
    require_internal_scope, session_principal,
};
use twig_errors::ApiError;
use twig_proto::sessions::v1 as pb;
use uuid::Uuid;

use crate::entity::{invitation, organization, user};
use crate::identity::IdentityStore;
use crate::invitations::{InvitationState, state_of};
use crate::sessions::{ClientContext, IssuedTokens, Sessions};
use twig_module::{KeyOwner, SessionMethod};

use crate::members::MembershipStatus;

/// The gRPC face of the sessions service.
#[derive(Clone)]
pub struct SessionsGrpc {
    inner: Arc<Sessions>,
    identity: Arc<IdentityStore>,
}

impl SessionsGrpc {
    /// Wraps the session side and its identity store.
    pub fn new(inner: Arc<Sessions>) -> Self {
        Self {
            identity: inner.identity().clone(),
            inner,
        }
    }
}

fn ts(t: DateTime<Utc>) -> Option<prost_types::Timestamp> {
    Some(twig_proto::timestamp(t))
}

fn client<T>(request: &Request<T>) -> ClientContext {
    ClientContext {
        ip: twig_auth::request_client_ip(request).map(|ip| ip.to_canonical()),
        user_agent: request
            .metadata()
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(512).collect()),
    }
}

fn me<T>(request: &Request<T>) -> Result<Principal, Status> {
    principal(request).cloned().map_err(Status::from)
}

/// The caller, who must be signed in with a session.
fn me_session<T>(request: &Request<T>) -> Result<(Principal, Uuid), Status> {
    session_principal(request)
        .map(|(p, id)| (p.clone(), id))
        .map_err(Status::from)
}

/// The caller, the client, and the organisation and member a membership
/// call names.
fn member_call<T>(
    request: &Request<T>,
    ids: impl Fn(&T) -> (&String, &String),
) -> Result<(Principal, ClientContext, Uuid, Uuid), Status> {
    let me = me(request)?;
    let (org, user) = ids(request.get_ref());
    Ok((
        me,
        client(request),
        parse_id("organization_id", org)?,
        parse_id("user_id", user)?,
    ))
}

fn parse_id(field: &'static str, raw: &str) -> Result<Uuid, Status> {
    Uuid::parse_str(raw).map_err(|_| ApiError::invalid_field(field, "must be a UUID").into())
}

pub(crate) fn role_to_pb(role: Role) -> pb::Role {
    match role {
        Role::Owner => pb::Role::Owner,
        Role::Admin => pb::Role::Admin,
        Role::Member => pb::Role::Member,
    }
}

pub(crate) fn role_from_pb(raw: i32) -> Result<Role, Status> {
    match pb::Role::try_from(raw) {
        Ok(pb::Role::Owner) => Ok(Role::Owner),
        Ok(pb::Role::Admin) => Ok(Role::Admin),
        Ok(pb::Role::Member) => Ok(Role::Member),
        _ => Err(ApiError::invalid_field("role", "must be OWNER, ADMIN or MEMBER").into()),
    }
}

pub(crate) fn user_to_pb(u: &user::Model) -> pb::User {
    pb::User {
        id: u.id.to_string(),
        email: u.email.clone(),
        display_name: u.display_name.clone(),
        created_at: ts(u.created_at),
        disabled: u.disabled_at.is_some(),
        email_verified: u.email_verified_at.is_some(),
        notify_new_sign_in: u.notify_sign_in,
    }
}

fn invitation_to_pb(row: &invitation::Model, now: DateTime<Utc>) -> pb::Invitation {
    pb::Invitation {
        id: row.id.to_string(),
        organization_id: row.org_id.to_string(),
        email: row.email.clone(),
        role: Role::parse(&row.role).map_or(pb::Role::Unspecified, role_to_pb) as i32,
        state: match state_of(row, now) {
            InvitationState::Pending => pb::InvitationState::Pending,
            InvitationState::Accepted => pb::InvitationState::Accepted,
            InvitationState::Revoked => pb::InvitationState::Revoked,
            InvitationState::Expired => pb::InvitationState::Expired,
        } as i32,
        invited_by: row.invited_by.to_string(),
        created_at: ts(row.created_at),
        expires_at: ts(row.expires_at),
    }
}

fn org_to_pb(o: &organization::Model) -> pb::Organization {
    pb::Organization {
        id: o.id.to_string(),
        name: o.name.clone(),
        created_at: ts(o.created_at),
    }
}

fn tokens_to_pb(t: &IssuedTokens) -> pb::SessionTokens {
    pb::SessionTokens {
        session_id: t.session_id.to_string(),
        access_token: t.access.expose().to_string(),
        access_expires_at: ts(t.access_expires_at),
        refresh_token: t.refresh.expose().to_string(),
        refresh_expires_at: ts(t.refresh_expires_at),
    }
}

fn count(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[tonic::async_trait]
impl pb::session_service_server::SessionService for SessionsGrpc {
    async fn sign_up(
        &self,
        request: Request<pb::SignUpRequest>,
    ) -> Result<Response<pb::SignUpResponse>, Status> {
        let client = client(&request);
        let r = request.into_inner();
        self.inner
            .sign_up(
                &r.email,
                &r.password,
                &r.display_name,
                &r.organization_name,
                &client,
            )
            .await?;
        Ok(Response::new(pb::SignUpResponse {}))
    }

    async fn verify_email(
        &self,
        request: Request<pb::VerifyEmailRequest>,
    ) -> Result<Response<pb::VerifyEmailResponse>, Status> {
        let client = client(&request);
        let verified = self
            .inner
            .verify_email(
                &request.get_ref().token,
                &request.get_ref().password,
                &client,
            )
            .await?;
        let (organization, tokens) = match &verified.signed_up {
            Some((org, tokens)) => (Some(org_to_pb(org)), Some(tokens_to_pb(tokens))),
            None => (None, None),
        };
        Ok(Response::new(pb::VerifyEmailResponse {
            user: Some(user_to_pb(&verified.user)),
            organization,
            tokens,
        }))
    }

    async fn request_email_verification(
        &self,
        request: Request<pb::RequestEmailVerificationRequest>,
    ) -> Result<Response<pb::RequestEmailVerificationResponse>, Status> {
        let (me, _) = me_session(&request)?;
        self.inner.request_email_verification(&me).await?;
        Ok(Response::new(pb::RequestEmailVerificationResponse {}))
    }

    async fn request_password_reset(
        &self,
        request: Request<pb::RequestPasswordResetRequest>,
    ) -> Result<Response<pb::RequestPasswordResetResponse>, Status> {
        let client = client(&request);
        self.inner
            .request_password_reset(&request.get_ref().email, &client)
            .await?;
        Ok(Response::new(pb::RequestPasswordResetResponse {}))
    }

    async fn reset_password(
        &self,
        request: Request<pb::ResetPasswordRequest>,
    ) -> Result<Response<pb::ResetPasswordResponse>, Status> {
        let client = client(&request);
        let r = request.into_inner();
        let ended = self
            .inner
            .reset_password(&r.token, &r.new_password, &client)
            .await?;
        Ok(Response::new(pb::ResetPasswordResponse {
            sessions_ended: count(ended),
        }))
    }

    async fn update_current_user(
        &self,
        request: Request<pb::UpdateCurrentUserRequest>,
    ) -> Result<Response<pb::UpdateCurrentUserResponse>, Status> {
        let (me, _) = me_session(&request)?;
        let r = request.into_inner();
        let user = self
            .identity
            .update_user(me.user_id, r.display_name.as_deref(), r.notify_new_sign_in)
            .await?;
        Ok(Response::new(pb::UpdateCurrentUserResponse {
            user: Some(user_to_pb(&user)),
        }))
    }

    async fn create_invitation(
        &self,
        request: Request<pb::CreateInvitationRequest>,
    ) -> Result<Response<pb::CreateInvitationResponse>, Status> {
        let me = me(&request)?;
        let client = client(&request);
        let r = request.into_inner();
        let org = parse_id("organization_id", &r.organization_id)?;
        let role = role_from_pb(r.role)?;
        let row = self
            .inner
            .create_invitation(&me, org, &r.email, role, &client)
            .await?;
        Ok(Response::new(pb::CreateInvitationResponse {
            invitation: Some(invitation_to_pb(&row, self.inner.now())),
        }))
    }

    async fn list_invitations(
        &self,
        request: Request<pb::ListInvitationsRequest>,
    ) -> Result<Response<pb::ListInvitationsResponse>, Status> {
        let me = me(&request)?;
        let org = parse_id("organization_id", &request.get_ref().organization_id)?;
        let rows = self.inner.list_invitations(&me, org).await?;
        let now = self.inner.now();
        Ok(Response::new(pb::ListInvitationsResponse {
            invitations: rows.iter().map(|r| invitation_to_pb(r, now)).collect(),
        }))
    }

    async fn revoke_invitation(
        &self,
        request: Request<pb::RevokeInvitationRequest>,
    ) -> Result<Response<pb::RevokeInvitationResponse>, Status> {
        let me = me(&request)?;
        let client = client(&request);
        let r = request.get_ref();
        let org = parse_id("organization_id", &r.organization_id)?;
        let id = parse_id("invitation_id", &r.invitation_id)?;
        self.inner.revoke_invitation(&me, org, id, &client).await?;
        Ok(Response::new(pb::RevokeInvitationResponse {}))
    }

    async fn resend_invitation(
        &self,
        request: Request<pb::ResendInvitationRequest>,
    ) -> Result<Response<pb::ResendInvitationResponse>, Status> {
        let me = me(&request)?;
        let client = client(&request);
        let r = request.get_ref();
        let org = parse_id("organization_id", &r.organization_id)?;
        let id = parse_id("invitation_id", &r.invitation_id)?;
        let row = self.inner.resend_invitation(&me, org, id, &client).await?;
        Ok(Response::new(pb::ResendInvitationResponse {
            invitation: Some(invitation_to_pb(&row, self.inner.now())),
        }))
    }

    async fn accept_invitation(
        &self,
        request: Request<pb::AcceptInvitationRequest>,
    ) -> Result<Response<pb::AcceptInvitationResponse>, Status> {
        let (me, _) = me_session(&request)?;
        let client = client(&request);
        let (org, role) = self
            .inner
            .accept_invitation(&me, &request.get_ref().token, &client)
            .await?;
        Ok(Response::new(pb::AcceptInvitationResponse {
            membership: Some(pb::Membership {
                organization: Some(org_to_pb(&org)),
                role: role_to_pb(role) as i32,
            }),
        }))
    }

    async fn sign_up_with_invitation(
        &self,
        request: Request<pb::SignUpWithInvitationRequest>,
    ) -> Result<Response<pb::SignUpWithInvitationResponse>, Status> {
        let client = client(&request);
        let r = request.into_inner();
        let done = self
            .inner
            .sign_up_with_invitation(&r.token, &r.password, &r.display_name, &client)
            .await?;
        Ok(Response::new(pb::SignUpWithInvitationResponse {
            user: Some(user_to_pb(&done.user)),
            organization: Some(org_to_pb(&done.organization)),
            tokens: Some(tokens_to_pb(&done.tokens)),
        }))
    }

    async fn login(
        &self,
        request: Request<pb::LoginRequest>,
    ) -> Result<Response<pb::LoginResponse>, Status> {
        let client = client(&request);
        let r = request.into_inner();
        let org = if r.organization_id.is_empty() {
            None
        } else {
            Some(parse_id("organization_id", &r.organization_id)?)
        };
        let (user, org_id, tokens) = self
            .inner
            .login(&r.email, &r.password, org, &client)
            .await?;
        Ok(Response::new(pb::LoginResponse {
            user: Some(user_to_pb(&user)),
            organization_id: org_id.to_string(),
            tokens: Some(tokens_to_pb(&tokens)),
        }))
    }

    async fn refresh(
        &self,
        request: Request<pb::RefreshRequest>,
    ) -> Result<Response<pb::RefreshResponse>, Status> {
        let client = client(&request);
        let tokens = self
            .inner
            .refresh(&request.get_ref().refresh_token, &client)
            .await?;
        Ok(Response::new(pb::RefreshResponse {
            tokens: Some(tokens_to_pb(&tokens)),
        }))
    }

    async fn logout(
        &self,
        request: Request<pb::LogoutRequest>,
    ) -> Result<Response<pb::LogoutResponse>, Status> {
        let (me, session) = me_session(&request)?;
        self.inner.logout(&me, session, &client(&request)).await?;
        Ok(Response::new(pb::LogoutResponse {}))
    }

    async fn logout_everywhere(
        &self,
        request: Request<pb::LogoutEverywhereRequest>,
    ) -> Result<Response<pb::LogoutEverywhereResponse>, Status> {
        let (me, _session) = me_session(&request)?;
        let ended = self.inner.logout_everywhere(&me, &client(&request)).await?;
        Ok(Response::new(pb::LogoutEverywhereResponse {
            sessions_ended: count(ended),
        }))
    }

    async fn list_sessions(
        &self,
        request: Request<pb::ListSessionsRequest>,
    ) -> Result<Response<pb::ListSessionsResponse>, Status> {
        let (me, session) = me_session(&request)?;
        let sessions = self.inner.list_sessions(&me).await?;
        Ok(Response::new(pb::ListSessionsResponse {
            sessions: sessions
                .into_iter()
                .map(|s| pb::SessionInfo {
                    id: s.row.id.to_string(),
                    organization_id: s.row.org_id.to_string(),
                    created_at: ts(s.row.created_at),
                    last_seen_at: ts(s.last_seen_at),
                    ip: s.row.ip.clone().unwrap_or_default(),
                    user_agent: s.row.user_agent.clone().unwrap_or_default(),
                    expires_at: ts(s.row.idle_expires_at.min(s.row.absolute_expires_at)),
                    current: s.row.id == session,
                    method: s.row.method.clone(),
                })
                .collect(),
        }))
    }

    async fn revoke_session(
        &self,
        request: Request<pb::RevokeSessionRequest>,
    ) -> Result<Response<pb::RevokeSessionResponse>, Status> {
        let (me, _session) = me_session(&request)?;
        let id = parse_id("session_id", &request.get_ref().session_id)?;
        self.inner
            .revoke_session(&me, id, &client(&request))
            .await?;
        Ok(Response::new(pb::RevokeSessionResponse {}))
    }

    async fn change_password(
        &self,
        request: Request<pb::ChangePasswordRequest>,
    ) -> Result<Response<pb::ChangePasswordResponse>, Status> {
        let (me, session) = me_session(&request)?;
        let client = client(&request);
        let r = request.into_inner();
        let ended = self
            .inner
            .change_password(&me, session, &r.current_password, &r.new_password, &client)
            .await?;
        Ok(Response::new(pb::ChangePasswordResponse {
            other_sessions_ended: count(ended),
        }))
    }

    async fn get_current_user(
        &self,
        request: Request<pb::GetCurrentUserRequest>,
    ) -> Result<Response<pb::GetCurrentUserResponse>, Status> {
        let me = me(&request)?;
        if let Credential::ApiKey { key_id } = me.credential {
            // A key answers with itself: never its creator's account.
            let key = self.inner.calling_key(&me, key_id).await?;
            return Ok(Response::new(pb::GetCurrentUserResponse {
                organization_id: key.org_id.to_string(),
                api_key: Some(pb::CallerKey {
                    id: key.id.to_string(),
                    name: key.name,
                    organization_id: key.org_id.to_string(),
                    scopes: key
                        .scopes
                        .iter()
                        .map(|s| twig_auth::wire::scope_to_pb(*s) as i32)
                        .collect(),
                    owner_kind: match key.owner {
                        KeyOwner::Member(_) => twig_proto::apikeys::v1::OwnerKind::Member,
                        KeyOwner::ServiceAccount(_) => {
                            twig_proto::apikeys::v1::OwnerKind::ServiceAccount
                        }
                    } as i32,
                }),
                ..Default::default()
            }));
        }
        let (user, memberships) = self.identity.current_user(&me).await?;
        Ok(Response::new(pb::GetCurrentUserResponse {
            user: Some(user_to_pb(&user)),
            memberships: memberships
                .iter()
                .map(|(org, role)| pb::Membership {
                    organization: Some(org_to_pb(org)),
                    role: role_to_pb(*role) as i32,
                })
                .collect(),
            session_id: me.session_id().map(|id| id.to_string()).unwrap_or_default(),
            organization_id: me.org_id.to_string(),
            api_key: None,
        }))
    }

    async fn list_members(
        &self,
        request: Request<pb::ListMembersRequest>,
    ) -> Result<Response<pb::ListMembersResponse>, Status> {
        let me = me(&request)?;
        let org = parse_id("organization_id", &request.get_ref().organization_id)?;
        let members = self.identity.list_members(&me, org).await?;
        Ok(Response::new(pb::ListMembersResponse {
            members: members
                .iter()
                .map(|(u, state)| pb::Member {
                    user: Some(user_to_pb(u)),
                    role: role_to_pb(state.role) as i32,
                    status: match state.status {
                        MembershipStatus::Active => pb::MembershipStatus::Active,
                        MembershipStatus::Suspended | MembershipStatus::Removed => {
                            pb::MembershipStatus::Suspended
                        }
                    } as i32,
                })
                .collect(),
        }))
    }

    async fn suspend_member(
        &self,
        request: Request<pb::SuspendMemberRequest>,
    ) -> Result<Response<pb::SuspendMemberResponse>, Status> {
        let (me, client, org, user) = member_call(&request, |r| (&r.organization_id, &r.user_id))?;
        let ended = self.inner.suspend_member(&me, org, user, &client).await?;
        Ok(Response::new(pb::SuspendMemberResponse {
            sessions_ended: count(ended.sessions),
            api_keys_stopped: count(ended.keys),
        }))
    }

    async fn reinstate_member(
        &self,
        request: Request<pb::ReinstateMemberRequest>,
    ) -> Result<Response<pb::ReinstateMemberResponse>, Status> {
        let (me, client, org, user) = member_call(&request, |r| (&r.organization_id, &r.user_id))?;
        let resumed = self.inner.reinstate_member(&me, org, user, &client).await?;
        Ok(Response::new(pb::ReinstateMemberResponse {
            api_keys_resumed: count(resumed),
        }))
    }

    async fn remove_member(
        &self,
        request: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::RemoveMemberResponse>, Status> {
        let (me, client, org, user) = member_call(&request, |r| (&r.organization_id, &r.user_id))?;
        let ended = self.inner.remove_member(&me, org, user, &client).await?;
        Ok(Response::new(pb::RemoveMemberResponse {
            sessions_ended: count(ended.sessions),
            api_keys_revoked: count(ended.keys),
        }))
    }

    async fn leave_organization(
        &self,
        request: Request<pb::LeaveOrganizationRequest>,
    ) -> Result<Response<pb::LeaveOrganizationResponse>, Status> {
        let (me, _) = me_session(&request)?;
        let client = client(&request);
        let org = parse_id("organization_id", &request.get_ref().organization_id)?;
        let ended = self.inner.leave(&me, org, &client).await?;
        Ok(Response::new(pb::LeaveOrganizationResponse {
            sessions_ended: count(ended.sessions),
            api_keys_revoked: count(ended.keys),
        }))
    }

    async fn set_member_role(
        &self,
        request: Request<pb::SetMemberRoleRequest>,
    ) -> Result<Response<pb::SetMemberRoleResponse>, Status> {
        let (me, client, org, user) = member_call(&request, |r| (&r.organization_id, &r.user_id))?;
        let role = role_from_pb(request.get_ref().role)?;
        self.inner
            .set_member_role(&me, org, user, role, &client)
            .await?;
        Ok(Response::new(pb::SetMemberRoleResponse {}))
    }

    async fn transfer_ownership(
        &self,
        request: Request<pb::TransferOwnershipRequest>,
    ) -> Result<Response<pb::TransferOwnershipResponse>, Status> {
        let (me, _) = me_session(&request)?;
        let client = client(&request);
        let r = request.get_ref();
        let org = parse_id("organization_id", &r.organization_id)?;
        let user = parse_id("user_id", &r.user_id)?;
        self.inner
            .transfer_ownership(&me, org, user, &client)
            .await?;
        Ok(Response::new(pb::TransferOwnershipResponse {}))
    }

    async fn set_user_disabled(
        &self,
        request: Request<pb::SetUserDisabledRequest>,
    ) -> Result<Response<pb::SetUserDisabledResponse>, Status> {
        let operator = require_internal_scope(&request, OPERATOR_SCOPE)?
            .name
            .clone();
        let r = request.into_inner();
        let id = parse_id("user_id", &r.user_id)?;
        let ended = self
            .inner
            .set_user_disabled(&operator, id, r.disabled)
            .await?;
        Ok(Response::new(pb::SetUserDisabledResponse {
            sessions_ended: count(ended),
        }))
    }

    async fn create_account(
        &self,
        request: Request<pb::CreateAccountRequest>,
    ) -> Result<Response<pb::CreateAccountResponse>, Status> {
        let operator = require_internal_scope(&request, OPERATOR_SCOPE)?
            .name
            .clone();
        let r = request.into_inner();
        let (user, org) = self
            .inner
            .create_account(
                &operator,
                &r.email,
                &r.password,
                &r.display_name,
                &r.organization_name,
            )
            .await?;
        Ok(Response::new(pb::CreateAccountResponse {
            user: Some(user_to_pb(&user)),
            organization: Some(org_to_pb(&org)),
        }))
    }

    async fn verify_session(
        &self,
        request: Request<pb::VerifySessionRequest>,
    ) -> Result<Response<pb::VerifySessionResponse>, Status> {
        require_internal(&request)?;
        let p = self.inner.verify(&request.get_ref().access_token).await?;
        Ok(Response::new(pb::VerifySessionResponse {
            principal: Some(p.to_pb()),
        }))
    }

    async fn issue_session(
        &self,
        request: Request<pb::IssueSessionRequest>,
    ) -> Result<Response<pb::IssueSessionResponse>, Status> {
        require_internal(&request)?;
        let r = request.into_inner();
        let user = parse_id("user_id", &r.user_id)?;
        let org = parse_id("organization_id", &r.organization_id)?;
        let method = SessionMethod::parse(&r.method)
            .map_err(|e| Status::from(ApiError::invalid_field("method", e.to_string())))?;
        let ip = if r.ip.is_empty() {
            None
        } else {
            Some(
                r.ip.parse::<std::net::IpAddr>()
                    .map_err(|_| ApiError::invalid_field("ip", "must be an IP address"))?
                    .to_canonical(),
            )
        };
        let client = ClientContext {
            ip,
            user_agent: (!r.user_agent.is_empty())
                .then(|| r.user_agent.chars().take(512).collect()),
        };
        let tokens = self
            .inner
            .issue_session(user, org, &method, &client)
            .await?;
        Ok(Response::new(pb::IssueSessionResponse {
            tokens: Some(tokens_to_pb(&tokens)),
        }))
    }

    async fn find_user(
        &self,
        request: Request<pb::FindUserRequest>,
    ) -> Result<Response<pb::FindUserResponse>, Status> {
        require_internal(&request)?;
        let found = match request.into_inner().by {
            Some(pb::find_user_request::By::UserId(id)) => {
                self.identity.user(parse_id("user_id", &id)?).await?
            }
            Some(pb::find_user_request::By::Email(email)) => {
                let email = crate::Email::parse(&email)
                    .map_err(|reason| ApiError::invalid_field("email", reason))?;
                self.identity.user_by_email(&email).await?
            }
            None => {
                return Err(ApiError::invalid_field("user_id", "give user_id or email").into());
            }
        };
        Ok(Response::new(pb::FindUserResponse {
            user: found.as_ref().map(user_to_pb),
        }))
    }

    async fn provision_user(
        &self,
        request: Request<pb::ProvisionUserRequest>,
    ) -> Result<Response<pb::ProvisionUserResponse>, Status> {
        require_internal(&request)?;
        let r = request.into_inner();
        let org = parse_id("organization_id", &r.organization_id)?;
        let role = role_from_pb(r.role)?;
        let (user, role, created_user, joined) = self
            .identity
            .provision(&r.email, &r.display_name, org, role)
            .await?;
        Ok(Response::new(pb::ProvisionUserResponse {
            user: Some(user_to_pb(&user)),
            role: role_to_pb(role) as i32,
            created_user,
            joined,
        }))
    }

    async fn create_federated_account(
        &self,
        request: Request<pb::CreateFederatedAccountRequest>,
    ) -> Result<Response<pb::CreateFederatedAccountResponse>, Status> {
        require_internal(&request)?;
        let r = request.into_inner();
        let (user, org) = self
            .identity
            .create_federated_account(&r.email, &r.display_name, "federated")
            .await?;
        Ok(Response::new(pb::CreateFederatedAccountResponse {
            user: Some(user_to_pb(&user)),
            organization: Some(org_to_pb(&org)),
        }))
    }

    async fn get_sign_in_facts(
        &self,
        request: Request<pb::GetSignInFactsRequest>,
    ) -> Result<Response<pb::GetSignInFactsResponse>, Status> {
        require_internal(&request)?;
        let user = parse_id("user_id", &request.get_ref().user_id)?;
        let facts = self.identity.sign_in_facts(user).await?;
        Ok(Response::new(pb::GetSignInFactsResponse {
            has_password: facts.has_password,
            home_organization_id: facts.home_org.map(|o| o.to_string()).unwrap_or_default(),
        }))
    }
}
