//! Over loopback TCP, tonic on both sides: new connection → first response,
//! unary calls and streaming on one connection, and server memory per open
//! connection (the server in a child process).

use std::io::BufRead as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alts_examples::EchoService;
use alts_examples::echo::echo_client::EchoClient;
use alts_examples::echo::echo_server::EchoServer;
use alts_examples::echo::{EchoRequest, StreamRequest};
use rustls::HandshakeKind;
use tokio::net::TcpListener;
use tokio_stream::StreamExt as _;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};
use tonic_alts::{AltsAcceptor, AltsConfig, AltsConnector, CredentialFiles};

use crate::alts::{AltsPki, SERVER_ID, resumption_keys};
use crate::stats::{Summary, us};
use crate::tls::{self, Provider};
use crate::{Budget, Goal, Row};

fn endpoint(addr: SocketAddr) -> anyhow::Result<Endpoint> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))?.tcp_nodelay(true))
}

async fn h2c_server() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    tokio::spawn(
        Server::builder()
            .add_service(EchoServer::new(EchoService))
            .serve_with_incoming(incoming),
    );
    Ok(addr)
}

async fn alts_server(acceptor: AltsAcceptor) -> anyhow::Result<SocketAddr> {
    let incoming = acceptor.bind("127.0.0.1:0").await?;
    let addr = incoming.local_addr();
    tokio::spawn(
        Server::builder()
            .add_service(EchoServer::new(EchoService))
            .serve_with_incoming(incoming),
    );
    Ok(addr)
}

async fn tls_server(config: Arc<rustls::ServerConfig>) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(
        Server::builder()
            .add_service(EchoServer::new(EchoService))
            .serve_with_incoming(tls::incoming(listener, config)),
    );
    Ok(addr)
}

/// How a client connects.
#[derive(Clone)]
enum Dial {
    H2c,
    Alts(AltsConfig),
    Tls(Arc<rustls::ClientConfig>),
}

/// What a connection turned out to be (for checking resumption).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Plain,
    Full,
    Resumed,
}

/// Opens a channel to `addr`.
async fn dial(addr: SocketAddr, how: &Dial) -> anyhow::Result<(Channel, Kind)> {
    let ep = endpoint(addr)?;
    Ok(match how {
        Dial::H2c => (ep.connect().await?, Kind::Plain),
        Dial::Alts(cfg) => {
            let connector = AltsConnector::for_endpoint(&ep, cfg.clone()).target_identity(SERVER_ID);
            let ch = ep.connect_with_connector(connector.clone()).await?;
            let resumed = connector.last_peer().is_some_and(|p| p.resumed());
            (ch, if resumed { Kind::Resumed } else { Kind::Full })
        }
        Dial::Tls(cfg) => {
            let kinds = Arc::new(Mutex::new(Vec::new()));
            let connector = tls::TlsConnector {
                addr,
                config: cfg.clone(),
                kinds: kinds.clone(),
            };
            let ch = ep.connect_with_connector(connector).await?;
            let kind = match kinds.lock().expect("kinds").last() {
                Some(HandshakeKind::Resumed) => Kind::Resumed,
                _ => Kind::Full,
            };
            (ch, kind)
        }
    })
}

fn small_request() -> EchoRequest {
    EchoRequest {
        message: "ping".into(),
        payload: vec![],
    }
}

/// A new connection, used for one unary call.
async fn used_client(addr: SocketAddr, how: &Dial) -> anyhow::Result<(EchoClient<Channel>, Kind)> {
    let (ch, kind) = dial(addr, how).await?;
    let mut client = EchoClient::new(ch);
    client.unary(small_request()).await?;
    Ok((client, kind))
}

/// New connection → first unary response.
async fn connect_once(addr: SocketAddr, how: &Dial) -> anyhow::Result<(Duration, Kind)> {
    let start = Instant::now();
    let (_, kind) = used_client(addr, how).await?;
    Ok((start.elapsed(), kind))
}

