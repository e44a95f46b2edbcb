//! Memberships: where each stands, and what an organisation may do with
//! its own — suspend, reinstate, remove, change a role, hand over
//! ownership — and what a member may do (leave). An organisation acts on
//! its memberships only; an account itself is disabled by the platform
//! operator alone ([`Sessions::set_user_disabled`]).
//!
//! The rules, each in one place:
//! - who may act on whom: [`require_may_act_on`];
//! - a member's keys work only while the account is enabled and the
//!   membership active: [`keys_may_work`];
//! - an organisation keeps an active owner: [`require_another_owner`];
//! - a suspended or removed member has no session in the organisation
//!   (their sessions there end, and verification asks for an active
//!   membership) and no working key there (the api-keys service stops or
//!   revokes the keys they created, through the [`MemberKeys`] port,
//!   before the membership changes: a failure leaves the keys stopped, and
//!   the change is safe to retry).

use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QuerySelect,
};
use twig_auth::{Principal, Role};
use twig_module::{MemberKeys, MemberKeysChange};
use uuid::Uuid;

use crate::entity::{membership, organization, session};
use crate::error::SessionError;
use crate::sessions::{ClientContext, Sessions, revoke_sessions};

type Result<T> = std::result::Result<T, SessionError>;

/// Where a membership stands. An invitation not yet accepted is not a
/// membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MembershipStatus {
    /// A member: sessions and keys in the organisation work.
    Active,
    /// Kept, but no session or key of the member works there until
    /// reinstated.
    Suspended,
    /// Gone: kept for the record (the keys it owned), listed no more.
    Removed,
}

impl MembershipStatus {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Suspended => "suspended",
            Self::Removed => "removed",
        }
    }

    /// The stored form read back; anything else is `None`.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "active" => Some(Self::Active),
            "suspended" => Some(Self::Suspended),
            "removed" => Some(Self::Removed),
            _ => None,
        }
    }
}

/// A membership read for a change: its role and where it stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MembershipState {
    /// The role.
    pub role: Role,
    /// Where it stands.
    pub status: MembershipStatus,
}

impl MembershipState {
    /// The stored row read back; an unreadable one is `None`.
    pub fn of(row: &membership::Model) -> Option<Self> {
        Some(Self {
            role: Role::parse(&row.role)?,
            status: MembershipStatus::parse(&row.status)?,
        })
    }
}

/// May `principal` change the membership of a member with `target_role`
/// (suspend, reinstate, remove, change role)? Owners and admins of the
/// organisation manage members; only an owner acts on an owner. Another
/// organisation is NOT_FOUND (not revealed to exist); the caller's own
/// membership is refused (a member leaves with `LeaveOrganization`).
pub fn require_may_act_on(
    principal: &Principal,
    org_id: Uuid,
    user_id: Uuid,
    target_role: Role,
) -> Result<()> {
    crate::identity::IdentityStore::require_manager(principal, org_id)?;
    if user_id == principal.user_id {
        return Err(SessionError::Forbidden(
            "you cannot change your own membership this way; leave the organisation instead",
        ));
    }
    if target_role == Role::Owner && !principal.roles.contains(&Role::Owner) {
        return Err(SessionError::Forbidden(
            "only an owner may change an owner's membership",
        ));
    }
    Ok(())
}

/// Refuses unless `org_id` has an active owner other than `user_id`: the
/// last owner is never suspended, removed, demoted, and never leaves.
/// Read inside the change's transaction, after [`lock_organization`].
pub async fn require_another_owner(
    txn: &impl ConnectionTrait,
    org_id: Uuid,
    user_id: Uuid,
) -> Result<()> {
    let others = membership::Entity::find()
        .filter(membership::Column::OrgId.eq(org_id))
        .filter(membership::Column::UserId.ne(user_id))
        .filter(membership::Column::Role.eq(Role::Owner.as_str()))
        .filter(membership::Column::Status.eq(MembershipStatus::Active.as_str()))
        .count(txn)
        .await?;
    if others == 0 {
        return Err(SessionError::LastOwner);
    }
    Ok(())
}

