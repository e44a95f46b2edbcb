//! Which addresses an outbound request may connect to.
//!
//! The rule is "public unicast only": every range that reaches this host,
//! its local networks, a cloud provider's metadata service or nothing at
//! all is refused, unless the operator listed a network containing the
//! address in `allow_networks`. IPv6 forms that carry an IPv4 address
//! (IPv4-mapped, IPv4-compatible, NAT64, 6to4) are judged by what they
//! carry or refused outright.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// Why an address is refused: the special-purpose range it falls in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AddressClass {
    /// `0.0.0.0`, `::`.
    Unspecified,
    /// `0.0.0.0/8` ("this network").
    ThisNetwork,
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// `10.0.0.0/8`, `172.16.0.0/12`, `192.168.0.0/16`, `fc00::/7`.
    Private,
    /// `100.64.0.0/10` (carrier-grade NAT).
    SharedAddressSpace,
    /// `169.254.0.0/16` (with the cloud metadata service
    /// 169.254.169.254), `fe80::/10`.
    LinkLocal,
    /// `fec0::/10` (deprecated site-local).
    SiteLocal,
    /// `224.0.0.0/4`, `ff00::/8`.
    Multicast,
    /// `240.0.0.0/4` with the broadcast address `255.255.255.255`.
    Reserved,
    /// `192.0.2.0/24`, `198.51.100.0/24`, `203.0.113.0/24`,
    /// `2001:db8::/32`, `3fff::/20`.
    Documentation,
    /// `198.18.0.0/15` and the IPv6 benchmarking range.
    Benchmarking,
    /// `192.0.0.0/24`, `192.88.99.0/24` (6to4 relays), `2001::/23`
    /// (Teredo, ORCHID, benchmarking, …), `100::/64` (discard-only),
    /// `64:ff9b:1::/48` (local-use NAT64).
    ProtocolAssignment,
    /// `::ffff:0:0/96`: an IPv4 address written as IPv6.
    Ipv4Mapped,
    /// `::/96`: the deprecated IPv4-compatible form.
    Ipv4Compatible,
    /// `64:ff9b::/96` carrying a refused IPv4 address.
    Nat64OfForbidden,
    /// `2002::/16` carrying a refused IPv4 address.
    SixToFourOfForbidden,
    /// Any other IPv6 address outside global unicast `2000::/3`.
    NotGlobalUnicast,
}

impl AddressClass {
    /// A short description, for error messages.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Unspecified => "the unspecified address",
            Self::ThisNetwork => "in \"this network\" (0.0.0.0/8)",
            Self::Loopback => "a loopback address",
            Self::Private => "a private address",
            Self::SharedAddressSpace => "in the carrier-grade NAT range (100.64.0.0/10)",
            Self::LinkLocal => "a link-local address (where cloud metadata services live)",
            Self::SiteLocal => "a site-local address",
            Self::Multicast => "a multicast address",
            Self::Reserved => "a reserved or broadcast address",
            Self::Documentation => "a documentation address",
            Self::Benchmarking => "a benchmarking address",
            Self::ProtocolAssignment => "a special-purpose protocol address",
            Self::Ipv4Mapped => "an IPv4-mapped IPv6 address",
            Self::Ipv4Compatible => "an IPv4-compatible IPv6 address",
            Self::Nat64OfForbidden => "a NAT64 address of a refused IPv4 address",
            Self::SixToFourOfForbidden => "a 6to4 address of a refused IPv4 address",
            Self::NotGlobalUnicast => "not a global unicast address",
        }
    }
}

impl fmt::Display for AddressClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.describe())
    }
}

/// IPv4 ranges refused (IANA special-purpose registry, the entries that
/// are not globally reachable or make no sense as a destination).
const V4_REFUSED: &[(u32, u8, AddressClass)] = &[
    (0x0000_0000, 8, AddressClass::ThisNetwork),
    (0x0a00_0000, 8, AddressClass::Private),
    (0x6440_0000, 10, AddressClass::SharedAddressSpace),
    (0x7f00_0000, 8, AddressClass::Loopback),
    (0xa9fe_0000, 16, AddressClass::LinkLocal),
    (0xac10_0000, 12, AddressClass::Private),
    (0xc000_0000, 24, AddressClass::ProtocolAssignment),
    (0xc000_0200, 24, AddressClass::Documentation),
    (0xc058_6300, 24, AddressClass::ProtocolAssignment),
    (0xc0a8_0000, 16, AddressClass::Private),
    (0xc612_0000, 15, AddressClass::Benchmarking),
    (0xc633_6400, 24, AddressClass::Documentation),
    (0xcb00_7100, 24, AddressClass::Documentation),
    (0xe000_0000, 4, AddressClass::Multicast),
    (0xf000_0000, 4, AddressClass::Reserved),
];

