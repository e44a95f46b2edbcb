//! `twig-echo`: the outside reference for `scripts/bench` — a bare tonic
//! server answering the standard health check and nothing else: no
//! layers, no auth, no metrics. Driven by h2load beside `twig-identity
//! serve`, it shows what the suite's own stack costs on top of tonic.
//!
//! Usage: `twig-echo 127.0.0.1:50778` (prints `listening <addr>` once bound).

use std::net::SocketAddr;

/// The same allocator as the server, so that the comparison is like for like.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let address: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".to_string())
        .parse()?;
    let listener = tokio::net::TcpListener::bind(address).await?;
    println!("listening {}", listener.local_addr()?);
    let (_reporter, health) = tonic_health::server::health_reporter();
    tonic::transport::Server::builder()
        .add_service(health)
        .serve_with_incoming(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
        )
        .await?;
    Ok(())
}
