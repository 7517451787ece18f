//! Cross-origin calls from browsers: the origins in `TESSERA_CORS_ORIGINS`, exactly.
//!
//! tower-http's `CorsLayer` answers every preflight with the allowed methods and headers,
//! whatever the origin; here it runs only for a request whose `Origin` is in the list, so a
//! page from any other origin gets no `Access-Control-*` header at all (and its preflight the
//! router's own answer). No cookies are read anywhere, so credentials are never allowed: a
//! token travels in `Authorization`, which a page must set itself.

use std::{collections::HashSet, sync::Arc, time::Duration};

use axum::{
    extract::Request,
    http::{HeaderMap, HeaderName, HeaderValue, Method, header},
    middleware::Next,
    response::Response,
};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_layer::Layer;
use tower_service::Service;

/// The allowed origins and the layer answering them.
#[derive(Clone, Debug)]
pub struct Cors {
    origins: Arc<HashSet<HeaderValue>>,
    layer: CorsLayer,
}

impl Cors {
    /// From the configured origins (`scheme://host[:port]`, no path; a trailing `/` is
    /// dropped).
    ///
    /// # Errors
    /// An entry that is not such an origin (`*` included: the list is exact).
    pub fn new(configured: &[String]) -> Result<Self, String> {
        let mut origins = HashSet::new();
        for raw in configured {
            let origin = raw.trim().trim_end_matches('/');
            if origin.is_empty() {
                continue;
            }
            let valid = origin.split_once("://").is_some_and(|(scheme, host)| {
                matches!(scheme, "http" | "https")
                    && !host.is_empty()
                    && !host.contains(['/', '*', '?', '#', ' ', '@'])
            });
            if !valid {
                return Err(format!(
                    "TESSERA_CORS_ORIGINS: {origin:?} is not an origin like https://app.example.com"
                ));
            }
            let value = HeaderValue::from_str(&origin.to_ascii_lowercase())
                .map_err(|_| format!("TESSERA_CORS_ORIGINS: {origin:?} is not an origin"))?;
            origins.insert(value);
        }
        let layer = CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins.iter().cloned()))
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("x-correlation-id"),
            ])
            .expose_headers([HeaderName::from_static("x-request-id")])
            .max_age(Duration::from_secs(600));
        Ok(Self {
            origins: Arc::new(origins),
            layer,
        })
    }

    /// Whether a request with these headers may go on: no `Origin` (not a browser page, or a
    /// same-origin navigation), the server's own origin, or one in the list.
    pub fn origin_allowed(&self, headers: &HeaderMap) -> bool {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return true;
        };
        self.is_listed(origin) || same_origin(origin, headers)
    }

    fn is_listed(&self, origin: &HeaderValue) -> bool {
        origin.to_str().is_ok_and(|o| {
            self.origins
                .iter()
                .any(|a| a.as_bytes() == o.to_ascii_lowercase().as_bytes())
        })
    }

    /// The middleware: CORS answers for listed origins, nothing for the rest.
    pub async fn middleware(self, request: Request, next: Next) -> Response {
        let listed = request
            .headers()
            .get(header::ORIGIN)
            .is_some_and(|o| self.is_listed(o));
        if !listed {
            return next.run(request).await;
        }
        match self.layer.layer(next).call(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }
}

/// A page served by Tessera itself (GraphiQL) sends `Origin: http://<its Host>`.
fn same_origin(origin: &HeaderValue, headers: &HeaderMap) -> bool {
    let (Ok(origin), Some(Ok(host))) = (
        origin.to_str(),
        headers.get(header::HOST).map(HeaderValue::to_str),
    ) else {
        return false;
    };
    origin
        .split_once("://")
        .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(host))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        if let Some(o) = origin {
            h.insert(header::ORIGIN, HeaderValue::from_str(o).unwrap());
        }
        h
    }

    #[test]
    fn only_exact_origins_are_listed() {
        let cors = Cors::new(&[
            "https://App.example.com/".into(),
            " http://127.0.0.1:3000".into(),
        ])
        .unwrap();
        let host = "tessera.example.com";
        for (origin, allowed) in [
            (None, true),
            (Some("https://app.example.com"), true),
            (Some("http://127.0.0.1:3000"), true),
            (Some("http://tessera.example.com"), true),
            (Some("https://app.example.com.evil.test"), false),
            (Some("http://app.example.com"), false),
            (Some("http://127.0.0.1:3001"), false),
            (Some("null"), false),
        ] {
            assert_eq!(
                cors.origin_allowed(&headers(origin, host)),
                allowed,
                "{origin:?}"
            );
        }
        for bad in [
            "*",
            "app.example.com",
            "https://app.example.com/path",
            "https://*.example.com",
        ] {
            assert!(Cors::new(&[bad.into()]).is_err(), "{bad}");
        }
        assert!(Cors::new(&[]).unwrap().origins.is_empty());
    }
}
