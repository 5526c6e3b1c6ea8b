//! A minimal ALTS tonic client.
//!
//! ```text
//! cargo run -p alts-examples --bin client -- --creds creds/client --root creds/root.pub \
//!     --policy policy.toml --target greeter-prod
//! ```
//!
//! It refuses to run (exit status 2) without `--target` (any server the
//! policy allows could answer) unless `--accept-any-server`, and without
//! `--policy` unless `--accept-any-issuer`.

use std::process::ExitCode;

use clap::Parser;
use tonic::transport::Endpoint;
use tonic_alts::{AltsConfig, AltsConnector, CredentialFiles};

use alts_examples::echo::EchoRequest;
use alts_examples::echo::echo_client::EchoClient;

#[derive(Parser)]
struct Args {
    /// Server address.
    #[arg(long, default_value = "http://127.0.0.1:50051")]
    server: String,
    /// Directory with handshake.cert and handshake.key.
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
    /// for any identity.
    #[arg(long)]
    accept_any_issuer: bool,
    /// Accepted server identities (repeatable). Required unless
    /// --accept-any-server.
    #[arg(long)]
    target: Vec<String>,
    /// INSECURE: with no --target, accept any server identity the policy allows.
    #[arg(long, conflicts_with = "target")]
    accept_any_server: bool,
    /// Number of calls, all over the one connection (exit status 1 if any fails).
    #[arg(long, default_value_t = 1)]
    repeat: u32,
    /// Pause between calls, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt::init();
    let a = Args::parse();
    if a.target.is_empty() && !a.accept_any_server {
        eprintln!(
            "client: refusing to run without --target: any server the policy allows could answer. \
             Name the server identity (--target ID), or pass --accept-any-server"
        );
        return Ok(ExitCode::from(2));
    }
    if a.accept_any_server {
        tracing::warn!("INSECURE: --accept-any-server: any server identity the policy allows is accepted");
    }
    let files = CredentialFiles::new(&a.creds, &a.root);
    let files = match a.policy {
        Some(p) => files.issuance_policy(p),
        None if a.accept_any_issuer => {
            tracing::warn!(
                "INSECURE: --accept-any-issuer: accepting any issuer under the root for any identity"
            );
            files.accept_any_issuer()
        }
        None => {
            eprintln!(
                "client: refusing to run without --policy: without an issuance policy any issuer \
                 under the root could issue any identity. Pass --policy FILE, or \
                 --accept-any-issuer (not for production)"
            );
            return Ok(ExitCode::from(2));
        }
    };
    let alts = AltsConfig::from_files(files)?;
    let connector = AltsConnector::new(alts).target_identities(a.target);
    let connector = if a.accept_any_server {
        connector.accept_any_server()
    } else {
        connector
    };
    let peers = connector.clone();
    let channel = Endpoint::from_shared(a.server)?
        .connect_with_connector(connector)
        .await?;
    // The server's handshake certificate on this connection.
    if let Some(peer) = peers.last_peer() {
        let id = peer.handshake_revocation_id.unwrap_or_default();
        println!("server {} handshake certificate {id:#018x}", peer.identity);
    }
    let mut client = EchoClient::new(channel);
    let mut failed = 0u32;
    for i in 0..a.repeat.max(1) {
        if i > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(a.interval_ms)).await;
        }
        let reply = client
            .unary(EchoRequest {
                message: "hello".into(),
                payload: vec![],
            })
            .await;
        match reply {
            Ok(reply) => println!(
                "reply: {:?} (server saw us as {:?})",
                reply.get_ref().message,
                reply.get_ref().peer_identity
            ),
            Err(status) => {
                failed += 1;
                println!("call {i} failed: {status}");
            }
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
