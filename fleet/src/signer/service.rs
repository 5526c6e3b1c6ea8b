//! The `alts.fleet.v1.Signer` handlers.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock, RwLock};

use alts_core::UnixTime;
use alts_core::cert::{Category, MAX_NAME_LEN, PrincipalParams, RootKey, SigningKey, issue_principal};
use alts_core::crl::{MAX_CRL_LEN, RevocationList};
use serde_json::json;
use tonic::{Request, Response, Status};
use tonic_alts::{AltsReloader, AltsRequestExt};

use super::audit::{AuditLog, unix_now};
use super::files::{self, CRL_FILE};
use super::store::{
    CrlRecord, IssuanceRecord, NewIssuance, NewRevocation, RingKey, SignCert, SignCrl, Storage,
};
use super::{LoadedPolicies, SignerError};
use crate::pb;
use crate::pb::signer_server::{Signer, SignerServer};

/// Longest `reason` accepted by `Revoke`.
pub const MAX_REASON_LEN: usize = 1024;
/// Largest request message accepted.
pub const MAX_REQUEST_LEN: usize = 16 * 1024;

/// What the handlers work with.
pub(super) struct Settings {
    pub store: Arc<dyn Storage>,
    pub audit: AuditLog,
    pub ca_key: Arc<SigningKey>,
    pub sealer: super::seal::Sealer,
    pub root: RootKey,
    pub root_bytes: Vec<u8>,
    pub policies: RwLock<Arc<LoadedPolicies>>,
    pub issuance_policy_path: PathBuf,
    pub signer_policy_path: Option<PathBuf>,
    pub allow_any_caller: bool,
    pub admins: BTreeSet<String>,
    pub max_validity_secs: i64,
    pub rotation_secs: i64,
    pub max_allocation: u32,
    pub crl_dir: PathBuf,
    pub reloader: Arc<OnceLock<AltsReloader>>,
}

/// The signing service (cheap to clone).
#[derive(Clone)]
pub struct SignerService {
    s: Arc<Settings>,
    /// `issued_at` of the list last written to `--crl-dir`.
    installed: Arc<tokio::sync::Mutex<i64>>,
}

impl std::fmt::Debug for SignerService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignerService")
            .field("store", &self.s.store.describe())
            .finish_non_exhaustive()
    }
}

/// An identity, cell or admin name: 1 to 256 printable ASCII characters
/// without spaces.
pub(crate) fn valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_NAME_LEN && s.bytes().all(|b| b.is_ascii_graphic())
}

/// At most 256 characters of an untrusted string, for logs and the audit log.
fn clip(s: &str) -> String {
    s.chars().take(MAX_NAME_LEN).collect()
}

fn denied() -> Status {
    Status::permission_denied("permission denied")
}

fn internal(what: &str, e: impl std::fmt::Display) -> Status {
    tracing::error!(error = %e, "{what}");
    Status::internal("internal error")
}

fn sign_crl(key: Arc<SigningKey>) -> SignCrl {
    Box::new(move |ids, issued_at| {
        RevocationList::build_signed(ids, &key, UnixTime(issued_at)).map_err(|e| e.to_string())
    })
}

impl SignerService {
    pub(super) fn new(settings: Settings) -> Self {
        Self {
            s: Arc::new(settings),
            installed: Arc::new(tokio::sync::Mutex::new(0)),
        }
    }

    pub(super) fn describe_store(&self) -> String {
        self.s.store.describe()
    }

    pub(super) fn set_reloader(&self, r: AltsReloader) {
        let _ = self.s.reloader.set(r);
    }

    pub(super) fn into_server(self) -> SignerServer<Self> {
        SignerServer::new(self)
            .max_decoding_message_size(MAX_REQUEST_LEN)
            .max_encoding_message_size(MAX_CRL_LEN)
    }

    /// The policies in force (`None` if the lock was poisoned: callers
    /// refuse).
    fn policies(&self) -> Option<Arc<LoadedPolicies>> {
        self.s.policies.read().ok().map(|p| p.clone())
    }

