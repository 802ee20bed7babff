//! Provisioning from a template against the real emulator: what the template
//! declares is what appears, with the declared keys, indexes, TTL, redrive
//! policy and secret value.

use std::collections::BTreeMap;
use std::path::Path;

use aws_sdk_dynamodb::types::{KeyType, ProjectionType, TimeToLiveStatus};
use aws_sdk_sqs::types::QueueAttributeName;

fn fixture() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/provision-template.yaml")
}

#[tokio::test]
async fn declared_resources_appear_with_their_properties() {
    let stack = local_stack::test_stack_from(&fixture(), &BTreeMap::new())
        .await
        .unwrap();
    let p = &stack.provisioned;
    let mut kinds: Vec<_> = p
        .created
        .iter()
        .map(|c| (c.logical_id.as_str(), c.resource_type.as_str()))
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            ("ApiSecret", "AWS::SecretsManager::Secret"),
            ("JobsDLQ", "AWS::SQS::Queue"),
            ("JobsQueue", "AWS::SQS::Queue"),
            ("OrdersTable", "AWS::DynamoDB::Table"),
        ]
    );

    // Table: keys, GSI with its projection, TTL.
    let ddb = aws_sdk_dynamodb::Client::new(&stack.sdk);
    let table = stack.var("ORDERS_TABLE");
    assert_eq!(table, format!("{}-OrdersTable", p.stack_name));
    let desc = ddb.describe_table().table_name(table).send().await.unwrap();
    let desc = desc.table().unwrap();
    let keys: Vec<_> = desc
        .key_schema()
        .iter()
        .map(|k| (k.attribute_name(), k.key_type().clone()))
        .collect();
    assert_eq!(keys, [("pk", KeyType::Hash), ("sk", KeyType::Range)]);
    let gsi = &desc.global_secondary_indexes()[0];
    assert_eq!(gsi.index_name(), Some("ByStatus"));
    let gsi_keys: Vec<_> = gsi
        .key_schema()
        .iter()
        .map(|k| k.attribute_name())
        .collect();
    assert_eq!(gsi_keys, ["status", "pk"]);
    assert_eq!(
        gsi.projection().unwrap().projection_type(),
        Some(&ProjectionType::KeysOnly)
    );
    let ttl = ddb
        .describe_time_to_live()
        .table_name(table)
        .send()
        .await
        .unwrap();
    let ttl = ttl.time_to_live_description().unwrap();
    assert_eq!(ttl.attribute_name(), Some("expiresAt"));
    assert_eq!(ttl.time_to_live_status(), Some(&TimeToLiveStatus::Enabled));

    // Queue: visibility and a redrive policy pointing at the DLQ's ARN.
    let sqs = aws_sdk_sqs::Client::new(&stack.sdk);
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(stack.var("JOBS_QUEUE_URL"))
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .unwrap();
    let attrs = attrs.attributes().unwrap();
    assert_eq!(attrs[&QueueAttributeName::VisibilityTimeout], "120");
    let redrive: serde_json::Value =
        serde_json::from_str(&attrs[&QueueAttributeName::RedrivePolicy]).unwrap();
    let dlq_url = p.physical("JobsDLQ").unwrap();
    let dlq_arn = sqs
        .get_queue_attributes()
        .queue_url(dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes()
        .unwrap()[&QueueAttributeName::QueueArn]
        .clone();
    assert_eq!(redrive["deadLetterTargetArn"], dlq_arn.as_str());
    assert_eq!(
        redrive["maxReceiveCount"].to_string().trim_matches('"'),
        "3"
    );

    // Secret: the declared name and value.
    let sm = aws_sdk_secretsmanager::Client::new(&stack.sdk);
    let secret = sm
        .get_secret_value()
        .secret_id(stack.var("API_SECRET_ID"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        secret.name(),
        Some(format!("{}/api", p.stack_name).as_str())
    );
    assert_eq!(secret.secret_string(), Some("s3cr3t"));

    // Environment: parameters and Fn::Sub with a GetAtt.
    assert_eq!(stack.var("GREETING"), "hello");
    assert_eq!(
        stack.var("COMBINED"),
        format!("{}:hello:{dlq_arn}", p.stack_name)
    );
}

#[tokio::test]
async fn parameter_overrides_win_over_defaults() {
    let params = BTreeMap::from([("Greeting".to_string(), "bonjour".to_string())]);
    let stack = local_stack::test_stack_from(&fixture(), &params)
        .await
        .unwrap();
    assert_eq!(stack.var("GREETING"), "bonjour");
}

#[tokio::test]
async fn two_stacks_on_one_emulator_do_not_collide() {
    let a = local_stack::test_stack_from(&fixture(), &BTreeMap::new())
        .await
        .unwrap();
    let b = local_stack::test_stack_from(&fixture(), &BTreeMap::new())
        .await
        .unwrap();
    assert_eq!(a.endpoint, b.endpoint);
    assert_ne!(a.var("ORDERS_TABLE"), b.var("ORDERS_TABLE"));
}

/// The product's own template: every variable the functions read resolves,
/// and every table, queue and secret it declares exists.
#[tokio::test]
async fn repository_template_provisions_completely() {
    let stack = local_stack::test_stack().await.unwrap();
    for var in [
        "TENANTS_TABLE",
        "CONNECTIONS_TABLE",
        "SYNC_STATE_TABLE",
        "ACTIVITIES_TABLE",
        "CRM_TABLE",
        "AUTH_SESSIONS_TABLE",
        "IDEMPOTENCY_TABLE",
        "SUBSCRIPTIONS_TABLE",
        "MAIL_SYNC_QUEUE_URL",
        "CALENDAR_SYNC_QUEUE_URL",
        "TEAMS_POST_QUEUE_URL",
        "SUBSCRIPTION_QUEUE_URL",
        "CLIENT_SECRET_ID",
        "LOGIN_BASE_URL",
        "GRAPH_BASE_URL",
        "MESSAGE_BODIES_BUCKET",
    ] {
        assert!(!stack.var(var).is_empty(), "{var}");
    }
    let template = local_stack::Template::load(&local_stack::template_path()).unwrap();
    let declared = template
        .resources
        .iter()
        .filter(|(_, r)| {
            matches!(
                r["Type"].as_str(),
                Some(
                    "AWS::DynamoDB::Table"
                        | "AWS::SQS::Queue"
                        | "AWS::SecretsManager::Secret"
                        | "AWS::S3::Bucket"
                        | "AWS::S3::BucketPolicy"
                        | "AWS::Events::EventBus"
                )
            )
        })
        .count();
    assert_eq!(stack.provisioned.created.len(), declared);
    let ddb = aws_sdk_dynamodb::Client::new(&stack.sdk);
    let tables = ddb.list_tables().send().await.unwrap();
    let ours = tables
        .table_names()
        .iter()
        .filter(|t| t.starts_with(&format!("{}-", stack.provisioned.stack_name)))
        .count();
    assert_eq!(ours, 8);
    // Change notifications: the subscriptions table's keys and TTL (what
    // connector-core's DynamoSubscriptionStore writes), and its queue's redrive to its DLQ.
    let subscriptions = stack.var("SUBSCRIPTIONS_TABLE");
    let described = ddb
        .describe_table()
        .table_name(subscriptions)
        .send()
        .await
        .unwrap();
    let keys: Vec<(String, String)> = described
        .table()
        .unwrap()
        .key_schema()
        .iter()
        .map(|k| {
            (
                k.attribute_name().to_owned(),
                k.key_type().as_str().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        keys,
        [
            ("pk".to_owned(), "HASH".to_owned()),
            ("sk".to_owned(), "RANGE".to_owned())
        ]
    );
    let ttl = ddb
        .describe_time_to_live()
        .table_name(subscriptions)
        .send()
        .await
        .unwrap();
    assert_eq!(
        ttl.time_to_live_description()
            .and_then(|d| d.attribute_name()),
        Some("ttl")
    );
    let sqs = aws_sdk_sqs::Client::new(&stack.sdk);
    let redrive = sqs
        .get_queue_attributes()
        .queue_url(stack.var("SUBSCRIPTION_QUEUE_URL"))
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy)
        .send()
        .await
        .unwrap();
    let redrive = redrive
        .attributes()
        .and_then(|a| a.get(&aws_sdk_sqs::types::QueueAttributeName::RedrivePolicy))
        .cloned()
        .unwrap_or_default();
    assert!(
        redrive.contains("SubscriptionDLQ") && redrive.contains("\"maxReceiveCount\""),
        "{redrive}"
    );

    // The platform's events: the bus, and the three streamed tables' stream ARNs (what
    // EventPublisherFunction's event sources name).
    let bus = stack.provisioned.physical("ConnectorEventBus").unwrap();
    assert!(bus.ends_with("-connector-events"), "{bus}");
    for table in ["ActivitiesTable", "ConnectionsTable", "SyncStateTable"] {
        let arn = stack
            .provisioned
            .attribute(table, "StreamArn")
            .unwrap_or_default();
        assert!(arn.contains("/stream/"), "{table}: {arn}");
    }
    assert!(
        stack
            .provisioned
            .attribute("TenantsTable", "StreamArn")
            .is_none()
    );

    // Operations resources are skipped, explicitly; the functions resolve to the names
    // their log groups are named after.
    let skipped: Vec<&str> = template
        .resources
        .iter()
        .filter_map(|(_, r)| r["Type"].as_str())
        .filter(|ty| local_stack::provision::NOT_PROVISIONED.contains(ty))
        .collect();
    assert!(skipped.contains(&"AWS::CloudWatch::Alarm"), "{skipped:?}");
    assert!(skipped.contains(&"AWS::Logs::LogGroup"), "{skipped:?}");
    assert!(
        stack
            .provisioned
            .created
            .iter()
            .all(|c| !local_stack::provision::NOT_PROVISIONED.contains(&c.resource_type.as_str()))
    );
    let name = stack
        .provisioned
        .resolver
        .refs
        .get("MailSyncFunction")
        .cloned();
    assert_eq!(
        name,
        Some(format!("{}-mail-sync", stack.provisioned.stack_name))
    );
    // The client secret has no default: test_stack gave it a value of its own.
    let sm = aws_sdk_secretsmanager::Client::new(&stack.sdk);
    let secret = sm
        .get_secret_value()
        .secret_id(stack.var("CLIENT_SECRET_ID"))
        .send()
        .await
        .unwrap();
    assert!(secret.secret_string().unwrap().starts_with("test-"));
}

#[tokio::test]
async fn a_parameter_without_default_must_be_given() {
    let moto = local_stack::shared_moto().unwrap();
    let template = local_stack::Template::load(&local_stack::template_path()).unwrap();
    let error = local_stack::provision::provision(
        &moto.sdk_config().await,
        &template,
        &format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..10]),
        &BTreeMap::new(),
    )
    .await
    .unwrap_err();
    assert!(
        format!("{error:#}").contains("EntraClientSecretValue has no default"),
        "{error:#}"
    );
}

