//! An error and its causes on one line, each said once: the errors of this crate put their
//! cause in their own message and also keep it as their `source`, so printing the chain as it
//! stands (`{:#}`) would say every cause twice.

use std::error::Error;

/// `e`, then each cause in its chain that the text so far does not already contain, joined
/// by ": ".
pub fn error_report(e: &(dyn Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let said = c.to_string();
        if !said.is_empty() && !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::error_report;

    /// An error of the crate's shape: the cause in the message and kept as the source.
    #[derive(Debug, thiserror::Error)]
    #[error("reading {path}: {source}")]
    struct Reading {
        path: &'static str,
        source: std::io::Error,
    }

    /// One that keeps its cause only as the source.
    #[derive(Debug, thiserror::Error)]
    #[error("starting the run")]
    struct Starting {
        #[source]
        source: Reading,
    }

    fn not_found() -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::NotFound, "no such file")
    }

    #[test]
    fn a_cause_already_in_the_message_is_said_once() {
        let e = Reading {
            path: "/data/x",
            source: not_found(),
        };
        assert_eq!(error_report(&e), "reading /data/x: no such file");
    }

    #[test]
    fn a_cause_only_in_the_chain_is_added() {
        let e = Starting {
            source: Reading {
                path: "/data/x",
                source: not_found(),
            },
        };
        assert_eq!(
            error_report(&e),
            "starting the run: reading /data/x: no such file"
        );
    }
}