/// IPv6 ranges refused before the global-unicast rule. Order matters:
/// the first match wins.
const V6_REFUSED: &[(u128, u8, AddressClass)] = &[
    (
        0x0100_0000_0000_0000_0000_0000_0000_0000,
        64,
        AddressClass::ProtocolAssignment,
    ),
    (
        0x0064_ff9b_0001_0000_0000_0000_0000_0000,
        48,
        AddressClass::ProtocolAssignment,
    ),
    (
        0x2001_0db8_0000_0000_0000_0000_0000_0000,
        32,
        AddressClass::Documentation,
    ),
    (
        0x2001_0002_0000_0000_0000_0000_0000_0000,
        48,
        AddressClass::Benchmarking,
    ),
    (
        0x2001_0000_0000_0000_0000_0000_0000_0000,
        23,
        AddressClass::ProtocolAssignment,
    ),
    (
        0x3fff_0000_0000_0000_0000_0000_0000_0000,
        20,
        AddressClass::Documentation,
    ),
    (
        0xfc00_0000_0000_0000_0000_0000_0000_0000,
        7,
        AddressClass::Private,
    ),
    (
        0xfe80_0000_0000_0000_0000_0000_0000_0000,
        10,
        AddressClass::LinkLocal,
    ),
    (
        0xfec0_0000_0000_0000_0000_0000_0000_0000,
        10,
        AddressClass::SiteLocal,
    ),
    (
        0xff00_0000_0000_0000_0000_0000_0000_0000,
        8,
        AddressClass::Multicast,
    ),
];

const NAT64: (u128, u8) = (0x0064_ff9b_0000_0000_0000_0000_0000_0000, 96);
const SIX_TO_FOUR: (u128, u8) = (0x2002_0000_0000_0000_0000_0000_0000_0000, 16);
const GLOBAL_UNICAST: (u128, u8) = (0x2000_0000_0000_0000_0000_0000_0000_0000, 3);

fn in_v4(ip: u32, net: u32, prefix: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
    ip & mask == net
}

fn in_v6(ip: u128, (net, prefix): (u128, u8)) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
    ip & mask == net
}

/// The class that makes `ip` a refused destination, or `None` for a
/// public unicast address. The operator's `allow_networks` is not
/// consulted here: see [`AddressPolicy`].
pub fn classify(ip: IpAddr) -> Option<AddressClass> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<AddressClass> {
    if ip.is_unspecified() {
        return Some(AddressClass::Unspecified);
    }
    let bits = u32::from(ip);
    V4_REFUSED
        .iter()
        .find(|(net, prefix, _)| in_v4(bits, *net, *prefix))
        .map(|(_, _, class)| *class)
}

fn classify_v6(ip: Ipv6Addr) -> Option<AddressClass> {
    let bits = u128::from(ip);
    if ip.is_unspecified() {
        return Some(AddressClass::Unspecified);
    }
    if ip.is_loopback() {
        return Some(AddressClass::Loopback);
    }
    if ip.to_ipv4_mapped().is_some() {
        return Some(AddressClass::Ipv4Mapped);
    }
    if bits >> 32 == 0 {
        return Some(AddressClass::Ipv4Compatible);
    }
    if in_v6(bits, NAT64) {
        // The well-known NAT64 prefix reaches the IPv4 address in its
        // last 32 bits: as good or bad as that address.
        let carried = Ipv4Addr::from(bits as u32);
        return classify_v4(carried).map(|_| AddressClass::Nat64OfForbidden);
    }
    if let Some((_, _, class)) = V6_REFUSED
        .iter()
        .find(|(net, prefix, _)| in_v6(bits, (*net, *prefix)))
    {
        return Some(*class);
    }
    if in_v6(bits, SIX_TO_FOUR) {
        // 2002:AABB:CCDD::/48 is the 6to4 network of AA.BB.CC.DD.
        let carried = Ipv4Addr::from((bits >> 80) as u32);
        return classify_v4(carried).map(|_| AddressClass::SixToFourOfForbidden);
    }
    if !in_v6(bits, GLOBAL_UNICAST) {
        return Some(AddressClass::NotGlobalUnicast);
    }
    None
}

/// The rule applied to every address before a connection: refused
/// ranges ([`classify`]) unless inside one of the operator's
/// `allow_networks`.
#[derive(Debug, Clone, Default)]
pub struct AddressPolicy {
    allow: Vec<IpNet>,
}

impl AddressPolicy {
    /// The rule with these networks allowed although they are refused by
    /// default.
    pub fn new(allow: Vec<IpNet>) -> Self {
        Self { allow }
    }

