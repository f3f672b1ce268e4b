//! Worker processes the coordinator starts on this machine: the `worker` binary beside its own,
//! logs streamed with a rank prefix, exits reported, replacements started on request, and all
//! of them stopped when the handle is dropped.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cluster::ClusterError;
use crate::cluster::protocol::auth::TOKEN_ENV;
use crate::logging::LOG_FORMAT_ENV;
use crate::telemetry::METRICS_LISTEN_ENV;

/// What every local worker is started with.
#[derive(Clone, Debug)]
pub struct SpawnOptions {
    /// How many.
    pub count: usize,
    /// The coordinator's URL.
    pub coordinator: String,
    /// With TLS: the CA the workers trust for the coordinator's certificate.
    pub tls_ca: Option<PathBuf>,
    /// The run's token (passed in the environment, not on the command line).
    pub token: String,
    /// Compute threads for each.
    pub threads: usize,
    /// Dataset folder to pass on.
    pub data_dir: Option<PathBuf>,
    /// Device for each.
    pub device: String,
    /// HTTP/2 keepalive interval, seconds.
    pub keepalive: u64,
}

/// The local workers; dropping this kills any still alive.
pub struct LocalWorkers {
    bin: PathBuf,
    opts: SpawnOptions,
    children: Vec<Child>,
    /// Exits already reported.
    reported: Vec<bool>,
    /// Replacements started so far.
    respawned: usize,
}

/// Replacements a run may start in all: enough for every worker to fail a few times, few enough
/// that a worker that can never start does not loop forever.
const MAX_RESPAWNS_PER_WORKER: usize = 4;

/// The `worker` binary next to the running executable.
pub fn worker_binary() -> Result<PathBuf, ClusterError> {
    let exe = std::env::current_exe().map_err(|source| ClusterError::Io {
        what: "locating this executable".into(),
        source,
    })?;
    let path = exe.with_file_name("worker");
    if !path.exists() {
        return Err(ClusterError::Setup(format!(
            "the worker binary was not found at {} (build the workspace with `cargo build --release`)",
            path.display()
        )));
    }
    Ok(path)
}

fn forward_logs(child: &mut Child, prefix: String) {
    let streams = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    ];
    for stream in streams.into_iter().flatten() {
        let prefix = prefix.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                crate::logging::forward_line(&prefix, &line);
            }
        });
    }
}

impl LocalWorkers {
    /// Starts the workers.
    pub fn spawn(opts: SpawnOptions) -> Result<Self, ClusterError> {
        let mut workers = LocalWorkers {
            bin: worker_binary()?,
            opts,
            children: Vec::new(),
            reported: Vec::new(),
            respawned: 0,
        };
        for rank in 0..workers.opts.count {
            workers.start(Some(rank as u32))?;
        }
        Ok(workers)
    }

    fn start(&mut self, rank: Option<u32>) -> Result<(), ClusterError> {
        let o = &self.opts;
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--coordinator")
            .arg(&o.coordinator)
            .arg("--threads")
            .arg(o.threads.to_string())
            .arg("--device")
            .arg(&o.device)
            .arg("--keepalive")
            .arg(o.keepalive.to_string())
            // A local worker whose coordinator is gone has nothing to go back to: the
            // coordinator starts new ones when it restarts.
            .arg("--reconnect-timeout")
            .arg("0")
            .env(TOKEN_ENV, &o.token)
            // Its lines join the coordinator's stderr, so they must be in the same format.
            .env(LOG_FORMAT_ENV, crate::logging::format().name())
            .env("RUST_LOG", crate::logging::child_filter())
            // The coordinator's metrics address, if it came from the environment, is taken.
            .env_remove(METRICS_LISTEN_ENV)
            // The coordinator pinned its own (single) compute thread; each worker gets its share.
            .env("CANDLE_NUM_THREADS", o.threads.to_string())
            .env("RAYON_NUM_THREADS", o.threads.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(rank) = rank {
            cmd.arg("--rank").arg(rank.to_string());
        }
        if let Some(dir) = &o.data_dir {
            cmd.arg("--data-dir").arg(dir);
        }
        if let Some(ca) = &o.tls_ca {
            cmd.arg("--tls-ca").arg(ca);
        }
        let mut child = cmd.spawn().map_err(|source| ClusterError::Io {
            what: format!("starting {}", self.bin.display()),
            source,
        })?;
        let prefix = match rank {
            Some(rank) => format!("[rank {rank}]"),
            None => format!("[worker {}]", child.id()),
        };
        forward_logs(&mut child, prefix);
        self.children.push(child);
        self.reported.push(false);
        Ok(())
    }

    /// Starts a replacement (it takes the lowest free rank), unless the run already started
    /// as many as it may.
    pub fn respawn(&mut self) -> Result<(), ClusterError> {
        if self.respawned >= MAX_RESPAWNS_PER_WORKER * self.opts.count.max(1) {
            return Err(ClusterError::Setup(format!(
                "{} replacement workers were started already; not starting another",
                self.respawned
            )));
        }
        self.respawned += 1;
        self.start(None)
    }

    /// Processes that exited since the last call, as "local worker process PID (STATUS)".
    pub fn exited(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        for (child, reported) in self.children.iter_mut().zip(&mut self.reported) {
            if *reported {
                continue;
            }
            if let Ok(Some(status)) = child.try_wait() {
                *reported = true;
                out.push(format!(
                    "local worker process {} exited ({status})",
                    child.id()
                ));
            }
        }
        out
    }

    /// Kills the local worker process `pid`, if it is one of these (a lost worker that may
    /// still be running, stopped or stuck).
    pub fn kill(&mut self, pid: u32) {
        if let Some(child) = self.children.iter_mut().find(|c| c.id() == pid) {
            let _ = child.kill();
        }
    }

    /// Waits up to `limit` for every worker to exit by itself, then kills the rest.
    pub fn finish(mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self
                .children
                .iter_mut()
                .all(|c| matches!(c.try_wait(), Ok(Some(_))))
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for LocalWorkers {
    fn drop(&mut self) {
        for child in &mut self.children {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}
