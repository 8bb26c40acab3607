//! `GET /`: the live dashboard, a page that registers as a client, follows its events with the
//! browser's `EventSource`, and sends reactions. Its assets are compiled into the binary, so it
//! works offline and with no other server.

use warp::filters::BoxedFilter;
use warp::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use warp::reply::Response;
use warp::{Filter, Reply};

const INDEX_HTML: &str = include_str!("index.html");
const APP_JS: &str = include_str!("app.js");
const STYLE_CSS: &str = include_str!("style.css");

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        warp::http::HeaderValue::from_static(content_type),
    );
    // The assets change only with the binary; revalidating each load keeps an upgrade visible.
    headers.insert(
        CACHE_CONTROL,
        warp::http::HeaderValue::from_static("no-cache"),
    );
    response
}

/// `GET /`, `GET /dashboard/app.js`, `GET /dashboard/style.css`.
pub fn routes() -> BoxedFilter<(Response,)> {
    let index = warp::path::end()
        .and(warp::get())
        .map(|| asset(INDEX_HTML, "text/html; charset=utf-8"));
    let app = warp::path!("dashboard" / "app.js")
        .and(warp::get())
        .map(|| asset(APP_JS, "text/javascript; charset=utf-8"));
    let style = warp::path!("dashboard" / "style.css")
        .and(warp::get())
        .map(|| asset(STYLE_CSS, "text/css; charset=utf-8"));
    index.or(app).unify().or(style).unify().boxed()
}
