//! Just enough HTML reading to click through microsoft-sim's pages the way a browser would:
//! the forms of a page, with their action, hidden fields, inputs and submit buttons.

/// One `<form>`.
#[derive(Clone, Debug, Default)]
pub struct Form {
    pub action: String,
    /// Named inputs with their values (hidden, text, email...), in order.
    pub fields: Vec<(String, String)>,
    /// Submit buttons: `(name, value, label)`; name and value may be empty.
    pub buttons: Vec<(String, String, String)>,
    /// The form's whole text (labels, button captions), tags removed.
    pub text: String,
}

fn unescape(value: &str) -> String {
    value
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#x2F;", "/")
        .replace("&#x3D;", "=")
        .replace("&amp;", "&")
}

fn attr(tag: &str, name: &str) -> Option<String> {
    let needle = format!("{name}=\"");
    let start = tag.find(&needle)? + needle.len();
    let end = tag[start..].find('"')? + start;
    Some(unescape(&tag[start..end]))
}

fn strip_tags(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => {
                in_tag = false;
                out.push(' ');
            }
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    unescape(&out.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// Every form of `html`.
pub fn forms(html: &str) -> Vec<Form> {
    let mut out = Vec::new();
    let mut rest = html;
    while let Some(start) = rest.find("<form") {
        let after = &rest[start..];
        let end = after
            .find("</form>")
            .map_or(after.len(), |e| e + "</form>".len());
        let chunk = &after[..end];
        let open_end = chunk.find('>').unwrap_or(chunk.len());
        let mut form = Form {
            action: attr(&chunk[..open_end], "action").unwrap_or_default(),
            text: strip_tags(chunk),
            ..Form::default()
        };
        let mut inner = &chunk[open_end..];
        while let Some(pos) = inner.find('<') {
            inner = &inner[pos..];
            let tag_end = inner.find('>').unwrap_or(inner.len());
            let tag = &inner[..tag_end];
            if tag.starts_with("<input") {
                let kind = attr(tag, "type").unwrap_or_else(|| "text".into());
                if let Some(name) = attr(tag, "name")
                    && kind != "checkbox"
                    && kind != "submit"
                {
                    form.fields
                        .push((name, attr(tag, "value").unwrap_or_default()));
                }
            } else if tag.starts_with("<textarea") {
                if let Some(name) = attr(tag, "name") {
                    form.fields.push((name, String::new()));
                }
            } else if tag.starts_with("<button") {
                let close = inner.find("</button>").unwrap_or(inner.len());
                let label = strip_tags(&inner[..close]);
                form.buttons.push((
                    attr(tag, "name").unwrap_or_default(),
                    attr(tag, "value").unwrap_or_default(),
                    label,
                ));
            }
            inner = &inner[tag_end.min(inner.len())..];
            if inner.is_empty() {
                break;
            }
            inner = &inner[1.min(inner.len())..];
        }
        out.push(form);
        rest = &after[end..];
    }
    out
}

/// The page's visible text, tags removed.
pub fn text(html: &str) -> String {
    strip_tags(html)
}
