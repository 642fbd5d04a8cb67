//! The default IPv4 gateway, for port mapping (`pierce_core::Client::set_gateway`): on Linux
//! the lowest-metric default route of `/proc/net/route`; elsewhere none (not implemented).

use std::net::Ipv4Addr;

/// The host's default IPv4 gateway, if it has one and this platform can say (Linux reads
/// `/proc/net/route`; other systems: `None`).
pub fn default_gateway() -> Option<Ipv4Addr> {
    #[cfg(target_os = "linux")]
    {
        let table = std::fs::read_to_string("/proc/net/route").ok()?;
        parse_proc_net_route(&table)
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// The gateway of the lowest-metric default route (destination and mask 0, flags UP and
/// GATEWAY) in a `/proc/net/route` table. The kernel prints addresses as the hex of the
/// in-memory (network order) 32-bit value read as a native integer.
fn parse_proc_net_route(table: &str) -> Option<Ipv4Addr> {
    const RTF_UP: u32 = 0x1;
    const RTF_GATEWAY: u32 = 0x2;
    let hex = |s: &str| u32::from_str_radix(s, 16).ok();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (dest, gw, flags, metric, mask) = (
                hex(f.get(1)?)?,
                hex(f.get(2)?)?,
                hex(f.get(3)?)?,
                f.get(6)?.parse::<u32>().ok()?,
                hex(f.get(7)?)?,
            );
            let default =
                dest == 0 && mask == 0 && flags & (RTF_UP | RTF_GATEWAY) == RTF_UP | RTF_GATEWAY;
            let gw = Ipv4Addr::from(gw.to_ne_bytes());
            (default && !gw.is_unspecified()).then_some((metric, gw))
        })
        .min_by_key(|(metric, _)| *metric)
        .map(|(_, gw)| gw)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(ip: Ipv4Addr) -> String {
        format!("{:08X}", u32::from_ne_bytes(ip.octets()))
    }

    #[test]
    fn the_lowest_metric_default_route_is_the_gateway() {
        let table = format!(
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
             lan\t0001A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
             wlan\t00000000\t{}\t0003\t0\t0\t600\t00000000\t0\t0\t0\n\
             eth\t00000000\t{}\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
             down\t00000000\t{}\t0002\t0\t0\t1\t00000000\t0\t0\t0\n",
            hex(Ipv4Addr::new(10, 0, 0, 1)),
            hex(Ipv4Addr::new(192, 168, 1, 1)),
            hex(Ipv4Addr::new(172, 16, 0, 1)),
        );
        assert_eq!(
            parse_proc_net_route(&table),
            Some(Ipv4Addr::new(192, 168, 1, 1))
        );
    }

    #[test]
    fn no_default_route_or_garbage_is_none() {
        assert_eq!(parse_proc_net_route(""), None);
        assert_eq!(parse_proc_net_route("header\nnot a route at all\n"), None);
        let on_link = "h\neth\t00000000\t00000000\t0001\t0\t0\t0\t00000000\t0\t0\t0\n";
        assert_eq!(parse_proc_net_route(on_link), None);
    }
}
