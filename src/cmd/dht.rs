//! `btc dht`: a DHT node holding no torrent, e.g. a bootstrap node for a
//! private network, or the local DHT of the demo and the tests.

use crate::dht::{DhtConfig, DhtHandle};
use anyhow::{Context, Result};
use tokio_util::sync::CancellationToken;

/// Runs a standalone node until `shutdown`.
pub async fn run(cfg: DhtConfig, shutdown: CancellationToken) -> Result<()> {
    let dht = DhtHandle::start(cfg).context("starting the DHT node")?;
    println!("dht node listening on {}", dht.local_addr());
    if let Some(v6) = dht.local_addr_v6().filter(|a| *a != dht.local_addr()) {
        println!("dht node listening on {v6}");
    }
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(300));
    tick.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {
                if let Err(e) = dht.save_state() {
                    tracing::warn!("saving DHT state: {}", crate::error_chain(&e));
                }
                tracing::info!("routing table: {} nodes", dht.routing_table_size());
            }
        }
    }
    if let Err(e) = dht.save_state() {
        tracing::warn!("saving DHT state: {}", crate::error_chain(&e));
    }
    Ok(())
}