/// One connection mode of the latency table.
struct Mode {
    name: &'static str,
    addr: SocketAddr,
    /// One dial setting per sample (first contact) or one shared.
    dials: Vec<Dial>,
    expect: Kind,
    samples: Vec<f64>,
}

impl Mode {
    fn new(name: &'static str, addr: SocketAddr, dials: Vec<Dial>, expect: Kind) -> Self {
        Self {
            name,
            addr,
            dials,
            expect,
            samples: Vec::new(),
        }
    }

    async fn run(&mut self, n: usize) -> anyhow::Result<()> {
        for _ in 0..n {
            let i = self.samples.len() % self.dials.len();
            let (d, kind) = connect_once(self.addr, &self.dials[i]).await?;
            anyhow::ensure!(
                kind == self.expect,
                "{}: connection was {kind:?}, expected {:?}",
                self.name,
                self.expect
            );
            self.samples.push(us(d));
        }
        Ok(())
    }

    fn summary(&self) -> (f64, f64) {
        let s = Summary::of(&mut self.samples.clone());
        (s.median, s.p99)
    }
}

fn ms(v: f64) -> String {
    format!("{:.3} ms", v / 1e3)
}

/// The five connect rows.
pub async fn connect_latency(budget: Budget) -> anyhow::Result<Vec<Row>> {
    let mut pki = AltsPki::new()?;
    let alts_addr = alts_server(AltsAcceptor::new(
        pki.server_config()?.resumption(resumption_keys()?),
    ))
    .await?;
    let h2c_addr = h2c_server().await?;
    let tls_pki = tls::Pki::new()?;

    let total = budget.rounds * budget.connects;
    let mut first = Vec::with_capacity(total);
    let mut first_pfs = Vec::with_capacity(total);
    for _ in 0..total {
        first.push(Dial::Alts(pki.fresh_client()?));
        first_pfs.push(Dial::Alts(pki.fresh_client()?.pfs(true)));
    }
    let resumed = pki.fresh_client()?.resumption(resumption_keys()?);
    let repeat = pki.fresh_client()?;

    let mut modes = vec![
        Mode::new("h2c", h2c_addr, vec![Dial::H2c], Kind::Plain),
        Mode::new("alts_first", alts_addr, first, Kind::Full),
        Mode::new("alts_pfs_first", alts_addr, first_pfs, Kind::Full),
        Mode::new(
            "alts_resumed",
            alts_addr,
            vec![Dial::Alts(resumed)],
            Kind::Resumed,
        ),
        Mode::new("alts_repeat", alts_addr, vec![Dial::Alts(repeat)], Kind::Full),
    ];
    for p in Provider::ALL {
        let full_addr = tls_server(tls_pki.server_config(p, false)?).await?;
        let mut fresh = Vec::with_capacity(total);
        for i in 0..total {
            fresh.push(Dial::Tls(tls_pki.client_config(p, &tls_pki.client(i)?, false)?));
        }
        modes.push(Mode::new(
            if p == Provider::Ring {
                "rustls_ring_full"
            } else {
                "rustls_aws_full"
            },
            full_addr,
            fresh,
            Kind::Full,
        ));
        let res_addr = tls_server(tls_pki.server_config(p, true)?).await?;
        let leaf = tls_pki.client(total + 1)?;
        modes.push(Mode::new(
            if p == Provider::Ring {
                "rustls_ring_resumed"
            } else {
                "rustls_aws_resumed"
            },
            res_addr,
            vec![Dial::Tls(tls_pki.client_config(p, &leaf, true)?)],
            Kind::Resumed,
        ));
    }
    // Warm-up: the first connection of a reused config is a full handshake
    // (and fills the caches); a few more warm the runtime and allocator.
    for m in &mut modes {
        let dial = m.dials[0].clone();
        for _ in 0..3 {
            connect_once(m.addr, &dial).await?;
        }
    }
    for _ in 0..budget.rounds {
        for m in &mut modes {
            m.run(budget.connects).await?;
        }
    }
    let get = |name: &str| modes.iter().find(|m| m.name == name).expect("mode").summary();
    let (h2c, first, pfs, resumed, repeat) = (
        get("h2c"),
        get("alts_first"),
        get("alts_pfs_first"),
        get("alts_resumed"),
        get("alts_repeat"),
    );
    let (ring_full, aws_full) = (get("rustls_ring_full"), get("rustls_aws_full"));
    let (ring_res, aws_res) = (get("rustls_ring_resumed"), get("rustls_aws_resumed"));
    let faster = |a: (f64, f64), b: (f64, f64)| if a.0 <= b.0 { (a, "ring") } else { (b, "aws-lc-rs") };
    let (full, full_name) = faster(ring_full, aws_full);
    let (res, res_name) = faster(ring_res, aws_res);
    let row = |key,
               what: String,
               a: (f64, f64),
               p: (f64, f64),
               p99: bool,
               goal,
               providers: Option<((f64, f64), (f64, f64))>| {
        let pick = |x: (f64, f64)| if p99 { x.1 } else { x.0 };
        let mut raw = vec![
            ("alts_p50_us", a.0),
            ("alts_p99_us", a.1),
            ("peer_p50_us", p.0),
            ("peer_p99_us", p.1),
        ];
        // Both rustls providers, where the peer is rustls.
        if let Some((ring, aws)) = providers {
            raw.extend([("rustls_ring_p50_us", ring.0), ("rustls_aws_lc_rs_p50_us", aws.0)]);
        }
        Row {
            key,
            what,
            alts: format!("{} (p99 {})", ms(a.0), ms(a.1)),
            peer: format!("{} (p99 {})", ms(p.0), ms(p.1)),
            ratio: pick(a) / pick(p),
            goal,
            raw,
        }
    };
    Ok(vec![
        row(
            "connect_p50_first_contact_vs_rustls",
            format!("connect→response p50: ALTS first contact vs rustls full ({full_name})"),
            first,
            full,
            false,
            Goal::AtMost(0.6),
            Some((ring_full, aws_full)),
        ),
        row(
            "connect_p50_pfs_first_contact_vs_rustls",
            format!(
                "connect→response p50: ALTS+PFS first contact vs rustls full ({full_name}) [like for like]"
            ),
            pfs,
            full,
            false,
            Goal::AtMost(0.7),
            Some((ring_full, aws_full)),
        ),
        row(
            "connect_p99_first_contact_vs_rustls",
            format!("connect→response p99: ALTS first contact vs rustls full ({full_name})"),
            first,
            full,
            true,
            Goal::None,
            Some((ring_full, aws_full)),
        ),
        row(
            "connect_p50_resumed_vs_rustls_resumed",
            format!("connect→response p50: ALTS resumed vs rustls resumed ({res_name})"),
            resumed,
            res,
            false,
            Goal::AtMost(0.6),
            Some((ring_res, aws_res)),
        ),
        row(
            "connect_p50_repeat_vs_h2c",
            "connect→response p50: ALTS repeat contact (defaults: warm full) vs h2c".into(),
            repeat,
            h2c,
            false,
            Goal::AtMost(1.25),
            None,
        ),
    ])
}

