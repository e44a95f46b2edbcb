//! The one decision about a request: who calls, may they, and is there
//! quota left. The auth layer (every RPC) and the edge's `Authorize` (a
//! service's own request) both run [`decide`]; they differ only in what
//! they hand it — where the credential comes from, what the request is
//! for — and in how they answer.
//!
//! The order is fixed: the credential (through [`crate::bearer`], the one
//! reader of presented credentials) → the target's requirement (an RPC's
//! declared caller, or an explicit scope) → the quota, so refused requests
//! spend nothing. IP allowlists are the credential services' part of
//! authentication (the client address goes with the credential).
//!
//! Nothing here allocates or boxes beyond what the [`Authenticator`] and
//! the quota do themselves: the credential is borrowed from the request,
//! the function is generic over the quota, and its future lives inside the
//! caller's.

use std::future::Future;
use std::net::IpAddr;

use http::HeaderMap;
use twig_errors::{ApiError, ErrorCode};

use crate::access::{Requirement, unauthenticated_without_bearer};
use crate::principal::{Authenticator, InternalCaller, Principal, RequestQuota, Scope};

/// The credential a request presents.
#[derive(Debug)]
pub enum Presented<'a> {
    /// None at all (a plain HTTP request, an internal call).
    Nothing,
    /// The request's headers: `authorization: Bearer <token>`, if any.
    Headers(&'a HeaderMap),
    /// A credential passed as a value (`Authorize`'s field): the token
    /// exactly.
    Value(&'a str),
    /// A principal the edge already decided (its forwarded caller): not
    /// authenticated again, and its quota was counted there.
    Decided(Principal),
}

/// What the request is for.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// An RPC's declared requirement (the auth layer); `None` for paths
    /// that are not twig RPCs (health, reflection): nothing is checked or
    /// counted. The credential is needed only if the requirement says so.
    Rpc(Option<&'a Requirement>),
    /// An authenticated principal meeting an RPC's requirement as an
    /// outside caller (`Authorize` with a method).
    PrincipalFor(&'a Requirement),
    /// An authenticated principal holding the scope; `None`: any principal
    /// (`Authorize` with a required scope).
    PrincipalWith(Option<Scope>),
}

/// Why a request is refused, as `Authorize` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denial {
    /// No valid credential.
    Unauthenticated,
    /// A valid credential without the right.
    PermissionDenied,
    /// Over the quota.
    ResourceExhausted,
}

impl Denial {
    /// The denial an error stands for; `None` for errors that are not
    /// answers about the caller (a store is down).
    pub fn of(e: &ApiError) -> Option<Self> {
        match e.code() {
            ErrorCode::Unauthenticated => Some(Self::Unauthenticated),
            ErrorCode::PermissionDenied => Some(Self::PermissionDenied),
            ErrorCode::ResourceExhausted => Some(Self::ResourceExhausted),
            _ => None,
        }
    }
}

/// Counts an authenticated request: the quota as the decision sees it.
pub trait Count: Sync {
    /// What a count reports (the limit and what is left), if anything.
    type Outcome: Send;

    /// `cost` units of `principal`'s request; `None` when its credential
    /// is not limited. An error is no decision (the store is down) — or,
    /// for counters that report refusals as errors, the refusal.
    fn count<'a>(
        &'a self,
        principal: &'a Principal,
        cost: u64,
    ) -> impl Future<Output = Result<Option<Self::Outcome>, ApiError>> + Send + 'a;

    /// The refusal an outcome stands for, if it is one.
    fn refusal(outcome: &Self::Outcome) -> Option<ApiError>;
}

/// The auth layer's quota: one unit a request, a refusal is
/// RESOURCE_EXHAUSTED.
impl Count for dyn RequestQuota + '_ {
    type Outcome = ();

    fn count<'a>(
        &'a self,
        principal: &'a Principal,
        _cost: u64,
    ) -> impl Future<Output = Result<Option<()>, ApiError>> + Send + 'a {
        let counting = RequestQuota::count(self, principal);
        async move { counting.await.map(|()| None) }
    }

    fn refusal(_: &()) -> Option<ApiError> {
        None
    }
}

