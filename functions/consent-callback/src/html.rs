//! HTML output: the one escaping function every interpolated value goes through, the page
//! frame, and the security headers every response of this function carries.

use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue, LOCATION, SET_COOKIE};
use http::{HeaderName, StatusCode};
use lambda_http::{Body, Response};

pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            '/' => out.push_str("&#x2F;"),
            '`' => out.push_str("&#x60;"),
            '=' => out.push_str("&#x3D;"),
            '\r' => {}
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// A fragment of HTML that is already safe (built from literals and escaped values).
#[derive(Clone, Debug, Default)]
pub struct Html(String);

impl Html {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends trusted markup (a literal of ours).
    pub fn raw(&mut self, markup: &str) -> &mut Self {
        self.0.push_str(markup);
        self
    }

    /// Appends text, escaped.
    pub fn text(&mut self, text: &str) -> &mut Self {
        self.0.push_str(&escape(text));
        self
    }

    /// `<tag>text</tag>` with the text escaped.
    pub fn element(&mut self, tag: &str, text: &str) -> &mut Self {
        self.raw("<")
            .raw(tag)
            .raw(">")
            .text(text)
            .raw("</")
            .raw(tag)
            .raw(">\n")
    }

    /// `<a href="url">text</a>`, both escaped.
    pub fn link(&mut self, url: &str, text: &str) -> &mut Self {
        self.raw("<a href=\"")
            .text(url)
            .raw("\">")
            .text(text)
            .raw("</a>")
    }

    pub fn append(&mut self, other: &Html) -> &mut Self {
        self.0.push_str(&other.0);
        self
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem;color:#1b1b1b;line-height:1.5}\
h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem}table{border-collapse:collapse;width:100%;margin:.5rem 0}\
th,td{border:1px solid #d0d0d0;padding:.35rem .5rem;text-align:left;vertical-align:top}th{background:#f3f3f3}\
code{background:#f3f3f3;padding:0 .2rem}.box{border:1px solid #d0d0d0;border-radius:6px;padding:1rem;margin:1rem 0}\
.recommended{border-color:#0a6ed1;border-width:2px}.button{display:inline-block;background:#0a6ed1;color:#fff;padding:.45rem .9rem;border-radius:4px;text-decoration:none}\
.muted{color:#555;font-size:.9rem}.error{border-left:4px solid #c50f1f;padding-left:1rem}.ok{border-left:4px solid #107c10;padding-left:1rem}";

/// A whole page: title (escaped), body fragment, footer naming the product.
pub fn page(product: &str, title: &str, body: &Html) -> String {
    let mut out = Html::new();
    out.raw("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n")
        .raw("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n")
        .raw("<meta name=\"referrer\" content=\"no-referrer\">\n<title>")
        .text(title)
        .raw(" - ")
        .text(product)
        .raw("</title>\n<style>")
        .raw(STYLE)
        .raw("</style>\n</head>\n<body>\n<main>\n<h1>")
        .text(title)
        .raw("</h1>\n")
        .append(body)
        .raw("</main>\n<footer class=\"muted\"><p>")
        .text(product)
        .raw("</p></footer>\n</body>\n</html>\n");
    out.0
}

fn secure_headers(builder: http::response::Builder) -> http::response::Builder {
    builder
        .header(
            HeaderName::from_static("content-security-policy"),
            CONTENT_SECURITY_POLICY,
        )
        .header(HeaderName::from_static("x-content-type-options"), "nosniff")
        .header(HeaderName::from_static("referrer-policy"), "no-referrer")
        .header(CACHE_CONTROL, "no-store")
}

/// An HTML response with the security headers and any cookies to set.
pub fn html_response(status: StatusCode, html: String, cookies: &[String]) -> Response<Body> {
    let mut builder = secure_headers(Response::builder().status(status))
        .header(CONTENT_TYPE, "text/html; charset=utf-8");
    for cookie in cookies {
        builder = builder.header(SET_COOKIE, cookie);
    }
    builder
        .body(Body::Text(html))
        .unwrap_or_else(|_| fallback())
}

/// A 302 with the security headers; `location` must be one we built.
pub fn redirect(location: &str, cookies: &[String]) -> Response<Body> {
    let Ok(location) = HeaderValue::from_str(location) else {
        return fallback();
    };
    let mut builder =
        secure_headers(Response::builder().status(StatusCode::FOUND)).header(LOCATION, location);
    for cookie in cookies {
        builder = builder.header(SET_COOKIE, cookie);
    }
    builder.body(Body::Empty).unwrap_or_else(|_| fallback())
}

/// A JSON response with the security headers.
pub fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    secure_headers(Response::builder().status(status))
        .header(CONTENT_TYPE, "application/json")
        .body(Body::Text(value.to_string()))
        .unwrap_or_else(|_| fallback())
}

fn fallback() -> Response<Body> {
    let mut response = Response::new(Body::Text("Internal error".into()));
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_makes_markup_inert() {
        assert_eq!(
            escape("<script>alert(\"x\")</script>"),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;&#x2F;script&gt;"
        );
        assert_eq!(escape("a & b"), "a &amp; b");
        assert_eq!(escape("it's"), "it&#x27;s");
        assert_eq!(escape("\" onmouseover=x"), "&quot; onmouseover&#x3D;x");
        assert_eq!(escape("`x`"), "&#x60;x&#x60;");
        assert_eq!(escape("nul\u{0}"), "nul\u{FFFD}");
        assert_eq!(escape("a\r\nb"), "a\nb");
        assert_eq!(escape("Contoso — Ltd"), "Contoso — Ltd");
    }

    #[test]
    fn pages_escape_what_they_interpolate() {
        let mut body = Html::new();
        body.element("p", "<img src=x onerror=alert(1)>")
            .link("https://x/?a=1&b=\"2\"", "<b>");
        let html = page("Prod<uct>", "T<i>tle", &body);
        assert!(!html.contains("<img"), "{html}");
        assert!(!html.contains("<i>"), "{html}");
        assert!(!html.contains("<uct>"), "{html}");
        assert!(
            html.contains("href=\"https:&#x2F;&#x2F;x&#x2F;?a&#x3D;1&amp;b&#x3D;&quot;2&quot;\"")
        );
    }

    #[test]
    fn every_response_carries_the_security_headers() {
        for response in [
            html_response(StatusCode::OK, "x".into(), &["a=b".into()]),
            redirect("https://example.com/", &[]),
            json_response(StatusCode::OK, &serde_json::json!({"ok": true})),
        ] {
            let headers = response.headers();
            assert_eq!(headers["content-security-policy"], CONTENT_SECURITY_POLICY);
            assert_eq!(headers["x-content-type-options"], "nosniff");
            assert_eq!(headers["referrer-policy"], "no-referrer");
            assert_eq!(headers["cache-control"], "no-store");
        }
        assert_eq!(redirect("bad\nvalue", &[]).status(), 500);
    }
}
