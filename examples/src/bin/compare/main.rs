//! ALTS (tonic-alts) against tonic + rustls mutual TLS and plaintext h2c,
//! measured side by side in one process on this machine.
//!
//! ```text
//! cargo run --release -p alts-examples --bin compare -- [--quick] [--json]
//! ```
//!
//! Every figure is paired with the peer figure it is compared to, measured
//! in the same run, interleaved in rounds so that a load change on the
//! machine hits both. A ratio is ALTS ÷ peer, for rates and for times alike
//! (so a time ratio below 1 and a rate ratio above 1 favour ALTS). The table
//! says what each figure compares and whether it meets its goal; `--json`
//! ends the output with one line holding every ratio and the raw figures.
//!
//! "First contact" means neither side has seen the other: every connection
//! uses a fresh client identity and configuration (ALTS: chain and static-DH
//! caches of the server cold for that client; rustls: no session reuse).
//! TLS 1.3 always has forward secrecy; ALTS's default does not (it relies on
//! short-lived handshake certificates), so both ALTS rows are reported and
//! the PFS one is the like-for-like one.
#![forbid(unsafe_code)]

mod alts;
mod sockets;
mod stats;
mod tls;

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Compare ALTS with rustls mutual TLS and plaintext h2c.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// A shorter run (about a minute on 2 cores): fewer samples and rounds.
    #[arg(long)]
    quick: bool,
    /// End the output with one line of JSON holding every figure.
    #[arg(long)]
    json: bool,
    /// Print a timestamped trace of one ALTS connection (connect, handshake
    /// messages, HTTP/2 preface, first request and response) and exit.
    #[arg(long)]
    trace: bool,
    /// Instead of the comparison: ALTS handshakes per second and server
    /// memory with 1, 10, 100 and 1,000 concurrent clients, with the server
    /// on one and on two worker threads.
    #[arg(long)]
    scaling: bool,
    /// Internal: worker threads of `--serve-memory`'s runtime.
    #[arg(long, hide = true)]
    workers: Option<usize>,
    /// Internal: run a server for the memory measurement (`alts` or `tls`)
    /// on credentials in `--dir`, print its port and serve until stdin closes.
    #[arg(long, hide = true)]
    serve_memory: Option<String>,
    /// Internal: credentials directory of `--serve-memory`.
    #[arg(long, hide = true)]
    dir: Option<PathBuf>,
}

/// How much to measure.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    /// Rounds; every measurement interleaves its sides once per round.
    pub rounds: usize,
    /// In memory: time per side per round.
    pub slice: Duration,
    /// Connections per mode per round.
    pub connects: usize,
    /// Unary calls per side per round.
    pub unary: usize,
    /// 64 KiB messages per stream per round.
    pub stream_messages: u32,
    /// Connections held open for the memory figure.
    pub idle_conns: usize,
    /// `--scaling`: seconds per point.
    pub scaling_secs: f64,
}

impl Budget {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                rounds: 3,
                slice: Duration::from_millis(300),
                connects: 60,
                unary: 500,
                stream_messages: 256,
                idle_conns: 1000,
                scaling_secs: 1.5,
            }
        } else {
            Self {
                rounds: 7,
                slice: Duration::from_millis(700),
                connects: 150,
                unary: 2000,
                stream_messages: 512,
                idle_conns: 1000,
                scaling_secs: 3.0,
            }
        }
    }
}

/// What a ratio should be.
#[derive(Clone, Copy, Debug)]
pub enum Goal {
    /// ALTS ÷ peer at least this (rates).
    AtLeast(f64),
    /// ALTS ÷ peer at most this (times, memory).
    AtMost(f64),
    /// Reported, no goal.
    None,
}

impl Goal {
    fn met(self, ratio: f64) -> Option<bool> {
        match self {
            Goal::AtLeast(g) => Some(ratio >= g),
            Goal::AtMost(g) => Some(ratio <= g),
            Goal::None => None,
        }
    }

