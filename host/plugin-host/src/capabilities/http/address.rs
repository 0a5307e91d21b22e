//! Which IP addresses a plugin may connect to. Pure: no I/O, a table of cases in the tests below.
//!
//! Every address a request could reach is vetted here after the name is resolved (once) and before the
//! connection is made to that same address, so a DNS answer cannot be swapped between the check and the use.
//! Two classes of refusal:
//! - *private* ranges (loopback, RFC 1918, CGNAT, unique-local, deprecated site-local) are refused unless the
//!   administrator sets `grants.http-allow-private` (intranets, tests);
//! - *never* ranges (unspecified, link-local — which holds the cloud metadata service at 169.254.169.254 —,
//!   multicast, broadcast, documentation, benchmarking, reserved, IETF protocol assignments) are refused even then:
//!   nothing legitimate lives there and the metadata service is the classic SSRF prize.
//!
//! IPv6 forms that embed an IPv4 address (mapped `::ffff:a.b.c.d`, compatible `::a.b.c.d`, NAT64 `64:ff9b::/96`
//! and `64:ff9b:1::/48`, 6to4 `2002::/16`) are judged by the embedded IPv4 address, so `::ffff:127.0.0.1` is
//! loopback.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an address was refused: the name of its range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Range {
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// 10/8, 172.16/12, 192.168/16.
    Private,
    /// 100.64.0.0/10 (carrier-grade NAT; also some clouds' metadata services).
    SharedAddressSpace,
    /// fc00::/7.
    UniqueLocal,
    /// fec0::/10 (deprecated, still routed inside some networks).
    SiteLocal,
    /// 169.254.0.0/16 (incl. the 169.254.169.254 metadata service), fe80::/10.
    LinkLocal,
    /// 0.0.0.0/8, ::.
    Unspecified,
    /// 224.0.0.0/4, ff00::/8.
    Multicast,
    /// 255.255.255.255.
    Broadcast,
    /// 192.0.2/24, 198.51.100/24, 203.0.113/24, 2001:db8::/32, 3fff::/20.
    Documentation,
    /// 198.18.0.0/15, 2001:2::/48.
    Benchmarking,
    /// 240.0.0.0/4 and other reserved IPv6 space (::/8 apart from the forms above, 100::/64 discard).
    Reserved,
    /// 192.0.0.0/24 (IETF protocol assignments: DS-Lite, NAT64 discovery...).
    ProtocolAssignment,
}

impl Range {
    /// Whether `http-allow-private` lifts this refusal.
    pub fn is_private(self) -> bool {
        matches!(
            self,
            Range::Loopback | Range::Private | Range::SharedAddressSpace | Range::UniqueLocal | Range::SiteLocal
        )
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Range::Loopback => "loopback",
            Range::Private => "private (RFC 1918)",
            Range::SharedAddressSpace => "shared address space (100.64.0.0/10)",
            Range::UniqueLocal => "unique-local (fc00::/7)",
            Range::SiteLocal => "site-local (fec0::/10)",
            Range::LinkLocal => "link-local (incl. the cloud metadata service)",
            Range::Unspecified => "unspecified",
            Range::Multicast => "multicast",
            Range::Broadcast => "broadcast",
            Range::Documentation => "documentation",
            Range::Benchmarking => "benchmarking",
            Range::Reserved => "reserved",
            Range::ProtocolAssignment => "IETF protocol assignment (192.0.0.0/24)",
        })
    }
}

/// A refused address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressRefusal {
    /// The address.
    pub addr: IpAddr,
    /// Its range.
    pub range: Range,
    /// Whether `http-allow-private` would have allowed it.
    pub private: bool,
}

impl fmt::Display for AddressRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "address {} is {}", self.addr, self.range)?;
        if self.private {
            f.write_str(" and grants.http-allow-private is not set")
        } else {
            f.write_str(", which plugins may never reach")
        }
    }
}

