//! Checks of the SAM template that cfn-lint and `sam validate` do not make, each one a
//! mistake that only shows at deploy time or, worse, at run time:
//!
//! - [`Check::Runtime`]: `Runtime` is a Lambda runtime identifier, and a function built
//!   with `rust-cargolambda` runs on an OS-only runtime (`provided.al2023`/`provided.al2`).
//! - [`Check::Architectures`]: exactly one of `x86_64` / `arm64`, literally or as a `Ref` to a
//!   parameter whose `AllowedValues` are only those.
//! - [`Check::ScheduleExpression`]: `rate()` with a positive value and the unit's number
//!   matching it, `cron()` with six fields and one `?` (see [`crate::schedule`]).
//! - [`Check::BatchSize`]: SQS `BatchSize` within 1-10,000, at most 10 for a FIFO queue,
//!   and above 10 only with `MaximumBatchingWindowInSeconds` (0-300) of at least 1;
//!   `FunctionResponseTypes` only `ReportBatchItemFailures`.
//! - [`Check::MaximumConcurrency`]: `ScalingConfig.MaximumConcurrency` within 2-1,000.
//! - [`Check::DanglingReference`]: every `Ref`, `Fn::GetAtt`, `${...}` of `Fn::Sub` and
//!   `DependsOn` names a resource, a parameter, a pseudo parameter, or a resource SAM
//!   generates.
//! - [`Check::DeadLetterQueue`]: every queue a function consumes has a redrive policy to a
//!   queue of the template, with a `maxReceiveCount`.
//! - [`Check::VisibilityTimeout`]: a consumed queue's visibility timeout (default 30 s) is
//!   at least the consuming function's timeout (Lambda refuses the event source
//!   otherwise).
//! - [`Check::BuildBinary`]: every function is built by `rust-cargolambda` with a
//!   `BuildProperties.Binary` that is a binary target of the workspace.
//! - [`Check::DeadLetterQueueAlarm`]: every dead-letter queue (the target of a queue's
//!   `RedrivePolicy`, or an SQS queue some `DestinationConfig.OnFailure` sends failed
//!   stream batches or asynchronous invocations to) has a CloudWatch alarm on its
//!   `ApproximateNumberOfMessagesVisible` (dimension `QueueName` =
//!   `!GetAtt Queue.QueueName`) that fires on one message (`> 0` or `>= 1`) and has
//!   alarm actions (see [`Check::FunctionAlarm`]).
//! - [`Check::FunctionAlarm`]: every function (`AWS::Serverless::Function`,
//!   `AWS::Lambda::Function`) has an `Errors` and a `Throttles` alarm (namespace
//!   `AWS/Lambda`, dimension `FunctionName` = `!Ref` the function) with alarm actions:
//!   `AlarmActions` that notify someone whatever the conditions (an `Fn::If` that can
//!   choose `AWS::NoValue` or an empty list is an alarm nobody may hear of).
//! - [`Check::LogRetention`]: every function logs to an `AWS::Logs::LogGroup` of the
//!   template named `/aws/lambda/<its FunctionName>`, with a `RetentionInDays` CloudWatch
//!   Logs accepts, that exists before the function runs: the function's
//!   `LoggingConfig.LogGroup` refers to it, or the function `DependsOn` it. Otherwise
//!   Lambda creates the group on first write, without retention (logs kept forever).
//! - [`Check::SecretParameter`]: a parameter with `NoEcho` has no `Default` (a default is
//!   what deploys when nobody gives the secret), and a parameter named like a secret
//!   (`secret`, `password`, `passphrase`, `token`; not an `...Arn`/`...Id`/`...Name`, nor
//!   one with `AllowedValues`) has `NoEcho`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::functions::{FunctionSpec, ScheduleFlavor, as_bool, as_u64};
use crate::provision::QUEUE;
use crate::schedule::{Dialect, ScheduleExpr};
use crate::template::{Resolver, Template};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Check {
    /// The template cannot be read as SAM functions and events at all.
    Malformed,
    Runtime,
    Architectures,
    ScheduleExpression,
    BatchSize,
    MaximumConcurrency,
    DanglingReference,
    DeadLetterQueue,
    VisibilityTimeout,
    BuildBinary,
    DeadLetterQueueAlarm,
    FunctionAlarm,
    LogRetention,
    SecretParameter,
}

