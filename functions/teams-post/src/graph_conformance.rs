//! Microsoft's Teams answers (the conformance corpus) through teams-post's readers: a
//! channel or chat message post gives the message id (and the channel's webUrl), a chat
//! creation gives the chat id; and the requests teams-post builds have the documented shape.

use std::path::PathBuf;

use serde_json::Value;

use super::*;

fn corpus() -> Vec<(String, Value)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../infra/microsoft-sim/conformance/teams");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
        .map(|entry| entry.expect("an entry").path())
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let name = path
                .file_name()
                .expect("a name")
                .to_string_lossy()
                .into_owned();
            let text = std::fs::read_to_string(&path).expect("readable");
            (name, serde_json::from_str(&text).expect("JSON"))
        })
        .collect()
}

fn body(example: &Value) -> Vec<u8> {
    serde_json::to_vec(&example["response"]["body"]).expect("serialises")
}

#[test]
fn every_teams_answer_reads_as_documented() {
    let mut seen = 0;
    for (name, example) in corpus() {
        let meaning = &example["meaning"];
        assert_eq!(example["response"]["status"], 201, "{name}");
        if let Some(id) = meaning["message_id"].as_str() {
            let posted = posted(&body(&example));
            assert_eq!(posted.id, id, "{name}");
            assert_eq!(
                posted.web_url.is_some(),
                meaning["web_url"] == true,
                "{name}"
            );
            // What teams-post sends has the documented request's shape (body.content, plus contentType).
            let ours = message_body("<p>Hello World</p>");
            assert!(
                example["request"]["body"]["body"]["content"].is_string()
                    && ours["body"]["content"].is_string()
            );
            assert_eq!(ours["body"]["contentType"], "html");
            seen += 1;
        }
        if let Some(id) = meaning["chat_id"].as_str() {
            assert_eq!(created_chat(&body(&example)).expect("a chat"), id, "{name}");
            seen += 1;
        }
    }
    assert_eq!(
        seen, 4,
        "channel message, chat message, 1:1 chat, group chat"
    );
}
