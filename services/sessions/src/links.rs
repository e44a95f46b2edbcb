//! Links sent by email — finishing a sign-up, verifying an address,
//! resetting a password — and **the one rule for their tokens**: a token
//! is random (256 bits), stored only as its SHA-256, works once, expires,
//! and a newer link of the same purpose to the same address voids the
//! older ones — except sign-up links ([`LinkPurpose::newer_voids_older`]):
//! each finishes only the sign-up it was sent for, with the password
//! chosen for it, and the first followed voids the rest. Invitations keep
//! their own table ([`crate::invitations`]) but the same token rules:
//! [`new_token`], [`token_hash`].

use chrono::{DateTime, Utc};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set};
use twig_crypto::{Token, TokenHash, TokenKind};
use uuid::Uuid;

use crate::entity::email_link;
use twig_email::Email;

/// What a link is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkPurpose {
    /// Finishes a sign-up: the account is made when the link is followed.
    SignUp,
    /// Marks an existing account's email verified.
    VerifyEmail,
    /// Sets a new password.
    PasswordReset,
}

impl LinkPurpose {
    /// The stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SignUp => "sign_up",
            Self::VerifyEmail => "verify_email",
            Self::PasswordReset => "password_reset",
        }
    }

    /// The stored form read back.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "sign_up" => Some(Self::SignUp),
            "verify_email" => Some(Self::VerifyEmail),
            "password_reset" => Some(Self::PasswordReset),
            _ => None,
        }
    }

    /// Does a newer link of this purpose to an address void the older
    /// ones? Not for sign-ups: each carries the password of its own
    /// sign-up, so whoever starts one for someone else's address cannot
    /// void theirs, and the first one followed voids the others
    /// ([`void_others`]).
    pub fn newer_voids_older(self) -> bool {
        !matches!(self, Self::SignUp)
    }

    /// The token kind of its links (its prefix tells them apart).
    pub fn token_kind(self) -> TokenKind {
        match self {
            Self::SignUp | Self::VerifyEmail => TokenKind::EmailVerification,
            Self::PasswordReset => TokenKind::PasswordReset,
        }
    }
}

/// A fresh token of `kind`.
pub fn new_token(kind: TokenKind) -> Token {
    Token::generate(kind)
}

/// The stored form of a presented token, when it has the shape of a
/// token of `kind`; anything else is `None` (and looked up nowhere).
pub fn token_hash(kind: TokenKind, presented: &str) -> Option<Vec<u8>> {
    Token::check_format(kind, presented).ok()?;
    Some(TokenHash::of(presented).as_bytes().to_vec())
}

/// Why a presented link token does not work. The caller answers all of
/// them alike; the reason is for the audit log and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkRefusal {
    /// Not a token, or no such token.
    Unknown,
    /// Used already, or voided by a newer link.
    Used,
    /// Revoked by whoever issued it (an invitation).
    Revoked,
    /// Past its expiry.
    Expired,
}

impl LinkRefusal {
    /// A bounded label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Used => "used",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
        }
    }
}

/// A link to send: its token is shown once (in the mail), its row written
/// inside the caller's transaction.
pub struct IssuedLink {
    /// The token for the link.
    pub token: Token,
}

/// Issues a link for `purpose` to `email` inside `txn`, voiding the
/// unused older links of the same purpose to the same address when the
/// purpose says so ([`LinkPurpose::newer_voids_older`]).
pub async fn issue(
    txn: &impl ConnectionTrait,
    purpose: LinkPurpose,
    email: &Email,
    user_id: Option<Uuid>,
    details: serde_json::Value,
    now: DateTime<Utc>,
    ttl: chrono::Duration,
) -> Result<IssuedLink, sea_orm::DbErr> {
    if purpose.newer_voids_older() {
        void_others(txn, purpose, email, now).await?;
    }
    let token = new_token(purpose.token_kind());
    let expires_at = now + ttl;
    email_link::ActiveModel {
        token_hash: Set(token.hash().as_bytes().to_vec()),
        purpose: Set(purpose.as_str().to_string()),
        email: Set(email.as_str().to_string()),
        user_id: Set(user_id),
        details: Set(details.to_string()),
        created_at: Set(now),
        expires_at: Set(expires_at),
        used_at: Set(None),
    }
    .insert(txn)
    .await?;
    Ok(IssuedLink { token })
}

