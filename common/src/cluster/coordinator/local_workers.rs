//! Worker processes the coordinator starts on this machine: the `worker` binary beside its own,
//! logs streamed with a rank prefix, and all of them stopped when the handle is dropped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cluster::ClusterError;
use crate::cluster::protocol::auth::TOKEN_ENV;

/// The running local workers; dropping this kills any still alive.
pub struct LocalWorkers {
    children: Vec<Child>,
}

/// What every local worker is started with.
pub struct SpawnOptions<'a> {
    /// How many.
    pub count: usize,
    /// The coordinator's URL.
    pub coordinator: String,
    /// The run's token (passed in the environment, not on the command line).
    pub token: &'a str,
    /// Compute threads for each.
    pub threads: usize,
    /// Dataset folder to pass on.
    pub data_dir: Option<&'a Path>,
    /// Device for each.
    pub device: &'a str,
}

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

impl LocalWorkers {
    /// Starts the workers.
    pub fn spawn(opts: &SpawnOptions<'_>) -> Result<Self, ClusterError> {
        let bin = worker_binary()?;
        let mut workers = LocalWorkers {
            children: Vec::with_capacity(opts.count),
        };
        for i in 0..opts.count {
            let mut cmd = Command::new(&bin);
            cmd.arg("--rank")
                .arg(i.to_string())
                .arg("--coordinator")
                .arg(&opts.coordinator)
                .arg("--threads")
                .arg(opts.threads.to_string())
                .arg("--device")
                .arg(opts.device)
                .env(TOKEN_ENV, opts.token)
                // The coordinator pinned its own (single) compute thread; each worker gets its share.
                .env("CANDLE_NUM_THREADS", opts.threads.to_string())
                .env("RAYON_NUM_THREADS", opts.threads.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            if let Some(dir) = opts.data_dir {
                cmd.arg("--data-dir").arg(dir);
            }
            let mut child = cmd.spawn().map_err(|source| ClusterError::Io {
                what: format!("starting {}", bin.display()),
                source,
            })?;
            // Each worker asks for the rank of its start order, so the prefix names its rank.
            let prefix = format!("[rank {i}]");
            for stream in [
                child
                    .stdout
                    .take()
                    .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
                child
                    .stderr
                    .take()
                    .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            ]
            .into_iter()
            .flatten()
            {
                let prefix = prefix.clone();
                std::thread::spawn(move || {
                    for line in BufReader::new(stream).lines().map_while(Result::ok) {
                        eprintln!("{prefix} {line}");
                    }
                });
            }
            workers.children.push(child);
        }
        Ok(workers)
    }

    /// Process ids, in start order.
    pub fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }

    /// The first of `pids` that has exited (a zombie waiting to be reaped), on Linux: a
    /// worker that dies at start (no GPU, bad data folder) must fail the run at once, not after
    /// the join timeout.
    pub fn first_exited(pids: &[u32]) -> Option<u32> {
        pids.iter().copied().find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                // "pid (comm) S ...": the state follows the last ')'.
                stat.rsplit_once(')')
                    .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
            })
        })
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