/// Whether the keys a member created in an organisation may work: only
/// while their account is enabled and their membership there active.
pub fn keys_may_work(account_disabled: bool, status: MembershipStatus) -> bool {
    !account_disabled && status == MembershipStatus::Active
}

/// Locks the organisation's row for the rest of the transaction, so that
/// membership changes of one organisation run one after another (two
/// owners demoting each other cannot both pass [`require_another_owner`]).
/// SQLite's write transactions are serial already.
pub(crate) async fn lock_organization(txn: &impl ConnectionTrait, org_id: Uuid) -> Result<()> {
    organization::Entity::find_by_id(org_id)
        .lock_exclusive()
        .one(txn)
        .await?
        .ok_or(SessionError::NotFound("organisation"))?;
    Ok(())
}

/// The membership of `user_id` in `org_id`, any status but removed; a
/// removed or absent one is NOT_FOUND.
async fn current_membership(
    conn: &impl ConnectionTrait,
    org_id: Uuid,
    user_id: Uuid,
) -> Result<MembershipState> {
    membership::Entity::find_by_id((org_id, user_id))
        .one(conn)
        .await?
        .as_ref()
        .and_then(MembershipState::of)
        .filter(|m| m.status != MembershipStatus::Removed)
        .ok_or(SessionError::NotFound("member"))
}

/// Makes `user_id` an active member of `org_id` with `role` (accepting an
/// invitation): a new membership, or a removed one made again. A
/// suspended member stays suspended (the organisation decided; an admin
/// reinstates); an active one is [`SessionError::AlreadyMember`].
pub(crate) async fn join(
    txn: &impl ConnectionTrait,
    org_id: Uuid,
    user_id: Uuid,
    role: Role,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<()> {
    lock_organization(txn, org_id).await?;
    let existing = membership::Entity::find_by_id((org_id, user_id))
        .one(txn)
        .await?
        .as_ref()
        .and_then(MembershipState::of);
    match existing.map(|m| m.status) {
        None => {
            crate::identity::insert_membership(txn, org_id, user_id, role, now).await?;
        }
        Some(MembershipStatus::Removed) => {
            membership::Entity::update_many()
                .col_expr(
                    membership::Column::Status,
                    Expr::value(MembershipStatus::Active.as_str()),
                )
                .col_expr(membership::Column::Role, Expr::value(role.as_str()))
                .col_expr(membership::Column::CreatedAt, Expr::value(now))
                .filter(membership::Column::OrgId.eq(org_id))
                .filter(membership::Column::UserId.eq(user_id))
                .exec(txn)
                .await?;
        }
        Some(MembershipStatus::Suspended) => {
            return Err(SessionError::MembershipState(
                "your membership of this organisation is suspended; ask an admin to reinstate it",
            ));
        }
        Some(MembershipStatus::Active) => return Err(SessionError::AlreadyMember),
    }
    Ok(())
}

/// How a membership ends: suspended (it may be reinstated) or removed
/// (by an admin, or left).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Suspend,
    Remove,
}

impl Ending {
    /// The status the membership gets.
    fn status(self) -> MembershipStatus {
        match self {
            Self::Suspend => MembershipStatus::Suspended,
            Self::Remove => MembershipStatus::Removed,
        }
    }
}

/// May the membership of `user_id` in `org_id` end as `to`? Only a
/// current membership ends; only an active one is suspended; the last
/// active owner never goes. The membership as it is.
async fn check_end(
    conn: &impl ConnectionTrait,
    org_id: Uuid,
    user_id: Uuid,
    to: Ending,
) -> Result<MembershipState> {
    let state = current_membership(conn, org_id, user_id).await?;
    if to == Ending::Suspend && state.status != MembershipStatus::Active {
        return Err(SessionError::MembershipState(
            "the member is suspended already; reinstate or remove them",
        ));
    }
    if state.role == Role::Owner && state.status == MembershipStatus::Active {
        require_another_owner(conn, org_id, user_id).await?;
    }
    Ok(state)
}

