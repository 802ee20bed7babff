//! HTML → text, the way Outlook serves `Prefer: outlook.body-content-type="text"` and computes `bodyPreview`:
//! markup dropped, `head`/`style`/`script` content skipped, block elements and `<br>` become line breaks
//! (`\r\n`, as Exchange writes them), entities decoded, runs of whitespace inside text collapsed.

pub fn html_to_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len() / 2);
    let mut rest = html;
    let mut skip_until: Option<&'static str> = None;
    let mut pending_space = false;
    while !rest.is_empty() {
        if let Some(lt) = rest.find('<') {
            let (text, after) = rest.split_at(lt);
            if skip_until.is_none() {
                push_text(&mut out, text, &mut pending_space);
            }
            let Some(gt) = after.find('>') else {
                // An unterminated tag: treat the rest as text, as browsers do.
                if skip_until.is_none() {
                    push_text(&mut out, after, &mut pending_space);
                }
                break;
            };
            let tag = &after[1..gt];
            rest = &after[gt + 1..];
            let closing = tag.starts_with('/');
            let name: String = tag
                .trim_start_matches('/')
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect::<String>()
                .to_ascii_lowercase();
            if let Some(end) = skip_until {
                if closing && name == end {
                    skip_until = None;
                }
                continue;
            }
            match name.as_str() {
                "head" | "style" | "script" | "title" if !closing => {
                    skip_until = Some(match name.as_str() {
                        "head" => "head",
                        "style" => "style",
                        "script" => "script",
                        _ => "title",
                    });
                }
                "br" => newline(&mut out, &mut pending_space, true),
                "p" | "div" | "tr" | "li" | "h1" | "h2" | "h3" | "h4" | "h5" | "h6" | "table"
                | "ul" | "ol" | "blockquote" | "hr" => newline(&mut out, &mut pending_space, false),
                "td" | "th" if closing => pending_space = true,
                _ => {}
            }
        } else {
            if skip_until.is_none() {
                push_text(&mut out, rest, &mut pending_space);
            }
            break;
        }
    }
    let trimmed = out.trim_end_matches(['\r', '\n', ' ']);
    trimmed.trim_start_matches(['\r', '\n', ' ']).to_owned()
}

fn newline(out: &mut String, pending_space: &mut bool, always: bool) {
    *pending_space = false;
    if always || !(out.is_empty() || out.ends_with('\n')) {
        out.push_str("\r\n");
    }
}

fn push_text(out: &mut String, text: &str, pending_space: &mut bool) {
    let decoded = decode_entities(text);
    for c in decoded.chars() {
        if c.is_whitespace() && c != '\u{a0}' {
            *pending_space = true;
            continue;
        }
        if *pending_space && !(out.is_empty() || out.ends_with('\n') || out.ends_with(' ')) {
            out.push(' ');
        }
        *pending_space = false;
        out.push(if c == '\u{a0}' { ' ' } else { c });
    }
}

fn decode_entities(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains('&') {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp..];
        let semi = after.find(';').filter(|&i| i <= 10);
        let decoded = semi.and_then(|i| {
            let entity = &after[1..i];
            let c = match entity {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" | "#39" => Some('\''),
                "nbsp" => Some('\u{a0}'),
                _ => entity
                    .strip_prefix("#x")
                    .or_else(|| entity.strip_prefix("#X"))
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                    .and_then(char::from_u32),
            };
            c.map(|c| (c, i))
        });
        match decoded {
            Some((c, i)) => {
                out.push(c);
                rest = &after[i + 1..];
            }
            None => {
                out.push('&');
                rest = &after[1..];
            }
        }
    }
    out.push_str(rest);
    std::borrow::Cow::Owned(out)
}

/// `bodyPreview`: the first 255 characters of the text form of the body.
pub fn preview(text: &str) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    flat.chars().take(255).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_outlook_html() {
        let html = "<html><head>\r\n<meta http-equiv=\"Content-Type\" content=\"text/html; charset=utf-8\">\r\n\
                    <style>p {margin:0}</style></head>\r\n<body>\r\n<div>Hi Dana,</div>\r\n\
                    <p>Prices &amp; terms   are&nbsp;attached.</p>\r\n<div>Best,<br>Megan &lt;CFO&gt;</div></body></html>";
        assert_eq!(
            html_to_text(html),
            "Hi Dana,\r\nPrices & terms are attached.\r\nBest,\r\nMegan <CFO>"
        );
    }

    #[test]
    fn numeric_entities_and_stray_ampersands() {
        assert_eq!(html_to_text("a &#233; &#x263A; & b"), "a é ☺ & b");
    }

    #[test]
    fn preview_is_255_chars_of_flattened_text() {
        let long = "word ".repeat(100);
        let p = preview(&long);
        assert_eq!(p.chars().count(), 255);
        assert!(!p.contains("  "));
    }
}
