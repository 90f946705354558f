//! `delivery.block_private_networks`: webhooks and auth pre-requests go to public addresses
//! only. A tenant's hook could otherwise reach what only the service's host can (cloud
//! metadata, admin ports, other internal services) and read the answers in its delivery log.
//! Names are checked as they resolve, so a public name that resolves to a private address is
//! refused too; address literals in URLs, which are not resolved, are checked before sending.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// The setting the refusals name.
const SETTING: &str = "delivery.block_private_networks";

/// Whether `ip` is on the public internet: not loopback, private, link-local, shared (CGNAT),
/// unspecified, multicast, broadcast, documentation, benchmarking or reserved.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => public_v4(v4),
            None => public_v6(v6),
        },
    }
}

fn public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(a == 0
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_documentation()
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && c == 0)
        || (a == 198 && (b == 18 || b == 19))
        || a >= 240)
}

/// Global unicast (`2000::/3`) only, but documentation and Teredo; NAT64 (`64:ff9b::/96`) and
/// 6to4 (`2002::/16`) are judged by the IPv4 address they reach.
fn public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    let v4 = |high: u16, low: u16| public_v4(Ipv4Addr::from_bits(u32::from(high) << 16 | u32::from(low)));
    match s {
        [0x64, 0xff9b, 0, 0, 0, 0, high, low] => v4(high, low),
        [0x2002, high, low, ..] => v4(high, low),
        [0x2001, 0x0db8, ..] | [0x2001, 0, ..] => false,
        [first, ..] => first & 0xe000 == 0x2000,
    }
}

/// Refuses a URL whose host is a private address literal (names are checked by [`PublicOnly`]).
pub fn check_literal(url: &reqwest::Url) -> Result<(), String> {
    let ip = match url.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip),
        _ => return Ok(()),
    };
    match is_public(ip) {
        true => Ok(()),
        false => Err(format!("{ip} is not a public address ({SETTING})")),
    }
}

/// Resolves names as the system does, keeping only public addresses.
pub struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let public: Vec<_> = found.filter(|addr| is_public(addr.ip())).collect();
            if public.is_empty() {
                return Err(format!("{host} resolves to no public address ({SETTING})").into());
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_pass() {
        let private = [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "255.255.255.255",
            "192.0.2.1",
            "198.18.0.1",
            "240.0.0.1",
            "192.0.0.8",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "::8.8.8.8",
            "::ffff:0:a00:1",
            "fec0::1",
            "100::1",
            "64:ff9b:1::a00:1",
            "2002:7f00:1::1",
            "2002:a00:1::1",
            "2001:0:4136:e378::1",
            "64:ff9b::a00:1",
        ];
        for ip in private {
            assert!(!is_public(ip.parse().unwrap()), "{ip} passed");
        }
        let public = [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "198.20.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ];
        for ip in public {
            assert!(is_public(ip.parse().unwrap()), "{ip} refused");
        }
    }

    #[test]
    fn literals_are_checked_and_names_left_to_the_resolver() {
        let check = |u: &str| check_literal(&u.parse().unwrap());
        assert_eq!(
            check("http://127.0.0.1:9000/x"),
            Err("127.0.0.1 is not a public address (delivery.block_private_networks)".into())
        );
        assert!(check("http://[::1]/").is_err());
        assert!(check("http://169.254.169.254/latest/meta-data").is_err());
        // Other spellings of 127.0.0.1 are parsed to it.
        for loopback in ["http://2130706433/", "http://0x7f000001/", "http://127.1/", "http://[::ffff:7f00:1]/"] {
            assert!(check(loopback).is_err(), "{loopback}");
        }
        assert_eq!(check("http://8.8.8.8/"), Ok(()));
        assert_eq!(check("http://localhost:9000/"), Ok(()));
    }

    #[tokio::test]
    async fn names_resolving_only_to_private_addresses_are_refused() {
        let err = PublicOnly.resolve("localhost".parse().unwrap()).await.err().expect("refused");
        assert_eq!(err.to_string(), "localhost resolves to no public address (delivery.block_private_networks)");
    }
}