/// The special range `addr` belongs to, or `None` for an ordinary public unicast address.
pub fn special_range(addr: IpAddr) -> Option<Range> {
    match addr {
        IpAddr::V4(v4) => v4_range(v4),
        IpAddr::V6(v6) => v6_range(v6),
    }
}

/// Allow or refuse a connection to `addr`.
pub fn vet(addr: IpAddr, allow_private: bool) -> Result<(), AddressRefusal> {
    match special_range(addr) {
        None => Ok(()),
        Some(range) if range.is_private() && allow_private => Ok(()),
        Some(range) => Err(AddressRefusal {
            addr,
            range,
            private: range.is_private(),
        }),
    }
}

fn v4_range(ip: Ipv4Addr) -> Option<Range> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, ..) => Range::Unspecified,
        (127, ..) => Range::Loopback,
        (10, ..) | (172, 16..=31, _) | (192, 168, _) => Range::Private,
        (100, 64..=127, _) => Range::SharedAddressSpace,
        (169, 254, _) => Range::LinkLocal,
        (192, 0, 0) => Range::ProtocolAssignment,
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => Range::Documentation,
        (198, 18..=19, _) => Range::Benchmarking,
        (224..=239, ..) => Range::Multicast,
        _ if ip == Ipv4Addr::BROADCAST => Range::Broadcast,
        (240..=255, ..) => Range::Reserved,
        _ => return None,
    })
}

fn v6_range(ip: Ipv6Addr) -> Option<Range> {
    let s = ip.segments();
    if let Some(v4) = embedded_v4(ip) {
        return v4_range(v4);
    }
    Some(match s {
        [0, 0, 0, 0, 0, 0, 0, 0] => Range::Unspecified,
        [0, 0, 0, 0, 0, 0, 0, 1] => Range::Loopback,
        // The rest of ::/8 (other than the embedded forms handled above) is reserved.
        [x, ..] if x & 0xff00 == 0 => Range::Reserved,
        [0x0100, 0, 0, 0, ..] => Range::Reserved,
        [x, ..] if x & 0xfe00 == 0xfc00 => Range::UniqueLocal,
        [x, ..] if x & 0xffc0 == 0xfe80 => Range::LinkLocal,
        [x, ..] if x & 0xffc0 == 0xfec0 => Range::SiteLocal,
        [x, ..] if x & 0xff00 == 0xff00 => Range::Multicast,
        [0x2001, 0x0db8, ..] => Range::Documentation,
        [0x3fff, y, ..] if y & 0xf000 == 0 => Range::Documentation,
        [0x2001, 0x0002, 0, ..] => Range::Benchmarking,
        _ => return None,
    })
}