/// One problem: which check, where, what.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Finding {
    pub check: Check,
    /// A path in the template, e.g. `Resources.WorkerFunction.Properties.Events.Jobs`.
    pub location: String,
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} at {}: {}", self.check, self.location, self.message)
    }
}

/// Lambda's runtime identifiers (Lambda developer guide, "Lambda runtimes": supported and
/// deprecated ones; a deprecated identifier is still a real name).
pub const LAMBDA_RUNTIMES: &[&str] = &[
    "nodejs24.x",
    "nodejs22.x",
    "nodejs20.x",
    "nodejs18.x",
    "nodejs16.x",
    "nodejs14.x",
    "python3.14",
    "python3.13",
    "python3.12",
    "python3.11",
    "python3.10",
    "python3.9",
    "python3.8",
    "java25",
    "java21",
    "java17",
    "java11",
    "java8.al2",
    "java8",
    "dotnet10",
    "dotnet8",
    "dotnet6",
    "ruby3.4",
    "ruby3.3",
    "ruby3.2",
    "go1.x",
    "provided.al2023",
    "provided.al2",
    "provided",
];

/// The OS-only runtimes cargo-lambda builds for.
pub const RUST_RUNTIMES: &[&str] = &["provided.al2023", "provided.al2"];

const PSEUDO_PARAMETERS: &[&str] = &[
    "AWS::AccountId",
    "AWS::NotificationARNs",
    "AWS::NoValue",
    "AWS::Partition",
    "AWS::Region",
    "AWS::StackId",
    "AWS::StackName",
    "AWS::URLSuffix",
];

/// Runs every check; an empty list means the template passes.
pub fn check_template(template: &Template, workspace_binaries: &BTreeSet<String>) -> Vec<Finding> {
    let mut findings = Vec::new();
    let functions = match template.functions() {
        Ok(f) => f,
        Err(e) => {
            findings.push(Finding {
                check: Check::Malformed,
                location: "Resources".into(),
                message: format!("{e:#}"),
            });
            return findings;
        }
    };
    let resolver = parameter_defaults(template);
    runtimes(template, &functions, &mut findings);
    for f in &functions {
        architectures(template, f, &mut findings);
        build_binary(f, workspace_binaries, &mut findings);
        schedules(f, &resolver, &mut findings);
        sqs_sources(template, f, &resolver, &mut findings);
    }
    references(template, &mut findings);
    dead_letter_alarms(template, &resolver, &mut findings);
    function_alarms(template, &mut findings);
    for f in &functions {
        log_group(template, f, &resolver, &mut findings);
    }
    secret_parameters(template, &mut findings);
    findings.sort();
    findings
}

/// The binary targets of the workspace at `root` (`cargo metadata --no-deps`).
pub fn workspace_binaries(root: &Path) -> Result<BTreeSet<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .current_dir(root)
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!(
            "cargo metadata failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let meta: Value = serde_json::from_slice(&out.stdout).context("cargo metadata output")?;
    Ok(meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter(|t| {
            t["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "bin"))
        })
        .filter_map(|t| t["name"].as_str().map(str::to_string))
        .collect())
}

fn parameter_defaults(template: &Template) -> Resolver {
    let mut r = Resolver::default();
    for (name, decl) in &template.parameters {
        if let Some(v) = decl.get("Default") {
            let text = v
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string());
            r.refs.insert(name.clone(), text);
        }
    }
    r
}

/// A literal, or a parameter with a default; `None` when only deploy time knows.
fn literal(resolver: &Resolver, v: &Value) -> Option<Value> {
    resolver.resolve(v).ok()
}

fn location(function: &FunctionSpec, rest: &str) -> String {
    format!("Resources.{}.{rest}", function.logical_id)
}