/// `EntraCredential=certificate` on the real template: the KMS key the cloud stack is given
/// is created (RSA_2048, SIGN_VERIFY), its ARN and the thumbprint reach every function's
/// environment, and a key and thumbprint given as parameters are used as given.
#[tokio::test]
async fn a_certificate_credential_gets_its_kms_key_and_thumbprint() {
    let params = BTreeMap::from([("EntraCredential".to_owned(), "certificate".to_owned())]);
    let stack = local_stack::test_stack_from(&local_stack::template_path(), &params)
        .await
        .unwrap();
    let certificate = stack
        .provisioned
        .certificate
        .clone()
        .expect("a certificate key");
    assert_eq!(stack.var("ENTRA_CREDENTIAL"), "certificate");
    assert_eq!(stack.var("CERTIFICATE_KMS_KEY_ID"), certificate.key_arn);
    assert_eq!(stack.var("CERTIFICATE_THUMBPRINT"), certificate.thumbprint);
    assert_eq!(certificate.thumbprint.len(), 64);
    let kms = aws_sdk_kms::Client::new(&stack.sdk);
    let key = kms
        .describe_key()
        .key_id(&certificate.key_arn)
        .send()
        .await
        .unwrap()
        .key_metadata
        .unwrap();
    assert_eq!(key.key_spec, Some(aws_sdk_kms::types::KeySpec::Rsa2048));
    assert_eq!(
        key.key_usage,
        Some(aws_sdk_kms::types::KeyUsageType::SignVerify)
    );
    let registration = certificate.sim_registration();
    assert_eq!(
        registration["thumbprintSha256"],
        certificate.thumbprint.as_str()
    );

    let given = BTreeMap::from([
        ("EntraCredential".to_owned(), "certificate".to_owned()),
        (
            "EntraCertificateKmsKeyArn".to_owned(),
            certificate.key_arn.clone(),
        ),
        ("EntraCertificateThumbprint".to_owned(), "ab".repeat(20)),
    ]);
    let again = local_stack::test_stack_from(&local_stack::template_path(), &given)
        .await
        .unwrap();
    let reused = again
        .provisioned
        .certificate
        .clone()
        .expect("a certificate key");
    assert_eq!(reused.key_arn, certificate.key_arn);
    assert_eq!(reused.public_key_der, certificate.public_key_der);
    assert_eq!(again.var("CERTIFICATE_THUMBPRINT"), "ab".repeat(20));
    assert_eq!(reused.sim_registration()["thumbprintSha1"], "ab".repeat(20));

    // The default stays the client secret, with no key.
    let default = local_stack::test_stack().await.unwrap();
    assert!(default.provisioned.certificate.is_none());
    assert_eq!(default.var("ENTRA_CREDENTIAL"), "secret");
}