/// The IPv4 address inside an IPv4-mapped, IPv4-compatible, NAT64 or 6to4 IPv6 address.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = |hi: u16, lo: u16| Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8);
    match s {
        // ::ffff:a.b.c.d (mapped)
        [0, 0, 0, 0, 0, 0xffff, hi, lo] => Some(low(hi, lo)),
        // ::a.b.c.d (compatible, deprecated), but not :: and ::1 themselves
        [0, 0, 0, 0, 0, 0, hi, lo] if hi != 0 => Some(low(hi, lo)),
        // 64:ff9b::a.b.c.d (well-known NAT64 prefix)
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => Some(low(hi, lo)),
        // 64:ff9b:1::/48 (local-use NAT64): the embedded address is in the last 32 bits for a /96 within it
        [0x64, 0xff9b, 1, ..] => Some(low(s[6], s[7])),
        // 2002:AABB:CCDD::/48 (6to4)
        [0x2002, hi, lo, ..] => Some(low(hi, lo)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_of_addresses() {
        use Range::*;
        let cases: &[(&str, Option<Range>)] = &[
            // public
            ("1.1.1.1", None),
            ("8.8.8.8", None),
            ("93.184.216.34", None),
            ("172.32.0.1", None),
            ("100.128.0.1", None),
            ("192.0.1.1", None),
            ("2606:4700:4700::1111", None),
            ("2a00:1450:4001:80b::200e", None),
            // loopback
            ("127.0.0.1", Some(Loopback)),
            ("127.255.255.254", Some(Loopback)),
            ("::1", Some(Loopback)),
            ("::ffff:127.0.0.1", Some(Loopback)),
            ("::127.0.0.1", Some(Loopback)),
            ("64:ff9b::7f00:1", Some(Loopback)),
            ("2002:7f00:1::", Some(Loopback)),
            // RFC 1918
            ("10.0.0.1", Some(Private)),
            ("172.16.0.1", Some(Private)),
            ("172.31.255.255", Some(Private)),
            ("192.168.1.1", Some(Private)),
            ("::ffff:10.1.2.3", Some(Private)),
            ("::ffff:192.168.0.1", Some(Private)),
            // CGNAT (and Alibaba's metadata service)
            ("100.64.0.1", Some(SharedAddressSpace)),
            ("100.100.100.200", Some(SharedAddressSpace)),
            ("100.127.255.255", Some(SharedAddressSpace)),
            // link-local incl. metadata services
            ("169.254.169.254", Some(LinkLocal)),
            ("169.254.0.1", Some(LinkLocal)),
            ("::ffff:169.254.169.254", Some(LinkLocal)),
            ("::ffff:a9fe:a9fe", Some(LinkLocal)),
            ("fe80::1", Some(LinkLocal)),
            // unique-local (AWS's IPv6 metadata service is fd00:ec2::254) and site-local
            ("fd00:ec2::254", Some(UniqueLocal)),
            ("fc00::1", Some(UniqueLocal)),
            ("fec0::1", Some(SiteLocal)),
            // unspecified
            ("0.0.0.0", Some(Unspecified)),
            ("0.1.2.3", Some(Unspecified)),
            ("::", Some(Unspecified)),
            ("::ffff:0.0.0.0", Some(Unspecified)),
            // multicast, broadcast
            ("224.0.0.1", Some(Multicast)),
            ("239.255.255.250", Some(Multicast)),
            ("ff02::1", Some(Multicast)),
            ("255.255.255.255", Some(Broadcast)),
            // documentation, benchmarking, reserved, protocol assignments
            ("192.0.2.1", Some(Documentation)),
            ("198.51.100.7", Some(Documentation)),
            ("203.0.113.9", Some(Documentation)),
            ("2001:db8::1", Some(Documentation)),
            ("3fff::1", Some(Documentation)),
            ("198.18.0.1", Some(Benchmarking)),
            ("198.19.255.255", Some(Benchmarking)),
            ("2001:2::1", Some(Benchmarking)),
            ("240.0.0.1", Some(Reserved)),
            ("100::1", Some(Reserved)),
            ("::2:0:0:1", Some(Reserved)),
            ("192.0.0.8", Some(ProtocolAssignment)),
        ];
        for (text, want) in cases {
            let addr: IpAddr = text.parse().unwrap();
            assert_eq!(special_range(addr), *want, "{text}");
        }
    }

    #[test]
    fn allow_private_lifts_only_private_ranges() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        for private in ["127.0.0.1", "::1", "10.0.0.1", "192.168.0.1", "100.64.0.1", "fd00::1", "::ffff:127.0.0.1"] {
            let refusal = vet(ip(private), false).unwrap_err();
            assert!(refusal.private, "{private}");
            assert!(refusal.to_string().contains("http-allow-private"), "{refusal}");
            assert_eq!(vet(ip(private), true), Ok(()), "{private}");
        }
        for never in ["169.254.169.254", "fe80::1", "0.0.0.0", "::", "224.0.0.1", "255.255.255.255", "192.0.2.1"] {
            for allow in [false, true] {
                let refusal = vet(ip(never), allow).unwrap_err();
                assert!(!refusal.private, "{never}");
                assert!(refusal.to_string().contains("may never reach"), "{refusal}");
            }
        }
        assert_eq!(vet(ip("1.1.1.1"), false), Ok(()));
        assert_eq!(vet(ip("2606:4700:4700::1111"), false), Ok(()));
    }
}