fn runtimes(template: &Template, functions: &[FunctionSpec], findings: &mut Vec<Finding>) {
    if let Some(r) = template.globals.pointer("/Function/Runtime")
        && let Some(name) = r.as_str()
        && !LAMBDA_RUNTIMES.contains(&name)
    {
        findings.push(Finding {
            check: Check::Runtime,
            location: "Globals.Function.Runtime".into(),
            message: format!("`{name}` is not a Lambda runtime identifier"),
        });
    }
    for f in functions {
        let Some(runtime) = f.runtime.as_ref() else {
            findings.push(Finding {
                check: Check::Runtime,
                location: location(f, "Properties.Runtime"),
                message: "no Runtime (neither the function nor Globals set one)".into(),
            });
            continue;
        };
        let Some(name) = runtime.as_str() else {
            continue;
        };
        if !LAMBDA_RUNTIMES.contains(&name) {
            // Inherited from Globals: reported there once.
            if template.globals.pointer("/Function/Runtime") == Some(runtime) {
                continue;
            }
            findings.push(Finding {
                check: Check::Runtime,
                location: location(f, "Properties.Runtime"),
                message: format!("`{name}` is not a Lambda runtime identifier"),
            });
        } else if f.build_method.as_deref() == Some("rust-cargolambda")
            && !RUST_RUNTIMES.contains(&name)
        {
            findings.push(Finding {
                check: Check::Runtime,
                location: location(f, "Properties.Runtime"),
                message: format!(
                    "a rust-cargolambda function runs on provided.al2023 or provided.al2, not `{name}`"
                ),
            });
        }
    }
}

fn architectures(template: &Template, f: &FunctionSpec, findings: &mut Vec<Finding>) {
    let Some(arch) = &f.architectures else {
        return;
    };
    let one = |v: &Value| matches!(v.as_str(), Some("x86_64" | "arm64"));
    // A parameter may choose it at deploy time, so long as every value it allows is one.
    let parameter_ok = |name: &str| {
        template.parameters.get(name).is_some_and(|decl| {
            decl["AllowedValues"]
                .as_array()
                .is_some_and(|allowed| !allowed.is_empty() && allowed.iter().all(one))
                && decl.get("Default").is_none_or(one)
        })
    };
    let ok = arch.as_array().is_some_and(|a| {
        a.len() == 1 && (one(&a[0]) || a[0]["Ref"].as_str().is_some_and(parameter_ok))
    });
    if !ok {
        findings.push(Finding {
            check: Check::Architectures,
            location: location(f, "Properties.Architectures"),
            message: format!(
                "must be a list of exactly one of x86_64 or arm64 (or a Ref to a parameter allowing only those), got {arch}"
            ),
        });
    }
}

fn build_binary(f: &FunctionSpec, binaries: &BTreeSet<String>, findings: &mut Vec<Finding>) {
    let message = match (f.build_method.as_deref(), f.binary.as_deref()) {
        (Some("rust-cargolambda"), Some(bin)) if binaries.contains(bin) => return,
        (Some("rust-cargolambda"), Some(bin)) => format!(
            "BuildProperties.Binary `{bin}` is not a binary of the workspace (have: {})",
            binaries.iter().cloned().collect::<Vec<_>>().join(", ")
        ),
        (Some("rust-cargolambda"), None) => "no BuildProperties.Binary".into(),
        (other, _) => format!(
            "BuildMethod must be rust-cargolambda, got {}",
            other.unwrap_or("none")
        ),
    };
    findings.push(Finding {
        check: Check::BuildBinary,
        location: location(f, "Metadata"),
        message,
    });
}

fn schedules(f: &FunctionSpec, resolver: &Resolver, findings: &mut Vec<Finding>) {
    for (name, s) in f.schedules() {
        let Some(Value::String(expr)) = literal(resolver, &s.expression) else {
            continue;
        };
        let dialect = match s.flavor {
            ScheduleFlavor::EventBridgeRule => Dialect::EventBridgeRule,
            ScheduleFlavor::Scheduler => Dialect::Scheduler,
        };
        if let Err(e) = ScheduleExpr::parse(&expr, dialect) {
            findings.push(Finding {
                check: Check::ScheduleExpression,
                // Rules of their own are named by their logical id, SAM events are not.
                location: if s.rule_logical_id == name {
                    format!("Resources.{name}.Properties.ScheduleExpression")
                } else {
                    location(f, &format!("Properties.Events.{name}"))
                },
                message: e.to_string(),
            });
        }
    }
}