/// Sets a membership's status and role.
async fn set_membership(
    txn: &impl ConnectionTrait,
    org_id: Uuid,
    user_id: Uuid,
    state: MembershipState,
) -> Result<()> {
    membership::Entity::update_many()
        .col_expr(
            membership::Column::Status,
            Expr::value(state.status.as_str()),
        )
        .col_expr(membership::Column::Role, Expr::value(state.role.as_str()))
        .filter(membership::Column::OrgId.eq(org_id))
        .filter(membership::Column::UserId.eq(user_id))
        .exec(txn)
        .await?;
    Ok(())
}

/// Counts of what a membership change ended or stopped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ended {
    /// Sessions ended in the organisation.
    pub sessions: u64,
    /// API keys stopped, resumed or revoked.
    pub keys: u64,
}

impl Sessions {
    /// Applies `change` to the keys `user_id` created in `org_id`, when an
    /// api-keys service is part of the deployment.
    pub(crate) async fn change_member_keys(
        &self,
        org_id: Uuid,
        user_id: Uuid,
        change: MemberKeysChange,
    ) -> Result<u64> {
        match self.keys().get() {
            Some(MemberKeys(keys)) => keys
                .change_member_keys(org_id, user_id, change)
                .await
                .map_err(SessionError::Remote),
            None => Ok(0),
        }
    }

    /// Ends a membership (`to`: suspended or removed). The order keeps
    /// keys safe both ways: the change is checked first (nothing is
    /// touched when it is refused); the member's keys there stop; the
    /// membership changes in one transaction with its audit event,
    /// re-checked under the organisation's lock, and the member's sessions
    /// there end (every replica forgets their cached tokens). A change
    /// refused at that point — a concurrent one won — gives the keys back;
    /// a removal then revokes them for good. A failure in between leaves
    /// the keys stopped, never working for a member who is gone.
    async fn end_membership(
        &self,
        actor: &Principal,
        org_id: Uuid,
        user_id: Uuid,
        to: Ending,
        client: &ClientContext,
    ) -> Result<Ended> {
        let (action, reason) = match to {
            Ending::Suspend => ("member.suspended", "member_suspended"),
            Ending::Remove if actor.user_id == user_id => ("member.left", "member_left"),
            Ending::Remove => ("member.removed", "member_removed"),
        };
        check_end(self.db(), org_id, user_id, to).await?;
        let stopped = self
            .change_member_keys(org_id, user_id, MemberKeysChange::Stop)
            .await?;
        let changed = self
            .end_membership_in_db(actor, org_id, user_id, to, (action, reason), client)
            .await;
        let sessions = match changed {
            Ok(sessions) => sessions,
            Err(refused) => {
                self.resume_if_allowed(org_id, user_id).await;
                return Err(refused);
            }
        };
        let keys = if to == Ending::Remove {
            // Stopped keys become revoked; if this fails they stay stopped.
            match self
                .change_member_keys(org_id, user_id, MemberKeysChange::Revoke)
                .await
            {
                Ok(revoked) => revoked,
                Err(e) => {
                    tracing::warn!(%org_id, %user_id, error = %e,
                        "a removed member's keys are stopped but not yet revoked");
                    stopped
                }
            }
        } else {
            stopped
        };
        Ok(Ended { sessions, keys })
    }

    /// The membership change of [`Sessions::end_membership`] in the
    /// database: the new status, the member's sessions there ended, the
    /// audit event; the sessions ended.
    async fn end_membership_in_db(
        &self,
        actor: &Principal,
        org_id: Uuid,
        user_id: Uuid,
        to: Ending,
        (action, reason): (&'static str, &'static str),
        client: &ClientContext,
    ) -> Result<u64> {
        let now = self.now();
        let txn = twig_db::begin_write(self.db()).await?;
        lock_organization(&txn, org_id).await?;
        let state = check_end(&txn, org_id, user_id, to).await?;
        set_membership(
            &txn,
            org_id,
            user_id,
            MembershipState {
                role: state.role,
                status: to.status(),
            },
        )
        .await?;
        let sessions = revoke_sessions(
            &txn,
            ExprTrait::and(
                session::Column::UserId.eq(user_id),
                session::Column::OrgId.eq(org_id),
            ),
            reason,
            now,
        )
        .await?;
        self.audit(action, actor, client)
            .target(format!("user:{user_id}"))
            .details(serde_json::json!({
                "role": state.role.as_str(),
                "sessions_ended": sessions,
            }))
            .record_at(&txn, now)
            .await?;
        txn.commit().await?;
        self.ended_user(user_id).await;
        Ok(sessions)
    }

