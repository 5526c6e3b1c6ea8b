//! A minimal ALTS-protected tonic server.
//!
//! ```text
//! cargo run -p alts-examples --bin server -- --creds creds/server --root creds/root.pub
//! ```

use clap::Parser;
use tonic::transport::Server;
use tonic_alts::{AltsAuthzLayer, AltsConfig, AltsIncoming, CredentialFiles};

use alts_examples::EchoService;
use alts_examples::echo::echo_server::EchoServer;

#[derive(Parser)]
struct Args {
    /// Address to serve on.
    #[arg(long, default_value = "127.0.0.1:50051")]
    listen: String,
    /// Directory with handshake.cert and handshake.key (from `alts issue handshake`).
    #[arg(long)]
    creds: String,
    /// The signing service's root.pub.
    #[arg(long)]
    root: String,
    /// Policy TOML (who may issue which identities).
    #[arg(long)]
    policy: Option<String>,
    /// Signed revocation list.
    #[arg(long)]
    crl: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt::init();
    let a = Args::parse();
    let mut files = CredentialFiles::new(&a.creds, &a.root);
    match a.policy {
        Some(p) => files = files.issuance_policy(p),
        None => {
            eprintln!("warning: no --policy given: accepting any issuer under the root");
            files = files.accept_any_issuer();
        }
    }
    if let Some(crl) = a.crl {
        files = files.crl(crl);
    }

    let alts = AltsConfig::from_files(files)?;
    let _reloader = alts.reloader()?.spawn(std::time::Duration::from_secs(30));
    let incoming = AltsIncoming::bind(&a.listen, alts).await?;
    println!("serving ALTS on {}", incoming.local_addr());
    Server::builder()
        .layer(AltsAuthzLayer::peer_info_only())
        .add_service(EchoServer::new(EchoService))
        .serve_with_incoming(incoming)
        .await?;
    Ok(())
}
