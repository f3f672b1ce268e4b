//! The coordinator's URL as a worker is given it, checked before the first connection: a
//! malformed one would otherwise be retried as if the coordinator were merely not up yet.

use tonic::transport::Uri;

/// `s` if it is an `http://` or `https://` URL with a host and a valid port, else what is wrong
/// with it (for clap's `value_parser`, which names the flag).
pub fn coordinator_url(s: &str) -> Result<String, String> {
    let uri: Uri = s
        .parse()
        .map_err(|e| format!("{s:?} is not a URL ({e}); write http://HOST:PORT"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => {
            return Err(format!(
                "{s:?} has the scheme {other}: the coordinator speaks http:// (or https:// with TLS)"
            ));
        }
        None => {
            return Err(format!(
                "{s:?} has no scheme: write http://{s} (or https://{s} with TLS)"
            ));
        }
    }
    let authority = uri
        .authority()
        .filter(|a| !a.host().is_empty())
        .ok_or_else(|| format!("{s:?} names no host; write http://HOST:PORT"))?;
    if let Some(port) = authority
        .as_str()
        .rsplit_once(':')
        .and_then(|(host, port)| {
            // An IPv6 host without a port ends in `]`, so the last colon is inside its brackets.
            (!host.is_empty() && !port.contains(']')).then_some(port)
        })
        && port.parse::<u16>().is_err()
    {
        return Err(format!(
            "{s:?} has the port {port:?}, not one of 0 to 65535"
        ));
    }
    Ok(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::coordinator_url;

    #[test]
    fn well_formed_urls_pass_unchanged() {
        for ok in [
            "http://10.0.0.5:50051",
            "https://coordinator.train.svc:50051",
            "http://[::1]:50051",
            "http://[::1]",
            "http://localhost",
        ] {
            assert_eq!(coordinator_url(ok).as_deref(), Ok(ok));
        }
    }

    #[test]
    fn malformed_urls_are_refused_saying_what_is_wrong() {
        for (bad, want) in [
            (
                "10.0.0.5:50051",
                "has no scheme: write http://10.0.0.5:50051",
            ),
            ("garbage", "has no scheme"),
            ("ftp://host:1", "has the scheme ftp"),
            ("http://host:99999", "has the port \"99999\""),
            ("http://", "is not a URL"),
            ("http://exa mple:1", "is not a URL"),
        ] {
            let err = coordinator_url(bad).unwrap_err();
            assert!(err.contains(want), "{bad}: {err}");
        }
    }
}
