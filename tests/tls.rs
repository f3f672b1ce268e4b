//! TLS and mutual TLS between the real binaries, with certificates made here: the run works
//! over TLS; a worker trusting another CA, a plaintext worker on the TLS port, and (with mutual
//! TLS) a worker without a client certificate are all refused; a stock Python grpcio health
//! client trusting the CA gets SERVING.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use integration_tests::ops_util::{repo_root, venv_python};
use integration_tests::{bin, read_results, run_with_limit, shared_dataset};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair,
};

const TOKEN: &str = "tls-test-token-0123456789";

/// PEM files of two unrelated CAs, a server certificate for 127.0.0.1 and a client
/// certificate, both issued by the first CA.
struct Pki {
    ca: PathBuf,
    other_ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

/// Every certificate gets its own common name: rcgen's default is one name for all, and
/// OpenSSL (Python's grpcio) takes a leaf whose subject is its issuer's for self-signed.
fn named(mut params: CertificateParams, name: &str) -> CertificateParams {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    params.distinguished_name = dn;
    params
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = named(CertificateParams::new(Vec::<String>::new()).unwrap(), name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn pki(dir: &Path) -> Pki {
    let (ca, other) = (ca("siamese test CA"), ca("another CA"));
    let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose| {
        let cn = names[0].clone();
        let mut params = named(CertificateParams::new(names).unwrap(), &cn);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let (server_cert, server_key) = leaf(names, ExtendedKeyUsagePurpose::ServerAuth);
    let (client_cert, client_key) = leaf(
        vec!["worker".to_string()],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    Pki {
        ca: write(dir, "ca.pem", &ca.pem()),
        other_ca: write(dir, "other-ca.pem", &other.pem()),
        server_cert: write(dir, "server.pem", &server_cert),
        server_key: write(dir, "server-key.pem", &server_key),
        client_cert: write(dir, "client.pem", &client_cert),
        client_key: write(dir, "client-key.pem", &client_key),
    }
}

/// A coordinator serving TLS on a free port, waiting for one remote worker; its address.
fn tls_coordinator(dir: &Path, pki: &Pki, mutual: bool) -> (Child, String) {
    let addr_file = dir.join("addr");
    let mut cmd = Command::new(bin("coordinator"));
    cmd.args(["--workers", "1", "--no-spawn", "--dataset", "mnist"])
        .args([
            "--train-subset",
            "2000",
            "--epochs",
            "1",
            "--max-steps",
            "10",
        ])
        .args([
            "--val-pairs",
            "100",
            "--test-pairs",
            "100",
            "--join-timeout",
            "60",
        ])
        .arg("--data-dir")
        .arg(shared_dataset("mnist"))
        .arg("--out")
        .arg(dir.join("run.json"))
        .arg("--address-file")
        .arg(&addr_file)
        .arg("--tls-cert")
        .arg(&pki.server_cert)
        .arg("--tls-key")
        .arg(&pki.server_key)
        .env("SIAMESE_TOKEN", TOKEN);
    if mutual {
        cmd.arg("--tls-client-ca").arg(&pki.ca);
    }
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..600 {
        if let Ok(addr) = std::fs::read_to_string(&addr_file)
            && !addr.is_empty()
        {
            return (child, addr);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the coordinator never wrote its address");
}

fn worker(url: &str, extra: &[&Path], flags: &[&str]) -> Command {
    let mut cmd = Command::new(bin("worker"));
    cmd.args([
        "--coordinator",
        url,
        "--threads",
        "1",
        "--connect-timeout",
        "3",
    ])
    .args(flags)
    .arg("--data-dir")
    .arg(shared_dataset("mnist"))
    .env("SIAMESE_TOKEN", TOKEN);
    for (i, path) in extra.iter().enumerate() {
        // Pairs of flag and path: --tls-ca P, --tls-cert P, --tls-key P.
        let flag = ["--tls-ca", "--tls-cert", "--tls-key"][i];
        cmd.arg(flag).arg(path);
    }
    cmd
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn finish(coordinator: Child) -> Output {
    let out = coordinator.wait_with_output().unwrap();
    assert!(out.status.success(), "coordinator: {}", stderr(&out));
    out
}

#[test]
fn training_runs_over_tls_and_untrusted_or_plaintext_workers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let (coordinator, addr) = tls_coordinator(dir.path(), &pki, false);
    let https = format!("https://{addr}");
    let limit = Duration::from_secs(60);

    let untrusted = run_with_limit(&mut worker(&https, &[&pki.other_ca], &[]), limit);
    assert!(!untrusted.status.success());
    let err = stderr(&untrusted);
    assert!(
        err.contains("certificate") || err.contains("UnknownIssuer"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");

    let plaintext = run_with_limit(&mut worker(&format!("http://{addr}"), &[], &[]), limit);
    assert!(!plaintext.status.success(), "a plaintext worker got in");

    let good = run_with_limit(
        &mut worker(&https, &[&pki.ca], &[]),
        Duration::from_secs(120),
    );
    assert!(good.status.success(), "worker: {}", stderr(&good));
    finish(coordinator);
    let r = read_results(&dir.path().join("run.json"));
    assert_eq!(r["workers"], 1);
}

/// Asks the coordinator's health service with the stock Python grpcio client, over TLS
/// trusting `ca`: the exit code and what it printed.
fn python_health(addr: &str, ca: &Path) -> (bool, String) {
    let python = venv_python();
    let out = run_with_limit(
        Command::new(python)
            .arg(repo_root().join("scripts/grpc-health.py"))
            .arg("--ca")
            .arg(ca)
            .arg(addr)
            .arg("siamese.cluster.v1.Cluster"),
        Duration::from_secs(30),
    );
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said.trim().to_string())
}

#[test]
fn a_stock_python_grpc_health_client_trusting_the_ca_gets_serving() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let (coordinator, addr) = tls_coordinator(dir.path(), &pki, false);
    let (ok, said) = python_health(&addr, &pki.ca);
    let (untrusted_ok, untrusted_said) = python_health(&addr, &pki.other_ca);
    // Let the run finish so the coordinator exits cleanly either way.
    let good = run_with_limit(
        &mut worker(&format!("https://{addr}"), &[&pki.ca], &[]),
        Duration::from_secs(120),
    );
    finish(coordinator);
    assert!(good.status.success(), "worker: {}", stderr(&good));
    assert!(ok && said == "SERVING", "python health client: {said}");
    assert!(
        !untrusted_ok && untrusted_said.contains("UNAVAILABLE"),
        "a client trusting another CA: {untrusted_said}"
    );
}

#[test]
fn mutual_tls_refuses_a_worker_without_a_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let (coordinator, addr) = tls_coordinator(dir.path(), &pki, true);
    let https = format!("https://{addr}");
    let anonymous = run_with_limit(
        &mut worker(&https, &[&pki.ca], &[]),
        Duration::from_secs(60),
    );
    assert!(
        !anonymous.status.success(),
        "a worker without a client certificate got in"
    );
    let err = stderr(&anonymous);
    assert!(!err.contains("panicked"), "{err}");
    let identified = run_with_limit(
        &mut worker(&https, &[&pki.ca, &pki.client_cert, &pki.client_key], &[]),
        Duration::from_secs(120),
    );
    assert!(
        identified.status.success(),
        "worker: {}",
        stderr(&identified)
    );
    finish(coordinator);
}

#[test]
fn a_coordinator_listening_beyond_loopback_without_tls_warns() {
    let out = run_with_limit(
        Command::new(bin("coordinator"))
            .args(["--workers", "1", "--no-spawn", "--listen", "0.0.0.0:0"])
            .args(["--join-timeout", "1", "--dataset", "mnist"])
            .arg("--data-dir")
            .arg(shared_dataset("mnist"))
            .env("SIAMESE_TOKEN", TOKEN),
        Duration::from_secs(60),
    );
    let err = stderr(&out);
    assert!(
        err.contains("WITHOUT TLS") && err.contains("--tls-cert"),
        "{err}"
    );
}
