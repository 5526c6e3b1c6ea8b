//! A minimal ALTS tonic client.
//!
//! ```text
//! cargo run -p alts-examples --bin client -- --creds creds/client --root creds/root.pub --target greeter-prod
//! ```

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
    /// Policy TOML (who may issue which identities); without it any issuer is accepted.
    #[arg(long)]
    policy: Option<String>,
    /// Accepted server identities (repeatable).
    #[arg(long)]
    target: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let files = CredentialFiles::new(&a.creds, &a.root);
    let files = match a.policy {
        Some(p) => files.issuance_policy(p),
        None => files.accept_any_issuer(),
    };
    let alts = AltsConfig::from_files(files)?;
    let connector = AltsConnector::new(alts).target_identities(a.target);
    let channel = Endpoint::from_shared(a.server)?
        .connect_with_connector(connector)
        .await?;
    let reply = EchoClient::new(channel)
        .unary(EchoRequest {
            message: "hello".into(),
            payload: vec![],
        })
        .await?;
    println!(
        "reply: {:?} (server saw us as {:?})",
        reply.get_ref().message,
        reply.get_ref().peer_identity
    );
    Ok(())
}
