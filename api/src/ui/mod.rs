//! The hosted pages under `/ui/`: sign-in (`/ui/login`), step-up (`/ui/step-up/{id}`), the
//! user's security settings (`/ui/account`) and the security console (`/ui/console`), with
//! their assets under `/ui/assets/`.
//!
//! The pages are plain HTML, CSS and ES modules in `api/ui/`, compiled into the binary by
//! `build.rs` (every file there, no list to edit). They are clients of the public GraphQL API
//! like any other: this module only serves files, decides server-side where a page may return
//! to (`return_to` against `TESSERA_UI_RETURN_ORIGINS`, rendered into the page as a `<meta>`
//! tag) and sets the security headers on every response, errors included.

mod return_to;

use axum::{
    Router,
    extract::{Path, RawQuery, Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
    routing::get,
};
pub use return_to::{ReturnOrigins, ReturnToRefused};

use crate::App;

/// `(path under api/ui/, bytes)` of every embedded file.
const FILES: &[(&str, &[u8])] = include!(concat!(env!("OUT_DIR"), "/ui_files.rs"));

/// The policy of every `/ui/` response; a page adds the origin it may post its result to
/// (`form-action`). Images may be `data:` URIs: the API hands out QR codes that way
/// (`TotpActivation.qrCodePng`).
const CSP: &str = "default-src 'self'; img-src 'self' data:; object-src 'none'; \
                   frame-ancestors 'none'; base-uri 'none'";

/// The `/ui/` routes, to be nested by the application router.
pub(crate) fn routes() -> Router<App> {
    Router::new()
        .route("/ui/login", get(login))
        .route(
            "/ui/step-up/{challenge_id}",
            get(step_up).post(step_up_handed),
        )
        .route("/ui/account", get(account))
        .route("/ui/console", get(console))
        .route("/ui/assets/{file}", get(asset))
        .layer(axum::middleware::from_fn(security_headers))
}

/// `GET /ui/login?return_to=URL`.
async fn login(State(app): State<App>, RawQuery(query): RawQuery) -> Response {
    page(&app, "login.html", query.as_deref())
}

/// `GET /ui/step-up/{challengeId}?return_to=URL`. The page reads the id from its address;
/// one that is not a challenge id at all is not a page.
async fn step_up(
    State(app): State<App>,
    Path(challenge_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    if uuid::Uuid::parse_str(&challenge_id).is_err() {
        return not_found();
    }
    page(&app, "step-up.html", query.as_deref())
}

/// Longest access token a page accepts by form POST.
const MAX_HANDED_TOKEN: usize = 8192;

/// `POST /ui/step-up/{challengeId}?return_to=URL` with `access_token` in an
/// `application/x-www-form-urlencoded` body: an application backend hands its user's token to
/// the page this way (an auto-submitted form, as OAuth's `form_post` does the other way), so
/// the token never travels in a URL. The page is the same, with the token rendered into it
/// (`<meta name="tessera-token">`, never stored by the server). Nothing runs here: the page
/// uses the token for its GraphQL calls like any client, and a bad one is refused there.
async fn step_up_handed(
    State(app): State<App>,
    Path(challenge_id): Path<String>,
    RawQuery(query): RawQuery,
    headers: axum::http::HeaderMap,
    body: String,
) -> Response {
    if uuid::Uuid::parse_str(&challenge_id).is_err() {
        return not_found();
    }
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !form {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "send access_token as application/x-www-form-urlencoded",
        )
            .into_response();
    }
    let token = form_value(&body, "access_token").filter(|t| {
        !t.is_empty()
            && t.len() <= MAX_HANDED_TOKEN
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    });
    let Some(token) = token else {
        return (
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "access_token is missing or is not a token",
        )
            .into_response();
    };
    let extra = format!(
        "<meta name=\"tessera-token\" content=\"{}\">\n",
        escape(&token)
    );
    render(&app, "step-up.html", query.as_deref(), &extra)
}

/// The first value of `name` in a query string or form body.
fn form_value(encoded: &str, name: &str) -> Option<String> {
    reqwest::Url::parse(&format!("http://query.invalid/?{encoded}"))
        .ok()
        .and_then(|u| {
            u.query_pairs()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        })
}

/// `GET /ui/account`.
async fn account(State(app): State<App>, RawQuery(query): RawQuery) -> Response {
    page(&app, "account.html", query.as_deref())
}

/// `GET /ui/console`.
async fn console(State(app): State<App>, RawQuery(query): RawQuery) -> Response {
    page(&app, "console.html", query.as_deref())
}

/// `GET /ui/assets/{file}`: CSS, scripts and images, by their extension; anything else 404.
async fn asset(Path(file): Path<String>) -> Response {
    let Some(content_type) = content_type(&file) else {
        return not_found();
    };
    match file_bytes(&format!("assets/{file}")) {
        Some(bytes) => (
            [
                (header::CONTENT_TYPE, content_type),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            bytes,
        )
            .into_response(),
        None => not_found(),
    }
}

fn file_bytes(name: &str) -> Option<&'static [u8]> {
    FILES.iter().find(|(n, _)| *n == name).map(|(_, b)| *b)
}

fn content_type(file: &str) -> Option<&'static str> {
    let (_, extension) = file.rsplit_once('.')?;
    Some(match extension {
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "json" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        "woff2" => "font/woff2",
        _ => return None,
    })
}

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        "no such page",
    )
        .into_response()
}

