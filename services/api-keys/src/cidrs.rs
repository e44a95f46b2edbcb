//! IP allowlists: lists of IPv4 and IPv6 networks.
//!
//! Rules (documented for users):
//! - an empty list allows every address;
//! - a bare address means that one address (/32 or /128);
//! - a client's IPv4-mapped IPv6 address (`::ffff:192.0.2.1`) is matched
//!   as its IPv4 address; lists themselves hold plain IPv4 or IPv6 networks;
//! - network edges are inclusive (`10.0.0.0/24` holds .0 to .255);
//! - with a non-empty list and no known client address, access is denied.

use std::net::IpAddr;

use ipnet::IpNet;

/// The longest list.
pub const MAX_ENTRIES: usize = 100;

/// Parses user input; the error names the first bad entry.
pub fn parse(entries: &[String]) -> Result<Vec<IpNet>, String> {
    if entries.len() > MAX_ENTRIES {
        return Err(format!("at most {MAX_ENTRIES} networks"));
    }
    let mut out = Vec::with_capacity(entries.len());
    for raw in entries {
        let text = raw.trim();
        let net = match text.parse::<IpNet>() {
            Ok(net) => net,
            Err(_) => match text.parse::<IpAddr>() {
                Ok(ip) => IpNet::from(ip),
                Err(_) => {
                    let shown: String = text.chars().take(60).collect();
                    return Err(format!("{shown:?} is not an IPv4 or IPv6 network"));
                }
            },
        };
        let net = match net {
            IpNet::V6(v6) => match v6.addr().to_ipv4_mapped() {
                Some(v4) if v6.prefix_len() >= 96 => {
                    IpNet::new(IpAddr::V4(v4), v6.prefix_len() - 96).expect("prefix within range")
                }
                _ => net,
            },
            IpNet::V4(_) => net,
        };
        out.push(net.trunc());
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// The stored form: networks joined by spaces.
pub fn to_stored(list: &[IpNet]) -> String {
    list.iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

/// From the stored form (written by [`to_stored`]).
pub fn from_stored(stored: &str) -> Vec<IpNet> {
    stored
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// True if `ip` may pass `list`.
pub fn allows(list: &[IpNet], ip: Option<IpAddr>) -> bool {
    if list.is_empty() {
        return true;
    }
    let Some(ip) = ip else {
        return false;
    };
    let ip = ip.to_canonical();
    list.iter().any(|net| net.contains(&ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> Vec<IpNet> {
        parse(&items.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn empty_list_allows_everyone_even_unknown() {
        assert!(allows(&[], ip("203.0.113.1")));
        assert!(allows(&[], None));
    }

    #[test]
    fn edges_are_inclusive() {
        let l = list(&["10.0.0.0/24"]);
        assert!(allows(&l, ip("10.0.0.0")));
        assert!(allows(&l, ip("10.0.0.255")));
        assert!(!allows(&l, ip("10.0.1.0")));
        assert!(!allows(&l, ip("9.255.255.255")));
    }

    #[test]
    fn bare_addresses_and_ipv6() {
        let l = list(&["192.0.2.7", "2001:db8::/32"]);
        assert!(allows(&l, ip("192.0.2.7")));
        assert!(!allows(&l, ip("192.0.2.8")));
        assert!(allows(&l, ip("2001:db8:ffff::1")));
        assert!(!allows(&l, ip("2001:db9::1")));
    }

    #[test]
    fn ipv4_mapped_clients_match_ipv4_lists_and_mapped_entries_become_ipv4() {
        let l = list(&["192.0.2.0/24"]);
        assert!(allows(&l, ip("::ffff:192.0.2.9")));
        let mapped = list(&["::ffff:198.51.100.0/120"]);
        assert_eq!(to_stored(&mapped), "198.51.100.0/24");
        assert!(allows(&mapped, ip("198.51.100.5")));
    }

    #[test]
    fn unknown_client_is_denied_by_a_non_empty_list() {
        assert!(!allows(&list(&["0.0.0.0/0"]), None));
    }

    #[test]
    fn bad_entries_are_named() {
        let err = parse(&["10.0.0.0/33".into()]).unwrap_err();
        assert!(err.contains("10.0.0.0/33"), "{err}");
        assert!(parse(&["nonsense".into()]).is_err());
        assert!(parse(&["".into()]).is_err());
        assert!(parse(&vec!["10.0.0.1".to_string(); 101]).is_err());
    }

    #[test]
    fn host_bits_are_dropped_and_duplicates_merged() {
        assert_eq!(
            to_stored(&list(&["10.0.0.7/24", "10.0.0.0/24"])),
            "10.0.0.0/24"
        );
        assert_eq!(
            from_stored("10.0.0.0/24 ::1/128"),
            list(&["10.0.0.0/24", "::1"])
        );
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            /// Parsing never panics, and what it stores parses back to the
            /// same list.
            #[test]
            fn parse_is_total_and_stable(entries in proptest::collection::vec("[0-9a-f.:/]{0,45}", 0..8)) {
                if let Ok(list) = parse(&entries) {
                    let stored = to_stored(&list);
                    prop_assert_eq!(from_stored(&stored), list.clone());
                    let again: Vec<String> = stored.split_whitespace().map(String::from).collect();
                    prop_assert_eq!(parse(&again).unwrap(), list);
                }
            }

            /// A network always admits its own first and last address.
            #[test]
            fn edges_are_inside(addr in any::<[u8; 4]>(), len in 0u8..=32) {
                let net = IpNet::new(IpAddr::from(addr), len).unwrap().trunc();
                let list = vec![net];
                prop_assert!(allows(&list, Some(net.network())));
                prop_assert!(allows(&list, Some(net.broadcast())));
            }
        }
    }
}
