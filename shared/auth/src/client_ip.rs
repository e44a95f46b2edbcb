//! The client's address: the connection's peer, or — only when that peer
//! is a trusted proxy — the address it reports in `X-Forwarded-For`,
//! walking from the right past every trusted hop. A forged header from an
//! untrusted peer changes nothing.

use std::net::IpAddr;

use ipnet::IpNet;

/// Finds the client's address. `peer` is the TCP peer; `forwarded_for` the
/// `X-Forwarded-For` header values in order. IPv4-mapped IPv6 addresses
/// come out as IPv4.
pub fn client_ip<'a>(
    peer: IpAddr,
    forwarded_for: impl IntoIterator<Item = &'a str>,
    trusted: &[IpNet],
) -> IpAddr {
    let mut addr = peer.to_canonical();
    if !is_trusted(addr, trusted) {
        return addr;
    }
    let hops: Vec<&str> = forwarded_for
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    for hop in hops.iter().rev() {
        match hop.parse::<IpAddr>() {
            Ok(ip) => addr = ip.to_canonical(),
            // A hop we cannot read: keep the last address we know.
            Err(_) => return addr,
        }
        if !is_trusted(addr, trusted) {
            return addr;
        }
    }
    addr
}

fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|net| net.contains(&ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn untrusted_peer_header_is_ignored() {
        let got = client_ip(ip("203.0.113.9"), ["1.2.3.4"], &nets(&["10.0.0.0/8"]));
        assert_eq!(got, ip("203.0.113.9"));
        let got = client_ip(ip("203.0.113.9"), ["1.2.3.4"], &[]);
        assert_eq!(got, ip("203.0.113.9"));
    }

    #[test]
    fn walks_from_the_right_past_trusted_hops() {
        let trusted = nets(&["10.0.0.0/8"]);
        // client, then a forged entry it prepended, then our two proxies.
        let got = client_ip(
            ip("10.0.0.2"),
            ["6.6.6.6, 198.51.100.7, 10.0.0.1"],
            &trusted,
        );
        assert_eq!(got, ip("198.51.100.7"));
        // Several header lines count as one list.
        let got = client_ip(
            ip("10.0.0.2"),
            ["6.6.6.6", "198.51.100.7", "10.0.0.1"],
            &trusted,
        );
        assert_eq!(got, ip("198.51.100.7"));
    }

    #[test]
    fn all_hops_trusted_or_garbage_stops_at_the_last_known_address() {
        let trusted = nets(&["10.0.0.0/8"]);
        assert_eq!(
            client_ip(ip("10.0.0.2"), ["10.0.0.1"], &trusted),
            ip("10.0.0.1")
        );
        assert_eq!(
            client_ip(ip("10.0.0.2"), ["nonsense"], &trusted),
            ip("10.0.0.2")
        );
        assert_eq!(client_ip(ip("10.0.0.2"), [""], &trusted), ip("10.0.0.2"));
        assert_eq!(
            client_ip(ip("10.0.0.2"), Vec::<&str>::new(), &trusted),
            ip("10.0.0.2")
        );
    }

    #[test]
    fn ipv4_mapped_addresses_become_ipv4() {
        assert_eq!(client_ip(ip("::ffff:192.0.2.1"), [], &[]), ip("192.0.2.1"));
        let trusted = nets(&["10.0.0.0/8"]);
        assert_eq!(
            client_ip(ip("::ffff:10.0.0.2"), ["::ffff:198.51.100.7"], &trusted),
            ip("198.51.100.7")
        );
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            /// Whatever the header says, the answer is the peer or one of
            /// the header's own addresses; from an untrusted peer, the peer.
            #[test]
            fn answer_is_the_peer_or_a_listed_hop(
                peer in any::<[u8; 4]>(),
                header in "[0-9a-f.:, ]{0,80}",
                trust_peer in any::<bool>(),
            ) {
                let peer = IpAddr::from(peer);
                let trusted: Vec<IpNet> = if trust_peer { vec![IpNet::from(peer)] } else { vec![] };
                let got = client_ip(peer, [header.as_str()], &trusted);
                if !trust_peer {
                    prop_assert_eq!(got, peer);
                }
                let listed: Vec<IpAddr> = header
                    .split(',')
                    .filter_map(|h| h.trim().parse::<IpAddr>().ok())
                    .map(|ip| ip.to_canonical())
                    .collect();
                prop_assert!(got == peer || listed.contains(&got));
            }
        }
    }
}
