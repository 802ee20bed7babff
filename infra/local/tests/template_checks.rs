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

/// The repository template keeps its operations: an alarm per dead-letter queue, a log
/// group with retention per function, the client secret NoEcho without a default. Each
/// removed from the real template is caught.
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