    /// Gives a member's keys back after a refused change, when they may
    /// work ([`keys_may_work`]); a failure leaves them stopped (logged).
    async fn resume_if_allowed(&self, org_id: Uuid, user_id: Uuid) {
        let may = async {
            let status = current_membership(self.db(), org_id, user_id).await?.status;
            let disabled = self
                .identity()
                .user(user_id)
                .await?
                .is_none_or(|u| u.disabled_at.is_some());
            Ok::<_, SessionError>(keys_may_work(disabled, status))
        };
        let outcome = match may.await {
            Ok(true) => self
                .change_member_keys(org_id, user_id, MemberKeysChange::Resume)
                .await
                .map(|_| ()),
            Ok(false) => Ok(()),
            Err(e) => Err(e),
        };
        if let Err(e) = outcome {
            tracing::warn!(%org_id, %user_id, error = %e,
                "a member's keys stay stopped after a refused change; reinstate to resume them");
        }
    }

    /// Suspends an active member of the caller's organisation.
    pub async fn suspend_member(
        &self,
        principal: &Principal,
        org_id: Uuid,
        user_id: Uuid,
        client: &ClientContext,
    ) -> Result<Ended> {
        let state = self.target(principal, org_id, user_id).await?;
        require_may_act_on(principal, org_id, user_id, state.role)?;
        self.end_membership(principal, org_id, user_id, Ending::Suspend, client)
            .await
    }

    /// Removes a member (active or suspended) of the caller's organisation.
    pub async fn remove_member(
        &self,
        principal: &Principal,
        org_id: Uuid,
        user_id: Uuid,
        client: &ClientContext,
    ) -> Result<Ended> {
        let state = self.target(principal, org_id, user_id).await?;
        require_may_act_on(principal, org_id, user_id, state.role)?;
        self.end_membership(principal, org_id, user_id, Ending::Remove, client)
            .await
    }

    /// The caller leaves an organisation (its last owner cannot).
    pub async fn leave(
        &self,
        principal: &Principal,
        org_id: Uuid,
        client: &ClientContext,
    ) -> Result<Ended> {
        if principal.org_id != org_id {
            return Err(SessionError::NotFound("organisation"));
        }
        self.end_membership(principal, org_id, principal.user_id, Ending::Remove, client)
            .await
    }

    /// Makes a suspended member active again; their keys there work again.
    /// Reinstating an active member only makes sure their keys work (a
    /// retry after the api-keys service failed).
    pub async fn reinstate_member(
        &self,
        principal: &Principal,
        org_id: Uuid,
        user_id: Uuid,
        client: &ClientContext,
    ) -> Result<u64> {
        let state = self.target(principal, org_id, user_id).await?;
        require_may_act_on(principal, org_id, user_id, state.role)?;
        if state.status == MembershipStatus::Suspended {
            let now = self.now();
            let txn = twig_db::begin_write(self.db()).await?;
            lock_organization(&txn, org_id).await?;
            let state = current_membership(&txn, org_id, user_id).await?;
            set_membership(
                &txn,
                org_id,
                user_id,
                MembershipState {
                    role: state.role,
                    status: MembershipStatus::Active,
                },
            )
            .await?;
            self.audit("member.reinstated", principal, client)
                .org(org_id)
                .target(format!("user:{user_id}"))
                .record_at(&txn, now)
                .await?;
            txn.commit().await?;
        }
        // Keys resume only once the membership is active again, and only
        // while the account is enabled.
        let disabled = self
            .identity()
            .user(user_id)
            .await?
            .is_none_or(|u| u.disabled_at.is_some());
        if !keys_may_work(disabled, MembershipStatus::Active) {
            return Ok(0);
        }
        self.change_member_keys(org_id, user_id, MemberKeysChange::Resume)
            .await
    }

