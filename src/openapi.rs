//! `GET /openapi.json`: the OpenAPI 3.1 description of the public HTTP API, written once in
//! `docs/openapi.json` and kept true by the tests that compare it with the routes.

use warp::filters::BoxedFilter;
use warp::http::header::CONTENT_TYPE;
use warp::reply::Response;
use warp::{Filter, Reply};

/// The document, as served.
pub const DOCUMENT: &str = include_str!("../docs/openapi.json");

/// `GET /openapi.json`.
pub fn route() -> BoxedFilter<(Response,)> {
    warp::path!("openapi.json")
        .and(warp::get())
        .map(|| {
            warp::reply::with_header(DOCUMENT, CONTENT_TYPE, "application/json").into_response()
        })
        .boxed()
}
