//! Microsoft's token-endpoint error bodies (the conformance corpus) through the refresh
//! classifier: each reaches the `meaning.classify` and `meaning.reason_code` recorded beside
//! it from its source.

use super::*;
use crate::conformance::{examples, serve};

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

/// Every documented token SUCCESS response, as the refresh client reads it off the wire:
/// `offline_access` is never in `scope`, so the refresh token decides it; `scope`, when
/// sent, says what was granted (even URL-encoded, as the auth-code doc's sample shows it);
/// absent, the requested scopes stand. The one rule is ScopeSet::granted_by_token_response,
/// which consent-callback's code redemption applies too.
#[tokio::test]
async fn every_token_success_example_grants_what_its_source_says() {
    let mut seen = 0;
    for prefix in ["token-authcode-success", "token-refresh-success"] {
        for (name, example) in examples("identity", prefix) {
            seen += 1;
            let body = &example["response"]["body"];
            let record = ScopeSet::parse("openid profile email offline_access Mail.Read");
            let (base, served) = serve(&example).await;
            let client = RefreshClient::new(token_http_client().expect("client"), base, "client");
            let grant = client
                .refresh(
                    &TenantId::parse("9188040d-6c67-4c5b-b112-36a304b66dad").expect("guid"),
                    &crate::secret::ClientSecret::new("secret".to_owned()),
                    &RefreshToken::new("rt".to_owned()),
                    &record,
                    OffsetDateTime::now_utc(),
                )
                .await
                .unwrap_or_else(|error| panic!("{name}: {error}"));
            assert_eq!(served.lock().expect("log").len(), 1, "{name}");
            let scope = body.get("scope").and_then(|scope| scope.as_str());
            assert!(
                !scope.unwrap_or_default().contains("offline_access"),
                "{name}: Microsoft's examples never echo offline_access"
            );
            assert_eq!(
                grant.refresh_token.is_some(),
                body["refresh_token"].is_string(),
                "{name}"
            );
            // We redeemed a refresh token: offline access stands, echoed or not.
            assert!(grant.scopes.contains(Scope::OfflineAccess), "{name}");
            match scope {
                None => {
                    assert!(Feature::Mail.is_usable_with(&grant.scopes), "{name}");
                    assert!(
                        grant.scopes.contains(Scope::MailRead),
                        "{name}: as requested"
                    );
                }
                Some(scope) => {
                    let listed = ScopeSet::parse(scope);
                    for name_listed in listed.names() {
                        assert!(
                            grant.scopes.names().contains(&name_listed),
                            "{name}: {name_listed} granted"
                        );
                    }
                }
            }
            // The same body at sign-in: the refresh token is the only proof.
            let sign_in = ScopeSet::granted_by_token_response(
                scope,
                &record,
                body["refresh_token"].is_string(),
            );
            assert_eq!(
                sign_in.contains(Scope::OfflineAccess),
                body["refresh_token"].is_string(),
                "{name}"
            );
            if example["meaning"]["offline_access"] == "proven by refresh_token" {
                assert!(sign_in.contains(Scope::OfflineAccess), "{name}");
            }
        }
    }
    assert!(
        seen >= 3,
        "the corpus holds the auth-code and refresh successes"
    );
}