/// Bytes per second of one server stream of `n` 64 KiB messages.
async fn stream_rate(client: &mut EchoClient<Channel>, n: u32) -> anyhow::Result<f64> {
    let start = Instant::now();
    let mut s = client
        .server_stream(StreamRequest {
            count: n,
            payload_size: 64 * 1024,
        })
        .await?
        .into_inner();
    let mut bytes = 0usize;
    while let Some(m) = s.next().await {
        bytes += m?.payload.len();
    }
    anyhow::ensure!(bytes == n as usize * 64 * 1024, "short stream");
    Ok(bytes as f64 / start.elapsed().as_secs_f64())
}

/// Unary overhead over h2c and streaming throughput, each on one warm
/// connection per side.
pub async fn warm_connection(budget: Budget) -> anyhow::Result<Vec<Row>> {
    let mut pki = AltsPki::new()?;
    let alts_addr = alts_server(AltsAcceptor::new(pki.server_config()?)).await?;
    let h2c_addr = h2c_server().await?;
    let tls_pki = tls::Pki::new()?;
    let leaf = tls_pki.client(0)?;

    let mut sides: Vec<(&str, EchoClient<Channel>)> = vec![
        ("h2c", EchoClient::new(dial(h2c_addr, &Dial::H2c).await?.0)),
        (
            "alts",
            EchoClient::new(dial(alts_addr, &Dial::Alts(pki.fresh_client()?)).await?.0),
        ),
    ];
    for p in Provider::ALL {
        let addr = tls_server(tls_pki.server_config(p, false)?).await?;
        let ch = dial(addr, &Dial::Tls(tls_pki.client_config(p, &leaf, false)?))
            .await?
            .0;
        sides.push((p.name(), EchoClient::new(ch)));
    }
    let max = 4 * 1024 * 1024;
    for (_, c) in &mut sides {
        *c = c.clone().max_decoding_message_size(max);
        for _ in 0..50 {
            c.unary(small_request()).await?;
        }
        stream_rate(c, 16).await?;
    }

    // Unary: per-call latency on one warm connection, ALTS vs h2c.
    let mut lat = [Vec::new(), Vec::new()];
    for _ in 0..budget.rounds {
        for (i, (_, c)) in sides.iter_mut().take(2).enumerate() {
            for _ in 0..budget.unary {
                let t = Instant::now();
                c.unary(small_request()).await?;
                lat[i].push(us(t.elapsed()));
            }
        }
    }
    let [h2c_lat, alts_lat] = lat.map(|mut v| Summary::of(&mut v));
    let overhead = alts_lat.median / h2c_lat.median - 1.0;

    // Streaming: 64 KiB messages, bytes/s.
    let mut tput = vec![Vec::new(); sides.len()];
    for _ in 0..budget.rounds {
        for (i, (_, c)) in sides.iter_mut().enumerate() {
            tput[i].push(stream_rate(c, budget.stream_messages).await?);
        }
    }
    let t: Vec<Summary> = tput.iter_mut().map(|v| Summary::of(v)).collect();
    let (h2c, alts, ring, aws) = (t[0], t[1], t[2], t[3]);
    let (best, best_name) = if ring.median >= aws.median {
        (ring, "ring")
    } else {
        (aws, "aws-lc-rs")
    };
    let mbs = |s: &Summary| {
        format!(
            "{:.0} MB/s ({:.0}–{:.0})",
            s.median / 1e6,
            s.min / 1e6,
            s.max / 1e6
        )
    };
    let lat_fmt = |s: &Summary| format!("{:.1} µs (p99 {:.1})", s.median, s.p99);
    Ok(vec![
        Row {
            key: "unary_p50_overhead_vs_h2c",
            what: "unary p50 on a warm connection: ALTS overhead over h2c (fraction)".into(),
            alts: lat_fmt(&alts_lat),
            peer: lat_fmt(&h2c_lat),
            ratio: overhead,
            goal: Goal::AtMost(0.05),
            raw: vec![("alts_p50_us", alts_lat.median), ("h2c_p50_us", h2c_lat.median)],
        },
        Row {
            key: "stream_tput_vs_rustls",
            what: format!("streaming 64 KiB messages: ALTS vs rustls ({best_name})"),
            alts: mbs(&alts),
            peer: mbs(&best),
            ratio: alts.median / best.median,
            goal: Goal::AtLeast(1.1),
            raw: vec![
                ("alts_bytes_per_s", alts.median),
                ("rustls_ring_bytes_per_s", ring.median),
                ("rustls_aws_lc_rs_bytes_per_s", aws.median),
            ],
        },
        Row {
            key: "stream_tput_vs_h2c",
            what: "streaming 64 KiB messages: ALTS vs h2c".into(),
            alts: mbs(&alts),
            peer: mbs(&h2c),
            ratio: alts.median / h2c.median,
            goal: Goal::AtLeast(0.9),
            raw: vec![("alts_bytes_per_s", alts.median), ("h2c_bytes_per_s", h2c.median)],
        },
    ])
}

