//! The practical limit for the benchmark: a bare tokio-rustls client that only does the
//! handshakes, with rustls's own certificate verification and no analysis or output.
//!
//! Usage: bare-handshake CA_PEM CONCURRENCY TARGETS_FILE
//! (targets are `IP:PORT`, verified against the certificate's IP SANs).

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_rustls::TlsConnector;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, ca, concurrency, targets] = args.as_slice() else {
        return Err("usage: bare-handshake CA_PEM CONCURRENCY TARGETS_FILE".into());
    };
    let concurrency: usize = concurrency.parse()?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca)? {
        roots.add(cert?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // Every handshake is a full one, as for tlsward.
    config.resumption = rustls::client::Resumption::disabled();
    let connector = TlsConnector::from(Arc::new(config));
    let addrs: Vec<SocketAddr> = std::fs::read_to_string(targets)?
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.trim().parse())
        .collect::<Result<_, _>>()?;
    let mut pending = addrs.into_iter();
    let mut running = JoinSet::new();
    let (mut ok, mut failed) = (0u64, 0u64);
    loop {
        while running.len() < concurrency {
            let Some(addr) = pending.next() else { break };
            let connector = connector.clone();
            running.spawn(async move {
                let tcp = TcpStream::connect(addr).await?;
                let name = ServerName::IpAddress(addr.ip().into());
                connector.connect(name, tcp).await.map(drop)
            });
        }
        let Some(done) = running.join_next().await else {
            break;
        };
        match done? {
            Ok(()) => ok += 1,
            Err(_) => failed += 1,
        }
    }
    println!("{ok} ok, {failed} failed");
    Ok(())
}
