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
