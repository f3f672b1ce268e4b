//! The shared run token: every worker call carries `authorization: Bearer <token>`.

use std::io::Read;
use std::sync::Arc;

use tonic::metadata::MetadataValue;
use tonic::{Request, Status};

/// Environment variable both binaries read the token from.
pub const TOKEN_ENV: &str = "SIAMESE_TOKEN";
/// Environment variable naming a file both binaries read the token from.
pub const TOKEN_FILE_ENV: &str = "SIAMESE_TOKEN_FILE";

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
        (Some(t), None) => Ok(Some(t.to_string())),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|source| ClusterError::Io {
                what: format!("reading the token file {}", path.display()),
                source,
            })?;
            match text.trim() {
                "" => Err(ClusterError::Setup(format!(
                    "the token file {} is empty",
                    path.display()
                ))),
                t => Ok(Some(t.to_string())),
            }
        }
        (None, None) => Ok(None),
    }
}

/// A fresh random token (128 bits from the OS), for locally spawned workers.
pub fn generate_token() -> std::io::Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Compares in time independent of where the strings differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
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
    }
}
