//! Microsoft's error redirects and token error bodies (the conformance corpus) through the
//! explanations shown to the administrator or user: each reaches the `meaning.problem`
//! recorded beside it, with the AADSTS code and Microsoft's ids read from it.

use std::path::PathBuf;

use serde_json::Value;

use super::*;

fn corpus(folder: &str) -> Vec<(String, Value)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../infra/microsoft-sim/conformance")
        .join(folder);
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
        .map(|entry| entry.expect("an entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("readable");
            let name = path
                .file_name()
                .expect("a name")
                .to_string_lossy()
                .into_owned();
            (name, serde_json::from_str(&text).expect("JSON"))
        })
        .collect()
}

fn check(name: &str, error: &MicrosoftError, meaning: &Value) {
    assert_eq!(
        format!("{:?}", error.problem()),
        meaning["problem"],
        "{name}"
    );
    if let Some(code) = meaning["aadsts"].as_u64() {
        assert_eq!(error.code().map(u64::from), Some(code), "{name}");
    }
    for (field, value) in [
        ("trace_id", &error.trace_id),
        ("correlation_id", &error.correlation_id),
    ] {
        if let Some(expected) = meaning[field].as_str() {
            assert_eq!(value.as_deref(), Some(expected), "{name} {field}");
        }
    }
    // What is logged is the label and ids, never Microsoft's free text.
    if let Some(description) = &error.description {
        assert!(!error.to_string().contains(description.as_str()), "{name}");
    }
}

#[test]
fn error_redirects_are_explained_as_their_sources_say() {
    let mut seen = 0;
    for (name, example) in corpus("identity") {
        let query = &example["response"]["query"];
        let Some(error) = query["error"].as_str() else {
            continue;
        };
        seen += 1;
        let parsed = MicrosoftError::from_callback(
            error,
            query["error_description"].as_str(),
            query["error_subcode"].as_str(),
        );
        check(&name, &parsed, &example["meaning"]);
    }
    assert!(
        seen >= 4,
        "the corpus holds the authorize and adminconsent error redirects"
    );
}

#[test]
fn token_error_bodies_are_explained_as_their_sources_say() {
    let mut seen = 0;
    for (name, example) in corpus("identity") {
        if !name.starts_with("token-error-") {
            continue;
        }
        seen += 1;
        let body: TokenErrorBody = serde_json::from_value(example["response"]["body"].clone())
            .unwrap_or_else(|error| panic!("{name}: {error}"));
        check(
            &name,
            &MicrosoftError::from_token_error(&body),
            &example["meaning"],
        );
    }
    assert!(seen >= 4);
}