    /// `Ok` when `ip` may be connected to, else the class that refuses it.
    ///
    /// An IPv4-mapped IPv6 address is the IPv4 address it carries, so an
    /// allowed IPv4 network also allows its mapped form.
    pub fn check(&self, ip: IpAddr) -> Result<(), AddressClass> {
        let Some(class) = classify(ip) else {
            return Ok(());
        };
        let mapped = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        let allowed = self
            .allow
            .iter()
            .any(|net| net.contains(&ip) || mapped.is_some_and(|v4| net.contains(&v4)));
        if allowed { Ok(()) } else { Err(class) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(s: &str) -> Option<AddressClass> {
        classify(s.parse().unwrap())
    }

    #[test]
    fn refused_ipv4_ranges() {
        use AddressClass::*;
        let table = [
            ("0.0.0.0", Unspecified),
            ("0.1.2.3", ThisNetwork),
            ("10.0.0.1", Private),
            ("10.255.255.255", Private),
            ("100.64.0.1", SharedAddressSpace),
            ("100.127.255.255", SharedAddressSpace),
            ("127.0.0.1", Loopback),
            ("127.255.0.2", Loopback),
            ("169.254.169.254", LinkLocal),
            ("172.16.0.1", Private),
            ("172.31.255.255", Private),
            ("192.0.0.170", ProtocolAssignment),
            ("192.0.2.1", Documentation),
            ("192.88.99.1", ProtocolAssignment),
            ("192.168.1.1", Private),
            ("198.18.0.1", Benchmarking),
            ("198.19.255.255", Benchmarking),
            ("198.51.100.7", Documentation),
            ("203.0.113.9", Documentation),
            ("224.0.0.1", Multicast),
            ("239.255.255.250", Multicast),
            ("240.0.0.1", Reserved),
            ("255.255.255.255", Reserved),
        ];
        for (ip, want) in table {
            assert_eq!(class(ip), Some(want), "{ip}");
        }
    }

    #[test]
    fn public_ipv4_edges_pass() {
        for ip in [
            "1.1.1.1",
            "9.255.255.255",
            "11.0.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "126.255.255.255",
            "128.0.0.0",
            "169.253.255.255",
            "169.255.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.1.0",
            "192.167.255.255",
            "192.169.0.0",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
        ] {
            assert_eq!(class(ip), None, "{ip}");
        }
    }

    #[test]
    fn refused_ipv6_ranges() {
        use AddressClass::*;
        let table = [
            ("::", Unspecified),
            ("::1", Loopback),
            ("::ffff:127.0.0.1", Ipv4Mapped),
            ("::ffff:8.8.8.8", Ipv4Mapped),
            ("::127.0.0.1", Ipv4Compatible),
            ("::8.8.8.8", Ipv4Compatible),
            ("64:ff9b::127.0.0.1", Nat64OfForbidden),
            ("64:ff9b::a9fe:a9fe", Nat64OfForbidden),
            ("64:ff9b::10.1.2.3", Nat64OfForbidden),
            ("64:ff9b:1::1", ProtocolAssignment),
            ("100::1", ProtocolAssignment),
            ("2001::1", ProtocolAssignment),
            ("2001:2::1", Benchmarking),
            ("2001:db8::1", Documentation),
            ("3fff::1", Documentation),
            ("2002:7f00:1::1", SixToFourOfForbidden),
            ("2002:c0a8:0101::1", SixToFourOfForbidden),
            ("2002:a9fe:a9fe::", SixToFourOfForbidden),
            ("fc00::1", Private),
            ("fd12:3456::1", Private),
            ("fe80::1", LinkLocal),
            ("febf::1", LinkLocal),
            ("fec0::1", SiteLocal),
            ("ff02::1", Multicast),
            ("4000::1", NotGlobalUnicast),
            ("1::1", NotGlobalUnicast),
        ];
        for (ip, want) in table {
            assert_eq!(class(ip), Some(want), "{ip}");
        }
    }

    #[test]
    fn public_ipv6_passes() {
        for ip in [
            "2606:4700:4700::1111",
            "2a00:1450:4001::200e",
            "64:ff9b::8.8.8.8",
            "2002:0808:0808::1",
            "2001:200::1",
            "3ffe::1",
        ] {
            assert_eq!(class(ip), None, "{ip}");
        }
    }

    #[test]
    fn allow_networks_open_exactly_their_range() {
        let policy = AddressPolicy::new(vec![
            "127.0.0.1/32".parse().unwrap(),
            "10.1.0.0/16".parse().unwrap(),
            "fd00:1::/32".parse().unwrap(),
        ]);
        let ok = |s: &str| policy.check(s.parse().unwrap());
        assert_eq!(ok("127.0.0.1"), Ok(()));
        assert_eq!(
            ok("::ffff:127.0.0.1"),
            Ok(()),
            "mapped form of an allowed address"
        );
        assert_eq!(ok("127.0.0.2"), Err(AddressClass::Loopback));
        assert_eq!(ok("10.1.200.3"), Ok(()));
        assert_eq!(ok("10.2.0.1"), Err(AddressClass::Private));
        assert_eq!(ok("fd00:1::5"), Ok(()));
        assert_eq!(ok("fd00:2::5"), Err(AddressClass::Private));
        assert_eq!(ok("::1"), Err(AddressClass::Loopback));
        assert_eq!(ok("169.254.169.254"), Err(AddressClass::LinkLocal));
        assert_eq!(ok("8.8.8.8"), Ok(()));
    }
}
