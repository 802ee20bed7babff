//! The template checks cfn-lint misses: the repository's template passes them, and every
//! check fails on a fixture made to break exactly that check.

use std::collections::BTreeSet;
use std::path::PathBuf;

use local_stack::Template;
use local_stack::checks::{Check, check_template, workspace_binaries};

fn fixture(name: &str) -> Template {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/checks")
        .join(format!("{name}.yaml"));
    Template::load(&path).expect("fixture parses")
}

fn fixture_binaries() -> BTreeSet<String> {
    BTreeSet::from(["worker".to_string()])
}

#[test]
fn the_repository_template_passes() {
    let template = Template::load(&local_stack::template_path()).expect("template.yaml");
    let binaries = workspace_binaries(&local_stack::repo_root()).expect("cargo metadata");
    assert!(binaries.contains("consent-callback"), "{binaries:?}");
    let findings = check_template(&template, &binaries);
    assert!(
        findings.is_empty(),
        "template.yaml:\n{}",
        findings
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn the_valid_fixture_passes() {
    let findings = check_template(&fixture("valid"), &fixture_binaries());
    assert!(findings.is_empty(), "{findings:#?}");
}

#[test]
fn each_check_fails_on_its_fixture() {
    let cases = [
        ("runtime-unknown", Check::Runtime, "provided.al2024"),
        ("runtime-not-os-only", Check::Runtime, "python3.12"),
        ("architectures", Check::Architectures, "exactly one"),
        (
            "architectures-parameter",
            Check::Architectures,
            "exactly one",
        ),
        ("rate-unit", Check::ScheduleExpression, "singular"),
        ("cron-five-fields", Check::ScheduleExpression, "6 fields"),
        (
            "batch-size-needs-window",
            Check::BatchSize,
            "MaximumBatchingWindowInSeconds",
        ),
        ("batch-size-fifo", Check::BatchSize, "FIFO"),
        ("batch-size-range", Check::BatchSize, "1-10,000"),
        ("maximum-concurrency", Check::MaximumConcurrency, "2-1,000"),
        ("dangling-ref", Check::DanglingReference, "JobQueue"),
        ("dangling-sub", Check::DanglingReference, "Stag"),
        ("dangling-getatt", Check::DanglingReference, "WorkerRole"),
        (
            "no-dead-letter-queue",
            Check::DeadLetterQueue,
            "RedrivePolicy",
        ),
        ("visibility-timeout", Check::VisibilityTimeout, "shorter"),
        ("binary-missing", Check::BuildBinary, "wroker"),
        ("dlq-alarm-missing", Check::DeadLetterQueueAlarm, "JobsDLQ"),
        (
            "dlq-alarm-no-actions",
            Check::DeadLetterQueueAlarm,
            "AlarmActions",
        ),
        (
            "dlq-alarm-on-failure-missing",
            Check::DeadLetterQueueAlarm,
            "TicksDLQ",
        ),
        (
            "function-alarm-missing",
            Check::FunctionAlarm,
            "no Throttles alarm",
        ),
        (
            "function-alarm-may-notify-nobody",
            Check::FunctionAlarm,
            "Errors alarm has no AlarmActions that always notify",
        ),
        ("log-group-missing", Check::LogRetention, "no log group"),
        (
            "log-group-no-retention",
            Check::LogRetention,
            "RetentionInDays",
        ),
        ("log-group-misnamed", Check::LogRetention, "wroker"),
        (
            "secret-parameter-default",
            Check::SecretParameter,
            "default",
        ),
        ("secret-parameter-echoed", Check::SecretParameter, "NoEcho"),
    ];
    for (name, check, text) in cases {
        let findings = check_template(&fixture(name), &fixture_binaries());
        assert_eq!(
            findings.len(),
            1,
            "{name}: exactly one finding expected, got {findings:#?}"
        );
        assert_eq!(findings[0].check, check, "{name}: {findings:#?}");
        assert!(
            findings[0].message.contains(text),
            "{name}: `{text}` not in {}",
            findings[0]
        );
    }
}

/// The repository template keeps its operations: an alarm per dead-letter queue (the
/// on-failure destination of the stream mappings too), Errors and Throttles alarms per
/// function, alarms that always notify someone, a log group with retention per function,
/// the client secret NoEcho without a default. Each removed from the real template is
/// caught.
#[test]
fn the_repository_template_loses_no_operations_unnoticed() {
    let text = std::fs::read_to_string(local_stack::template_path()).expect("template.yaml");
    let binaries = workspace_binaries(&local_stack::repo_root()).expect("cargo metadata");
    let broken = |from: &str, to: &str| {
        assert!(text.contains(from), "template.yaml no longer has `{from}`");
        let template = Template::parse(&text.replacen(from, to, 1)).expect("parses");
        check_template(&template, &binaries)
    };
    let findings = broken(
        "Value: !GetAtt MailSyncDLQ.QueueName",
        "Value: !GetAtt MailSyncQueue.QueueName",
    );
    assert!(
        findings
            .iter()
            .any(|f| f.check == Check::DeadLetterQueueAlarm && f.message.contains("MailSyncDLQ")),
        "{findings:#?}"
    );
    let findings = broken(
        "Value: !GetAtt EventPublisherDLQ.QueueName",
        "Value: !GetAtt TeamsPostDLQ.QueueName",
    );
    assert!(
        findings
            .iter()
            .any(|f| f.check == Check::DeadLetterQueueAlarm
                && f.message.contains("EventPublisherDLQ")),
        "{findings:#?}"
    );
    let start = text
        .find("  EventPublisherThrottlesAlarm:\n")
        .expect("template.yaml has EventPublisherThrottlesAlarm");
    let end = start + text[start..].find("\n\n").expect("a blank line after it") + 2;
    let findings = broken(&text[start..end], "");
    assert_eq!(
        findings
            .iter()
            .map(|f| (f.check, f.location.as_str()))
            .collect::<Vec<_>>(),
        [(Check::FunctionAlarm, "Resources.EventPublisherFunction")],
        "{findings:#?}"
    );
    assert!(
        findings[0].message.contains("no Throttles alarm"),
        "{findings:#?}"
    );
    // The old default: alarms without actions unless a topic was given.
    let findings = broken(
        "      AlarmActions: [!If [CreateAlarmTopic, !Ref AlarmTopic, !Ref AlarmTopicArn]]\n      OKActions: [!If [CreateAlarmTopic, !Ref AlarmTopic, !Ref AlarmTopicArn]]\n\n  # Records waiting in a stream",
        "      AlarmActions: !If [CreateAlarmTopic, !Ref AWS::NoValue, [!Ref AlarmTopicArn]]\n\n  # Records waiting in a stream",
    );
    assert!(
        findings.iter().any(|f| f.check == Check::FunctionAlarm
            && f.message.contains(
                "EventPublisherFunction: its Throttles alarm has no AlarmActions that always notify"
            )),
        "{findings:#?}"
    );
    let findings = broken("      RetentionInDays: !Ref LogRetentionInDays\n", "");
    assert!(
        findings.iter().any(|f| f.check == Check::LogRetention),
        "{findings:#?}"
    );
    let findings = broken(
        "  EntraClientSecretValue:\n    Type: String\n",
        "  EntraClientSecretValue:\n    Type: String\n    Default: change-me\n",
    );
    assert!(
        findings
            .iter()
            .any(|f| f.check == Check::SecretParameter
                && f.location.contains("EntraClientSecretValue")),
        "{findings:#?}"
    );
}

/// Secrets Manager refuses an empty `SecretString` (length 1-65,536), and
/// `EntraClientSecretValue` may be empty with a certificate credential: the `ClientSecret`
/// resource then stores a placeholder, and otherwise exactly the value given.
#[test]
fn the_client_secret_resource_is_never_empty_and_stores_a_given_value() {
    let template = Template::load(&local_stack::template_path()).expect("template.yaml");
    let (_, secret) = template
        .resources
        .iter()
        .find(|(id, _)| id == "ClientSecret")
        .expect("a ClientSecret resource");
    for (credential, given, stored) in [
        ("secret", "the-value", "the-value"),
        ("certificate", "", "unused: EntraCredential=certificate"),
        (
            "certificate",
            "kept-for-a-switch-back",
            "kept-for-a-switch-back",
        ),
    ] {
        let mut resolver = local_stack::template::Resolver::default();
        for (name, decl) in &template.parameters {
            if let Some(d) = decl.get("Default") {
                let d = d
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| d.to_string());
                resolver.refs.insert(name.clone(), d);
            }
        }
        resolver.refs.insert("AWS::StackName".into(), "s".into());
        resolver
            .refs
            .insert("EntraCredential".into(), credential.into());
        resolver
            .refs
            .insert("EntraClientSecretValue".into(), given.into());
        resolver.evaluate_conditions(&template).expect("conditions");
        let props = resolver.resolve(&secret["Properties"]).expect("resolves");
        assert_eq!(
            props["SecretString"], stored,
            "{credential}, given {given:?}"
        );
    }
}

/// Every alarm's description links to its section of the operator's runbook, and the
/// section exists (anchors as GitHub makes them from headings).
#[test]
fn every_alarm_cites_a_runbook_section_that_exists() {
    let template = Template::load(&local_stack::template_path()).expect("template.yaml");
    let runbook = std::fs::read_to_string(local_stack::repo_root().join("docs/operations.md"))
        .expect("docs/operations.md");
    let anchors: BTreeSet<String> = runbook
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .map(|heading| {
            heading
                .trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
                .map(|c| if c == ' ' { '-' } else { c })
                .collect()
        })
        .collect();
    let mut alarms = 0;
    for (id, alarm) in template.of_type("AWS::CloudWatch::Alarm") {
        alarms += 1;
        let description = &alarm["Properties"]["AlarmDescription"];
        let text = description
            .as_str()
            .or_else(|| description["Fn::Sub"].as_str())
            .unwrap_or_else(|| panic!("{id} has no AlarmDescription"));
        let (_, rest) = text
            .split_once("docs/operations.md#")
            .unwrap_or_else(|| panic!("{id} cites no docs/operations.md#section: {text}"));
        let anchor: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || matches!(c, '-' | '_'))
            .collect();
        assert!(
            anchors.contains(&anchor),
            "{id} cites docs/operations.md#{anchor}, which has no heading: {anchors:?}"
        );
    }
    assert!(alarms >= 25, "{alarms} alarms");
}
