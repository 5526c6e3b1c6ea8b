//! Shared set-up of the stock-grpcio tests: the fake-GCE namespace probe, the
//! grpcio venv, and the loud SKIP / summary lines `.ci/run` prints.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Instant;

/// Exit code of `netns-run.sh` when namespaces are not permitted.
pub const SKIP_CODE: i32 = 77;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A stock-grpcio test: its name (for SKIP and summary lines) and log dir.
pub struct StockTest {
    pub name: &'static str,
    pub logs: PathBuf,
    pub netns: PathBuf,
    pub python: String,
}

impl StockTest {
    /// Probes namespaces (skipping loudly when they are not permitted, before
    /// any venv work) and prepares the grpcio venv (failing if it cannot).
    pub fn prepare(name: &'static str, log_dir: &str) -> Option<Self> {
        let root = root();
        let netns = root.join("interop/scripts/netns-run.sh");
        let logs = root.join("target/interop-logs").join(log_dir);
        let probe = Command::new(&netns)
            .arg("true")
            .output()
            .expect("run netns-run.sh");
        if probe.status.code() == Some(SKIP_CODE) {
            skip(name, &logs, String::from_utf8_lossy(&probe.stdout).trim());
            return None;
        }
        assert!(probe.status.success(), "netns-run.sh probe failed: {probe:?}");

        let t = Instant::now();
        let setup = Command::new(root.join("interop/python/setup_venv.sh"))
            .output()
            .expect("run setup_venv.sh");
        assert!(
            setup.status.success(),
            "setup_venv.sh failed (needs PyPI access the first time):\n{}",
            String::from_utf8_lossy(&setup.stderr)
        );
        let python = String::from_utf8_lossy(&setup.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .trim()
            .to_owned();
        println!("venv ready in {:.1}s: {python}", t.elapsed().as_secs_f64());
        Some(Self {
            name,
            logs,
            netns,
            python,
        })
    }

    /// Echoes a scenario's output, records it for `.ci/run`, and returns its
    /// stdout, or `None` after a loud SKIP if the scenario could not enter
    /// the namespace.
    pub fn report(&self, out: &Output) -> Option<String> {
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        println!("{stdout}");
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        summary(&self.logs, &stdout);
        if out.status.code() == Some(SKIP_CODE) {
            skip(self.name, &self.logs, stdout.trim());
            return None;
        }
        Some(stdout)
    }
}

fn skip(name: &str, logs: &PathBuf, why: &str) {
    let line = format!("SKIP: {name}: {why}");
    println!("{line}");
    eprintln!("{line}");
    summary(logs, &format!("{line}\n"));
}

/// Leaves what happened where `.ci/run` prints it (test output is captured).
fn summary(logs: &PathBuf, text: &str) {
    let _ = std::fs::create_dir_all(logs);
    let _ = std::fs::write(logs.join("summary.txt"), text);
}
