//! Microsoft's token-endpoint error bodies (the conformance corpus) through the refresh
//! classifier: each reaches the `meaning.classify` and `meaning.reason_code` recorded beside
//! it from its source.

use super::*;
use crate::conformance::examples;

#[test]
fn every_token_error_example_is_classified_as_its_source_says() {
    for (name, example) in examples("identity", "token-error-") {
        let body = serde_json::to_string(&example["response"]["body"]).expect("serialises");
        let refusal: MicrosoftTokenError =
            serde_json::from_str(&body).unwrap_or_else(|error| panic!("{name}: {error}"));
        let meaning = &example["meaning"];
        assert_eq!(
            serde_json::to_value(refusal.classify()).expect("serialises"),
            meaning["classify"],
            "{name}"
        );
        assert_eq!(refusal.reason_code(), meaning["reason_code"], "{name}");
        // What is logged names the codes and Microsoft's ids, never the description.
        let shown = refusal.to_string();
        let description = refusal.error_description.as_deref().unwrap_or_default();
        assert!(
            !description.is_empty() && !shown.contains(description),
            "{name}: {shown}"
        );
    }
}
