//! The template's Lambda functions as the local plumbing needs them: which binary each one
//! runs, its timeout, its environment, and the event sources that drive it (EventBridge
//! schedules, SQS event source mappings), read from `AWS::Serverless::Function` resources
//! (with `Globals.Function` applied, as SAM applies it) and from `AWS::Events::Rule`
//! resources that target a function.
//!
//! Values stay unresolved here (`{"Ref": ...}`); `Provisioned` resolves them against what
//! was created.

use anyhow::{Result, anyhow, bail};
use serde_json::{Map, Value};

use crate::template::Template;

pub const SERVERLESS_FUNCTION: &str = "AWS::Serverless::Function";
pub const EVENTS_RULE: &str = "AWS::Events::Rule";

/// Lambda's default timeout when neither the function nor Globals set one.
pub const DEFAULT_TIMEOUT_SECS: u64 = 3;
/// Lambda's default SQS batch size.
pub const DEFAULT_BATCH_SIZE: u32 = 10;

/// One function of the template.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionSpec {
    pub logical_id: String,
    /// `Metadata.BuildProperties.Binary` (rust-cargolambda): the name `cargo lambda watch`
    /// invokes it by.
    pub binary: Option<String>,
    pub build_method: Option<String>,
    pub runtime: Option<Value>,
    pub architectures: Option<Value>,
    pub timeout: Value,
    /// Globals' variables overlaid with the function's own, unresolved.
    pub environment: Map<String, Value>,
    pub events: Vec<EventSource>,
}

impl FunctionSpec {
    /// The timeout in seconds, if it is a literal number.
    pub fn timeout_secs(&self) -> Option<u64> {
        as_u64(&self.timeout)
    }

    pub fn schedules(&self) -> impl Iterator<Item = (&str, &ScheduleSource)> {
        self.events.iter().filter_map(|e| match &e.kind {
            EventKind::Schedule(s) => Some((e.name.as_str(), s)),
            _ => None,
        })
    }

    pub fn sqs_sources(&self) -> impl Iterator<Item = (&str, &SqsSource)> {
        self.events.iter().filter_map(|e| match &e.kind {
            EventKind::Sqs(s) => Some((e.name.as_str(), s)),
            _ => None,
        })
    }
}

/// One entry of a function's `Events` (or an `AWS::Events::Rule` targeting it).
#[derive(Debug, Clone, PartialEq)]
pub struct EventSource {
    /// The event's key under `Events`, or the rule's logical id.
    pub name: String,
    pub kind: EventKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    Schedule(ScheduleSource),
    Sqs(SqsSource),
    /// HttpApi, Api, ... : not driven by the plumbing.
    Other(String),
}

/// Which AWS service delivers a schedule: the shape of the rule's ARN and names differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ScheduleFlavor {
    /// `Type: Schedule` or `AWS::Events::Rule`: an EventBridge rule.
    EventBridgeRule,
    /// `Type: ScheduleV2`: an EventBridge Scheduler schedule.
    Scheduler,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleSource {
    pub flavor: ScheduleFlavor,
    /// `Schedule` / `ScheduleExpression`, unresolved.
    pub expression: Value,
    /// The rule's or schedule's logical id (SAM: function id + event name).
    pub rule_logical_id: String,
    /// An explicit `Name`, if any.
    pub name: Option<Value>,
    /// `Input`: sent instead of the event when set.
    pub input: Option<Value>,
    pub enabled: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SqsSource {
    /// `Queue`, unresolved (`!GetAtt Q.Arn`).
    pub queue: Value,
    pub batch_size: Value,
    pub maximum_batching_window: Option<Value>,
    pub report_batch_item_failures: bool,
    pub function_response_types: Option<Value>,
    pub maximum_concurrency: Option<Value>,
    pub enabled: bool,
}

impl SqsSource {
    /// The queue's logical id when `Queue` is `!GetAtt X.Arn` (or `!Ref` of a parameter-less id).
    pub fn queue_logical_id(&self) -> Option<&str> {
        if let Some(parts) = self.queue.get("Fn::GetAtt").and_then(Value::as_array) {
            return parts.first().and_then(Value::as_str);
        }
        None
    }
}

pub fn as_u64(v: &Value) -> Option<u64> {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

pub(crate) fn as_bool(v: Option<&Value>, default: bool) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => default,
    }
}

