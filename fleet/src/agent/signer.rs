//! The agent's client of the `alts.fleet.v1.Signer` service, over ALTS.

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use tonic_alts::{AltsConfig, AltsConnector};

use super::AgentError;
use super::config::SignerConfig;
use crate::pb;
use crate::pb::signer_client::SignerClient as PbClient;

/// Largest response accepted (a revocation list may be large).
const MAX_RESPONSE: usize = alts_core::crl::MAX_CRL_LEN + 64 * 1024;

/// A lazily connecting client; the channel reconnects after a signer outage.
#[derive(Clone)]
pub(crate) struct SignerClient {
    client: PbClient<Channel>,
    timeout: Duration,
}

impl SignerClient {
    pub(crate) fn new(cfg: &SignerConfig, alts: AltsConfig) -> Result<Self, AgentError> {
        let endpoint = Endpoint::from_shared(cfg.address.clone())
            .map_err(|e| AgentError::SignerAddress(e.to_string()))?
            .connect_timeout(cfg.timeout)
            .timeout(cfg.timeout)
            .tcp_nodelay(true);
        let connector = AltsConnector::for_endpoint(&endpoint, alts).target_identity(cfg.identity.clone());
        let channel = endpoint.connect_with_connector_lazy(connector);
        Ok(Self {
            client: PbClient::new(channel).max_decoding_message_size(MAX_RESPONSE),
            timeout: cfg.timeout,
        })
    }

    async fn call<T, F>(&self, op: &'static str, f: F) -> Result<T, AgentError>
    where
        F: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        // The endpoint's timeout bounds each request; this also bounds connecting.
        match tokio::time::timeout(self.timeout.saturating_mul(2), f).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(s)) => Err(AgentError::Signer {
                op,
                code: s.code(),
                message: s.message().chars().take(256).collect(),
            }),
            Err(_) => Err(AgentError::Signer {
                op,
                code: tonic::Code::DeadlineExceeded,
                message: "timed out".into(),
            }),
        }
    }

    pub(crate) async fn issue_principal(
        &self,
        req: pb::IssuePrincipalRequest,
    ) -> Result<pb::IssuePrincipalResponse, AgentError> {
        let mut c = self.client.clone();
        self.call("IssuePrincipal", c.issue_principal(req)).await
    }

    pub(crate) async fn allocate_revocation_ids(
        &self,
        count: u32,
    ) -> Result<pb::AllocateRevocationIdsResponse, AgentError> {
        let mut c = self.client.clone();
        self.call(
            "AllocateRevocationIds",
            c.allocate_revocation_ids(pb::AllocateRevocationIdsRequest { count }),
        )
        .await
    }

    pub(crate) async fn fetch_crl(&self, if_newer_than: i64) -> Result<pb::FetchCrlResponse, AgentError> {
        let mut c = self.client.clone();
        self.call("FetchCrl", c.fetch_crl(pb::FetchCrlRequest { if_newer_than }))
            .await
    }

    pub(crate) async fn get_key_ring(
        &self,
        identity: &str,
        cell: &str,
    ) -> Result<pb::GetKeyRingResponse, AgentError> {
        let mut c = self.client.clone();
        self.call(
            "GetKeyRing",
            c.get_key_ring(pb::GetKeyRingRequest {
                identity: identity.to_owned(),
                cell: cell.to_owned(),
            }),
        )
        .await
    }
}
