//! Scope sets as stored (`"admin read"`) and compared.

use twig_auth::Scope;

/// Sorted, de-duplicated names joined by spaces.
pub fn to_stored(scopes: &[Scope]) -> String {
    let mut s: Vec<Scope> = scopes.to_vec();
    s.sort();
    s.dedup();
    s.iter().map(|x| x.as_str()).collect::<Vec<_>>().join(" ")
}

/// Parses a stored set; unknown names are dropped.
pub fn from_stored(stored: &str) -> Vec<Scope> {
    stored.split_whitespace().filter_map(Scope::parse).collect()
}

/// True if a holder of `held` may grant every scope of `wanted`: admin
/// grants anything; otherwise each wanted scope must be held.
pub fn may_grant(held: &[Scope], wanted: &[Scope]) -> bool {
    held.contains(&Scope::Admin) || wanted.iter().all(|w| held.contains(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_form_round_trips_sorted() {
        let s = to_stored(&[Scope::Write, Scope::Read, Scope::Write]);
        assert_eq!(s, "read write");
        assert_eq!(from_stored(&s), vec![Scope::Read, Scope::Write]);
    }

    #[test]
    fn nobody_grants_beyond_their_own() {
        assert!(may_grant(&[Scope::Admin], &[Scope::Execute, Scope::Admin]));
        assert!(may_grant(&[Scope::Read, Scope::Write], &[Scope::Read]));
        assert!(!may_grant(&[Scope::Read], &[Scope::Write]));
        assert!(!may_grant(
            &[Scope::Read, Scope::Write, Scope::Execute],
            &[Scope::Admin]
        ));
    }
}
