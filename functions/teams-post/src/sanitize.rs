//! The HTML a Teams post may carry: what the producer sends is cleaned with `ammonia` down to
//! what Teams renders (the formatting of Teams' text messages: paragraphs and line breaks,
//! bold / italic / underline / strike-through, links, lists, block quotes, preformatted
//! text and code, headings 1-3, horizontal rules, spans and basic tables), and measured
//! after cleaning against Teams' message size limit.
//!
//! Everything else goes: `script`, `style` (with their content), `iframe`, `img` (Teams
//! would fetch it from the reader's client), forms, comments, every `on*` handler and
//! `style` attribute, and links whose scheme is not http, https or mailto (relative links
//! too: a Teams message has no base URL). Text content is kept and re-escaped, so nothing
//! the producer wrote can become markup Teams interprets beyond this list.

use std::collections::{HashMap, HashSet};

use ammonia::{Builder, UrlRelative};

/// Teams' limit on a message: about 28 KB including its HTML, mentions and reactions
/// (Teams limits page, graph-contract §7). We send no mentions or attachments, so the
/// sanitized content is what counts.
pub const MAX_MESSAGE_BYTES: usize = 28 * 1024;

/// Tags kept (their allowed attributes below).
const TAGS: &[&str] = &[
    "p",
    "br",
    "div",
    "b",
    "strong",
    "i",
    "em",
    "u",
    "s",
    "strike",
    "del",
    "a",
    "ul",
    "ol",
    "li",
    "blockquote",
    "pre",
    "code",
    "h1",
    "h2",
    "h3",
    "hr",
    "span",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
];

/// Tags removed together with their content (the default keeps the text of a removed tag).
const DROP_WITH_CONTENT: &[&str] = &["script", "style", "iframe", "object", "embed", "template"];

/// URL schemes a link may use.
const URL_SCHEMES: &[&str] = &["http", "https", "mailto"];

/// Why a message cannot be posted as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentError {
    #[error("the message has no content left after sanitizing")]
    Empty,
    #[error(
        "the sanitized message is {bytes} bytes; Teams accepts at most {limit} bytes per message"
    )]
    TooLarge { bytes: usize, limit: usize },
}

/// The sanitizer, configured once.
pub struct Sanitizer {
    builder: Builder<'static>,
}

impl Default for Sanitizer {
    fn default() -> Self {
        Self::new()
    }
}

impl Sanitizer {
    pub fn new() -> Self {
        let mut builder = Builder::empty();
        let attributes: HashMap<&'static str, HashSet<&'static str>> = HashMap::from([
            ("a", HashSet::from(["href", "title"])),
            ("th", HashSet::from(["colspan", "rowspan"])),
            ("td", HashSet::from(["colspan", "rowspan"])),
            ("ol", HashSet::from(["start"])),
        ]);
        builder
            .tags(TAGS.iter().copied().collect())
            .clean_content_tags(DROP_WITH_CONTENT.iter().copied().collect())
            .tag_attributes(attributes)
            .generic_attributes(HashSet::new())
            .url_schemes(URL_SCHEMES.iter().copied().collect())
            .url_relative(UrlRelative::Deny)
            .link_rel(Some("noopener noreferrer"))
            .strip_comments(true);
        Self { builder }
    }

    /// The cleaned HTML (possibly empty).
    pub fn clean(&self, html: &str) -> String {
        self.builder.clean(html).to_string()
    }