/// Voids the unused links of `purpose` to `email`.
pub async fn void_others(
    txn: &impl ConnectionTrait,
    purpose: LinkPurpose,
    email: &Email,
    now: DateTime<Utc>,
) -> Result<(), sea_orm::DbErr> {
    email_link::Entity::update_many()
        .col_expr(email_link::Column::UsedAt, Expr::value(now))
        .filter(email_link::Column::Purpose.eq(purpose.as_str()))
        .filter(email_link::Column::Email.eq(email.as_str()))
        .filter(email_link::Column::UsedAt.is_null())
        .exec(txn)
        .await?;
    Ok(())
}

/// A presented link, or why it does not work.
pub type Presented = Result<email_link::Model, (LinkRefusal, Option<email_link::Model>)>;

/// The link `presented` for one of `purposes`, read through `conn`
/// without using it: the row when it is unused and unexpired, else why
/// not. A caller that must check something first (a sign-up's password)
/// peeks, then [`consume`]s.
pub async fn peek(
    conn: &impl ConnectionTrait,
    purposes: &[LinkPurpose],
    presented: &str,
    now: DateTime<Utc>,
) -> Result<Presented, sea_orm::DbErr> {
    let Some(kind) = purposes.first().map(|p| p.token_kind()) else {
        return Ok(Err((LinkRefusal::Unknown, None)));
    };
    let Some(hash) = token_hash(kind, presented) else {
        return Ok(Err((LinkRefusal::Unknown, None)));
    };
    let Some(row) = email_link::Entity::find_by_id(hash).one(conn).await? else {
        return Ok(Err((LinkRefusal::Unknown, None)));
    };
    if !LinkPurpose::parse(&row.purpose).is_some_and(|p| purposes.contains(&p)) {
        return Ok(Err((LinkRefusal::Unknown, None)));
    }
    if row.used_at.is_some() {
        return Ok(Err((LinkRefusal::Used, Some(row))));
    }
    if row.expires_at <= now {
        return Ok(Err((LinkRefusal::Expired, Some(row))));
    }
    Ok(Ok(row))
}

/// Uses the link `presented` for one of `purposes` inside `txn`: the row
/// when it was unused and unexpired (now used), else why not. The first
/// of two concurrent uses wins (a conditional UPDATE decides).
pub async fn consume(
    txn: &impl ConnectionTrait,
    purposes: &[LinkPurpose],
    presented: &str,
    now: DateTime<Utc>,
) -> Result<Presented, sea_orm::DbErr> {
    let row = match peek(txn, purposes, presented, now).await? {
        Ok(row) => row,
        Err(refused) => return Ok(Err(refused)),
    };
    let hash = row.token_hash.clone();
    let won = email_link::Entity::update_many()
        .col_expr(email_link::Column::UsedAt, Expr::value(now))
        .filter(email_link::Column::TokenHash.eq(hash))
        .filter(email_link::Column::UsedAt.is_null())
        .exec(txn)
        .await?
        .rows_affected
        == 1;
    if !won {
        return Ok(Err((LinkRefusal::Used, Some(row))));
    }
    Ok(Ok(row))
}

/// Deletes links that expired more than a day ago (used or not): the
/// table holds only what is recent.
pub async fn delete_expired(
    conn: &impl ConnectionTrait,
    now: DateTime<Utc>,
) -> Result<u64, sea_orm::DbErr> {
    Ok(email_link::Entity::delete_many()
        .filter(email_link::Column::ExpiresAt.lt(now - chrono::Duration::days(1)))
        .exec(conn)
        .await?
        .rows_affected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purposes_round_trip() {
        for p in [
            LinkPurpose::SignUp,
            LinkPurpose::VerifyEmail,
            LinkPurpose::PasswordReset,
        ] {
            assert_eq!(LinkPurpose::parse(p.as_str()), Some(p));
        }
        assert_eq!(LinkPurpose::parse("reset"), None);
    }

    #[test]
    fn only_well_formed_tokens_of_the_kind_are_looked_up() {
        let reset = new_token(TokenKind::PasswordReset);
        assert!(token_hash(TokenKind::PasswordReset, reset.expose()).is_some());
        assert!(token_hash(TokenKind::EmailVerification, reset.expose()).is_none());
        assert!(token_hash(TokenKind::PasswordReset, "twig_pr_guess").is_none());
        let mut tampered = reset.expose().to_string();
        tampered.pop();
        tampered.push(if reset.expose().ends_with('A') {
            'B'
        } else {
            'A'
        });
        assert!(token_hash(TokenKind::PasswordReset, &tampered).is_none());
    }
}
