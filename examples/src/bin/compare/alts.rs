//! The ALTS side: credentials, handshakes in memory and the record layer,
//! each measured against its rustls / raw-AEAD counterpart in the same run.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alts_core::cert::Category;
use alts_core::crypto::RingRandom;
use alts_core::handshake::ResumptionConfig;
use alts_core::handshake::{ClientHandshake, ClientOptions, Handshake, HandshakeConfig, ServerHandshake};
use alts_core::record::{FRAME_OVERHEAD, RecordConfig, RecordProtocol, Side, new_record_layer};
use alts_core::resumption::{InMemoryReplayGuard, ResumptionKeys};
use alts_examples::{IssuedDir, Pki};
use bytes::BytesMut;
use rustls::HandshakeKind;
use tonic_alts::AltsConfig;

use crate::stats::Summary;
use crate::tls::{self, Provider};
use crate::{Budget, Goal, Row};

/// The server's identity.
pub const SERVER_ID: &str = "backend-prod";

/// Which cryptographic backend alts-core was built with.
pub fn provider_name() -> &'static str {
    alts_core::crypto::provider_name()
}

/// A throwaway ALTS PKI in a temporary directory.
pub struct AltsPki {
    pub pki: Pki,
    pub server: IssuedDir,
    next: usize,
    _dir: tempfile::TempDir,
}

impl AltsPki {
    pub fn new() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut pki = Pki::new(dir.path())?;
        let server = pki.issue("backend", SERVER_ID, Category::Workload, "scheduler", 3600)?;
        Ok(Self {
            pki,
            server,
            next: 0,
            _dir: dir,
        })
    }

    /// The directory holding `root.pub` and the issued credentials.
    pub fn dir(&self) -> &Path {
        self._dir.path()
    }

    /// The server's configuration (library defaults, no resumption).
    pub fn server_config(&self) -> anyhow::Result<AltsConfig> {
        Ok(AltsConfig::from_files(self.pki.files(&self.server))?)
    }

    /// A configuration for a client identity never used before.
    pub fn fresh_client(&mut self) -> anyhow::Result<AltsConfig> {
        self.next += 1;
        let name = format!("client-{}", self.next);
        let issued = self
            .pki
            .issue(&name, &name, Category::Workload, "scheduler", 3600)?;
        Ok(AltsConfig::from_files(self.pki.files(&issued))?)
    }
}

/// Fresh resumption keys.
pub fn resumption_keys() -> anyhow::Result<ResumptionKeys> {
    Ok(ResumptionKeys::generate(&RingRandom::default())?)
}

/// Moves all of `from`'s output into `to`; true if anything moved.
fn pump(from: &mut dyn Handshake, to: &mut dyn Handshake, buf: &mut Vec<u8>) -> bool {
    from.poll_output(buf);
    if buf.is_empty() || to.is_done() {
        return false;
    }
    let used = to.handle_input(buf).expect("ALTS handshake in memory");
    buf.drain(..used);
    used > 0
}

/// One ALTS handshake in memory, both sides in this thread. Returns whether
/// it resumed.
fn alts_handshake(
    client: &Arc<HandshakeConfig>,
    server: &Arc<HandshakeConfig>,
    bufs: &mut [Vec<u8>; 2],
) -> bool {
    let now = alts_examples::now();
    let options = ClientOptions {
        target_identities: vec![SERVER_ID.into()],
        session_key: None,
    };
    let mut c = ClientHandshake::new(client.clone(), options, now).expect("client handshake");
    let mut s = ServerHandshake::new(server.clone(), now);
    let [to_server, to_client] = bufs;
    for _ in 0..16 {
        let a = pump(&mut c, &mut s, to_server);
        let b = pump(&mut s, &mut c, to_client);
        if c.is_done() && s.is_done() {
            let co = c.take_outcome().expect("client outcome");
            s.take_outcome().expect("server outcome");
            return co.resumption.resumed();
        }
        assert!(a || b, "ALTS handshake stalled");
    }
    panic!("ALTS handshake did not finish")
}

