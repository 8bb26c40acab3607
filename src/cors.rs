//! The CORS policy, explicit: web pages of the origins given with `--cors-origin` may post
//! reactions and register clients (default: none); event streams are readable from any
//! origin. Ingest and registration require a JSON `Content-Type`, so a page of another origin
//! cannot reach them without the preflight this module answers.

use std::sync::Arc;

use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::{Reply, Response};

use crate::cli::ConfigError;
use crate::http_error::ApiError;

/// How long a browser may keep a preflight's answer.
const PREFLIGHT_MAX_AGE_SECS: u32 = 600;

/// The origins allowed to post.
#[derive(Clone, Debug, Default)]
pub struct Cors {
    /// `scheme://host[:port]`, lowercase, as browsers send `Origin`.
    origins: Arc<[String]>,
    /// `*` was given: any origin.
    any: bool,
}

/// What a path lets other origins do.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Policy {
    /// Ingest and registration: the allowed origins only.
    Listed,
    /// Event streams: any origin may read them.
    Open,
}

/// The policy of `path`; `None` for paths other origins have no business with. Asked of
/// every request: it allocates nothing.
pub fn policy(path: &str) -> Option<Policy> {
    let mut parts = path.trim_start_matches('/').split('/');
    let segments: [Option<&str>; 6] = std::array::from_fn(|_| parts.next());
    match segments {
        [Some("emoji"), None | Some("batch"), None, ..] | [Some("clients"), _, None, ..] => {
            Some(Policy::Listed)
        }
        [Some("clusters"), Some(_), Some("subscribers"), Some(_), Some("events"), None] => {
            Some(Policy::Open)
        }
        _ => None,
    }
}

/// A preflight's `204`, allowing `methods` and `headers`.
fn preflight_allowed(methods: &'static str, headers: &'static str) -> Response {
    let mut r = StatusCode::NO_CONTENT.into_response();
    let h = r.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(methods),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(headers),
    );
    r
}

impl Cors {
    /// The policy of `--cors-origin`: each an origin (`https://example.com`, with a port when
    /// not the scheme's own), or `*` for any.
    pub fn new(origins: &[String]) -> Result<Cors, ConfigError> {
        let mut listed = Vec::new();
        let mut any = false;
        for given in origins.iter().map(|o| o.trim()).filter(|o| !o.is_empty()) {
            if given == "*" {
                any = true;
                continue;
            }
            listed.push(origin(given).map_err(|why| {
                ConfigError(format!(
                    "--cors-origin {given:?}: {why}; give origins like https://example.com or http://localhost:3000, or *"
                ))
            })?);
        }
        Ok(Cors {
            origins: listed.into(),
            any,
        })
    }

    fn allows(&self, origin: &str) -> bool {
        self.any || self.origins.iter().any(|o| o.eq_ignore_ascii_case(origin))
    }

    /// The answer to an `OPTIONS` preflight of ingest, registration or an event stream;
    /// `None` for other paths, or without `Origin`.
    pub fn answer_preflight(&self, path: &str, origin: Option<&str>) -> Option<Response> {
        let policy = policy(path)?;
        let origin = origin?;
        let mut response = match policy {
            Policy::Open => {
                let mut r = preflight_allowed("GET", "last-event-id, authorization");
                r.headers_mut().insert(
                    header::ACCESS_CONTROL_ALLOW_ORIGIN,
                    HeaderValue::from_static("*"),
                );
                r
            }
            Policy::Listed if self.allows(origin) => {
                let mut r = preflight_allowed("POST, DELETE", "content-type, authorization");
                self.let_read(Some(origin), &mut r);
                r
            }
            Policy::Listed => {
                let mut r = ApiError::new(
                    StatusCode::FORBIDDEN,
                    "origin_not_allowed",
                    format!(
                        "pages of {origin} may not post here; the server's --cors-origin lists the origins that may"
                    ),
                )
                .into_response();
                r.headers_mut()
                    .insert(header::VARY, HeaderValue::from_static("origin"));
                r
            }
        };
        response.headers_mut().insert(
            header::ACCESS_CONTROL_MAX_AGE,
            PREFLIGHT_MAX_AGE_SECS.into(),
        );
        Some(response)
    }

