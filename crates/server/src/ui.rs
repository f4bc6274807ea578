//! The web chat (`ui/` in the repository), compiled into the binary and served at `/`. The pages
//! hold no data: they call the same API as any client (with the key the user types, when the
//! server has one), so they are served without auth. A strict Content-Security-Policy allows
//! nothing but this server's own scripts, styles and API.

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// Every page and asset of the web chat.
pub const UI_ROUTES: &[&str] = &["/", "/ui/app.js", "/ui/style.css", "/ui/icon.svg"];

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "index.html",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../../../ui/index.html"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../../ui/app.js"),
    },
    Asset {
        name: "style.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../../ui/style.css"),
    },
    Asset {
        name: "icon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../../../ui/icon.svg"),
    },
];

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

/// A strong validator of the asset's bytes (FNV-1a), so a browser revalidates cheaply and never
/// runs a stale script after an upgrade.
fn etag(body: &[u8]) -> String {
    let h = body.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("\"{h:016x}\"")
}

fn serve(asset: &Asset, request: &HeaderMap) -> Response {
    let tag = etag(asset.body);
    let fresh = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            )],
            asset.body,
        )
            .into_response()
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&tag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    resp
}

/// `GET /`: the chat page.
pub async fn index(headers: HeaderMap) -> Response {
    match ASSETS.iter().find(|a| a.name == "index.html") {
        Some(a) => serve(a, &headers),
        None => ApiError::not_found("/").into_response(),
    }
}

/// `GET /ui/{file}`: the page's script, style sheet and icon.
pub async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS
        .iter()
        .find(|a| a.name == file && a.name != "index.html")
    {
        Some(a) => serve(a, &headers),
        None => ApiError::not_found(&format!("/ui/{file}")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_has_its_asset() {
        for route in UI_ROUTES {
            let name = route.strip_prefix("/ui/").unwrap_or("index.html");
            assert!(ASSETS.iter().any(|a| a.name == name), "{route}");
        }
        assert_eq!(ASSETS.len(), UI_ROUTES.len());
    }

    #[test]
    fn etag_changes_with_the_bytes() {
        assert_ne!(etag(b"a"), etag(b"b"));
        assert_eq!(etag(b"abc"), etag(b"abc"));
    }
}
