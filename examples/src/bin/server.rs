//! A minimal ALTS-protected tonic server.
//!
//! ```text
//! cargo run -p alts-examples --bin server -- --creds creds/server --root creds/root.pub --policy policy.toml
//! ```
//!
//! It refuses to start without `--policy` (exit status 2): without an
//! issuance policy any issuer under the root could issue any identity.
//! `--accept-any-issuer` is the explicit, insecure opt-out.

use std::process::ExitCode;

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
    /// Issuance policy TOML (who may issue which identities). Required
    /// unless --accept-any-issuer.
    #[arg(long, conflicts_with = "accept_any_issuer")]
    policy: Option<String>,
    /// INSECURE: run without --policy, accepting any issuer under the root
    /// for any identity (e.g. a "network-admin" certificate from an issuer
    /// not allowed to issue it).
    #[arg(long)]
    accept_any_issuer: bool,
    /// Signed revocation list.
    #[arg(long)]
    crl: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt::init();
    let a = Args::parse();
    let mut files = CredentialFiles::new(&a.creds, &a.root);
    match a.policy {
        Some(p) => files = files.issuance_policy(p),
        None if a.accept_any_issuer => {
            tracing::warn!(
                "INSECURE: --accept-any-issuer: accepting any issuer under the root for any identity"
            );
            files = files.accept_any_issuer();
        }
        None => {
            eprintln!(
                "server: refusing to start without --policy: without an issuance policy any issuer \
                 under the root could issue any identity (e.g. \"network-admin\" from an issuer not \
                 allowed to issue it). Pass --policy FILE, or --accept-any-issuer (not for production)"
            );
            return Ok(ExitCode::from(2));
        }
    }
    if let Some(crl) = a.crl {
        files = files.crl(crl);
    }

    let alts = AltsConfig::from_files(files)?;
    // Rotated certificates, CRL and policy are in effect within a second.
    let _reloader = alts.reloader()?.watch();
    let incoming = AltsIncoming::bind(&a.listen, alts).await?;
    println!("serving ALTS on {}", incoming.local_addr());
    Server::builder()
        .layer(AltsAuthzLayer::peer_info_only())
        .add_service(EchoServer::new(EchoService))
        .serve_with_incoming(incoming)
        .await?;
    Ok(ExitCode::SUCCESS)
}