    /// Cleans `html` and checks the result against the size limit.
    pub fn prepare(&self, html: &str) -> Result<String, ContentError> {
        let clean = self.clean(html);
        if clean.trim().is_empty() {
            return Err(ContentError::Empty);
        }
        if clean.len() > MAX_MESSAGE_BYTES {
            return Err(ContentError::TooLarge {
                bytes: clean.len(),
                limit: MAX_MESSAGE_BYTES,
            });
        }
        Ok(clean)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean(html: &str) -> String {
        Sanitizer::new().clean(html)
    }

    #[test]
    fn keeps_what_teams_renders() {
        for html in [
            "<p>Deal <b>won</b>, <strong>signed</strong>, <i>soon</i>, <em>now</em>, <u>u</u>, <s>old</s></p>",
            "<ul><li>one</li></ul><ol start=\"3\"><li>three</li></ol>",
            "<blockquote>quoted</blockquote><pre><code>let x = 1;</code></pre>",
            "<h1>A</h1><h2>B</h2><h3>C</h3><hr><span>plain</span><br>",
            "<table><thead><tr><th colspan=\"2\">Head</th></tr></thead><tbody><tr><td>1</td><td rowspan=\"1\">2</td></tr></tbody></table>",
        ] {
            assert_eq!(clean(html), html, "{html}");
        }
        assert_eq!(
            clean(r#"<a href="https://crm.example/deal/42" title="Deal">deal</a>"#),
            r#"<a href="https://crm.example/deal/42" title="Deal" rel="noopener noreferrer">deal</a>"#
        );
        assert_eq!(
            clean(r#"<a href="mailto:dana@fabrikam.example">mail</a>"#),
            r#"<a href="mailto:dana@fabrikam.example" rel="noopener noreferrer">mail</a>"#
        );
    }

    #[test]
    fn removes_what_could_run_or_fetch() {
        assert_eq!(clean("<p>a<script>alert(1)</script>b</p>"), "<p>ab</p>");
        assert_eq!(clean("<style>p{color:red}</style><p>x</p>"), "<p>x</p>");
        assert_eq!(
            clean("<iframe src=\"https://evil.example\">inside</iframe><p>x</p>"),
            "<p>x</p>"
        );
        assert_eq!(
            clean(r#"<p onclick="steal()" style="color:red" class="x" id="y">x</p>"#),
            "<p>x</p>"
        );
        assert_eq!(
            clean(r#"<a href="javascript:alert(1)" onmouseover="x()">x</a>"#),
            r#"<a rel="noopener noreferrer">x</a>"#
        );
        assert_eq!(
            clean(r#"<a href="/relative/path">x</a>"#),
            r#"<a rel="noopener noreferrer">x</a>"#
        );
        assert_eq!(clean(r#"<img src="https://tracker.example/p.gif">"#), "");
        assert_eq!(clean("<!-- note --><p>x</p>"), "<p>x</p>");
        assert_eq!(
            clean("<form action=\"https://x\"><input value=\"v\"></form>text"),
            "text"
        );
        assert_eq!(clean("<svg><script>alert(1)</script></svg>"), "");
    }

    #[test]
    fn text_stays_text() {
        assert_eq!(clean("5 < 6 & 7 > 3"), "5 &lt; 6 &amp; 7 &gt; 3");
        assert_eq!(
            clean("<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>"),
            "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>"
        );
        // Unbalanced markup is repaired, not passed through.
        assert_eq!(clean("<b>bold<p>para"), "<b>bold<p>para</p></b>");
    }

    #[test]
    fn size_is_measured_after_sanitizing() {
        let sanitizer = Sanitizer::new();
        // Over the limit before cleaning, under it after: the script is dropped.
        let padded = format!(
            "<p>hello</p><script>{}</script>",
            "x".repeat(MAX_MESSAGE_BYTES)
        );
        assert_eq!(
            sanitizer.prepare(&padded).expect("fits"),
            "<p>hello</p>".to_owned()
        );
        let exact = "y".repeat(MAX_MESSAGE_BYTES);
        assert_eq!(
            sanitizer.prepare(&exact).expect("fits exactly").len(),
            MAX_MESSAGE_BYTES
        );
        let over = format!("<p>{}</p>", "z".repeat(MAX_MESSAGE_BYTES));
        assert_eq!(
            sanitizer.prepare(&over),
            Err(ContentError::TooLarge {
                bytes: MAX_MESSAGE_BYTES + 7,
                limit: MAX_MESSAGE_BYTES
            })
        );
        // Escaping can make text larger than it came.
        let ampersands = "&".repeat(MAX_MESSAGE_BYTES / 2);
        assert!(matches!(
            sanitizer.prepare(&ampersands),
            Err(ContentError::TooLarge { .. })
        ));
        assert_eq!(
            sanitizer.prepare("<script>only</script>"),
            Err(ContentError::Empty)
        );
    }
}