    /// Re-reads the issuance and signer policies if their files changed. A
    /// file that fails to load leaves the policies in force unchanged.
    pub(super) fn reload_policies(&self) {
        let Some(current) = self.policies() else { return };
        let (issuance, signer) = (&self.s.issuance_policy_path, self.s.signer_policy_path.as_deref());
        if super::policy_stamp(issuance, signer) == current.stamp {
            return;
        }
        match super::load_policies(issuance, signer) {
            Ok(p) => {
                if let Ok(mut w) = self.s.policies.write() {
                    *w = Arc::new(p);
                    tracing::info!("issuance and signer policies reloaded");
                }
            }
            Err(e) => tracing::error!(error = %e, "policy reload failed; keeping the policies in force"),
        }
    }

    /// Publishes an empty list if none exists, and writes the current one
    /// to `--crl-dir`.
    pub(super) async fn ensure_crl(&self) -> Result<(), SignerError> {
        let out = self
            .s
            .store
            .revoke(None, unix_now(), sign_crl(self.s.ca_key.clone()))
            .await?;
        self.install_crl(&out.crl).await
    }

    /// Writes `crl` to `--crl-dir` (after checking its signature) if it is
    /// newer than the one there, and reloads the signer's ALTS config so new
    /// handshakes use it.
    async fn install_crl(&self, crl: &CrlRecord) -> Result<(), SignerError> {
        let mut installed = self.installed.lock().await;
        if crl.issued_at <= *installed {
            return Ok(());
        }
        RevocationList::from_signed_bytes(&crl.signed, &self.s.root)?;
        let dir = self.s.crl_dir.clone();
        let bytes = crl.signed.clone();
        tokio::task::spawn_blocking(move || files::write_atomic(&dir, CRL_FILE, &bytes))
            .await
            .map_err(|e| SignerError::Config(format!("writing {CRL_FILE}: {e}")))??;
        *installed = crl.issued_at;
        if let Some(r) = self.s.reloader.get()
            && let Err(e) = r.reload()
        {
            tracing::error!(error = %e, "reloading the signer's ALTS config with the new revocation list failed");
        }
        tracing::info!(
            issued_at = crl.issued_at,
            count = crl.count,
            "revocation list written"
        );
        Ok(())
    }

