//! The hostfile of a deployment of several processes: one line per process, in process order,
//! with the address timely connects to and, optionally, the HTTP address other processes redirect clients to.
//!
//! ```text
//! # timely address     advertised HTTP address (optional)
//! 10.0.0.1:2101        http://10.0.0.1:8080
//! 10.0.0.2:2101        http://10.0.0.2:8080
//! ```

use std::path::Path;

use crate::cli::ConfigError;

/// One process of the deployment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host {
    /// Where timely's connections go, `host:port`.
    pub timely: String,
    /// Where this process serves HTTP, as others should reach it.
    pub http: Option<String>,
}

/// Reads and checks a hostfile.
pub fn read(path: &Path) -> Result<Vec<Host>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigError(format!(
            "--hostfile {}: cannot read it: {e}; give a file with one host:port per process",
            path.display()
        ))
    })?;
    parse(&text).map_err(|e| ConfigError(format!("--hostfile {}: {e}", path.display())))
}

/// Parses a hostfile's text: blank lines and `#` comments are skipped.
pub fn parse(text: &str) -> Result<Vec<Host>, String> {
    let mut hosts = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut fields = line.split_whitespace();
        let timely = fields.next().unwrap_or_default();
        let http = fields.next();
        if fields.next().is_some() {
            return Err(format!(
                "line {}: expected `host:port [http://host:port]`, got {line:?}",
                n + 1
            ));
        }
        check_host_port(timely).map_err(|e| format!("line {}: {e}", n + 1))?;
        if let Some(http) = http {
            let Some(rest) = http.strip_prefix("http://") else {
                return Err(format!(
                    "line {}: the HTTP address {http:?} must start with http://",
                    n + 1
                ));
            };
            check_host_port(rest.trim_end_matches('/'))
                .map_err(|e| format!("line {}: {e}", n + 1))?;
        }
        if hosts.iter().any(|h: &Host| h.timely == timely) {
            return Err(format!("line {}: {timely} is listed twice", n + 1));
        }
        hosts.push(Host {
            timely: timely.to_owned(),
            http: http.map(|h| h.trim_end_matches('/').to_owned()),
        });
    }
    if hosts.is_empty() {
        return Err("it lists no process".into());
    }
    Ok(hosts)
}

fn check_host_port(s: &str) -> Result<(), String> {
    match s.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(())
        }
        _ => Err(format!("{s:?} is not host:port")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses_with_optional_http() {
        let hosts =
            parse("# processes\n10.0.0.1:2101 http://10.0.0.1:8080/\n\n10.0.0.2:2101  # no http\n")
                .expect("valid");
        assert_eq!(
            hosts,
            vec![
                Host {
                    timely: "10.0.0.1:2101".into(),
                    http: Some("http://10.0.0.1:8080".into())
                },
                Host {
                    timely: "10.0.0.2:2101".into(),
                    http: None
                },
            ]
        );
    }

    #[test]
    fn refuses_what_timely_could_not_use() {
        for (text, says) in [
            ("", "no process"),
            ("10.0.0.1", "line 1"),
            ("10.0.0.1:0", "not host:port"),
            ("a:1\nb:x", "line 2"),
            ("a:1 b:2", "http://"),
            ("a:1 http://b:2 c", "expected"),
            ("a:1\na:1", "twice"),
        ] {
            let e = parse(text).expect_err(text);
            assert!(e.contains(says), "{text:?}: {e}");
        }
    }
}
