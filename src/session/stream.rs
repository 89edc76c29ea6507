//! `--stream N`: file N's bytes to stdout, in order, as soon as the pieces
//! holding them are verified on disk. Only verified data is ever written
//! (it is read back from the file), so a player never sees a bad byte.

use super::shared::Shared;
use crate::geometry::Geometry;
use std::sync::Arc;
use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Bytes read from disk and written per step.
const CHUNK: u64 = 1 << 20;

/// How a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// Every byte of the file was written.
    Done,
    /// The reader went away (EPIPE): a normal way for a player to stop.
    Closed,
    /// The torrent stopped first.
    Stopped,
}

/// The byte range `[start, end)` of the file within the torrent, and the
/// verified bytes from `at` onwards that can be sent now: up to the first
/// piece not yet had, at most `CHUNK`.
pub fn ready_span(g: &Geometry, have: impl Fn(u32) -> bool, at: u64, end: u64) -> u64 {
    let mut upto = at;
    let pl = u64::from(g.piece_length.max(1));
    while upto < end && upto - at < CHUNK {
        let Ok(piece) = u32::try_from(upto / pl) else {
            break;
        };
        if !have(piece) {
            break;
        }
        upto = ((u64::from(piece) + 1) * pl).min(end);
    }
    upto.min(at + CHUNK).saturating_sub(at)
}

/// Streams the `index`-th (1-based, pad files skipped) file of the torrent
/// to `out` until it is complete, the reader closes, or the torrent stops.
pub async fn run<W: AsyncWrite + Unpin>(
    shared: Arc<Shared>,
    index: usize,
    mut out: W,
) -> std::io::Result<StreamEnd> {
    let mut verified = shared.pieces_verified.subscribe();
    let shutdown = shared.shutdown.clone();
    // The metadata may still be on its way (magnet).
    let data = loop {
        if let Some(d) = shared.data() {
            break d.clone();
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(StreamEnd::Stopped),
            r = verified.changed() => if r.is_err() { return Ok(StreamEnd::Stopped) },
        }
    };
    let Some(file) = data
        .meta
        .info
        .files
        .iter()
        .filter(|f| !f.pad)
        .nth(index.saturating_sub(1))
    else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("the torrent has no file {index}"),
        ));
    };
    let (start, end) = (file.offset, file.offset + file.length);
    let mut at = start;
    while at < end {
        let n = {
            let st = shared.lock();
            let Some(picker) = st.picker.as_ref() else {
                return Ok(StreamEnd::Stopped);
            };
            let have = picker.have();
            ready_span(&data.geometry, |p| have.get(p as usize), at, end)
        };
        if n == 0 {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(StreamEnd::Stopped),
                r = verified.changed() => if r.is_err() { return Ok(StreamEnd::Stopped) },
            }
            continue;
        }
        let d = data.clone();
        let read = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; n as usize];
            d.storage.read(at, &mut buf).map(|()| buf)
        })
        .await
        .map_err(std::io::Error::other)?
        .map_err(std::io::Error::other)?;
        match out.write_all(&read).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(StreamEnd::Closed),
            Err(e) => return Err(e),
        }
        at += n;
    }
    match out.flush().await {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(StreamEnd::Closed),
        r => r.map(|()| StreamEnd::Done),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_span_stops_at_the_first_missing_piece_and_the_chunk() {
        let g = Geometry::new(10 * 1000, 1000);
        let have = |p: u32| p != 4;
        // From inside piece 1 to the hole at piece 4.
        assert_eq!(ready_span(&g, have, 1500, 10_000), 2500);
        assert_eq!(ready_span(&g, have, 4000, 10_000), 0);
        // The file ends inside piece 3.
        assert_eq!(ready_span(&g, have, 1500, 3200), 1700);
        let big = Geometry::new(4 * CHUNK, CHUNK as u32 / 2);
        assert_eq!(ready_span(&big, |_| true, 10, 4 * CHUNK), CHUNK);
        assert_eq!(ready_span(&big, |_| true, 4 * CHUNK, 4 * CHUNK), 0);
    }
}