    /// Copies a list published by another replica to `--crl-dir`.
    pub(super) async fn sync_crl(&self) {
        match self.s.store.crl().await {
            Ok(Some(crl)) => {
                if let Err(e) = self.install_crl(&crl).await {
                    tracing::error!(error = %e, "installing the revocation list failed");
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "reading the revocation list from the state failed"),
        }
    }

    /// Audits issuances that were recorded but whose audit line was never
    /// confirmed (the process stopped in between). At start with an
    /// exclusive store every such issuance is taken; otherwise only those
    /// older than [`super::RECOVERY_GRACE_SECS`].
    pub(super) async fn recover(&self, at_start: bool) {
        let before = if at_start && self.s.store.exclusive() {
            i64::MAX
        } else {
            unix_now().saturating_sub(super::RECOVERY_GRACE_SECS)
        };
        let pending = match self.s.store.unaudited(before).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "listing unaudited issuances failed");
                return;
            }
        };
        for rec in pending {
            if let Err(e) = self.audit_issue(&rec, true).await {
                tracing::error!(error = %e, "audit log write failed during recovery");
                return;
            }
            if let Err(e) = self.s.store.mark_audited(rec.revocation_id).await {
                tracing::warn!(error = %e, "marking a recovered issuance audited failed");
            }
            tracing::warn!(
                revocation_id = %format_args!("{:#018x}", rec.revocation_id),
                "audited an issuance left unaudited by a stopped run (never returned to its caller)"
            );
        }
    }

    async fn audit_issue(
        &self,
        rec: &IssuanceRecord,
        recovered: bool,
    ) -> Result<(), super::audit::AuditError> {
        let mut fields = json!({
            "caller": rec.caller,
            "identity": rec.identity,
            "category": rec.category.as_str(),
            "revocation_id": format!("{:#018x}", rec.revocation_id),
            "serial": rec.serial,
            "not_after": rec.not_after,
            "cert_sha256": rec.cert_sha256,
        });
        if recovered && let Some(m) = fields.as_object_mut() {
            m.insert("recovered".into(), true.into());
        }
        self.s.audit.append("issue", fields).await
    }

    /// Logs and audits a refusal, and returns the generic status.
    async fn refuse(&self, caller: &str, method: &str, reason: String) -> Status {
        tracing::warn!(caller = %clip(caller), method, reason = %reason, "refused");
        if let Err(e) = self
            .s
            .audit
            .append(
                "refused",
                json!({"caller": clip(caller), "method": method, "reason": reason}),
            )
            .await
        {
            tracing::error!(error = %e, "audit log write failed");
        }
        denied()
    }

    /// The policies in force and the signer policy's verdict on `caller`
    /// (`check`), or, without a signer policy, the explicit allow-any-caller
    /// opt-in (`None`). Refusals are logged and audited.
    async fn authorize<T>(
        &self,
        caller: &str,
        method: &str,
        check: impl FnOnce(&super::policy::SignerPolicy) -> Result<T, super::policy::SignerDenied>,
    ) -> Result<(Arc<LoadedPolicies>, Option<T>), Status> {
        let Some(policies) = self.policies() else {
            return Err(self.refuse(caller, method, "policies unavailable".into()).await);
        };
        let verdict = match &policies.signer {
            Some(p) => check(p).map(Some).map_err(|d| d.to_string()),
            None if self.s.allow_any_caller => Ok(None),
            None => Err("no signer policy configured".to_owned()),
        };
        match verdict {
            Ok(v) => Ok((policies, v)),
            Err(reason) => Err(self.refuse(caller, method, reason).await),
        }
    }

    fn caller<T>(req: &Request<T>) -> Result<String, Status> {
        match req.alts_peer() {
            Some(p) => Ok(p.identity.clone()),
            None => Err(Status::unauthenticated("ALTS required")),
        }
    }

    async fn issue(
        &self,
        caller: String,
        r: pb::IssuePrincipalRequest,
    ) -> Result<pb::IssuePrincipalResponse, Status> {
        const METHOD: &str = "IssuePrincipal";
        if !valid_name(&r.identity) {
            return Err(Status::invalid_argument(
                "identity must be 1 to 256 printable ASCII characters",
            ));
        }
        let category: Category = r
            .category
            .parse()
            .map_err(|_| Status::invalid_argument("category must be person, machine or workload"))?;
        let public_key: [u8; 32] = r
            .public_key
            .as_slice()
            .try_into()
            .map_err(|_| Status::invalid_argument("public_key must be a 32-byte Ed25519 key"))?;
        if public_key == [0u8; 32] {
            return Err(Status::invalid_argument(
                "public_key must be a 32-byte Ed25519 key",
            ));
        }
        let (policies, rule_cap) = self
            .authorize(&caller, METHOD, |p| {
                p.check_issue(&caller, &r.identity, category)
                    .map(|rule| rule.max_validity)
            })
            .await?;
        let rule_cap = rule_cap.flatten();
        if let Err(d) = policies.issuance.check(&caller, category, &r.identity) {
            return Err(self
                .refuse(
                    &caller,
                    METHOD,
                    format!("issuance policy would refuse the certificate: {d}"),
                )
                .await);
        }
        let mut cap = self.s.max_validity_secs;
        if let Some(d) = rule_cap {
            cap = cap.min(i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        }
        let validity = match i64::try_from(r.validity_secs) {
            Ok(0) | Err(_) => cap,
            Ok(v) => v.min(cap),
        };
        let now = unix_now();
        let not_after = now.saturating_add(validity);
        let new = NewIssuance {
            caller: caller.clone(),
            identity: r.identity.clone(),
            category,
            not_after,
            issued_at: now,
        };
        let key = self.s.ca_key.clone();
        let params = (r.identity, caller);
        let sign: SignCert = Box::new(move |revocation_id| {
            let (identity, issuer) = params;
            issue_principal(
                &key,
                &PrincipalParams {
                    identity,
                    category,
                    issuer,
                    validity: Some((UnixTime(now), UnixTime(not_after))),
                    revocation_id,
                },
                public_key,
            )
            .map_err(|e| e.to_string())
        });
        let (rec, cert) = self
            .s
            .store
            .issue(new, sign)
            .await
            .map_err(|e| internal("recording an issuance failed", e))?;
        if let Err(e) = self.audit_issue(&rec, false).await {
            // Recorded but not audited: recovery audits it later; the
            // certificate is not returned.
            tracing::error!(error = %e, "audit log write failed; certificate withheld");
            return Err(Status::unavailable("audit log unavailable"));
        }
        if let Err(e) = self.s.store.mark_audited(rec.revocation_id).await {
            tracing::warn!(error = %e, "marking an issuance audited failed (it may be audited twice)");
        }
        tracing::info!(
            caller = %rec.caller,
            identity = %rec.identity,
            category = %rec.category,
            revocation_id = %format_args!("{:#018x}", rec.revocation_id),
            not_after = rec.not_after,
            "issued principal certificate"
        );
        Ok(pb::IssuePrincipalResponse {
            principal_cert: cert,
            root_key: self.s.root_bytes.clone(),
            revocation_id: rec.revocation_id,
        })
    }

    async fn revoke_inner(&self, caller: String, r: pb::RevokeRequest) -> Result<pb::RevokeResponse, Status> {
        const METHOD: &str = "Revoke";
        if !self.s.admins.contains(&caller) {
            return Err(self
                .refuse(&caller, METHOD, "caller is not on the admin list".into())
                .await);
        }
        if r.reason.len() > MAX_REASON_LEN {
            return Err(Status::invalid_argument("reason too long"));
        }
        let (revocation_id, target, sha) = match r.target {
            Some(pb::revoke_request::Target::RevocationId(id)) => (id, "revocation_id", None),
            Some(pb::revoke_request::Target::CertificateSha256(h)) => {
                let sha: [u8; 32] = h
                    .as_slice()
                    .try_into()
                    .map_err(|_| Status::invalid_argument("certificate_sha256 must be 32 bytes"))?;
                let found = self
                    .s
                    .store
                    .find_by_cert_sha256(&sha)
                    .await
                    .map_err(|e| internal("looking up a certificate failed", e))?;
                match found {
                    Some(id) => (id, "cert_sha256", Some(hex::encode(sha))),
                    None => {
                        return Err(Status::not_found(
                            "no certificate with that SHA-256 was issued here",
                        ));
                    }
                }
            }
            None => return Err(Status::invalid_argument("a target is required")),
        };
        let now = unix_now();
        let id_hex = format!("{revocation_id:#018x}");
        self.s
            .audit
            .append(
                "revoke",
                json!({"caller": caller, "target": target, "revocation_id": id_hex,
                       "cert_sha256": sha, "reason": r.reason}),
            )
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "audit log write failed; revocation not recorded");
                Status::unavailable("audit log unavailable")
            })?;
        let new = NewRevocation {
            revocation_id,
            caller: caller.clone(),
            reason: r.reason,
            revoked_at: now,
            cert_sha256: sha,
        };
        let out = match self
            .s
            .store
            .revoke(Some(new), now, sign_crl(self.s.ca_key.clone()))
            .await
        {
            Ok(o) => o,
            Err(e) => {
                let _ = self
                    .s
                    .audit
                    .append(
                        "revoke_failed",
                        json!({"caller": caller, "revocation_id": id_hex, "error": e.to_string()}),
                    )
                    .await;
                return Err(internal("recording a revocation failed", e));
            }
        };
        if let Err(e) = self
            .s
            .audit
            .append(
                "crl_published",
                json!({"caller": caller, "revocation_id": id_hex, "issued_at": out.crl.issued_at,
                       "count": out.crl.count, "already_revoked": out.already_revoked}),
            )
            .await
        {
            tracing::error!(error = %e, "audit log write failed");
        }
        if let Err(e) = self.install_crl(&out.crl).await {
            // Recorded and served by FetchCrl; the background sync retries the file.
            tracing::error!(error = %e, "writing the revocation list file failed");
        }
        tracing::info!(caller = %caller, revocation_id = %id_hex, crl_issued_at = out.crl.issued_at, "revoked");
        Ok(pb::RevokeResponse {
            crl_issued_at: out.crl.issued_at,
        })
    }
}

