//! `alts-fleetctl`: an operator's client of the signing service, over ALTS
//! with the operator's own credentials. Revokes certificates (the caller
//! must be on the signer's `--admin` list) and fetches the current
//! revocation list.
//!
//! ```text
//! alts-fleetctl --creds ~/.alts/oncall --issuance-policy policy.toml \
//!     --signer http://127.0.0.1:7443 revoke --revocation-id 0x0300000000000012 --reason "key leaked"
//! alts-fleetctl --creds ~/.alts/oncall --issuance-policy policy.toml \
//!     --signer http://127.0.0.1:7443 fetch-crl --out crl.bin
//! ```
#![forbid(unsafe_code)]

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use alts_fleet::pb::signer_client::SignerClient;
use alts_fleet::pb::{FetchCrlRequest, RevokeRequest, revoke_request};
use clap::{Parser, Subcommand};
use tonic::transport::Endpoint;
use tonic_alts::{AltsConfig, AltsConnector, CredentialFiles};

#[derive(Parser)]
#[command(
    name = "alts-fleetctl",
    version,
    about = "Revoke certificates and fetch the revocation list from alts-signer."
)]
struct Args {
    /// The operator's ALTS credential directory (handshake.cert, handshake.key, root.pub).
    #[arg(long)]
    creds: PathBuf,
    /// The fleet's issuance policy (verifies the signer's certificate).
    #[arg(long)]
    issuance_policy: PathBuf,
    /// The signer's address (http://host:port; ALTS protects the connection).
    #[arg(long)]
    signer: String,
    /// The identity the signer must prove.
    #[arg(long, default_value = "alts-signer")]
    signer_identity: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Revoke a certificate by revocation ID or by the SHA-256 of a certificate the signer issued.
    Revoke {
        /// Revocation ID, decimal or 0x-hex.
        #[arg(long, value_parser = parse_u64, conflicts_with = "cert_sha256")]
        revocation_id: Option<u64>,
        /// SHA-256 of the certificate, hex.
        #[arg(long)]
        cert_sha256: Option<String>,
        /// Why (recorded in the signer's audit log).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Write the current signed revocation list to a file.
    FetchCrl {
        /// Output file.
        #[arg(long)]
        out: PathBuf,
    },
}

fn parse_u64(s: &str) -> Result<u64, String> {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    }
    .map_err(|e| e.to_string())
}

fn parse_hex(s: &str) -> Result<Vec<u8>, String> {
    if s.len() != 64 {
        return Err("a SHA-256 is 64 hex digits".into());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            s.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| "not hex".to_owned())
        })
        .collect()
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("alts-fleetctl: {e}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let config = AltsConfig::from_files(
        CredentialFiles::from_dir(&args.creds).issuance_policy(&args.issuance_policy),
    )?;
    let connector = AltsConnector::new(config).target_identity(args.signer_identity);
    let channel = Endpoint::from_shared(args.signer)?
        .connect_with_connector(connector)
        .await?;
    let mut signer = SignerClient::new(channel);
    match args.cmd {
        Cmd::Revoke {
            revocation_id,
            cert_sha256,
            reason,
        } => {
            let target = match (revocation_id, cert_sha256) {
                (Some(id), None) => revoke_request::Target::RevocationId(id),
                (None, Some(h)) => revoke_request::Target::CertificateSha256(parse_hex(&h)?),
                _ => return Err("give --revocation-id or --cert-sha256".into()),
            };
            let r = signer
                .revoke(RevokeRequest {
                    target: Some(target),
                    reason,
                })
                .await?
                .into_inner();
            // The revocation is done; a closed stdout only loses this line.
            let _ = writeln!(
                std::io::stdout(),
                "revoked; revocation list issued at {}",
                r.crl_issued_at
            );
        }
        Cmd::FetchCrl { out } => {
            let r = signer
                .fetch_crl(FetchCrlRequest { if_newer_than: 0 })
                .await?
                .into_inner();
            std::fs::write(&out, &r.signed_crl)?;
            let _ = writeln!(
                std::io::stdout(),
                "revocation list issued at {} written to {}",
                r.issued_at,
                out.display()
            );
        }
    }
    Ok(())
}