/// Operations per second of `f`, run for `slice`.
fn rate(slice: Duration, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < slice {
        for _ in 0..8 {
            f();
        }
        n += 8;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// Measures each named closure for `budget.rounds` rounds, interleaved.
fn interleaved(budget: Budget, sides: &mut [(&str, &mut dyn FnMut())]) -> Vec<Summary> {
    let mut rates = vec![Vec::new(); sides.len()];
    for _ in 0..budget.rounds {
        for (i, (_, f)) in sides.iter_mut().enumerate() {
            rates[i].push(rate(budget.slice, &mut **f));
        }
    }
    rates.iter_mut().map(|r| Summary::of(r)).collect()
}

fn fmt_rate(s: &Summary) -> String {
    format!("{:.0}/s ({:.0}–{:.0})", s.median, s.min, s.max)
}

/// The four in-memory handshake rows: handshake pairs per second, both
/// sides' work, ALTS against the faster of rustls's two providers.
pub fn in_memory_handshakes(budget: Budget) -> anyhow::Result<Vec<Row>> {
    let mut pki = AltsPki::new()?;
    let server = pki.server_config()?.no_resumption();
    let client = pki.fresh_client()?.no_resumption();
    let server_pfs = pki.server_config()?.no_resumption().pfs(true);
    let client_pfs = client.clone().pfs(true);
    let keys = resumption_keys()?;
    // The replay guard's default holds 62,500 tickets expiring in the same
    // minute; a full run resumes more often than that within a minute.
    let mut resumption = ResumptionConfig::new(Arc::new(resumption_keys()?));
    resumption.replay_guard = Arc::new(InMemoryReplayGuard::with_limits(1 << 24, 1 << 24));
    let server_res = pki.server_config()?.resumption_config(resumption);
    let client_res = client.clone().resumption(keys);

    let (c, s) = (client.snapshot(), server.snapshot());
    let (cp, sp) = (client_pfs.snapshot(), server_pfs.snapshot());
    let (cr, sr) = (client_res.snapshot(), server_res.snapshot());
    let mut bufs = [Vec::with_capacity(4096), Vec::with_capacity(4096)];
    let mut b2 = [Vec::with_capacity(4096), Vec::with_capacity(4096)];
    let mut b3 = [Vec::with_capacity(4096), Vec::with_capacity(4096)];
    let mut b4 = [Vec::with_capacity(4096), Vec::with_capacity(4096)];
    // Warm the resumption caches (the first handshake is full).
    alts_handshake(&cr, &sr, &mut b4);
    assert!(alts_handshake(&cr, &sr, &mut b4), "ALTS did not resume");

    let tls_pki = tls::Pki::new()?;
    let leaf = tls_pki.client(0)?;
    let mut tls_cfgs = Vec::new();
    for p in Provider::ALL {
        let full = (
            tls_pki.client_config(p, &leaf, false)?,
            tls_pki.server_config(p, false)?,
        );
        let res = (
            tls_pki.client_config(p, &leaf, true)?,
            tls_pki.server_config(p, true)?,
        );
        let mut buf = Vec::with_capacity(16 * 1024);
        assert_eq!(
            tls::handshake_in_memory(&full.0, &full.1, &mut buf),
            HandshakeKind::Full
        );
        tls::handshake_in_memory(&res.0, &res.1, &mut buf);
        assert_eq!(
            tls::handshake_in_memory(&res.0, &res.1, &mut buf),
            HandshakeKind::Resumed
        );
        tls_cfgs.push((full, res));
    }
    let mut tb = Vec::with_capacity(16 * 1024);
    let mut tb2 = Vec::with_capacity(16 * 1024);

    let mut alts_cold = || {
        client.clear_caches();
        server.clear_caches();
        assert!(!alts_handshake(&c, &s, &mut bufs));
    };
    let mut alts_pfs_cold = || {
        client_pfs.clear_caches();
        server_pfs.clear_caches();
        assert!(!alts_handshake(&cp, &sp, &mut b2));
    };
    let mut alts_warm = || assert!(!alts_handshake(&c, &s, &mut b3));
    let mut alts_resumed = || assert!(alts_handshake(&cr, &sr, &mut b4));
    let (ring_full, ring_res) = &tls_cfgs[0];
    let (aws_full, aws_res) = &tls_cfgs[1];
    let mut ring_f = || {
        assert_eq!(
            tls::handshake_in_memory(&ring_full.0, &ring_full.1, &mut tb),
            HandshakeKind::Full
        )
    };
    let mut aws_f = || {
        assert_eq!(
            tls::handshake_in_memory(&aws_full.0, &aws_full.1, &mut tb2),
            HandshakeKind::Full
        )
    };
    let mut tb3 = Vec::with_capacity(16 * 1024);
    let mut tb4 = Vec::with_capacity(16 * 1024);
    let mut ring_r = || {
        assert_eq!(
            tls::handshake_in_memory(&ring_res.0, &ring_res.1, &mut tb3),
            HandshakeKind::Resumed
        )
    };
    let mut aws_r = || {
        assert_eq!(
            tls::handshake_in_memory(&aws_res.0, &aws_res.1, &mut tb4),
            HandshakeKind::Resumed
        )
    };
    let s = interleaved(
        budget,
        &mut [
            ("alts_cold", &mut alts_cold),
            ("alts_pfs_cold", &mut alts_pfs_cold),
            ("alts_warm", &mut alts_warm),
            ("alts_resumed", &mut alts_resumed),
            ("rustls_ring_full", &mut ring_f),
            ("rustls_aws_full", &mut aws_f),
            ("rustls_ring_resumed", &mut ring_r),
            ("rustls_aws_resumed", &mut aws_r),
        ],
    );
    let (cold, pfs, warm, resumed) = (s[0], s[1], s[2], s[3]);
    let best = |a: Summary, b: Summary| {
        if a.median >= b.median {
            (a, "ring")
        } else {
            (b, "aws-lc-rs")
        }
    };
    let (full, full_name) = best(s[4], s[5]);
    let (res, res_name) = best(s[6], s[7]);
    let row = |key, what: String, a: Summary, p: Summary, goal, ring: Summary, aws: Summary| Row {
        key,
        what,
        alts: fmt_rate(&a),
        peer: fmt_rate(&p),
        ratio: a.median / p.median,
        goal,
        raw: vec![
            ("alts_per_s", a.median),
            ("rustls_ring_per_s", ring.median),
            ("rustls_aws_lc_rs_per_s", aws.median),
        ],
    };
    Ok(vec![
        row(
            "hs_full_cold_vs_rustls",
            format!("in memory: ALTS first contact vs rustls full ({full_name})"),
            cold,
            full,
            Goal::AtLeast(2.0),
            s[4],
            s[5],
        ),
        row(
            "hs_pfs_cold_vs_rustls",
            format!("in memory: ALTS+PFS first contact vs rustls full ({full_name}) [like for like]"),
            pfs,
            full,
            Goal::AtLeast(1.5),
            s[4],
            s[5],
        ),
        row(
            "hs_full_warm_vs_rustls_resumed",
            format!("in memory: ALTS warm full vs rustls resumed ({res_name})"),
            warm,
            res,
            Goal::AtLeast(10.0),
            s[6],
            s[7],
        ),
        row(
            "hs_resumed_vs_rustls_resumed",
            format!("in memory: ALTS resumed vs rustls resumed ({res_name})"),
            resumed,
            res,
            Goal::AtLeast(20.0),
            s[6],
            s[7],
        ),
    ])
}

/// Seal + open of 16 KiB records through the ALTS record layer (one frame,
/// `ALTSRP_GCM_AES128_REKEY`) against raw AES-128-GCM seal + open in place
/// from the same provider.
pub fn record_seal_open(budget: Budget) -> anyhow::Result<Row> {
    const SIZE: usize = 16 * 1024;
    let cfg = RecordConfig {
        send_frame_size: SIZE + FRAME_OVERHEAD,
        ..RecordConfig::default()
    };
    let protocol = RecordProtocol::GcmAes128Rekey;
    let (mut sealer, _) = new_record_layer(protocol, &[0x42; 44], Side::Client, cfg)?;
    let (_, mut opener) = new_record_layer(protocol, &[0x42; 44], Side::Server, cfg)?;
    let plaintext = vec![0x17u8; SIZE];
    let mut wire = BytesMut::with_capacity(SIZE + FRAME_OVERHEAD);
    let mut ours = || {
        wire.clear();
        sealer.seal(black_box(&plaintext), &mut wire).expect("seal");
        let mut total = 0;
        while let Some(p) = opener.open(&mut wire).expect("open") {
            total += p.len();
        }
        black_box(total);
    };
    let mut raw_buf = vec![0x17u8; SIZE];
    let mut seq = 0u64;
    let raw_key = raw_aead::RawAead::new();
    let mut raw = || {
        seq += 1;
        black_box(raw_key.seal_open(&mut raw_buf, seq));
    };
    let s = interleaved(budget, &mut [("alts", &mut ours), ("raw", &mut raw)]);
    let mbps = |x: &Summary| {
        let f = |v: f64| v * SIZE as f64 / 1e6;
        format!("{:.0} MB/s ({:.0}–{:.0})", f(x.median), f(x.min), f(x.max))
    };
    Ok(Row {
        key: "record_seal_open_vs_ring",
        what: format!("record seal+open 16 KiB vs raw AES-128-GCM ({})", provider_name()),
        alts: mbps(&s[0]),
        peer: mbps(&s[1]),
        ratio: s[0].median / s[1].median,
        goal: Goal::AtLeast(0.9),
        raw: vec![
            ("alts_mb_per_s", s[0].median * SIZE as f64 / 1e6),
            ("raw_mb_per_s", s[1].median * SIZE as f64 / 1e6),
        ],
    })
}

/// Raw AES-128-GCM seal + open in place, from the provider alts-core uses.
mod raw_aead {
    fn nonce(seq: u64) -> [u8; 12] {
        let mut n = [0u8; 12];
        n[..8].copy_from_slice(&seq.to_le_bytes());
        n
    }

    /// An AES-128-GCM key of ring or aws-lc-rs, whichever alts-core uses.
    pub enum RawAead {
        Ring(Box<ring::aead::LessSafeKey>),
        AwsLc(aws_lc_rs::aead::LessSafeKey),
    }

    impl RawAead {
        pub fn new() -> Self {
            let k = [0x42; 16];
            if super::provider_name() == "aws-lc-rs" {
                use aws_lc_rs::aead::{AES_128_GCM, LessSafeKey, UnboundKey};
                Self::AwsLc(LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &k).expect("key")))
            } else {
                use ring::aead::{AES_128_GCM, LessSafeKey, UnboundKey};
                Self::Ring(Box::new(LessSafeKey::new(
                    UnboundKey::new(&AES_128_GCM, &k).expect("key"),
                )))
            }
        }

        /// Seals `buf` in place with nonce `seq`, then opens it again.
        pub fn seal_open(&self, buf: &mut [u8], seq: u64) -> usize {
            match self {
                Self::Ring(key) => {
                    use ring::aead::{Aad, Nonce};
                    let n = || Nonce::assume_unique_for_key(nonce(seq));
                    let tag = key.seal_in_place_separate_tag(n(), Aad::empty(), buf);
                    let plain =
                        key.open_in_place_separate_tag(n(), Aad::empty(), tag.expect("seal"), buf, 0..);
                    plain.expect("open").len()
                }
                Self::AwsLc(key) => {
                    use aws_lc_rs::aead::{Aad, Nonce};
                    let n = || Nonce::assume_unique_for_key(nonce(seq));
                    let tag = key
                        .seal_in_place_separate_tag(n(), Aad::empty(), buf)
                        .expect("seal");
                    let plain = key.open_in_place_separate_tag(n(), Aad::empty(), tag.as_ref(), buf);
                    plain.expect("open").len()
                }
            }
        }
    }
}
