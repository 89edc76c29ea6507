//! When to send, resend and renew, and whether a router restarted: pure
//! functions of durations and instants (no clock is read here).

use std::time::Duration;

/// PCP retransmissions (RFC 6887 §8.1.1: initial 3 s, doubling), capped
/// at two sends: 3 + 6 s. A PCP server answers at once; a router that
/// ignores PCP gets NAT-PMP next, nine seconds later.
pub const PCP_TIMEOUTS: [Duration; 2] = [Duration::from_secs(3), Duration::from_secs(6)];

/// NAT-PMP retransmissions (RFC 6886 §3.1: 250 ms, doubling, nine
/// sends), capped at five: 250 ms to 4 s, 7.75 s in all.
pub const NATPMP_TIMEOUTS: [Duration; 5] = [
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
];

/// The lifetime btc asks for (RFC 6886 §3.3 recommends two hours).
pub const LIFETIME: u32 = 7200;

/// The UPnP lease btc asks for: an hour (an IGDv2 router refuses
/// permanent leases, and a lease outlives a crash by at most this).
pub const UPNP_LEASE: u32 = 3600;

/// How often a UPnP mapping is added again at most: a router that restarted
/// (UPnP has no epoch) loses its mappings, and re-adding is how btc finds
/// out and repairs it.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(300);

/// Shortest wait before a renewal, so a router granting tiny lifetimes
/// cannot make btc spin.
pub const MIN_RENEW: Duration = Duration::from_secs(10);

/// How long after a grant a mapping is renewed: half its lifetime (RFC
/// 6886 §3.3, RFC 6887 §11.2.1 allow renewing from then on), at least
/// [`MIN_RENEW`]. A lifetime of 0 (UPnP: permanent) renews after `cap`.
pub fn renew_after(lifetime: u32, cap: Duration) -> Duration {
    if lifetime == 0 {
        return cap;
    }
    (Duration::from_secs(u64::from(lifetime)) / 2).clamp(MIN_RENEW, cap.max(MIN_RENEW))
}

/// How long to wait before trying again after a failure: 1, 2, 4 … up to
/// 30 minutes (a router may come up later, or its uplink).
pub fn retry_after(failures: u32) -> Duration {
    Duration::from_secs(60u64 << failures.min(5)).min(Duration::from_secs(1800))
}

/// Whether a server's epoch says it lost its state since the last answer
/// (RFC 6887 §8.5, RFC 6886 §3.6): the epoch went backwards, or moved
/// less than the client's clock did, with slack for rounding and drift.
/// `elapsed` is the client's time between the two answers.
pub fn epoch_restarted(previous: u32, current: u32, elapsed: Duration) -> bool {
    if current < previous.saturating_sub(1) {
        return true;
    }
    let server = u64::from(current.saturating_sub(previous));
    let client = elapsed.as_secs();
    // RFC 6887 §8.5: invalid if client + 2 < server - server/16, or
    // server + 2 < client - client/16.
    client + 2 < server - server / 16 || server + 2 < client - client / 16
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn renewal_is_at_half_the_lifetime_within_bounds() {
        let cap = Duration::from_secs(3600);
        assert_eq!(renew_after(7200, cap), Duration::from_secs(3600));
        assert_eq!(renew_after(120, cap), Duration::from_secs(60));
        assert_eq!(renew_after(4, cap), MIN_RENEW);
        assert_eq!(renew_after(u32::MAX, cap), cap);
        assert_eq!(renew_after(0, CHECK_INTERVAL), CHECK_INTERVAL);
        assert_eq!(renew_after(3600, CHECK_INTERVAL), CHECK_INTERVAL);
        // With synthetic instants: granted at t, renewed before it ends.
        let t = Instant::now();
        let due = t + renew_after(120, cap);
        assert!(due > t && due < t + Duration::from_secs(120));
    }

    #[test]
    fn retries_back_off_to_half_an_hour() {
        assert_eq!(retry_after(0), Duration::from_secs(60));
        assert_eq!(retry_after(1), Duration::from_secs(120));
        assert_eq!(retry_after(9), Duration::from_secs(1800));
        assert_eq!(retry_after(u32::MAX), Duration::from_secs(1800));
    }

    #[test]
    fn schedules_are_capped() {
        let pcp: Duration = PCP_TIMEOUTS.iter().sum();
        let pmp: Duration = NATPMP_TIMEOUTS.iter().sum();
        assert_eq!(PCP_TIMEOUTS[0], Duration::from_secs(3), "RFC 6887 IRT");
        assert_eq!(NATPMP_TIMEOUTS[0], Duration::from_millis(250), "RFC 6886");
        for w in PCP_TIMEOUTS.windows(2).chain(NATPMP_TIMEOUTS.windows(2)) {
            assert_eq!(w[1], w[0] * 2);
        }
        assert!(pcp <= Duration::from_secs(30) && pmp <= Duration::from_secs(10));
    }

    #[test]
    fn epoch_tells_a_restart() {
        let s = Duration::from_secs;
        // Steady: the server's epoch moves with our clock.
        assert!(!epoch_restarted(1000, 1600, s(600)));
        assert!(!epoch_restarted(1000, 1001, s(0)));
        assert!(!epoch_restarted(1000, 1000, s(2)));
        // Backwards: restarted.
        assert!(epoch_restarted(1000, 5, s(600)));
        // Too slow: restarted (it counted from 0 again meanwhile).
        assert!(epoch_restarted(1000, 1100, s(3600)));
        // Too fast: not the same server state either.
        assert!(epoch_restarted(1000, 9000, s(60)));
    }
}