#[tonic::async_trait]
impl Signer for SignerService {
    async fn issue_principal(
        &self,
        request: Request<pb::IssuePrincipalRequest>,
    ) -> Result<Response<pb::IssuePrincipalResponse>, Status> {
        let caller = Self::caller(&request)?;
        // Runs to completion even if the caller goes away, so a recorded
        // issuance is audited at once.
        let this = self.clone();
        tokio::spawn(async move { this.issue(caller, request.into_inner()).await })
            .await
            .map_err(|e| internal("issuance task failed", e))?
            .map(Response::new)
    }

    async fn allocate_revocation_ids(
        &self,
        request: Request<pb::AllocateRevocationIdsRequest>,
    ) -> Result<Response<pb::AllocateRevocationIdsResponse>, Status> {
        const METHOD: &str = "AllocateRevocationIds";
        let caller = Self::caller(&request)?;
        let count = request.into_inner().count;
        if count == 0 || count > self.s.max_allocation {
            return Err(Status::invalid_argument(format!(
                "count must be 1 to {}",
                self.s.max_allocation
            )));
        }
        self.authorize(&caller, METHOD, |p| p.check_caller(&caller))
            .await?;
        let this = self.clone();
        tokio::spawn(async move {
            let first = this
                .s
                .store
                .allocate(&caller, count, unix_now())
                .await
                .map_err(|e| internal("allocating revocation serials failed", e))?;
            this.s
                .audit
                .append(
                    "allocate",
                    json!({"caller": caller, "first_serial": first, "count": count}),
                )
                .await
                .map_err(|e| {
                    tracing::error!(error = %e, "audit log write failed; range withheld (skipped)");
                    Status::unavailable("audit log unavailable")
                })?;
            tracing::info!(caller = %caller, first, count, "allocated revocation serials");
            Ok(pb::AllocateRevocationIdsResponse { first, count })
        })
        .await
        .map_err(|e| internal("allocation task failed", e))?
        .map(Response::new)
    }

