//! The sidecar's HTML pages: the error page (for errors that must not be redirected, RFC 6749
//! §4.1.2.1) and the consent page. Every value shown passes through [`escape`]; the pages carry
//! no script, are never cached, and may not be framed (`X-Frame-Options: DENY`, CSP
//! `frame-ancestors 'none'`), so a consent click cannot be hijacked.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Escapes text for HTML element content and double-quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// The Content-Security-Policy of every page: nothing loads, nothing frames it.
const CSP: &str =
    "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'";

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:36rem;margin:3rem auto;\
padding:0 1rem;line-height:1.5}code{background:#eee;padding:0 .2rem;word-break:break-all}\
button{font-size:1rem;padding:.4rem 1.2rem;margin-right:.5rem}";

/// A complete page with the security headers; `body` must already be escaped HTML.
fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width\"><title>{}</title>\
<style>{STYLE}</style></head>\n<body>\n<h1>{}</h1>\n{body}\n</body></html>\n",
        escape(title),
        escape(title),
    );
    let mut response = (status, html).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// An error shown to the user instead of a redirect: `error` is the OAuth error code,
/// `description` says what is wrong.
pub fn error_page(status: StatusCode, error: &str, description: &str) -> Response {
    let body = format!(
        "<p>{}</p>\n<p>Error: <code>{}</code></p>\n<p>Return to the application and start again.</p>",
        escape(description),
        escape(error),
    );
    page(status, "Authorization failed", &body)
}

/// What the consent page shows and submits.
#[derive(Debug)]
pub struct Consent<'a> {
    /// The form's target (`/oauth/consent`).
    pub action: &'a str,
    /// The pending consent's id (hidden field `consent`).
    pub consent_id: &'a str,
    /// The CSRF token (hidden field `csrf`).
    pub csrf: &'a str,
    /// The logged-in user's login.
    pub user: &'a str,
    /// The client's name (or its id when it has none).
    pub client_name: &'a str,
    /// The client id.
    pub client_id: &'a str,
    /// Where the client's code goes: the redirect URI's host (or scheme for private-use URIs).
    pub redirect_host: &'a str,
    /// The resource's canonical URL.
    pub resource: &'a str,
    /// The resource's name, if configured.
    pub resource_name: Option<&'a str>,
    /// The scopes requested.
    pub scopes: &'a [String],
}

/// The consent page: approve or deny, posting the CSRF token.
pub fn consent_page(c: &Consent<'_>) -> Response {
    let scopes = if c.scopes.is_empty() {
        "<li>basic access (no scopes)</li>".to_owned()
    } else {
        c.scopes
            .iter()
            .map(|s| format!("<li><code>{}</code></li>", escape(s)))
            .collect::<Vec<_>>()
            .join("")
    };
    let resource = match c.resource_name {
        Some(name) => format!("{} (<code>{}</code>)", escape(name), escape(c.resource)),
        None => format!("<code>{}</code>", escape(c.resource)),
    };
    let body = format!(
        "<p>Signed in as <strong>{user}</strong>.</p>\n\
<p>The application <strong>{name}</strong> (client id <code>{id}</code>) asks to access \
{resource} on your behalf.</p>\n\
<p>If you approve, it receives access at <strong>{host}</strong>.</p>\n\
<p>Requested scopes:</p>\n<ul>{scopes}</ul>\n\
<form method=\"post\" action=\"{action}\">\n\
<input type=\"hidden\" name=\"consent\" value=\"{consent}\">\n\
<input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\n\
<button type=\"submit\" name=\"decision\" value=\"approve\">Approve</button>\n\
<button type=\"submit\" name=\"decision\" value=\"deny\">Deny</button>\n\
</form>",
        user = escape(c.user),
        name = escape(c.client_name),
        id = escape(c.client_id),
        host = escape(c.redirect_host),
        action = escape(c.action),
        consent = escape(c.consent_id),
        csrf = escape(c.csrf),
    );
    page(StatusCode::OK, "Allow access?", &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_neutralises_markup_and_quotes() {
        assert_eq!(
            escape(r#"<script>alert('x')</script>"&"#),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&quot;&amp;"
        );
    }

    #[tokio::test]
    async fn pages_deny_framing_and_caching() {
        let response = error_page(StatusCode::BAD_REQUEST, "invalid_request", "<b>bad</b>");
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let headers = response.headers();
        assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");
        assert!(
            headers[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .is_ok_and(|v| v.contains("frame-ancestors 'none'"))
        );
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap_or_default();
        let body = String::from_utf8_lossy(&body);
        assert!(body.contains("&lt;b&gt;bad&lt;/b&gt;"));
        assert!(!body.contains("<b>bad"));
    }
}
