//! The shared run token: every worker call carries `authorization: Bearer <token>`.

use std::io::Read;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use tonic::metadata::MetadataValue;
use tonic::{Request, Status};

/// Environment variable both binaries read the token from.
pub const TOKEN_ENV: &str = "SIAMESE_TOKEN";
/// Environment variable naming a file both binaries read the token from.
pub const TOKEN_FILE_ENV: &str = "SIAMESE_TOKEN_FILE";
/// Shortest token accepted: a short one is guessed.
pub const MIN_TOKEN_LEN: usize = 16;

/// The run's token: given directly (`--token`, `SIAMESE_TOKEN`) or read from a file
/// (`--token-file`, `SIAMESE_TOKEN_FILE`, e.g. a mounted Kubernetes Secret); surrounding
/// whitespace of the file is ignored. `None` when neither is given.
pub fn resolve_token(
    token: Option<&str>,
    file: Option<&std::path::Path>,
) -> Result<Option<String>, crate::cluster::ClusterError> {
    use crate::cluster::ClusterError;
    match (token, file) {
        (Some(_), Some(path)) => Err(ClusterError::Setup(format!(
            "give the token either directly (--token / {TOKEN_ENV}) or in a file (--token-file {}), not both",
            path.display()
        ))),
        (Some(t), None) => check_length(t, "the token").map(|t| Some(t.to_string())),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|source| ClusterError::Io {
                what: format!("reading the token file {}", path.display()),
                source,
            })?;
            let what = format!("the token in {}", path.display());
            check_length(text.trim(), &what).map(|t| Some(t.to_string()))
        }
        (None, None) => Ok(None),
    }
}

/// Refuses a token shorter than [`MIN_TOKEN_LEN`], saying how to make a good one (and never
/// echoing the token).
fn check_length<'a>(token: &'a str, what: &str) -> Result<&'a str, crate::cluster::ClusterError> {
    match token.chars().count() {
        n if n >= MIN_TOKEN_LEN => Ok(token),
        n => Err(crate::cluster::ClusterError::Setup(format!(
            "{what} has {n} characters; it must have at least {MIN_TOKEN_LEN} \
             (make one with: head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n')"
        ))),
    }
}

/// A fresh random token (128 bits from the OS), for locally spawned workers.
pub fn generate_token() -> std::io::Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Compares in constant time: the SHA-256 digests of both, so neither where the values differ
/// nor their lengths show in the time taken.
fn same(a: &[u8], b: &[u8]) -> bool {
    let (a, b) = (Sha256::digest(a), Sha256::digest(b));
    a.as_slice().ct_eq(b.as_slice()).into()
}

/// Server side: refuses calls without the run's token.
#[derive(Clone)]
pub struct CheckToken {
    expected: Arc<str>,
}

impl CheckToken {
    /// Checks against `token`.
    pub fn new(token: &str) -> Self {
        CheckToken {
            expected: format!("Bearer {token}").into(),
        }
    }
}

impl tonic::service::Interceptor for CheckToken {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        match req.metadata().get("authorization") {
            Some(v) if same(v.as_bytes(), self.expected.as_bytes()) => Ok(req),
            Some(_) => Err(Status::unauthenticated(
                "wrong token: start the worker with the run's --token / SIAMESE_TOKEN",
            )),
            None => Err(Status::unauthenticated(
                "no token: start the worker with --token or SIAMESE_TOKEN",
            )),
        }
    }
}

/// Client side: adds the token to every call.
#[derive(Clone)]
pub struct AddToken {
    value: Option<MetadataValue<tonic::metadata::Ascii>>,
}

impl AddToken {
    /// Adds `token` (none when `None`, which the coordinator will refuse).
    pub fn new(token: Option<&str>) -> Result<Self, Status> {
        let value = match token {
            Some(t) => Some(
                format!("Bearer {t}")
                    .parse()
                    .map_err(|_| Status::invalid_argument("the token must be printable ASCII"))?,
            ),
            None => None,
        };
        Ok(AddToken { value })
    }
}

impl tonic::service::Interceptor for AddToken {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.value {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::service::Interceptor;

    #[test]
    fn token_check_accepts_only_the_right_token() {
        let mut check = CheckToken::new("abc");
        let mut add = AddToken::new(Some("abc")).unwrap();
        assert!(check.call(add.call(Request::new(())).unwrap()).is_ok());
        let mut wrong = AddToken::new(Some("abd")).unwrap();
        let err = check
            .call(wrong.call(Request::new(())).unwrap())
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        let err = check.call(Request::new(())).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        assert_eq!(generate_token().unwrap().len(), 32);
        // A longer or shorter value is refused too, prefix or not.
        let mut longer = AddToken::new(Some("abcd")).unwrap();
        assert!(check.call(longer.call(Request::new(())).unwrap()).is_err());
    }

    #[test]
    fn short_tokens_and_empty_files_are_refused_without_echoing_them() {
        let e = resolve_token(Some("hunter2"), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("7 characters") && !e.contains("hunter2"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "  \n").unwrap();
        let e = resolve_token(None, Some(&file)).unwrap_err().to_string();
        assert!(e.contains("0 characters") && e.contains("token"), "{e}");
        std::fs::write(&file, "0123456789abcdef0123\n").unwrap();
        assert_eq!(
            resolve_token(None, Some(&file)).unwrap().as_deref(),
            Some("0123456789abcdef0123")
        );
        assert!(resolve_token(Some("0123456789abcdef"), Some(&file)).is_err());
        let missing = dir.path().join("none");
        let e = resolve_token(None, Some(&missing)).unwrap_err().to_string();
        assert!(e.contains("reading the token file"), "{e}");
    }
}