fn resource<'a>(template: &'a Template, id: &str) -> Option<&'a Value> {
    template
        .resources
        .iter()
        .find(|(rid, _)| rid == id)
        .map(|(_, r)| r)
}

fn sqs_sources(
    template: &Template,
    f: &FunctionSpec,
    resolver: &Resolver,
    findings: &mut Vec<Finding>,
) {
    for (name, s) in f.sqs_sources() {
        let at = location(f, &format!("Properties.Events.{name}"));
        let mut push = |check, message: String| {
            findings.push(Finding {
                check,
                location: at.clone(),
                message,
            })
        };
        let queue_id = s.queue_logical_id();
        let queue = queue_id.and_then(|id| resource(template, id));
        let queue_props = queue.and_then(|q| q.get("Properties"));
        let fifo = queue_props.is_some_and(|p| {
            as_bool(p.get("FifoQueue"), false)
                || p.get("QueueName")
                    .and_then(Value::as_str)
                    .is_some_and(|n| n.ends_with(".fifo"))
        });

        let batch = literal(resolver, &s.batch_size).as_ref().and_then(as_u64);
        let window = match &s.maximum_batching_window {
            Some(v) => literal(resolver, v).as_ref().and_then(as_u64),
            None => Some(0),
        };
        if let Some(w) = window
            && w > 300
        {
            push(
                Check::BatchSize,
                format!("MaximumBatchingWindowInSeconds {w} is above 300"),
            );
        }
        match batch {
            None => push(Check::BatchSize, "BatchSize is not a whole number".into()),
            Some(b) if !(1..=10_000).contains(&b) => push(
                Check::BatchSize,
                format!("BatchSize {b} is outside 1-10,000"),
            ),
            Some(b) if fifo && b > 10 => push(
                Check::BatchSize,
                format!("BatchSize {b} exceeds 10, the maximum for a FIFO queue"),
            ),
            Some(b) if b > 10 && window.unwrap_or(0) < 1 => push(
                Check::BatchSize,
                format!(
                    "BatchSize {b} above 10 requires MaximumBatchingWindowInSeconds of at least 1"
                ),
            ),
            Some(_) => {}
        }
        if let Some(types) = &s.function_response_types {
            let ok = types
                .as_array()
                .is_some_and(|a| a.iter().all(|t| t == "ReportBatchItemFailures"));
            if !ok {
                push(
                    Check::BatchSize,
                    format!(
                        "FunctionResponseTypes may only hold ReportBatchItemFailures, got {types}"
                    ),
                );
            }
        }
        if let Some(mc) = &s.maximum_concurrency {
            match literal(resolver, mc).as_ref().and_then(as_u64) {
                Some(n) if (2..=1000).contains(&n) => {}
                other => push(
                    Check::MaximumConcurrency,
                    format!(
                        "ScalingConfig.MaximumConcurrency must be within 2-1,000, got {}",
                        other
                            .map(|n| n.to_string())
                            .unwrap_or_else(|| mc.to_string())
                    ),
                ),
            }
        }

        let Some(queue_id) = queue_id else {
            push(
                Check::DeadLetterQueue,
                format!(
                    "Queue {} is not a queue of this template (`!GetAtt Queue.Arn`)",
                    s.queue
                ),
            );
            continue;
        };
        if queue.and_then(|q| q.get("Type")).and_then(Value::as_str) != Some(QUEUE) {
            push(
                Check::DeadLetterQueue,
                format!("Queue {queue_id} is not an AWS::SQS::Queue of this template"),
            );
            continue;
        }
        let redrive = queue_props.and_then(|p| p.get("RedrivePolicy"));
        let dlq = redrive
            .and_then(|r| r.get("deadLetterTargetArn"))
            .and_then(|t| t.get("Fn::GetAtt"))
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(Value::as_str);
        let max_receive = redrive
            .and_then(|r| r.get("maxReceiveCount"))
            .and_then(|v| literal(resolver, v))
            .as_ref()
            .and_then(as_u64);
        match (dlq, max_receive) {
            (Some(d), Some(n))
                if n >= 1
                    && resource(template, d)
                        .and_then(|r| r.get("Type"))
                        .and_then(Value::as_str)
                        == Some(QUEUE) => {}
            _ => push(
                Check::DeadLetterQueue,
                format!(
                    "queue {queue_id} has a consumer but no RedrivePolicy to a dead-letter queue of this template with a maxReceiveCount"
                ),
            ),
        }
        let visibility = queue_props
            .and_then(|p| p.get("VisibilityTimeout"))
            .map(|v| literal(resolver, v).as_ref().and_then(as_u64))
            .unwrap_or(Some(30));
        let timeout = literal(resolver, &f.timeout).as_ref().and_then(as_u64);
        if let (Some(v), Some(t)) = (visibility, timeout)
            && v < t
        {
            push(
                Check::VisibilityTimeout,
                format!(
                    "queue {queue_id}'s VisibilityTimeout {v} s is shorter than {}'s Timeout {t} s",
                    f.logical_id
                ),
            );
        }
    }
}

