//! Whether the `--interface` device can carry traffic, decided from what
//! the kernel says of it (its `operstate`, its IPv4 routes and its IPv6
//! addresses, as text read by the shell in the parent module). Pure: no
//! files, no sockets, no clock.

/// What the watcher makes of the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Up, with an address to send from.
    Up,
    /// Nothing can go out: see [`Blocked`].
    Blocked(Blocked),
}

/// Why nothing can go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocked {
    /// The device is gone (a VPN's tunnel being set up again).
    Missing,
    /// The device is down (`operstate` `down`, `lowerlayerdown`, …).
    Down,
    /// Up, but with neither an IPv4 route nor a non-link-local IPv6
    /// address: nothing to send from.
    NoAddress,
}

impl LinkState {
    /// `up` or `blocked`, as `--json` names it.
    pub fn name(self) -> &'static str {
        match self {
            LinkState::Up => "up",
            LinkState::Blocked(_) => "blocked",
        }
    }

    /// Whether nothing can go out.
    pub fn is_blocked(self) -> bool {
        matches!(self, LinkState::Blocked(_))
    }
}

impl Blocked {
    /// Why, in a few words for the log and `--json`.
    pub fn reason(self) -> &'static str {
        match self {
            Blocked::Missing => "no such network interface",
            Blocked::Down => "the interface is down",
            Blocked::NoAddress => "the interface has no address",
        }
    }
}

/// The decision: `operstate` is the device's `/sys/class/net/IFACE/operstate`
/// (`None`: the device does not exist); `v4_route` and `v6_address` say
/// whether it has an IPv4 route (an IPv4 address brings its subnet's
/// route) and a routable IPv6 address. `unknown` counts as up: tunnels
/// (WireGuard, tun) report no carrier state at all.
pub fn assess(operstate: Option<&str>, v4_route: bool, v6_address: bool) -> LinkState {
    let Some(op) = operstate else {
        return LinkState::Blocked(Blocked::Missing);
    };
    match op.trim() {
        "up" | "unknown" => {}
        _ => return LinkState::Blocked(Blocked::Down),
    }
    if v4_route || v6_address {
        LinkState::Up
    } else {
        LinkState::Blocked(Blocked::NoAddress)
    }
}

/// Whether `/proc/net/route` (its text) has a route through `name`.
pub fn has_v4_route(route_table: &str, name: &str) -> bool {
    route_table
        .lines()
        .skip(1)
        .any(|l| l.split_whitespace().next() == Some(name))
}

/// Whether `/proc/net/if_inet6` (its text) has an address of `name` that
/// is not link-local (scope `20`): a link-local address reaches no peer
/// beyond the link. Lines are `ADDR IFINDEX PREFIXLEN SCOPE FLAGS NAME`.
pub fn has_v6_address(if_inet6: &str, name: &str) -> bool {
    if_inet6.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() == 6 && f[5] == name && f[3] != "20"
    })
}

/// Whether `name` can be a device name (what `SO_BINDTODEVICE` and
/// `/sys/class/net` take): 1 to 15 bytes, no `/`, no whitespace, not `.`
/// or `..` (the name becomes a path under `/sys/class/net`).
pub fn valid_name(name: &str) -> bool {
    (1..16).contains(&name.len())
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_is_up_only_when_up_and_addressed() {
        assert_eq!(assess(Some("up\n"), true, false), LinkState::Up);
        assert_eq!(assess(Some("up"), false, true), LinkState::Up);
        // A tunnel has no carrier state.
        assert_eq!(assess(Some("unknown\n"), true, false), LinkState::Up);
        for op in [
            "down\n",
            "lowerlayerdown",
            "dormant",
            "notpresent",
            "testing",
        ] {
            assert_eq!(
                assess(Some(op), true, true),
                LinkState::Blocked(Blocked::Down),
                "{op}"
            );
        }
        assert_eq!(
            assess(Some("up"), false, false),
            LinkState::Blocked(Blocked::NoAddress)
        );
        assert_eq!(
            assess(None, true, true),
            LinkState::Blocked(Blocked::Missing)
        );
        assert_eq!(LinkState::Up.name(), "up");
        assert_eq!(LinkState::Blocked(Blocked::Down).name(), "blocked");
    }

    #[test]
    fn routes_and_addresses_are_read_per_device() {
        let route = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                     vethb\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                     vetha10\t0001000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        assert!(has_v4_route(route, "vethb"));
        assert!(has_v4_route(route, "vetha10"));
        assert!(
            !has_v4_route(route, "vetha"),
            "a prefix of a name is not it"
        );
        assert!(!has_v4_route(route, "Iface"), "the header is no route");
        let inet6 = "fe800000000000000000000000000001 02 40 20 80 vetha\n\
                     fd000000000000000000000000000002 03 40 00 80 vethb\n";
        assert!(!has_v6_address(inet6, "vetha"), "link-local only");
        assert!(has_v6_address(inet6, "vethb"));
        assert!(!has_v6_address("garbage\n\n", "vethb"));
    }

    #[test]
    fn device_names_are_checked_before_they_become_paths() {
        assert!(valid_name("eth0"));
        assert!(valid_name("wg-vpn.1"));
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "../x",
            "sixteen_chars_xx",
            "a b",
            "eth0:1",
        ] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }
}
