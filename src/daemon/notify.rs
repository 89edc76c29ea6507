//! systemd's readiness protocol (`sd_notify`) without libsystemd: when
//! `$NOTIFY_SOCKET` names a unix datagram socket (a path, or an abstract
//! name written `@name`), the daemon sends it `READY=1` once its RPC
//! listens and `STOPPING=1` when it begins to stop, so a `Type=notify`
//! unit is "active" only when clients can connect. No variable, no message.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The variable systemd sets for a `Type=notify` service.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// Where `$NOTIFY_SOCKET`'s value points: a filesystem path or an abstract
/// name (`@` first; Linux only).
pub fn socket_addr(value: &str) -> io::Result<SocketAddr> {
    if value.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "NOTIFY_SOCKET is empty",
        ));
    }
    if let Some(name) = value.strip_prefix('@') {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            #[cfg(target_os = "android")]
            use std::os::android::net::SocketAddrExt;
            #[cfg(target_os = "linux")]
            use std::os::linux::net::SocketAddrExt;
            return SocketAddr::from_abstract_name(name.as_bytes());
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        {
            let _ = name;
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "abstract unix sockets exist on Linux only",
            ));
        }
    }
    SocketAddr::from_pathname(value)
}

/// Sends `state` (e.g. `READY=1`) to `$NOTIFY_SOCKET`. `Ok(false)` when
/// the variable is unset (not run by systemd).
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(value) = std::env::var_os(NOTIFY_SOCKET) else {
        return Ok(false);
    };
    let value = value
        .to_str()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "NOTIFY_SOCKET is not UTF-8"))?;
    let addr = socket_addr(value)?;
    let sock = UnixDatagram::unbound()?;
    sock.send_to_addr(state.as_bytes(), &addr)?;
    Ok(true)
}

/// [`notify`], a failure logged (systemd would time the unit out; the
/// daemon itself works on).
pub fn notify_or_log(state: &str) {
    match notify(state) {
        Ok(true) => tracing::debug!("sd_notify: {}", state.replace('\n', " ")),
        Ok(false) => {}
        Err(e) => tracing::warn!("sd_notify {}: {e}", state.replace('\n', " ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_and_an_abstract_name_are_told_apart() {
        let a = socket_addr("/run/systemd/notify").unwrap();
        assert_eq!(
            a.as_pathname(),
            Some(std::path::Path::new("/run/systemd/notify"))
        );
        #[cfg(target_os = "linux")]
        {
            use std::os::linux::net::SocketAddrExt;
            let a = socket_addr("@btc/notify").unwrap();
            assert_eq!(a.as_abstract_name(), Some(&b"btc/notify"[..]));
            assert!(a.as_pathname().is_none());
        }
        assert!(socket_addr("").is_err());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_datagram_reaches_an_abstract_socket() {
        let name = format!("@btc-notify-test-{}", std::process::id());
        let listener = UnixDatagram::bind_addr(&socket_addr(&name).unwrap()).unwrap();
        let sock = UnixDatagram::unbound().unwrap();
        sock.send_to_addr(b"READY=1", &socket_addr(&name).unwrap())
            .unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }
}
