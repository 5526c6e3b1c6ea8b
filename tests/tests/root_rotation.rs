//! Root rotation: a trust bundle with the old and the new root lets both
//! generations of certificates interoperate; once the old root is removed,
//! its peers and their resumption tickets are refused.

mod common;

use alts_core::crypto::RingRandom;
use alts_core::resumption::ResumptionKeys;
use common::*;
use tonic_alts::{AltsConfig, AltsConnector, CredentialFiles};

fn keys() -> ResumptionKeys {
    ResumptionKeys::generate(&RingRandom::default()).expect("keys")
}

#[tokio::test(flavor = "multi_thread")]
async fn trust_bundle_spans_a_root_rotation() {
    let mut old = Fixture::new();
    let mut new = Fixture::new();
    let s = new.issue("echo-prod");
    let c_old = old.issue("frontend-prod");
    let c_new = new.issue("frontend2-prod");
    // The server's bundle: the new root, plus the old one while it lasts.
    let old_root = new.tmp.path().join("old-root.pub");
    std::fs::copy(old.pki.root_path(), &old_root).expect("copy root");
    let server_config = AltsConfig::from_files(
        CredentialFiles::new(&s.dir, new.pki.root_path())
            .accept_any_issuer()
            .additional_root(&old_root),
    )
    .expect("server config")
    .resumption(keys());
    let server = serve_plain(server_config.clone()).await;

    // A client of the old generation, trusting both roots, with resumption.
    let old_client = AltsConfig::from_files(
        CredentialFiles::new(&c_old.dir, old.pki.root_path())
            .accept_any_issuer()
            .additional_root(new.pki.root_path()),
    )
    .expect("old client config")
    .resumption(keys());
    let old_connector = AltsConnector::new(old_client).target_identity("echo-prod");
    let new_connector = AltsConnector::new(new.config(&c_new)).target_identity("echo-prod");
    for connector in [&old_connector, &new_connector] {
        let mut client = try_connect(server.addr, connector.clone())
            .await
            .expect("both generations");
        unary(&mut client, "x").await.expect("unary");
    }
    // The old client now holds a resumption ticket; it resumes.
    try_connect(server.addr, old_connector.clone())
        .await
        .expect("resumes");
    assert!(old_connector.last_peer().expect("peer").resumed());

    // End of the rotation: the old root leaves the bundle.
    std::fs::remove_file(&old_root).expect("remove old root");
    server_config
        .reloader()
        .expect("reloader")
        .reload()
        .expect("reload");
    let err = try_connect(server.addr, old_connector.clone())
        .await
        .expect_err("old generation refused, ticket and all");
    assert_eq!(
        tonic_alts::AltsError::find(&err).map(tonic_alts::AltsError::kind),
        Some(tonic_alts::AltsErrorKind::RefusedByPeer),
        "{}",
        chain(&err)
    );
    let mut client = try_connect(server.addr, new_connector)
        .await
        .expect("new generation still served");
    unary(&mut client, "y").await.expect("unary");
}