    /// Stops the account's keys in every organisation it belongs to (the
    /// account is being disabled), or resumes them where they may work
    /// again (it was enabled). Returns how many keys changed.
    pub(crate) async fn account_keys(&self, user_id: Uuid, disabled: bool) -> Result<u64> {
        let rows = membership::Entity::find()
            .filter(membership::Column::UserId.eq(user_id))
            .all(self.db())
            .await?;
        let mut changed = 0;
        for state in rows
            .iter()
            .filter_map(|row| Some((row.org_id, MembershipState::of(row)?)))
        {
            let (org_id, state) = state;
            let change = if disabled {
                if state.status == MembershipStatus::Removed {
                    continue;
                }
                MemberKeysChange::Stop
            } else if keys_may_work(false, state.status) {
                MemberKeysChange::Resume
            } else {
                continue;
            };
            changed += self.change_member_keys(org_id, user_id, change).await?;
        }
        Ok(changed)
    }

    /// Changes an active member's role. Making or unmaking an owner needs
    /// an owner; the last owner is never demoted. The member's cached
    /// tokens are dropped on every replica, so their next call carries
    /// the new role.
    pub async fn set_member_role(
        &self,
        principal: &Principal,
        org_id: Uuid,
        user_id: Uuid,
        role: Role,
        client: &ClientContext,
    ) -> Result<()> {
        let state = self.target(principal, org_id, user_id).await?;
        require_may_act_on(principal, org_id, user_id, state.role)?;
        if role == Role::Owner && !principal.roles.contains(&Role::Owner) {
            return Err(SessionError::Forbidden("only an owner may make an owner"));
        }
        let now = self.now();
        let txn = twig_db::begin_write(self.db()).await?;
        lock_organization(&txn, org_id).await?;
        let state = current_membership(&txn, org_id, user_id).await?;
        if state.status != MembershipStatus::Active {
            return Err(SessionError::MembershipState(
                "the member is suspended; reinstate them before changing their role",
            ));
        }
        if state.role == role {
            // Nothing to change; a retry still narrows the member's keys.
            drop(txn);
            return self.narrow_member_keys(org_id, user_id, role).await;
        }
        if state.role == Role::Owner {
            require_another_owner(&txn, org_id, user_id).await?;
        }
        set_membership(&txn, org_id, user_id, MembershipState { role, ..state }).await?;
        self.audit("member.role_changed", principal, client)
            .target(format!("user:{user_id}"))
            .details(serde_json::json!({ "from": state.role.as_str(), "to": role.as_str() }))
            .record_at(&txn, now)
            .await?;
        txn.commit().await?;
        self.ended_user(user_id).await;
        self.narrow_member_keys(org_id, user_id, role).await
    }

    /// Narrows the scopes of the keys a member created in `org_id` to what
    /// `role` may hold (a demoted admin's admin keys lose the admin
    /// scope). Idempotent: SetMemberRole retried with the same role does
    /// it again.
    async fn narrow_member_keys(&self, org_id: Uuid, user_id: Uuid, role: Role) -> Result<()> {
        self.change_member_keys(
            org_id,
            user_id,
            MemberKeysChange::LimitScopes(twig_auth::Scope::of_role(role).to_vec()),
        )
        .await
        .map(|_| ())
    }