/// The decision about one request.
#[derive(Debug, Clone)]
pub struct Decision<O> {
    /// The outcome of authenticating the presented credential; `None`
    /// when none was presented.
    pub principal: Option<Result<Principal, ApiError>>,
    /// Why not, when refused: the error for the end client.
    pub refusal: Option<ApiError>,
    /// The quota after this request, when one applies.
    pub quota: Option<O>,
}

impl<O> Decision<O> {
    /// Whether the request may go ahead.
    pub fn allowed(&self) -> bool {
        self.refusal.is_none()
    }

    fn refused(principal: Option<Result<Principal, ApiError>>, why: ApiError) -> Self {
        Self {
            principal,
            refusal: Some(why),
            quota: None,
        }
    }
}

/// Decides about a request presenting `credential` (and, for the auth
/// layer, the internal credential of `internal`) from `client_ip`, for
/// `target`, costing `cost` quota units of `quota`.
///
/// Refusals are decisions. `Err` is no decision: a principal was needed
/// and its credential service could not answer, or the quota's store
/// could not (or the quota refused as an error, see [`Count`]).
pub async fn decide<Q: Count + ?Sized>(
    authenticator: &dyn Authenticator,
    credential: Presented<'_>,
    internal: Option<&InternalCaller>,
    target: Target<'_>,
    client_ip: Option<IpAddr>,
    cost: u64,
    quota: Option<&Q>,
) -> Result<Decision<Q::Outcome>, ApiError> {
    // The edge's principal was counted where it was decided; a path that
    // is no twig RPC is not counted at all.
    let counts =
        !matches!(credential, Presented::Decided(_)) && !matches!(target, Target::Rpc(None));
    let token = match credential {
        Presented::Nothing => None,
        Presented::Headers(headers) => crate::bearer::from_headers(headers),
        Presented::Value(text) => Some(crate::bearer::credential(text)),
        Presented::Decided(principal) => return judge(Some(Ok(principal)), internal, target),
    };
    let authentication = match token {
        None => None,
        Some(Ok(token)) => Some(authenticator.authenticate(token, client_ip).await),
        Some(Err(malformed)) => Some(Err(malformed)),
    };
    let decision = judge(authentication, internal, target)?;
    if !counts || !decision.allowed() {
        return Ok(decision);
    }
    let (Some(quota), Some(Ok(principal))) = (quota, &decision.principal) else {
        return Ok(decision);
    };
    let outcome = quota.count(principal, cost).await?;
    let refusal = outcome.as_ref().and_then(Q::refusal);
    Ok(Decision {
        refusal,
        quota: outcome,
        ..decision
    })
}

