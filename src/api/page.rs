//! The status page at `GET /` (SPEC.md §9b): one self-contained HTML document whose style and script
//! (`src/ui/page.css`, `src/ui/page.js`) are compiled into the binary and inlined into
//! `src/ui/page.html` once, at first use, together with the Content-Security-Policy that allows
//! exactly those two inline blocks by their SHA-256 (no `unsafe-inline`, nothing from another
//! origin). The page holds no data: it reads the API with the tokens the user types in.
//! Knows nothing of routing, auth, the snapshot or the transport.

use super::reply::{ApiReply, ErrorCode};
use base64::Engine as _;
use std::sync::OnceLock;

const TEMPLATE: &str = include_str!("../ui/page.html");
const STYLE: &str = include_str!("../ui/page.css");
const SCRIPT: &str = include_str!("../ui/page.js");

/// Where the template takes the style and the script.
const STYLE_MARK: &str = "<!--style-->";
const SCRIPT_MARK: &str = "<!--script-->";

/// The page as served: the assembled document and its policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub html: String,
    pub csp: String,
}

/// The page of this build, assembled on first use.
pub fn page() -> &'static Page {
    static PAGE: OnceLock<Page> = OnceLock::new();
    PAGE.get_or_init(|| assemble(TEMPLATE, STYLE, SCRIPT))
}

/// 200 with the page and its security headers. `X-Content-Type-Options: nosniff` and
/// `Cache-Control: no-store` are added by the server to every answer.
pub fn reply() -> ApiReply {
    let p = page();
    ApiReply::raw(200, "text/html; charset=utf-8", p.html.as_bytes())
        .with_header("Content-Security-Policy", p.csp.clone())
        .with_header("Referrer-Policy", "no-referrer")
        // For browsers older than CSP `frame-ancestors`.
        .with_header("X-Frame-Options", "DENY")
}

/// 404 when `server.ui` is false.
pub fn disabled() -> ApiReply {
    ApiReply::error(
        ErrorCode::NotFound,
        "the status page is turned off (server.ui: false)",
    )
}

/// Puts `style` and `script` in place of the template's marks and derives the policy from the
/// exact bytes inlined: the browser hashes an inline block's text as it stands between its tags.
fn assemble(template: &str, style: &str, script: &str) -> Page {
    let html = template
        .replacen(STYLE_MARK, &format!("<style>{style}</style>"), 1)
        .replacen(SCRIPT_MARK, &format!("<script>{script}</script>"), 1);
    let csp = format!(
        "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; \
         img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        source_hash(script),
        source_hash(style),
    );
    Page { html, csp }
}

/// `'sha256-<base64>'`, the CSP hash-source of an inline block.
fn source_hash(text: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(digest)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{serve, ApiOptions, Backend};
    use std::io::{Read, Write};
    use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
    use std::sync::Arc;
    use std::time::Duration;

    /// The text between the only `<open>` and the next `</close>`; panics when there is not exactly one.
    fn only_block<'a>(html: &'a str, open: &str, close: &str) -> &'a str {
        assert_eq!(html.matches(open).count(), 1, "exactly one {open}");
        let start = html.find(open).expect("open tag") + open.len();
        let len = html[start..].find(close).expect("close tag");
        &html[start..start + len]
    }

    #[test]
    fn page_is_small_and_self_contained() {
        let p = page();
        assert!(
            p.html.len() <= 30 * 1024,
            "page is {} bytes, over 30 KB",
            p.html.len()
        );
        assert!(!p.html.contains(STYLE_MARK) && !p.html.contains(SCRIPT_MARK));
        // Nothing that could load from elsewhere: no absolute URL, no external script or sheet.
        for needle in [
            "http:",
            "https:",
            "src=",
            "<link rel=\"stylesheet\"",
            "@import",
        ] {
            assert!(!p.html.contains(needle), "page contains {needle:?}");
        }
        // The closing tags cannot appear early inside the blocks.
        assert!(!STYLE.contains("</style") && !SCRIPT.contains("</script"));
        // Data is rendered as text: the script never parses HTML.
        for needle in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!SCRIPT.contains(needle), "script uses {needle}");
        }
    }

    #[test]
    fn csp_hashes_match_the_served_blocks() {
        let p = page();
        let style = only_block(&p.html, "<style>", "</style>");
        let script = only_block(&p.html, "<script>", "</script>");
        assert_eq!(style, STYLE);
        assert_eq!(script, SCRIPT);
        assert!(p
            .csp
            .contains(&format!("script-src {};", source_hash(script))));
        assert!(p
            .csp
            .contains(&format!("style-src {};", source_hash(style))));
        assert!(p.csp.starts_with("default-src 'none';"));
        for d in [
            "connect-src 'self'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ] {
            assert!(p.csp.contains(d), "{d} missing from {}", p.csp);
        }
        assert!(!p.csp.contains("unsafe"));
        // A known vector: the hash of the empty string.
        assert_eq!(
            source_hash(""),
            "'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU='"
        );
    }

    #[test]
    fn assemble_fills_each_mark_once() {
        let p = assemble("a<!--style-->b<!--script-->c", "x{}", "y()");
        assert_eq!(p.html, "a<style>x{}</style>b<script>y()</script>c");
    }

    struct NoData;
    impl Backend for NoData {
        fn snapshot(&self) -> Arc<crate::state::Snapshot> {
            Arc::default()
        }
        fn engine_ready(&self) -> Result<(), String> {
            Ok(())
        }
        fn version(&self) -> serde_json::Value {
            serde_json::Value::Null
        }
    }

    /// `GET /` on a real server; the status line and the raw head and body.
    fn get_root(ui: bool) -> (u16, String, String) {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let opts = ApiOptions {
            ui,
            ..ApiOptions::default()
        };
        let _running = serve(&[addr], opts, Arc::new(NoData)).expect("serve");
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).ok();
        s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .expect("send");
        let mut raw = String::new();
        s.read_to_string(&mut raw).expect("read");
        let (head, body) = raw.split_once("\r\n\r\n").expect("head");
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status");
        (status, head.to_ascii_lowercase(), body.to_string())
    }

    #[test]
    fn served_with_security_headers() {
        let (status, head, body) = get_root(true);
        assert_eq!(status, 200);
        let p = page();
        for h in [
            "content-type: text/html; charset=utf-8".to_string(),
            format!("content-security-policy: {}", p.csp.to_ascii_lowercase()),
            "x-content-type-options: nosniff".into(),
            "referrer-policy: no-referrer".into(),
            "x-frame-options: deny".into(),
        ] {
            assert!(head.contains(&h), "missing {h:?} in\n{head}");
        }
        assert_eq!(head.matches("x-content-type-options").count(), 1);
        assert!(body.contains(&p.html));
    }

    #[test]
    fn off_when_ui_is_false() {
        let (status, _, body) = get_root(false);
        assert_eq!(status, 404);
        assert!(
            body.contains("40400") && body.contains("server.ui"),
            "{body}"
        );
    }
}
