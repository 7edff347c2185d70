//! Addresses: which ones are on the public Internet. Every request Baton makes on its own
//! (callbacks, alert webhooks) and every tunnel its sandbox's egress proxy opens goes only
//! to a public address, unless configured otherwise.

use std::net::IpAddr;

/// Whether `ip` is an address on the public Internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v) => {
            let o = v.octets();
            !(v.is_loopback()
                || v.is_private()
                || v.is_link_local()
                || v.is_unspecified()
                || v.is_broadcast()
                || v.is_multicast()
                || v.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || (o[0] == 198 && (o[1] == 18 || o[1] == 19))
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
                || o[0] >= 240)
        }
        IpAddr::V6(v) => {
            let s = v.segments();
            // An IPv4 address inside IPv6 (mapped, compatible, or NAT64's well-known
            // prefixes) is as public as that IPv4 address.
            if let Some(v4) = v.to_ipv4() {
                return is_public(IpAddr::V4(v4));
            }
            if (s[0] == 0x64 && s[1] == 0xff9b) && (s[2..6] == [0, 0, 0, 0] || s[2] == 1) {
                let o = v.octets();
                return is_public(IpAddr::V4(std::net::Ipv4Addr::new(
                    o[12], o[13], o[14], o[15],
                )));
            }
            !(v.is_loopback()
                || v.is_unspecified()
                || v.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || s[0] == 0x2001 && s[1] == 0x0db8)
        }
    }
}