/// CloudWatch Logs' retention periods (`RetentionInDays` of `AWS::Logs::LogGroup`).
pub const LOG_RETENTION_DAYS: &[u64] = &[
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
];

const ALARM: &str = "AWS::CloudWatch::Alarm";
const LAMBDA_FUNCTION: &str = "AWS::Lambda::Function";
const LOG_GROUP: &str = "AWS::Logs::LogGroup";

/// The logical id `v` names as `!GetAtt Id.<attribute>`.
fn get_att_of<'a>(v: &'a Value, attribute: &str) -> Option<&'a str> {
    let parts = v.get("Fn::GetAtt")?.as_array()?;
    (parts.get(1)?.as_str()? == attribute)
        .then(|| parts.first()?.as_str())
        .flatten()
}

/// Whether `AlarmActions` notifies someone whatever the conditions: a non-empty list, a
/// `Ref` to something (a list parameter), or an `Fn::If` both of whose branches do.
fn always_notifies(actions: &Value) -> bool {
    match actions {
        Value::Array(a) => !a.is_empty(),
        Value::Object(m) if m.len() == 1 => match (m.get("Fn::If"), m.get("Ref")) {
            (Some(Value::Array(branches)), _) if branches.len() == 3 => {
                always_notifies(&branches[1]) && always_notifies(&branches[2])
            }
            (_, Some(r)) => r != "AWS::NoValue",
            _ => false,
        },
        _ => false,
    }
}

/// The queues a `DestinationConfig.OnFailure` anywhere under `v` sends to
/// (`Destination: !GetAtt Queue.Arn`): stream event sources' failed batches, and
/// asynchronous invocations' failures (`EventInvokeConfig`).
fn on_failure_queues<'a>(v: &'a Value, out: &mut BTreeSet<&'a str>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                if k == "OnFailure"
                    && let Some(id) = child.get("Destination").and_then(|d| get_att_of(d, "Arn"))
                {
                    out.insert(id);
                }
                on_failure_queues(child, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| on_failure_queues(x, out)),
        _ => {}
    }
}