/// The requirement part: whether the authenticated caller may make the
/// request. Counts nothing.
fn judge<O>(
    authentication: Option<Result<Principal, ApiError>>,
    internal: Option<&InternalCaller>,
    target: Target<'_>,
) -> Result<Decision<O>, ApiError> {
    let principal = || match &authentication {
        Some(Ok(p)) => Ok(p),
        Some(Err(e)) => Err(e.clone()),
        None => Err(unauthenticated_without_bearer()),
    };
    let checked = match target {
        Target::Rpc(None) => Ok(()),
        Target::Rpc(Some(requirement)) => requirement.check_caller(principal, internal),
        Target::PrincipalFor(_) | Target::PrincipalWith(_) => {
            // A principal first: a credential that does not authenticate
            // is the refusal, a service that cannot say is no decision.
            match principal() {
                Ok(p) => match target {
                    Target::PrincipalFor(requirement) => requirement.check_principal(p),
                    Target::PrincipalWith(Some(scope)) => p.require_scope(scope),
                    _ => Ok(()),
                },
                Err(e) if Denial::of(&e).is_some() => {
                    return Ok(Decision::refused(authentication, e));
                }
                Err(e) => return Err(e),
            }
        }
    };
    Ok(match checked {
        Ok(()) => Decision {
            principal: authentication,
            refusal: None,
            quota: None,
        },
        Err(refused) => Decision::refused(authentication, refused),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use uuid::Uuid;

    use super::*;
    use crate::principal::{AuthFuture, Credential};

    /// `good` is a key with the read scope; `down` finds the store down;
    /// anything else is unknown.
    struct Keys;

    impl Authenticator for Keys {
        fn authenticate<'a>(&'a self, bearer: &'a str, _: Option<IpAddr>) -> AuthFuture<'a> {
            Box::pin(async move {
                match bearer {
                    "good" => Ok(Principal {
                        user_id: Uuid::nil(),
                        org_id: Uuid::nil(),
                        roles: Vec::new(),
                        scopes: vec![Scope::Read],
                        credential: Credential::ApiKey {
                            key_id: Uuid::nil(),
                        },
                        expires_at: None,
                    }),
                    "down" => Err(ApiError::unavailable("store down")),
                    _ => Err(ApiError::unauthenticated("unknown")),
                }
            })
        }
    }

    /// Admits `left` units, then refuses.
    struct Left(AtomicU64);

    impl Count for Left {
        type Outcome = bool;

        fn count<'a>(
            &'a self,
            _: &'a Principal,
            cost: u64,
        ) -> impl Future<Output = Result<Option<bool>, ApiError>> + Send + 'a {
            let left = self.0.load(Ordering::SeqCst);
            let admitted = cost <= left;
            if admitted {
                self.0.store(left - cost, Ordering::SeqCst);
            }
            async move { Ok(Some(admitted)) }
        }

        fn refusal(admitted: &bool) -> Option<ApiError> {
            (!admitted)
                .then(|| ApiError::resource_exhausted("over", std::time::Duration::from_secs(1)))
        }
    }

    async fn run(
        credential: Presented<'_>,
        target: Target<'_>,
        quota: &Left,
    ) -> Result<Decision<bool>, ApiError> {
        decide(&Keys, credential, None, target, None, 1, Some(quota)).await
    }

    #[tokio::test]
    async fn one_order_for_every_target() {
        let quota = Left(AtomicU64::new(1));
        let public = Requirement::Public;
        let write = Requirement::Principal(Some(Scope::Write));
        // A public RPC goes ahead with a bad credential, kept for the service.
        let d = run(Presented::Value("down"), Target::Rpc(Some(&public)), &quota)
            .await
            .unwrap();
        assert!(d.allowed() && matches!(d.principal, Some(Err(_))));
        // Authorize needs the principal: a store that is down is no decision,
        // an unknown credential a refusal.
        assert!(
            run(
                Presented::Value("down"),
                Target::PrincipalWith(None),
                &quota
            )
            .await
            .is_err()
        );
        let d = run(Presented::Value("bad"), Target::PrincipalWith(None), &quota)
            .await
            .unwrap();
        assert_eq!(
            d.refusal.map(|e| Denial::of(&e)),
            Some(Some(Denial::Unauthenticated))
        );
        // The scope is checked before the quota: nothing is spent.
        let d = run(
            Presented::Value("good"),
            Target::PrincipalFor(&write),
            &quota,
        )
        .await
        .unwrap();
        assert_eq!(
            d.refusal.map(|e| Denial::of(&e)),
            Some(Some(Denial::PermissionDenied))
        );
        assert_eq!(quota.0.load(Ordering::SeqCst), 1);
        // Then the quota: one unit, then a refusal with the outcome.
        let d = run(
            Presented::Value("good"),
            Target::PrincipalWith(Some(Scope::Read)),
            &quota,
        )
        .await
        .unwrap();
        assert!(d.allowed() && d.quota == Some(true));
        let d = run(Presented::Value("good"), Target::Rpc(Some(&public)), &quota)
            .await
            .unwrap();
        assert_eq!(
            d.refusal.map(|e| Denial::of(&e)),
            Some(Some(Denial::ResourceExhausted))
        );
        // Not a twig RPC, or the edge's principal: nothing counted.
        let d = run(Presented::Value("good"), Target::Rpc(None), &quota)
            .await
            .unwrap();
        assert!(d.allowed() && d.quota.is_none());
        let decided = d.principal.unwrap().unwrap();
        let d = run(
            Presented::Decided(decided),
            Target::Rpc(Some(&public)),
            &quota,
        )
        .await
        .unwrap();
        assert!(d.allowed() && d.quota.is_none());
    }
}