/// What the server decided about a page's `return_to`.
#[derive(Debug, PartialEq, Eq)]
enum ReturnTo {
    /// None was given: the page stays on Tessera.
    Absent,
    /// Listed: the page posts its result there.
    Allowed(String),
    /// Refused: the page says why and posts nothing.
    Refused(ReturnToRefused),
}

fn return_to(origins: &ReturnOrigins, query: Option<&str>) -> ReturnTo {
    let Some(query) = query else {
        return ReturnTo::Absent;
    };
    match form_value(query, "return_to") {
        None => ReturnTo::Absent,
        Some(url) if url.is_empty() => ReturnTo::Absent,
        Some(url) => match origins.check(&url) {
            Ok(url) => ReturnTo::Allowed(url),
            Err(refused) => ReturnTo::Refused(refused),
        },
    }
}

/// A page with what the server decided about `return_to` rendered into its `<head>`:
/// `<meta name="tessera-return-to">` (the URL to post to) or `<meta
/// name="tessera-return-refused">` (why not). Its CSP names that origin in `form-action`
/// and no other.
fn page(app: &App, file: &str, query: Option<&str>) -> Response {
    render(app, file, query, "")
}

/// [`page`] with `extra` tags in its `<head>`.
fn render(app: &App, file: &str, query: Option<&str>, extra: &str) -> Response {
    let Some(html) = file_bytes(file).and_then(|b| std::str::from_utf8(b).ok()) else {
        return not_found();
    };
    let decided = return_to(&app.return_origins, query);
    let (meta, form_action) = match &decided {
        ReturnTo::Absent => (String::new(), String::new()),
        ReturnTo::Allowed(url) => {
            let origin = reqwest::Url::parse(url)
                .map(|u| u.origin().ascii_serialization())
                .unwrap_or_default();
            (
                format!(
                    "<meta name=\"tessera-return-to\" content=\"{}\">\n",
                    escape(url)
                ),
                format!(" {origin}"),
            )
        }
        ReturnTo::Refused(why) => (
            format!(
                "<meta name=\"tessera-return-refused\" content=\"{}\">\n",
                escape(&why.to_string())
            ),
            String::new(),
        ),
    };
    let body = match html.find("</head>") {
        Some(at) => format!("{}{meta}{extra}{}", &html[..at], &html[at..]),
        None => html.to_string(),
    };
    let csp = format!("{CSP}; form-action 'self'{form_action}");
    let mut response = (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response();
    if let Ok(value) = HeaderValue::from_str(&csp) {
        response
            .headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, value);
    }
    response
}

/// HTML attribute escaping.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Every `/ui/` response, a 404 included, carries the policy (the page's own, if it set
/// one), `nosniff` and no referrer (a `return_to` or a challenge id must not leak to another
/// site through `Referer`).
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    if !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'self'; img-src 'self' data:; object-src 'none'; \
                 frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
            ),
        );
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_and_shared_asset_is_embedded() {
        for name in [
            "login.html",
            "step-up.html",
            "account.html",
            "console.html",
            "assets/tessera.css",
            "assets/gql.js",
            "assets/session.js",
        ] {
            assert!(file_bytes(name).is_some(), "{name} is not embedded");
        }
    }

    #[test]
    fn pages_load_no_inline_script_or_style() {
        for (name, bytes) in FILES.iter().filter(|(n, _)| n.ends_with(".html")) {
            let html = std::str::from_utf8(bytes).expect("UTF-8");
            assert!(!html.contains("<script>"), "{name} has an inline script");
            assert!(!html.contains("<style"), "{name} has an inline style");
            assert!(!html.contains(" style=\""), "{name} has a style attribute");
            assert!(!has_event_attribute(html), "{name} has an event attribute");
            assert!(html.contains("</head>"), "{name} has no </head>");
        }
    }

    /// ` onclick=`, ` onload=`, …
    fn has_event_attribute(html: &str) -> bool {
        html.match_indices(" on").any(|(at, _)| {
            let rest = &html[at + 3..];
            let name: String = rest.chars().take_while(char::is_ascii_lowercase).collect();
            !name.is_empty() && rest[name.len()..].starts_with('=')
        })
    }

    #[test]
    fn the_return_to_parameter_is_decided_by_the_list() {
        let origins = ReturnOrigins::new(&["https://app.example.com".into()]).expect("list");
        assert_eq!(return_to(&origins, None), ReturnTo::Absent);
        assert_eq!(return_to(&origins, Some("x=1")), ReturnTo::Absent);
        assert_eq!(
            return_to(
                &origins,
                Some("return_to=https%3A%2F%2Fapp.example.com%2Fdone%3Fa%3Db")
            ),
            ReturnTo::Allowed("https://app.example.com/done?a=b".into())
        );
        assert!(matches!(
            return_to(&origins, Some("return_to=https://evil.test/")),
            ReturnTo::Refused(ReturnToRefused::OriginNotAllowed(_))
        ));
    }

    #[test]
    fn escaping_leaves_no_way_out_of_an_attribute() {
        assert_eq!(
            escape("\"><script>'&"),
            "&quot;&gt;&lt;script&gt;&#39;&amp;"
        );
    }
}