fn dead_letter_alarms(template: &Template, resolver: &Resolver, findings: &mut Vec<Finding>) {
    let mut targets: BTreeSet<&str> = template
        .of_type(QUEUE)
        .filter_map(|(_, q)| {
            q.pointer("/Properties/RedrivePolicy/deadLetterTargetArn")
                .and_then(|arn| get_att_of(arn, "Arn"))
        })
        .collect();
    for (_, r) in &template.resources {
        on_failure_queues(r, &mut targets);
    }
    let dead_letter_queues: BTreeSet<&str> = targets
        .into_iter()
        .filter(|id| resource(template, id).and_then(|r| r.get("Type")) == Some(&QUEUE.into()))
        .collect();
    for dlq in dead_letter_queues {
        let mut problems = Vec::new();
        let alarms: Vec<&Value> = template
            .of_type(ALARM)
            .map(|(_, a)| a.get("Properties").unwrap_or(&Value::Null))
            .filter(|p| {
                p["Namespace"] == "AWS/SQS"
                    && p["MetricName"] == "ApproximateNumberOfMessagesVisible"
                    && p["Dimensions"].as_array().is_some_and(|d| {
                        d.iter().any(|d| {
                            d["Name"] == "QueueName"
                                && get_att_of(&d["Value"], "QueueName") == Some(dlq)
                        })
                    })
            })
            .collect();
        if alarms.is_empty() {
            problems.push("no AWS::CloudWatch::Alarm on its ApproximateNumberOfMessagesVisible (dimension QueueName = !GetAtt Queue.QueueName)".to_string());
        }
        let fires_on_one = |p: &Value| {
            let threshold = literal(resolver, &p["Threshold"]).and_then(|v| {
                v.as_f64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            });
            match (p["ComparisonOperator"].as_str(), threshold) {
                (Some("GreaterThanThreshold"), Some(t)) => t < 1.0,
                (Some("GreaterThanOrEqualToThreshold"), Some(t)) => t <= 1.0,
                _ => false,
            }
        };
        if !alarms.is_empty() && !alarms.iter().any(|p| fires_on_one(p)) {
            problems.push("its alarm does not fire on one message (> 0 or >= 1)".to_string());
        }
        if !alarms.is_empty() && !alarms.iter().any(|p| always_notifies(&p["AlarmActions"])) {
            problems.push(
                "its alarm has no AlarmActions that always notify: nobody is told".to_string(),
            );
        }
        for message in problems {
            findings.push(Finding {
                check: Check::DeadLetterQueueAlarm,
                location: format!("Resources.{dlq}"),
                message: format!("dead-letter queue {dlq}: {message}"),
            });
        }
    }
}

/// Lambda's own metrics every function is alarmed on: failed invocations (a crash, a
/// timeout, a handler error) and invocations Lambda refused for want of concurrency.
pub const FUNCTION_ALARM_METRICS: &[&str] = &["Errors", "Throttles"];

fn function_alarms(template: &Template, findings: &mut Vec<Finding>) {
    let functions = template
        .of_type(crate::functions::SERVERLESS_FUNCTION)
        .chain(template.of_type(LAMBDA_FUNCTION));
    for (function, _) in functions {
        for metric in FUNCTION_ALARM_METRICS {
            let alarms: Vec<&Value> = template
                .of_type(ALARM)
                .map(|(_, a)| a.get("Properties").unwrap_or(&Value::Null))
                .filter(|p| {
                    p["Namespace"] == "AWS/Lambda"
                        && p["MetricName"] == *metric
                        && p["Dimensions"].as_array().is_some_and(|d| {
                            d.iter().any(|d| {
                                d["Name"] == "FunctionName"
                                    && d["Value"].get("Ref").and_then(Value::as_str)
                                        == Some(function)
                            })
                        })
                })
                .collect();
            let message = if alarms.is_empty() {
                format!(
                    "no {metric} alarm (namespace AWS/Lambda, dimension FunctionName = !Ref {function})"
                )
            } else if !alarms.iter().any(|p| always_notifies(&p["AlarmActions"])) {
                format!("its {metric} alarm has no AlarmActions that always notify: nobody is told")
            } else {
                continue;
            };
            findings.push(Finding {
                check: Check::FunctionAlarm,
                location: format!("Resources.{function}"),
                message: format!("function {function}: {message}"),
            });
        }
    }
}