    /// An owner makes an active member an owner and becomes an admin, in
    /// one transaction.
    pub async fn transfer_ownership(
        &self,
        principal: &Principal,
        org_id: Uuid,
        user_id: Uuid,
        client: &ClientContext,
    ) -> Result<()> {
        if principal.org_id != org_id {
            return Err(SessionError::NotFound("organisation"));
        }
        let now = self.now();
        let txn = twig_db::begin_write(self.db()).await?;
        lock_organization(&txn, org_id).await?;
        let me = current_membership(&txn, org_id, principal.user_id).await?;
        if me.role != Role::Owner || me.status != MembershipStatus::Active {
            return Err(SessionError::Forbidden(
                "only an owner may hand over ownership",
            ));
        }
        if user_id == principal.user_id {
            return Err(SessionError::Forbidden("you own this organisation already"));
        }
        let them = current_membership(&txn, org_id, user_id).await?;
        if them.status != MembershipStatus::Active {
            return Err(SessionError::MembershipState(
                "the member is suspended; reinstate them first",
            ));
        }
        set_membership(
            &txn,
            org_id,
            user_id,
            MembershipState {
                role: Role::Owner,
                ..them
            },
        )
        .await?;
        set_membership(
            &txn,
            org_id,
            principal.user_id,
            MembershipState {
                role: Role::Admin,
                ..me
            },
        )
        .await?;
        self.audit("org.ownership_transferred", principal, client)
            .target(format!("user:{user_id}"))
            .details(serde_json::json!({ "new_owner_was": them.role.as_str() }))
            .record_at(&txn, now)
            .await?;
        txn.commit().await?;
        self.ended_user(user_id).await;
        self.ended_user(principal.user_id).await;
        Ok(())
    }

    /// The membership a manager of `org_id` wants to change (any status
    /// but removed); another organisation's is NOT_FOUND.
    async fn target(
        &self,
        principal: &Principal,
        org_id: Uuid,
        user_id: Uuid,
    ) -> Result<MembershipState> {
        if principal.org_id != org_id {
            return Err(SessionError::NotFound("organisation"));
        }
        current_membership(self.db(), org_id, user_id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use twig_auth::Credential;

    fn caller(role: Role, org_id: Uuid) -> Principal {
        Principal {
            user_id: Uuid::new_v4(),
            org_id,
            roles: vec![role],
            scopes: twig_auth::Scope::of_role(role).to_vec(),
            credential: Credential::Session {
                session_id: Uuid::new_v4(),
            },
            expires_at: None,
        }
    }

    #[test]
    fn statuses_round_trip_and_nothing_else_parses() {
        for s in [
            MembershipStatus::Active,
            MembershipStatus::Suspended,
            MembershipStatus::Removed,
        ] {
            assert_eq!(MembershipStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(MembershipStatus::parse("Active"), None);
        assert_eq!(MembershipStatus::parse(""), None);
    }

    #[test]
    fn who_may_act_on_whom() {
        let org = Uuid::new_v4();
        let target = Uuid::new_v4();
        let owner = caller(Role::Owner, org);
        let admin = caller(Role::Admin, org);
        let member = caller(Role::Member, org);
        assert!(require_may_act_on(&owner, org, target, Role::Owner).is_ok());
        assert!(require_may_act_on(&admin, org, target, Role::Admin).is_ok());
        assert!(require_may_act_on(&admin, org, target, Role::Member).is_ok());
        assert!(matches!(
            require_may_act_on(&admin, org, target, Role::Owner),
            Err(SessionError::Forbidden(_))
        ));
        assert!(matches!(
            require_may_act_on(&member, org, target, Role::Member),
            Err(SessionError::Forbidden(_))
        ));
        assert!(matches!(
            require_may_act_on(&owner, org, owner.user_id, Role::Owner),
            Err(SessionError::Forbidden(_))
        ));
        assert!(matches!(
            require_may_act_on(&owner, Uuid::new_v4(), target, Role::Member),
            Err(SessionError::NotFound(_))
        ));
    }

    #[test]
    fn keys_work_only_for_an_enabled_account_with_an_active_membership() {
        assert!(keys_may_work(false, MembershipStatus::Active));
        assert!(!keys_may_work(true, MembershipStatus::Active));
        assert!(!keys_may_work(false, MembershipStatus::Suspended));
        assert!(!keys_may_work(false, MembershipStatus::Removed));
    }
}
