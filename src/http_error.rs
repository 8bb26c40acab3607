//! The one place errors become an HTTP status and a JSON body:
//! `{"error": "<code>", "message": "<what to fix>"}`.

use std::convert::Infallible;

use serde::Serialize;
use warp::http::{header, StatusCode};
use warp::reject::Rejection;
use warp::reply::{Reply, Response};

/// An error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The status.
    pub status: StatusCode,
    /// Machine-readable code.
    pub code: &'static str,
    /// What to fix.
    pub message: String,
    /// Seconds after which a retry may succeed (429, 503).
    pub retry_after: Option<u64>,
    /// Reactions accepted before a batch failed part-way.
    pub accepted: Option<usize>,
    /// A 401 for a missing or invalid token: says so in `WWW-Authenticate` (RFC 6750).
    pub www_authenticate: bool,
}

impl warp::reject::Reject for ApiError {}

impl ApiError {
    /// An error with no retry hint.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
            accepted: None,
            www_authenticate: false,
        }
    }

    /// The same error, retryable after `seconds`.
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds.max(1));
        self
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    accepted: Option<usize>,
}

impl Reply for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            error: self.code,
            message: &self.message,
            accepted: self.accepted,
        };
        let mut response =
            warp::reply::with_status(warp::reply::json(&body), self.status).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, seconds.into());
        }
        if self.www_authenticate {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
        }
        response
    }
}

/// Turns every rejection into a JSON error.
pub async fn recover(rejection: Rejection) -> Result<Response, Infallible> {
    use warp::reject;
    let error = if let Some(e) = rejection.find::<ApiError>() {
        e.clone()
    } else if rejection.is_not_found() {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such resource")
    } else if rejection.find::<reject::LengthRequired>().is_some() {
        ApiError::new(
            StatusCode::LENGTH_REQUIRED,
            "length_required",
            "send a Content-Length header (chunked bodies are not accepted)",
        )
    } else if rejection.find::<reject::PayloadTooLarge>().is_some() {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the body is too large; send fewer reactions per request",
        )
    } else if let Some(e) = rejection.find::<reject::UnsupportedMediaType>() {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            e.to_string(),
        )
    } else if rejection.find::<reject::MethodNotAllowed>().is_some() {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this method is not allowed on this path",
        )
    } else if let Some(e) = rejection.find::<reject::InvalidHeader>() {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_header", e.to_string())
    } else if let Some(e) = rejection.find::<reject::MissingHeader>() {
        ApiError::new(StatusCode::BAD_REQUEST, "missing_header", e.to_string())
    } else if let Some(e) = rejection.find::<warp::filters::body::BodyDeserializeError>() {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", e.to_string())
    } else if let Some(e) = rejection.find::<reject::InvalidQuery>() {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", e.to_string())
    } else {
        tracing::error!("unhandled rejection: {rejection:?}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
    };
    Ok(error.into_response())
}

/// A `Content-Type`'s media type, lowercased, without its parameters (`; charset=...`).
pub fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// Requires `Content-Type: application/json` (parameters allowed): a request without it is a
/// "simple" cross-origin request a web page of any origin could send without a CORS preflight.
pub fn json_content_type() -> impl warp::Filter<Extract = (), Error = Rejection> + Clone {
    use warp::Filter;
    warp::header::optional::<String>("content-type")
        .and_then(|content_type: Option<String>| async move {
            match content_type.as_deref().map(media_type).as_deref() {
                Some("application/json") => Ok(()),
                _ => Err(warp::reject::custom(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "send Content-Type: application/json",
                ))),
            }
        })
        .untuple_one()
}

#[cfg(test)]
mod tests {
    use warp::Filter;

    use super::*;

    /// warp's own rejections a route can meet answer 4xx with a JSON error, not 500.
    #[tokio::test]
    async fn warp_s_rejections_are_json_4xx() {
        #[derive(serde::Deserialize)]
        struct Body {
            #[allow(dead_code)]
            n: u32,
        }
        #[derive(serde::Deserialize)]
        struct Query {
            #[allow(dead_code)]
            n: u32,
        }
        let routes = warp::path!("json")
            .and(warp::body::json())
            .map(|_: Body| "ok")
            .or(warp::path!("header")
                .and(warp::header::<String>("x-needed"))
                .map(|_: String| "ok"))
            .or(warp::path!("query")
                .and(warp::query::<Query>())
                .map(|_: Query| "ok"))
            .recover(recover);
        for (request, status, error) in [
            (
                warp::test::request()
                    .method("POST")
                    .path("/json")
                    .header("content-type", "application/json")
                    .body("{\"n\": \"x\"}"),
                400,
                "invalid_json",
            ),
            (warp::test::request().path("/header"), 400, "missing_header"),
            (
                warp::test::request().path("/query?n=x"),
                400,
                "invalid_query",
            ),
        ] {
            let answer = request.reply(&routes).await;
            assert_eq!(answer.status(), status, "{:?}", answer.body());
            let body: serde_json::Value = serde_json::from_slice(answer.body()).unwrap();
            assert_eq!(body["error"], error, "{body}");
            assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
        }
    }
}