fn log_group(
    template: &Template,
    f: &FunctionSpec,
    resolver: &Resolver,
    findings: &mut Vec<Finding>,
) {
    let at = location(f, "Properties.LoggingConfig");
    let mut push = |message: String| {
        findings.push(Finding {
            check: Check::LogRetention,
            location: at.clone(),
            message: format!("{}: {message}", f.logical_id),
        })
    };
    let function = resource(template, &f.logical_id).unwrap_or(&Value::Null);
    let props = function.get("Properties").unwrap_or(&Value::Null);
    let depends_on: Vec<&str> = match function.get("DependsOn") {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    let referenced = props
        .pointer("/LoggingConfig/LogGroup/Ref")
        .and_then(Value::as_str);
    let group_id = referenced.or_else(|| {
        depends_on
            .iter()
            .copied()
            .find(|d| resource(template, d).and_then(|r| r.get("Type")) == Some(&LOG_GROUP.into()))
    });
    let Some(group_id) = group_id else {
        push("no log group of the template it writes to (LoggingConfig.LogGroup: !Ref a AWS::Logs::LogGroup, or DependsOn one): Lambda would create one that keeps logs forever".into());
        return;
    };
    let Some(group) =
        resource(template, group_id).filter(|r| r.get("Type") == Some(&LOG_GROUP.into()))
    else {
        push(format!(
            "LoggingConfig.LogGroup {group_id} is not an AWS::Logs::LogGroup of this template"
        ));
        return;
    };
    let group_props = group.get("Properties").unwrap_or(&Value::Null);
    match group_props.get("RetentionInDays") {
        None => push(format!(
            "log group {group_id} has no RetentionInDays (kept forever)"
        )),
        Some(days) => {
            let resolved = literal(resolver, days).and_then(|v| {
                v.as_u64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            });
            if let Some(d) = resolved
                && !LOG_RETENTION_DAYS.contains(&d)
            {
                push(format!(
                    "log group {group_id}: RetentionInDays {d} is not a period CloudWatch Logs accepts"
                ));
            }
        }
    }
    // Named as Lambda names a function's group, so nothing else creates a second one.
    let text = |v: Option<&Value>| -> Option<String> {
        let v = v?;
        v.as_str()
            .or_else(|| v.get("Fn::Sub").and_then(Value::as_str))
            .map(str::to_string)
    };
    match (text(props.get("FunctionName")), text(group_props.get("LogGroupName"))) {
        (Some(name), Some(group_name)) if group_name == format!("/aws/lambda/{name}") => {}
        (None, _) => push("no FunctionName, so its log group cannot be named /aws/lambda/<function name> before it exists".into()),
        (Some(name), group_name) => push(format!(
            "log group {group_id} is named {}, not /aws/lambda/{name}",
            group_name.unwrap_or_else(|| "by CloudFormation".into())
        )),
    }
}

fn secret_parameters(template: &Template, findings: &mut Vec<Finding>) {
    for (name, decl) in &template.parameters {
        let no_echo = decl.get("NoEcho").is_some_and(|v| {
            v == true || v.as_str().is_some_and(|s| s.eq_ignore_ascii_case("true"))
        });
        let lower = name.to_ascii_lowercase();
        let named_secret = ["secret", "password", "passphrase", "token"]
            .iter()
            .any(|w| lower.contains(w))
            && !["arn", "id", "name"].iter().any(|s| lower.ends_with(s))
            && decl.get("AllowedValues").is_none();
        let at = format!("Parameters.{name}");
        if no_echo && decl.get("Default").is_some() {
            findings.push(Finding {
                check: Check::SecretParameter,
                location: at.clone(),
                message: format!("{name} is NoEcho but has a default: a stack deployed without the secret gets the default"),
            });
        }
        if named_secret && !no_echo {
            findings.push(Finding {
                check: Check::SecretParameter,
                location: at,
                message: format!("{name} looks like a secret but is not NoEcho (describe-stacks and the console would show it)"),
            });
        }
    }
}

/// SAM creates these for a template; references to them are valid.
fn sam_generated(template: &Template) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = ["ServerlessRestApi", "ServerlessHttpApi"]
        .into_iter()
        .map(str::to_string)
        .collect();
    for (id, r) in template.of_type(crate::functions::SERVERLESS_FUNCTION) {
        if r.pointer("/Properties/Role").is_none() {
            out.insert(format!("{id}Role"));
        }
    }
    out
}