// ------------------------------------------------------------------ memory

/// The resident set size of process `pid`, in bytes.
fn rss(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS for {pid}"))?;
    Ok(kb * 1024)
}

/// A server in a child process (this program with `--serve-memory`).
struct Child {
    child: std::process::Child,
    addr: SocketAddr,
}

impl Child {
    fn start(kind: &str, dir: &Path) -> anyhow::Result<Self> {
        Self::start_with(kind, dir, None)
    }

    /// Like [`Child::start`], with `workers` runtime threads.
    fn start_with(kind: &str, dir: &Path, workers: Option<usize>) -> anyhow::Result<Self> {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.args(["--serve-memory", kind, "--dir"]).arg(dir);
        if let Some(n) = workers {
            cmd.args(["--workers", &n.to_string()]);
        }
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).spawn()?;
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line)?;
        let port: u16 = line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| anyhow::anyhow!("memory server said {line:?}"))?;
        Ok(Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        })
    }

    /// Server RSS growth per connection over `n` open, idle connections
    /// (each made, used for one call, then left open).
    async fn bytes_per_conn(&self, how: &Dial, n: usize) -> anyhow::Result<f64> {
        let pid = self.child.id();
        // Warm up the server's runtime and allocator, then close.
        let mut warm = Vec::new();
        for _ in 0..50 {
            warm.push(used_client(self.addr, how).await?.0);
        }
        drop(warm);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = rss(pid)?;
        let mut open = Vec::with_capacity(n);
        for _ in 0..n {
            open.push(used_client(self.addr, how).await?.0);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = rss(pid)?;
        drop(open);
        Ok(after.saturating_sub(before) as f64 / n as f64)
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Server RSS per open idle connection, ALTS vs rustls.
pub async fn idle_memory(budget: Budget) -> anyhow::Result<Row> {
    let mut pki = AltsPki::new()?;
    let tls_pki = tls::Pki::new()?;
    tls_pki.write_server_files(pki.dir())?;
    let alts_client = Dial::Alts(pki.fresh_client()?);
    let tls_client = Dial::Tls(tls_pki.client_config(Provider::AwsLc, &tls_pki.client(0)?, false)?);
    let n = budget.idle_conns;
    let alts = Child::start("alts", pki.dir())?
        .bytes_per_conn(&alts_client, n)
        .await?;
    let tls = Child::start("tls", pki.dir())?
        .bytes_per_conn(&tls_client, n)
        .await?;
    let kib = |b: f64| format!("{:.1} KiB", b / 1024.0);
    Ok(Row {
        key: "idle_mem_per_conn_vs_rustls",
        what: format!("server RSS per open idle connection over {n}: ALTS vs rustls"),
        alts: kib(alts),
        peer: kib(tls),
        ratio: alts / tls,
        goal: Goal::AtMost(1.0),
        raw: vec![("alts_bytes", alts), ("rustls_bytes", tls)],
    })
}

/// The child side of the memory figure: serve until stdin closes.
pub async fn serve_for_memory(kind: &str, dir: &Path) -> anyhow::Result<()> {
    let addr = match kind {
        "alts" | "alts-scaling" => {
            let files = CredentialFiles::new(dir.join("backend"), dir.join("root.pub")).accept_any_issuer();
            let mut acceptor = AltsAcceptor::new(AltsConfig::from_files(files)?);
            if kind == "alts-scaling" {
                // Every client is on 127.0.0.1: lift the per-source and
                // pending caps that protect a real server from one noisy
                // address.
                acceptor = acceptor.max_per_source(1 << 16).max_pending(1 << 16);
            }
            alts_server(acceptor).await?
        }
        "tls" => tls_server(tls::server_config_from_files(dir, Provider::AwsLc)?).await?,
        other => anyhow::bail!("unknown server kind {other:?}"),
    };
    println!("PORT {}", addr.port());
    // Serve until the parent closes our stdin (or dies).
    tokio::task::spawn_blocking(|| std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new()))
        .await??;
    Ok(())
}

// ----------------------------------------------------------------- scaling

/// ALTS connections (connect → first response, warm caches) per second and
/// the server's peak RSS with `clients` concurrent clients for `secs`.
async fn scaling_point(
    child: &Child,
    dial: &Dial,
    clients: usize,
    secs: f64,
) -> anyhow::Result<(f64, u64, u64)> {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (addr, dial) = (child.addr, dial.clone());
        tasks.spawn(async move {
            let (mut ok, mut failed) = (0u64, 0u64);
            while Instant::now() < deadline {
                match connect_once(addr, &dial).await {
                    Ok(_) => ok += 1,
                    Err(_) => failed += 1,
                }
            }
            (ok, failed)
        });
    }
    let start = Instant::now();
    let pid = child.child.id();
    let mut peak = 0;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        peak = peak.max(rss(pid).unwrap_or(0));
    }
    let (mut ok, mut failed) = (0, 0);
    while let Some(r) = tasks.join_next().await {
        let (o, f) = r?;
        ok += o;
        failed += f;
    }
    Ok((ok as f64 / start.elapsed().as_secs_f64(), peak, failed))
}