impl Template {
    /// Every `AWS::Serverless::Function`, in declaration order, with Globals applied and
    /// the schedule rules that target it.
    pub fn functions(&self) -> Result<Vec<FunctionSpec>> {
        let globals = self.globals.get("Function").cloned().unwrap_or(Value::Null);
        let mut out = Vec::new();
        for (id, res) in self.of_type(SERVERLESS_FUNCTION) {
            let props = res.get("Properties").cloned().unwrap_or(Value::Null);
            let pick = |key: &str| props.get(key).or_else(|| globals.get(key)).cloned();
            let mut environment = self.function_env();
            if let Some(own) = props
                .pointer("/Environment/Variables")
                .and_then(Value::as_object)
            {
                environment.extend(own.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            let mut events = Vec::new();
            if let Some(map) = props.get("Events").and_then(Value::as_object) {
                for (name, event) in map {
                    events.push(EventSource {
                        name: name.clone(),
                        kind: event_kind(id, name, event)?,
                    });
                }
            }
            let metadata = res.get("Metadata");
            out.push(FunctionSpec {
                logical_id: id.to_string(),
                binary: metadata
                    .and_then(|m| m.pointer("/BuildProperties/Binary"))
                    .and_then(Value::as_str)
                    .map(str::to_string),
                build_method: metadata
                    .and_then(|m| m.get("BuildMethod"))
                    .and_then(Value::as_str)
                    .map(str::to_string),
                runtime: pick("Runtime"),
                architectures: pick("Architectures"),
                timeout: pick("Timeout").unwrap_or(Value::from(DEFAULT_TIMEOUT_SECS)),
                environment,
                events,
            });
        }
        // Plain EventBridge rules whose targets are one of our functions.
        for (rule_id, rule) in self.of_type(EVENTS_RULE) {
            let props = rule.get("Properties").cloned().unwrap_or(Value::Null);
            let Some(expression) = props.get("ScheduleExpression").cloned() else {
                continue;
            };
            let enabled = props
                .get("State")
                .and_then(Value::as_str)
                .unwrap_or("ENABLED")
                == "ENABLED";
            for target in props
                .get("Targets")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let Some(function_id) = referenced_resource(target.get("Arn")) else {
                    continue;
                };
                let Some(function) = out.iter_mut().find(|f| f.logical_id == function_id) else {
                    continue;
                };
                function.events.push(EventSource {
                    name: rule_id.to_string(),
                    kind: EventKind::Schedule(ScheduleSource {
                        flavor: ScheduleFlavor::EventBridgeRule,
                        expression: expression.clone(),
                        rule_logical_id: rule_id.to_string(),
                        name: props.get("Name").cloned(),
                        input: target.get("Input").cloned(),
                        enabled,
                    }),
                });
            }
        }
        Ok(out)
    }
}

/// The logical id behind `!GetAtt X.Arn`, `!Ref X` or `!Sub "${X.Arn}"`.
fn referenced_resource(v: Option<&Value>) -> Option<String> {
    let v = v?;
    if let Some(parts) = v.get("Fn::GetAtt").and_then(Value::as_array) {
        return parts.first().and_then(Value::as_str).map(str::to_string);
    }
    if let Some(name) = v.get("Ref").and_then(Value::as_str) {
        return Some(name.to_string());
    }
    None
}

fn event_kind(function_id: &str, name: &str, event: &Value) -> Result<EventKind> {
    let ty = event
        .get("Type")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("{function_id}.Events.{name}: no Type"))?;
    let props = event.get("Properties").cloned().unwrap_or(Value::Null);
    Ok(match ty {
        "Schedule" | "ScheduleV2" => {
            let (flavor, key) = if ty == "Schedule" {
                (ScheduleFlavor::EventBridgeRule, "Schedule")
            } else {
                (ScheduleFlavor::Scheduler, "ScheduleExpression")
            };
            let expression = props
                .get(key)
                .cloned()
                .ok_or_else(|| anyhow!("{function_id}.Events.{name}: {ty} without {key}"))?;
            // `Enabled: false` (Schedule) or `State: DISABLED` (both) turn a schedule off.
            let enabled = as_bool(props.get("Enabled"), true)
                && props
                    .get("State")
                    .and_then(Value::as_str)
                    .unwrap_or("ENABLED")
                    == "ENABLED";
            EventKind::Schedule(ScheduleSource {
                flavor,
                expression,
                rule_logical_id: format!("{function_id}{name}"),
                name: props.get("Name").cloned(),
                input: props.get("Input").cloned(),
                enabled,
            })
        }
        "SQS" => {
            let queue = props
                .get("Queue")
                .cloned()
                .ok_or_else(|| anyhow!("{function_id}.Events.{name}: SQS without Queue"))?;
            let types = props.get("FunctionResponseTypes").cloned();
            let report = types
                .as_ref()
                .and_then(Value::as_array)
                .is_some_and(|a| a.iter().any(|t| t == "ReportBatchItemFailures"));
            if let Some(t) = &types
                && !t.is_array()
            {
                bail!("{function_id}.Events.{name}: FunctionResponseTypes must be a list");
            }
            EventKind::Sqs(SqsSource {
                queue,
                batch_size: props
                    .get("BatchSize")
                    .cloned()
                    .unwrap_or(Value::from(DEFAULT_BATCH_SIZE)),
                maximum_batching_window: props.get("MaximumBatchingWindowInSeconds").cloned(),
                report_batch_item_failures: report,
                function_response_types: types,
                maximum_concurrency: props.pointer("/ScalingConfig/MaximumConcurrency").cloned(),
                enabled: as_bool(props.get("Enabled"), true),
            })
        }
        other => EventKind::Other(other.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = r#"
Globals:
  Function:
    Timeout: 30
    Runtime: provided.al2023
    Environment:
      Variables:
        A: !Ref Q
Resources:
  Q:
    Type: AWS::SQS::Queue
  F:
    Type: AWS::Serverless::Function
    Metadata:
      BuildMethod: rust-cargolambda
      BuildProperties:
        Binary: f-bin
    Properties:
      Timeout: 12
      Environment:
        Variables:
          B: x
      Events:
        Tick:
          Type: Schedule
          Properties:
            Schedule: rate(5 minutes)
        Jobs:
          Type: SQS
          Properties:
            Queue: !GetAtt Q.Arn
            FunctionResponseTypes: [ReportBatchItemFailures]
            ScalingConfig: { MaximumConcurrency: 3 }
        Web:
          Type: HttpApi
  G:
    Type: AWS::Serverless::Function
    Properties:
      Events:
        Later:
          Type: ScheduleV2
          Properties:
            ScheduleExpression: cron(0 8 * * ? *)
            State: DISABLED
  R:
    Type: AWS::Events::Rule
    Properties:
      ScheduleExpression: rate(1 hour)
      Targets:
        - Id: g
          Arn: !GetAtt G.Arn
          Input: '{"mode":"x"}'
"#;

    #[test]
    fn functions_carry_globals_events_and_rules() {
        let t = Template::parse(T).unwrap();
        let fns = t.functions().unwrap();
        assert_eq!(fns.len(), 2);
        let f = &fns[0];
        assert_eq!(f.binary.as_deref(), Some("f-bin"));
        assert_eq!(f.timeout_secs(), Some(12));
        assert_eq!(f.runtime, Some(Value::from("provided.al2023")));
        assert_eq!(f.environment["A"], serde_json::json!({"Ref": "Q"}));
        assert_eq!(f.environment["B"], "x");
        let (name, s) = f.schedules().next().unwrap();
        assert_eq!(name, "Tick");
        assert_eq!(s.rule_logical_id, "FTick");
        assert!(s.enabled);
        let (_, q) = f.sqs_sources().next().unwrap();
        assert_eq!(q.queue_logical_id(), Some("Q"));
        assert!(q.report_batch_item_failures);
        assert_eq!(q.batch_size, Value::from(10));
        assert_eq!(q.maximum_concurrency, Some(Value::from(3)));
        assert!(matches!(&f.events[2].kind, EventKind::Other(t) if t == "HttpApi"));

        let g = &fns[1];
        assert_eq!(g.timeout_secs(), Some(30));
        let schedules: Vec<_> = g.schedules().collect();
        assert_eq!(schedules.len(), 2);
        assert_eq!(schedules[0].1.flavor, ScheduleFlavor::Scheduler);
        assert!(!schedules[0].1.enabled);
        assert_eq!(schedules[1].0, "R");
        assert_eq!(schedules[1].1.input, Some(Value::from(r#"{"mode":"x"}"#)));
    }
}