fn references(template: &Template, findings: &mut Vec<Finding>) {
    let mut known: BTreeSet<String> = template
        .resources
        .iter()
        .map(|(id, _)| id.clone())
        .collect();
    known.extend(sam_generated(template));
    let params: BTreeSet<String> = template.parameters.keys().cloned().collect();
    let resources = known.clone();
    known.extend(params);
    known.extend(PSEUDO_PARAMETERS.iter().map(|p| p.to_string()));
    let mut walker = RefWalker {
        refable: &known,
        resources: &resources,
        findings,
    };
    if let Some(doc) = template.document.as_object() {
        for (section, value) in doc {
            walker.walk(value, section, &BTreeMap::new());
        }
    }
}

struct RefWalker<'a> {
    refable: &'a BTreeSet<String>,
    resources: &'a BTreeSet<String>,
    findings: &'a mut Vec<Finding>,
}

impl RefWalker<'_> {
    fn dangling(&mut self, at: &str, message: String) {
        self.findings.push(Finding {
            check: Check::DanglingReference,
            location: at.to_string(),
            message,
        });
    }

    fn walk(&mut self, v: &Value, at: &str, sub_vars: &BTreeMap<String, ()>) {
        match v {
            Value::Object(map) => {
                for (k, child) in map {
                    let here = format!("{at}.{k}");
                    match k.as_str() {
                        "Ref" => {
                            if let Some(name) = child.as_str()
                                && !self.refable.contains(name)
                            {
                                self.dangling(
                                    &here,
                                    format!("Ref {name}: no such resource or parameter"),
                                );
                            }
                        }
                        "Fn::GetAtt" => {
                            let res = match child {
                                Value::Array(a) => {
                                    a.first().and_then(Value::as_str).map(str::to_string)
                                }
                                Value::String(s) => s.split('.').next().map(str::to_string),
                                _ => None,
                            };
                            if let Some(res) = res
                                && !self.resources.contains(&res)
                            {
                                self.dangling(&here, format!("Fn::GetAtt {res}: no such resource"));
                            }
                            self.walk(child, &here, sub_vars);
                        }
                        "Fn::Sub" => {
                            let (text, vars) = match child {
                                Value::String(s) => (Some(s.as_str()), None),
                                Value::Array(a) => (a.first().and_then(Value::as_str), a.get(1)),
                                _ => (None, None),
                            };
                            let mut names = sub_vars.clone();
                            if let Some(Value::Object(m)) = vars {
                                names.extend(m.keys().map(|k| (k.clone(), ())));
                                self.walk(&Value::Object(m.clone()), &here, sub_vars);
                            }
                            if let Some(text) = text {
                                for name in sub_names(text) {
                                    let base = name.split('.').next().unwrap_or(&name);
                                    let ok = names.contains_key(&name)
                                        || if name.contains('.') && !name.starts_with("AWS::") {
                                            self.resources.contains(base)
                                        } else {
                                            self.refable.contains(&name)
                                        };
                                    if !ok {
                                        self.dangling(&here, format!("${{{name}}}: no such resource, attribute or parameter"));
                                    }
                                }
                            }
                        }
                        "DependsOn" => {
                            let list: Vec<&str> = match child {
                                Value::String(s) => vec![s.as_str()],
                                Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                                _ => vec![],
                            };
                            for d in list {
                                if !self.resources.contains(d) {
                                    self.dangling(
                                        &here,
                                        format!("DependsOn {d}: no such resource"),
                                    );
                                }
                            }
                        }
                        _ => self.walk(child, &here, sub_vars),
                    }
                }
            }
            Value::Array(a) => {
                for (i, child) in a.iter().enumerate() {
                    self.walk(child, &format!("{at}[{i}]"), sub_vars);
                }
            }
            _ => {}
        }
    }
}

/// The `${Name}` of a `Fn::Sub` string, without the `${!Literal}` escapes.
fn sub_names(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else { break };
        let name = &after[..end];
        if !name.starts_with('!') {
            out.push(name.trim().to_string());
        }
        rest = &after[end + 1..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_names_skip_escapes() {
        assert_eq!(
            sub_names("arn:${AWS::Partition}:x:${Q.Arn}/${!Literal}-${Name}"),
            ["AWS::Partition", "Q.Arn", "Name"]
        );
    }
}
