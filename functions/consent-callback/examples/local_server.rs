//! Serves the handler over HTTP on 127.0.0.1 in front of moto and microsoft-sim (HTML mode,
//! one tenant with an administrator and a user), for the browser test and for looking at
//! the pages by hand. Prints one JSON line (`url`, `admin`, `user`, `tenant`, `app`,
//! `sim`) and runs until its standard input closes.
//!
//! `cargo run -p consent-callback --example local_server`

#[path = "../tests/support/mod.rs"]
mod support;

use serde_json::json;
use std::io::Read as _;
use support::live::{Live, tenant_json};

#[tokio::main]
async fn main() {
    let tenant = uuid::Uuid::new_v4().to_string();
    let (admin, user) = (
        uuid::Uuid::new_v4().to_string(),
        uuid::Uuid::new_v4().to_string(),
    );
    let domain = "contoso.example";
    let (admin_upn, user_upn) = (format!("admin@{domain}"), format!("adele@{domain}"));
    let live = Live::start(
        false,
        vec![tenant_json(
            &tenant,
            domain,
            json!({"userConsent": "allowed"}),
            &[
                (&admin, &admin_upn, &["GlobalAdministrator"]),
                (&user, &user_upn, &[]),
            ],
        )],
    )
    .await;
    println!(
        "{}",
        json!({"url": live.public, "admin": admin_upn, "user": user_upn, "tenant": tenant,
               "app": live.app_url, "sim": live.sim.base_url()})
    );
    // Runs until whoever started it closes our standard input (or kills us).
    let _ = tokio::task::spawn_blocking(|| std::io::stdin().read_to_end(&mut Vec::new())).await;
    drop(live);
}