    /// Lets a page of an allowed `origin` read the answer to a request of ingest or
    /// registration (a path of [`Policy::Listed`]).
    pub fn let_read(&self, origin: Option<&str>, response: &mut Response) {
        let headers = response.headers_mut();
        // Caches must not hand one origin's answer to another.
        headers.insert(header::VARY, HeaderValue::from_static("origin"));
        let Some(origin) = origin.filter(|o| self.allows(o)) else {
            return;
        };
        if let Ok(value) = HeaderValue::from_str(origin) {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
            headers.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static("location, retry-after, www-authenticate"),
            );
        }
    }
}

/// `given` as browsers write it in `Origin`: lowercase scheme and host, the port only when it
/// is not the scheme's own, no path.
fn origin(given: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(given).map_err(|e| e.to_string())?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("the scheme must be http or https".into());
    }
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or("it names no host")?;
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err("an origin has no path, query or fragment".into());
    }
    Ok(match url.port() {
        Some(port) => format!("{}://{host}:{port}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(origins: &[&str]) -> Cors {
        Cors::new(&origins.iter().map(|o| o.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn origins_are_written_as_browsers_send_them() {
        let c = cors(&["HTTPS://Live.Example:443/", "http://localhost:3000"]);
        assert!(c.allows("https://live.example"));
        assert!(c.allows("http://localhost:3000"));
        assert!(!c.allows("http://localhost:3001"));
        assert!(!c.allows("https://evil.example"));
        assert!(cors(&["*"]).allows("https://any.example"));
        assert!(!Cors::default().allows("http://localhost:3000"));
        for bad in [
            "live.example",
            "https://live.example/path",
            "ftp://x",
            "https://",
        ] {
            assert!(Cors::new(&[bad.to_owned()]).is_err(), "{bad}");
        }
    }

    #[test]
    fn preflights_admit_listed_origins_to_ingest_and_any_origin_to_event_streams() {
        let c = cors(&["https://live.example"]);
        let allowed = c
            .answer_preflight("/emoji", Some("https://live.example"))
            .unwrap();
        assert_eq!(allowed.status(), StatusCode::NO_CONTENT);
        assert_eq!(
            allowed.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://live.example"
        );
        let allowed_headers = allowed.headers()[header::ACCESS_CONTROL_ALLOW_HEADERS]
            .to_str()
            .unwrap();
        // A page of a listed origin sends its token in Authorization.
        assert!(
            allowed_headers.contains("content-type"),
            "{allowed_headers}"
        );
        assert!(
            allowed_headers.contains("authorization"),
            "{allowed_headers}"
        );
        for path in ["/emoji", "/emoji/batch", "/clients", "/clients/abc"] {
            let refused = c
                .answer_preflight(path, Some("https://evil.example"))
                .unwrap();
            assert_eq!(refused.status(), StatusCode::FORBIDDEN, "{path}");
            assert!(!refused
                .headers()
                .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
        }
        let events = c
            .answer_preflight(
                "/clusters/0/subscribers/1/events",
                Some("https://evil.example"),
            )
            .unwrap();
        assert_eq!(events.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert!(c
            .answer_preflight("/metrics", Some("https://live.example"))
            .is_none());
        assert!(c.answer_preflight("/emoji", None).is_none());
    }

    #[test]
    fn the_policy_of_each_path() {
        for listed in ["/emoji", "/emoji/batch", "/clients", "/clients/abc"] {
            assert_eq!(policy(listed), Some(Policy::Listed), "{listed}");
        }
        assert_eq!(
            policy("/clusters/0/subscribers/1/events"),
            Some(Policy::Open)
        );
        for other in [
            "/",
            "",
            "/metrics",
            "/emoji/other",
            "/emoji/batch/x",
            "/clients/a/b",
            "/clusters/0/subscribers/1/events/x",
            "/clusters/0/subscribers/1",
        ] {
            assert_eq!(policy(other), None, "{other}");
        }
    }

    #[test]
    fn only_listed_origins_may_read_answers() {
        let c = cors(&["https://live.example"]);
        let mut answer = StatusCode::ACCEPTED.into_response();
        c.let_read(Some("https://live.example"), &mut answer);
        assert_eq!(
            answer.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://live.example"
        );
        let mut answer = StatusCode::ACCEPTED.into_response();
        c.let_read(Some("https://evil.example"), &mut answer);
        assert!(!answer
            .headers()
            .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
        assert_eq!(answer.headers()[header::VARY], "origin");
    }
}
