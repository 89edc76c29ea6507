//! The default gateway, from the text of Linux's `/proc/net/route`
//! (the driver reads the file).

use std::net::Ipv4Addr;

/// Most routes looked at (a router's table can be long; the default route
/// is among the first lines anyway).
const MAX_ROUTES: usize = 4096;

/// The gateway of the default route with the lowest metric in the text
/// of `/proc/net/route` (columns: Iface, Destination, Gateway, Flags,
/// RefCnt, Use, Metric, Mask, …; addresses in hex, in the kernel's byte
/// order), if any route is a default route that is up and has a gateway.
pub fn parse_route_table(text: &str) -> Option<Ipv4Addr> {
    const RTF_UP: u32 = 0x1;
    const RTF_GATEWAY: u32 = 0x2;
    let hex = |s: &str| u32::from_str_radix(s, 16).ok();
    text.lines()
        .skip(1)
        .take(MAX_ROUTES)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 8 {
                return None;
            }
            let (dest, gw, flags, metric, mask) = (
                hex(f[1])?,
                hex(f[2])?,
                hex(f[3])?,
                f[6].parse::<u32>().ok()?,
                hex(f[7])?,
            );
            let default = dest == 0 && mask == 0 && gw != 0;
            (default && flags & (RTF_UP | RTF_GATEWAY) == RTF_UP | RTF_GATEWAY)
                // The kernel prints the address's bytes as a native u32.
                .then(|| (metric, Ipv4Addr::from(gw.to_ne_bytes())))
        })
        .min_by_key(|(metric, _)| *metric)
        .map(|(_, gw)| gw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_default_route_with_the_lowest_metric() {
        // Captured on a little-endian machine (x86-64).
        let text = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
            wlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n\
            eth0\t00000000\t0102A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
            eth0\t0001A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0\n";
        let want = if cfg!(target_endian = "little") {
            Ipv4Addr::new(192, 168, 2, 1)
        } else {
            Ipv4Addr::new(1, 2, 168, 192)
        };
        assert_eq!(parse_route_table(text), Some(want));
    }

    #[test]
    fn no_default_route_no_gateway() {
        let header = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n";
        assert_eq!(parse_route_table(""), None);
        assert_eq!(parse_route_table(header), None);
        // A default route that is down, or without a gateway.
        let down = format!("{header}eth0\t00000000\t0101A8C0\t0002\t0\t0\t0\t00000000\n");
        assert_eq!(parse_route_table(&down), None);
        let direct = format!("{header}eth0\t00000000\t00000000\t0001\t0\t0\t0\t00000000\n");
        assert_eq!(parse_route_table(&direct), None);
        let garbage = format!("{header}eth0 zz yy\n\u{0}\t\t\t\t\t\t\t\t\n");
        assert_eq!(parse_route_table(&garbage), None);
    }
}