/// The scaling table: ALTS server in a child process on one or two worker
/// threads, 1 to 1,000 concurrent clients in this process.
pub async fn scaling(budget: Budget, json: bool) -> anyhow::Result<()> {
    let mut pki = AltsPki::new()?;
    let dial = Dial::Alts(pki.fresh_client()?);
    let mut obj = serde_json::Map::new();
    println!(
        "\n{:>8} {:>8} {:>14} {:>14} {:>8}",
        "workers", "clients", "connections/s", "server RSS", "failed"
    );
    for workers in [1, 2] {
        let child = Child::start_with("alts-scaling", pki.dir(), Some(workers))?;
        connect_once(child.addr, &dial).await?;
        let idle = rss(child.child.id())?;
        for clients in [1, 10, 100, 1000] {
            let (rate, peak, failed) = scaling_point(&child, &dial, clients, budget.scaling_secs).await?;
            println!(
                "{workers:>8} {clients:>8} {rate:>14.0} {:>11.1} MiB {failed:>8}",
                peak as f64 / (1 << 20) as f64
            );
            obj.insert(
                format!("scaling_w{workers}_c{clients}_conn_per_s"),
                rate.round().into(),
            );
            obj.insert(format!("scaling_w{workers}_c{clients}_rss_bytes"), peak.into());
            obj.insert(format!("scaling_w{workers}_c{clients}_failed"), failed.into());
        }
        obj.insert(format!("scaling_w{workers}_idle_rss_bytes"), idle.into());
    }
    println!(
        "\nEach client loops: new TCP connection, ALTS handshake (warm caches), one unary call, close. \
         Clients run in this process; the server runs in a child process."
    );
    if json {
        println!("{}", serde_json::Value::Object(obj));
    }
    Ok(())
}

// ------------------------------------------------------------------- trace

/// Prints a timestamped trace of one ALTS connection: handshake bytes
/// written and read by each side, record writes, and HTTP/2 frames.
pub async fn trace_one_connection() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "compare=info,tonic_alts=trace,h2::codec=debug".into()),
        )
        .with_timer(tracing_subscriber::fmt::time::uptime())
        .with_thread_ids(true)
        .init();
    let mut pki = AltsPki::new()?;
    let addr = alts_server(AltsAcceptor::new(pki.server_config()?)).await?;
    let client = pki.fresh_client()?;
    // One connection to warm both sides' caches, then the traced one.
    connect_once(addr, &Dial::Alts(client.clone())).await?;
    tokio::time::sleep(Duration::from_millis(50)).await;
    tracing::info!("---- traced connection: warm caches ----");
    let (d, _) = connect_once(addr, &Dial::Alts(client)).await?;
    tokio::time::sleep(Duration::from_millis(20)).await;
    tracing::info!(elapsed_us = us(d) as u64, "---- connect → first response ----");
    Ok(())
}