    fn text(self) -> String {
        match self {
            Goal::AtLeast(g) => format!("≥ {g}"),
            Goal::AtMost(g) => format!("≤ {g}"),
            Goal::None => "—".into(),
        }
    }
}

/// One compared figure.
#[derive(Clone, Debug)]
pub struct Row {
    /// JSON key of the ratio.
    pub key: &'static str,
    /// What is compared, for the table.
    pub what: String,
    /// The ALTS figure and its spread, formatted.
    pub alts: String,
    /// The peer figure and its spread, formatted.
    pub peer: String,
    /// ALTS ÷ peer.
    pub ratio: f64,
    pub goal: Goal,
    /// Raw numbers for the JSON line (`<key>_<name>`).
    pub raw: Vec<(&'static str, f64)>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.workers {
        builder.worker_threads(n);
    }
    let rt = builder.enable_all().build()?;
    if let Some(kind) = &args.serve_memory {
        let dir = args
            .dir
            .clone()
            .ok_or_else(|| anyhow::anyhow!("--serve-memory needs --dir"))?;
        return rt.block_on(sockets::serve_for_memory(kind, &dir));
    }
    if args.trace {
        return rt.block_on(sockets::trace_one_connection());
    }
    let budget = Budget::new(args.quick);
    if args.scaling {
        return rt.block_on(sockets::scaling(budget, args.json));
    }
    let started = std::time::Instant::now();
    eprintln!(
        "compare: ALTS provider {}, rustls providers ring and aws-lc-rs, {} rounds{}",
        alts::provider_name(),
        budget.rounds,
        if args.quick { " (--quick)" } else { "" }
    );

    let mut rows = Vec::new();
    eprintln!("[1/5] handshakes in memory");
    rows.extend(alts::in_memory_handshakes(budget)?);
    eprintln!("[2/5] record layer in memory");
    rows.push(alts::record_seal_open(budget)?);
    eprintln!("[3/5] connect → first response over loopback TCP, tonic on both sides");
    rows.extend(rt.block_on(sockets::connect_latency(budget))?);
    eprintln!("[4/5] unary calls and streaming on one connection");
    rows.extend(rt.block_on(sockets::warm_connection(budget))?);
    eprintln!("[5/5] server memory per open connection");
    rows.push(rt.block_on(sockets::idle_memory(budget))?);

    print_table(&rows);
    eprintln!("compare: done in {:.0} s", started.elapsed().as_secs_f64());
    if args.json {
        let mut obj = serde_json::Map::new();
        for r in &rows {
            obj.insert(r.key.into(), round(r.ratio).into());
            for (name, v) in &r.raw {
                obj.insert(format!("{}_{name}", r.key), round(*v).into());
            }
        }
        obj.insert(
            "alts_provider_aws_lc_rs".into(),
            u8::from(alts::provider_name() == "aws-lc-rs").into(),
        );
        obj.insert("quick".into(), u8::from(args.quick).into());
        println!("{}", serde_json::Value::Object(obj));
    }
    Ok(())
}

fn round(v: f64) -> f64 {
    (v * 1e4).round() / 1e4
}

fn print_table(rows: &[Row]) {
    println!(
        "\n{:<62} {:>24} {:>24} {:>8} {:>8} {:>5}",
        "figure (ALTS vs peer)", "ALTS (median, spread)", "peer (median, spread)", "ratio", "goal", "met"
    );
    for r in rows {
        let met = match r.goal.met(r.ratio) {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "",
        };
        println!(
            "{:<62} {:>24} {:>24} {:>8.3} {:>8} {:>5}",
            r.what,
            r.alts,
            r.peer,
            r.ratio,
            r.goal.text(),
            met
        );
    }
    println!(
        "\nratio = ALTS ÷ peer (times: lower is better; rates: higher is better). \
         Spreads are min–max over rounds (in-memory, throughput) or p50 and p99 (latency)."
    );
}
