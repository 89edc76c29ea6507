//! UPnP IGD through `igd-next` (the only module that imports it): SSDP
//! search, then `AddPortMapping` / `DeletePortMapping` on whichever WAN
//! service the router describes (`WANIPConnection:1` or `:2`,
//! `WANPPPConnection:1`). igd-next parses the SSDP answers, the device
//! description and the SOAP responses, with its own size caps and
//! timeouts.

use super::{PortmapError, Transport};
use igd_next::aio::Gateway as IgdGateway;
use igd_next::aio::tokio::Tokio;
use igd_next::{AddAnyPortError, AddPortError, PortMappingProtocol, SearchOptions};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

/// How long the SSDP search waits for a router to answer.
const SEARCH: Duration = Duration::from_secs(3);
/// The description routers show for btc's mappings.
const DESCRIPTION: &str = "btc";

/// A router found by SSDP.
pub struct Gateway {
    igd: IgdGateway<Tokio>,
    /// Our LAN address, the mappings' internal client.
    local: Ipv4Addr,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "UPnP gateway {} ({})",
            self.igd.addr, self.igd.service_type
        )
    }
}

/// Searches for an IGD from `local` (SSDP multicast on the LAN).
pub async fn search(local: Ipv4Addr) -> Result<Gateway, PortmapError> {
    let mut opts = SearchOptions::default();
    opts.bind_addr = SocketAddr::new(IpAddr::V4(local), 0);
    opts.timeout = Some(SEARCH);
    opts.single_search_timeout = Some(SEARCH);
    let igd = igd_next::aio::tokio::search_gateway(opts)
        .await
        .map_err(|e| {
            tracing::debug!("UPnP search: {e}");
            PortmapError::NoUpnpGateway
        })?;
    tracing::debug!(addr = %igd.addr, service = %igd.service_type, "UPnP gateway found");
    Ok(Gateway { igd, local })
}

fn protocol(t: Transport) -> PortMappingProtocol {
    match t {
        Transport::Tcp => PortMappingProtocol::TCP,
        Transport::Udp => PortMappingProtocol::UDP,
    }
}

impl Gateway {
    /// The router's external address, if it says.
    pub async fn external_ip(&self) -> Option<IpAddr> {
        self.igd.get_external_ip().await.ok()
    }

    /// Maps `internal` to `external` if the router lets us, else to a port
    /// it picks; returns the external port and the lease (0: permanent,
    /// for routers that only take those).
    pub async fn add(
        &self,
        t: Transport,
        internal: u16,
        external: u16,
        lease: u32,
    ) -> Result<(u16, u32), PortmapError> {
        let to = SocketAddr::new(IpAddr::V4(self.local), internal);
        let p = protocol(t);
        match self.igd.add_port(p, external, to, lease, DESCRIPTION).await {
            Ok(()) => Ok((external, lease)),
            Err(AddPortError::OnlyPermanentLeasesSupported) if lease != 0 => {
                Box::pin(self.add(t, internal, external, 0)).await
            }
            Err(AddPortError::PortInUse) => {
                match self.igd.add_any_port(p, to, lease, DESCRIPTION).await {
                    Ok(port) => Ok((port, lease)),
                    Err(AddAnyPortError::OnlyPermanentLeasesSupported) if lease != 0 => self
                        .igd
                        .add_any_port(p, to, 0, DESCRIPTION)
                        .await
                        .map(|port| (port, 0))
                        .map_err(|e| PortmapError::Upnp(crate::error_chain(&e))),
                    Err(e) => Err(PortmapError::Upnp(crate::error_chain(&e))),
                }
            }
            Err(e) => Err(PortmapError::Upnp(crate::error_chain(&e))),
        }
    }

    /// Deletes our mapping of `external`.
    pub async fn remove(&self, t: Transport, external: u16) -> Result<(), PortmapError> {
        self.igd
            .remove_port(protocol(t), external)
            .await
            .map_err(|e| PortmapError::Upnp(crate::error_chain(&e)))
    }
}
