//! Helpers of the operations tests: the tools `scripts/install-ops-test-deps.sh` installs (the
//! Python environment, Prometheus, tmux), free ports, HTTP requests and waiting for files.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

/// The repository's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repository")
        .to_path_buf()
}

/// The Python of `.venv-ops` (numpy, safetensors, grpcio), or a panic saying how to make it.
pub fn venv_python() -> PathBuf {
    let python = repo_root().join(".venv-ops/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/install-ops-test-deps.sh (CI does)",
        python.display()
    );
    python
}

/// A program on the PATH, or a panic saying how to install it.
pub fn require_tool(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} is not installed: run scripts/install-ops-test-deps.sh"))
}

/// A TCP port free on the loopback now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The body of a GET, or the error in words.
pub fn http_get(url: &str) -> Result<String, String> {
    ureq::get(url)
        .call()
        .map_err(|e| e.to_string())?
        .body_mut()
        .read_to_string()
        .map_err(|e| e.to_string())
}

/// Waits until `path` holds text, failing if `child` exits first or `limit` passes.
pub fn wait_for_text(path: &Path, child: &mut Child, limit: Duration) -> String {
    let start = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && !text.is_empty()
        {
            return text;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "the process exited ({status}) before writing {}",
                path.display()
            );
        }
        assert!(
            start.elapsed() < limit,
            "{} was not written within {limit:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Kills a child and reaps it (a test's cleanup).
pub fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}
