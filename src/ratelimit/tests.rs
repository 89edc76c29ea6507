use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[test]
fn rates_parse_with_binary_suffixes() {
    assert_eq!(parse_rate("0"), Ok(0));
    assert_eq!(parse_rate("300000"), Ok(300_000));
    assert_eq!(parse_rate("500K"), Ok(500 << 10));
    assert_eq!(parse_rate("2M"), Ok(2 << 20));
    assert_eq!(parse_rate("2m"), Ok(2 << 20));
    assert_eq!(parse_rate("2MiB/s"), Ok(2 << 20));
    assert_eq!(parse_rate("1.5G"), Ok(3 << 29));
    assert_eq!(parse_rate(" 64KB "), Ok(64 << 10));
    for bad in [
        "",
        "M",
        "-1",
        "2X",
        "1e9",
        "2 M",
        "nan",
        "1..5M",
        "99999999999999999999G",
    ] {
        assert!(parse_rate(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn bucket_pays_back_debt_at_the_rate() {
    let t0 = Instant::now();
    let mut b = Bucket::new(1 << 20);
    assert_eq!(b.wait(t0), Duration::ZERO);
    // A burst's worth is free, then 1 MiB of debt takes a second.
    b.take(b.chunk() + (1 << 20), t0);
    let w = b.wait(t0);
    assert!((w.as_secs_f64() - 1.0).abs() < 1e-6, "{w:?}");
    assert_eq!(b.wait(t0 + Duration::from_secs(1)), Duration::ZERO);
    // Idle time refills only up to a burst, not an hour's worth.
    let later = t0 + Duration::from_secs(3600);
    b.take(b.chunk(), later);
    assert_eq!(b.wait(later), Duration::ZERO);
    b.take(1 << 20, later);
    assert!(b.wait(later) >= Duration::from_millis(999));
    // A clock that steps back is not a refill.
    assert!(b.wait(t0) >= Duration::from_millis(999));
}

/// 1 MiB through a 256 KiB/s limit takes four seconds (less the first
/// burst and the last chunk's unpaid debt, 32 KiB each), in both
/// directions, on tokio's paused clock.
#[tokio::test(start_paused = true)]
async fn throttled_stream_holds_the_rate_both_ways() {
    let rate = 256 << 10;
    let total = 1 << 20;
    for upload in [true, false] {
        let (a, mut b) = tokio::io::duplex(64 << 10);
        let limits = if upload {
            RateLimits::new(0, rate)
        } else {
            RateLimits::new(rate, 0)
        };
        let mut a = Throttled::new(a, limits);
        let start = tokio::time::Instant::now();
        let data = vec![7u8; total];
        let (sent, got) = if upload {
            let writer = async {
                a.write_all(&data).await.unwrap();
                a.shutdown().await.unwrap();
            };
            let mut got = Vec::new();
            let ((), n) = tokio::join!(writer, b.read_to_end(&mut got));
            (total, n.unwrap())
        } else {
            let writer = async {
                b.write_all(&data).await.unwrap();
                b.shutdown().await.unwrap();
            };
            let mut got = Vec::new();
            let ((), n) = tokio::join!(writer, a.read_to_end(&mut got));
            (total, n.unwrap())
        };
        assert_eq!(sent, got);
        let took = start.elapsed().as_secs_f64();
        assert!((3.7..=4.1).contains(&took), "upload={upload}: {took} s");
    }
}
