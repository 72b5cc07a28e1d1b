//! The hub's public catalogue page: `GET /directory` asked by a browser (`Accept` preferring
//! `text/html`) gets this page instead of the JSON; the page's script then reads the same URL
//! as JSON (`Accept: application/json`). Its files are embedded and served with a strict
//! content security policy: nothing from elsewhere, no inline script or style.

use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, header};

/// The page's script.
pub const SCRIPT_PATH: &str = "/_turnpike/hub/directory.js";
/// The page's style sheet.
pub const STYLE_PATH: &str = "/_turnpike/hub/directory.css";
/// The DOM helpers the page's script imports.
pub const DOM_PATH: &str = "/_turnpike/hub/dom.js";

/// DOM helpers shared by Turnpike's pages (this one and the admin dashboard, which serves the
/// same file): elements built with their text as text, never parsed as HTML.
pub const DOM_SCRIPT: &str = include_str!("../../assets/dom.js");

const HTML: &str = include_str!("../../assets/hub/directory.html");
const SCRIPT: &str = include_str!("../../assets/hub/directory.js");
const STYLE: &str = include_str!("../../assets/hub/directory.css");

/// Whether the request's `Accept` prefers `text/html` to `application/json`: a browser's
/// navigation. Anything else (no `Accept`, `*/*`, JSON first, a malformed field) is JSON.
pub fn wants_html(headers: &HeaderMap) -> bool {
    let mut html = 0u16;
    let mut json = 0u16;
    for value in headers.get_all(header::ACCEPT) {
        let Ok(text) = value.to_str() else {
            return false;
        };
        for item in text.split(',') {
            let mut parts = item.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .find_map(|p| {
                    let (k, v) = p.split_once('=')?;
                    (k.trim().eq_ignore_ascii_case("q")).then(|| quality(v.trim()))
                })
                .unwrap_or(Some(1000));
            let Some(q) = q else { return false };
            match media.as_str() {
                "text/html" => html = html.max(q),
                "application/json" => json = json.max(q),
                _ => {}
            }
        }
    }
    html > json
}

/// A quality value (`0`, `0.8`, `1.000`) in thousandths; `None` when malformed.
fn quality(v: &str) -> Option<u16> {
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let frac_value: u16 = format!("{frac:0<3}").parse().ok()?;
    match int {
        "0" => Some(frac_value),
        "1" if frac_value == 0 => Some(1000),
        _ => None,
    }
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                     img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
                ),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (header::VARY, HeaderValue::from_static("Accept")),
        ],
        body,
    )
        .into_response()
}

/// The catalogue page (for `GET /directory` when [`wants_html`]).
pub fn page() -> Response {
    asset("text/html; charset=utf-8", HTML)
}

/// `GET /_turnpike/hub/directory.js`.
pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// `GET /_turnpike/hub/dom.js`.
pub async fn dom_script() -> Response {
    asset("text/javascript; charset=utf-8", DOM_SCRIPT)
}

/// `GET /_turnpike/hub/directory.css`.
pub async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn accept(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::ACCEPT, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn browsers_get_the_page_and_everyone_else_json() {
        let chromium = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,\
                        image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7";
        let firefox = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";
        for html in [
            chromium,
            firefox,
            "text/html",
            "TEXT/HTML; q=1",
            "application/json;q=0.5, text/html",
        ] {
            assert!(wants_html(&accept(&[html])), "{html}");
        }
        for json in [
            "",
            "*/*",
            "application/json",
            "application/json, text/html",
            "text/html;q=0.5, application/json",
            "text/html;q=0",
            "text/html;q=2",
            "text/html;q=abc",
            "text/plain",
        ] {
            assert!(!wants_html(&accept(&[json])), "{json:?}");
        }
        assert!(!wants_html(&HeaderMap::new()));
        assert!(!wants_html(&accept(&[
            "text/html;q=0.4",
            "application/json;q=0.5"
        ])));
    }

    #[test]
    fn qualities_are_thousandths() {
        assert_eq!(quality("1"), Some(1000));
        assert_eq!(quality("1.000"), Some(1000));
        assert_eq!(quality("0.8"), Some(800));
        assert_eq!(quality("0.125"), Some(125));
        for bad in ["1.5", "0.1234", "2", "", ".5", "0.-1", "0.x"] {
            assert_eq!(quality(bad), None, "{bad:?}");
        }
    }

    proptest! {
        /// Any Accept field is an answer, never a panic; JSON asked at least as much as HTML is
        /// JSON.
        #[test]
        fn any_accept_field_decides(field in "[ -~]{0,80}") {
            let Ok(value) = HeaderValue::from_str(&field) else { return Ok(()) };
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT, value);
            let html = wants_html(&h);
            if !field.to_ascii_lowercase().contains("text/html") {
                prop_assert!(!html);
            }
            let mut both = h.clone();
            both.append(header::ACCEPT, HeaderValue::from_static("application/json"));
            prop_assert!(!wants_html(&both));
        }
    }

    #[test]
    fn the_page_loads_only_its_own_files_and_writes_no_markup() {
        let page = page();
        let csp = page.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap();
        assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"));
        assert!(!csp.contains("unsafe"));
        assert_eq!(page.headers()[header::VARY], "Accept");
        // No inline script, handler or style; the only outside references are the hub's own.
        let inline_handler = HTML.split(" on").skip(1).any(|rest| {
            let name: String = rest.chars().take_while(char::is_ascii_lowercase).collect();
            !name.is_empty() && rest[name.len()..].starts_with('=')
        });
        assert!(!inline_handler && !HTML.contains("<script>") && !HTML.contains("style="));
        assert!(HTML.contains(SCRIPT_PATH) && HTML.contains(STYLE_PATH));
        assert!(!HTML.contains("http://") && !HTML.contains("https://"));
        // The script never parses text as markup.
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!SCRIPT.contains(sink), "{sink}");
        }
        assert!(SCRIPT.contains("Accept: \"application/json\""));
    }
}