    async fn revoke(
        &self,
        request: Request<pb::RevokeRequest>,
    ) -> Result<Response<pb::RevokeResponse>, Status> {
        let caller = Self::caller(&request)?;
        let this = self.clone();
        tokio::spawn(async move { this.revoke_inner(caller, request.into_inner()).await })
            .await
            .map_err(|e| internal("revocation task failed", e))?
            .map(Response::new)
    }

    async fn fetch_crl(
        &self,
        request: Request<pb::FetchCrlRequest>,
    ) -> Result<Response<pb::FetchCrlResponse>, Status> {
        Self::caller(&request)?;
        let since = request.into_inner().if_newer_than;
        let crl = self
            .s
            .store
            .crl()
            .await
            .map_err(|e| internal("reading the revocation list failed", e))?
            .ok_or_else(|| Status::unavailable("no revocation list published yet"))?;
        let signed_crl = if crl.issued_at > since {
            crl.signed
        } else {
            Vec::new()
        };
        Ok(Response::new(pb::FetchCrlResponse {
            signed_crl,
            issued_at: crl.issued_at,
        }))
    }

    async fn get_key_ring(
        &self,
        request: Request<pb::GetKeyRingRequest>,
    ) -> Result<Response<pb::GetKeyRingResponse>, Status> {
        const METHOD: &str = "GetKeyRing";
        let caller = Self::caller(&request)?;
        let r = request.into_inner();
        if !valid_name(&r.identity) || !valid_name(&r.cell) {
            return Err(Status::invalid_argument(
                "identity and cell must be 1 to 256 printable ASCII characters",
            ));
        }
        self.authorize(&caller, METHOD, |p| p.check_identity(&caller, &r.identity))
            .await?;
        let now = unix_now();
        let mut fresh =
            RingKey::generate(now).map_err(|e| internal("generating a resumption key failed", e))?;
        // The state only ever holds sealed secrets.
        let sealed = self
            .s
            .sealer
            .seal(&r.identity, &r.cell, &fresh.rid, &fresh.secret)
            .map_err(|e| internal("sealing a resumption key failed", e))?;
        zeroize::Zeroize::zeroize(&mut fresh.secret);
        fresh.secret = sealed;
        let ring = self
            .s
            .store
            .key_ring(&r.identity, &r.cell, now, self.s.rotation_secs, fresh)
            .await
            .map_err(|e| internal("reading the key ring failed", e))?;
        let mut keys = Vec::with_capacity(ring.keys.len());
        for k in &ring.keys {
            let secret = self
                .s
                .sealer
                .open(&r.identity, &r.cell, &k.rid, &k.secret)
                .map_err(|e| internal("opening a stored key ring failed", e))?;
            keys.push(pb::ResumptionKeyEntry {
                rid: k.rid.clone(),
                secret: secret.to_vec(),
                created_at: k.created_at,
            });
        }
        tracing::info!(
            caller = %caller,
            identity = %r.identity,
            cell = %r.cell,
            keys = ring.keys.len(),
            next_rotation_at = ring.next_rotation_at,
            "key ring served"
        );
        Ok(Response::new(pb::GetKeyRingResponse {
            keys,
            next_rotation_at: ring.next_rotation_at,
        }))
    }
}
