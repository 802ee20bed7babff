//! Test-only access to Microsoft's wire examples in `infra/microsoft-sim/conformance/`
//! (see its README): each example file, or every file of a folder whose name starts with a
//! prefix, so that an example added to the corpus is checked without touching the tests.

use std::path::PathBuf;

use serde_json::Value;

/// The corpus folder, from this crate's manifest directory.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../infra/microsoft-sim/conformance")
}

/// One example, by its path under the corpus (`mail/message-delta-page-first.json`).
pub fn example(name: &str) -> Value {
    let path = root().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// Every example of `folder` whose file name starts with `prefix`, as (file name, example),
/// sorted by name; panics when there is none (a renamed corpus must not pass silently).
pub fn examples(folder: &str, prefix: &str) -> Vec<(String, Value)> {
    let dir = root().join(folder);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
        .map(|entry| {
            entry
                .expect("a directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.starts_with(prefix) && name.ends_with(".json"))
        .collect();
    names.sort();
    assert!(
        !names.is_empty(),
        "no {folder}/{prefix}*.json in the corpus"
    );
    names
        .into_iter()
        .map(|name| {
            let value = example(&format!("{folder}/{name}"));
            (name, value)
        })
        .collect()
}

/// The example's response body as bytes, as Microsoft would send it.
pub fn body_bytes(example: &Value) -> Vec<u8> {
    serde_json::to_vec(&example["response"]["body"]).expect("serialises")
}

/// A loopback server answering every request with the example's status, headers and body;
/// returns its base URL and the requests it received.
pub async fn serve(
    example: &Value,
) -> (
    crate::config::BaseUrl,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    let response = &example["response"];
    let status = response["status"].as_u64().expect("a status");
    let body = if response.get("body").is_some() {
        body_bytes(example)
    } else {
        Vec::new()
    };
    let mut head = format!("HTTP/1.1 {status} Example\r\n");
    if let Some(headers) = response["headers"].as_object() {
        for (name, value) in headers {
            head.push_str(&format!(
                "{name}: {}\r\n",
                value.as_str().expect("a header value")
            ));
        }
    }
    head.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    ));
    canned_server(head, body).await
}

/// A loopback HTTP server that answers every request with `head` + `body` and closes;
/// returns its base URL and the request heads it received.
pub async fn canned_server(
    head: String,
    body: Vec<u8>,
) -> (
    crate::config::BaseUrl,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let base =
        crate::config::BaseUrl::parse(&format!("http://{}", listener.local_addr().expect("addr")))
            .expect("a base URL");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = std::sync::Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            // The body too, as far as Content-Length says.
            let text = String::from_utf8_lossy(&request).to_lowercase();
            let head_end = text.find("\r\n\r\n").map_or(request.len(), |at| at + 4);
            let length = text
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .and_then(|value| value.trim().parse::<usize>().ok())
                .unwrap_or(0);
            while request.len() < head_end + length {
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            log.lock()
                .expect("log")
                .push(String::from_utf8_lossy(&request).to_lowercase());
            let _ = socket.write_all(head.as_bytes()).await;
            let _ = socket.write_all(&body).await;
            let _ = socket.shutdown().await;
        }
    });
    (base, seen)
}
