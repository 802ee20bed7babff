//! EventBridge schedules, locally: every `Schedule`/`ScheduleV2` event of the template's
//! functions and every `AWS::Events::Rule` with a `ScheduleExpression` that targets one,
//! fired at their times (optionally sped up by a time factor, for the demo) or on demand
//! ("fire now"), as the JSON EventBridge sends to Lambda.
//!
//! The event is the documented "Scheduled Event" (EventBridge user guide, "Creating a rule
//! that runs on a schedule"; Lambda developer guide, "Using Lambda with EventBridge"):
//! `version` "0", a fresh `id`, `detail-type` "Scheduled Event", `source` "aws.events",
//! `account`, `time` (the scheduled time, whole seconds, `Z`), `region`, `resources` = the
//! rule's ARN, `detail` {}. A target `Input` replaces the event, as it does on AWS.
//!
//! Limits of the emulation: EventBridge invokes asynchronously and Lambda retries a failed
//! asynchronous invocation twice; here a failed invocation is logged and not retried.
//! `ScheduleV2` without `Input` gets the same event, with the schedule's ARN in `resources`
//! (what EventBridge Scheduler sends a templated Lambda target without `Input` is not
//! documented precisely); `ScheduleExpressionTimezone` is ignored (UTC).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::functions::{ScheduleFlavor, ScheduleSource};
use crate::invoke::{Invoker, Outcome};
use crate::provision::Provisioned;
use crate::schedule::{Dialect, ScheduleExpr};
use crate::template::Template;

/// One schedule that invokes one function. Serialised with the expression as text (and
/// parsed again when read), so that `local-stack up` can hand its wiring to the plumbing
/// process.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "ScheduledTargetRecord", into = "ScheduledTargetRecord")]
pub struct ScheduledTarget {
    pub function_logical_id: String,
    /// The binary `cargo lambda watch` runs for the function.
    pub binary: String,
    /// The event's name under `Events` (or the rule's logical id).
    pub event_name: String,
    pub flavor: ScheduleFlavor,
    pub expression_text: String,
    pub expression: ScheduleExpr,
    /// The rule's (or schedule's) name and ARN, as AWS would name them.
    pub rule_name: String,
    pub rule_arn: String,
    /// `Input`, when the template sets one (JSON text).
    pub input: Option<String>,
    pub enabled: bool,
    pub region: String,
    pub account_id: String,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ScheduledTargetRecord {
    function_logical_id: String,
    binary: String,
    event_name: String,
    flavor: ScheduleFlavor,
    expression: String,
    rule_name: String,
    rule_arn: String,
    input: Option<String>,
    enabled: bool,
    region: String,
    account_id: String,
}

impl TryFrom<ScheduledTargetRecord> for ScheduledTarget {
    type Error = crate::schedule::ScheduleError;

    fn try_from(r: ScheduledTargetRecord) -> Result<Self, Self::Error> {
        let dialect = match r.flavor {
            ScheduleFlavor::EventBridgeRule => Dialect::EventBridgeRule,
            ScheduleFlavor::Scheduler => Dialect::Scheduler,
        };
        Ok(ScheduledTarget {
            expression: ScheduleExpr::parse(&r.expression, dialect)?,
            expression_text: r.expression,
            function_logical_id: r.function_logical_id,
            binary: r.binary,
            event_name: r.event_name,
            flavor: r.flavor,
            rule_name: r.rule_name,
            rule_arn: r.rule_arn,
            input: r.input,
            enabled: r.enabled,
            region: r.region,
            account_id: r.account_id,
        })
    }
}

impl From<ScheduledTarget> for ScheduledTargetRecord {
    fn from(t: ScheduledTarget) -> Self {
        ScheduledTargetRecord {
            function_logical_id: t.function_logical_id,
            binary: t.binary,
            event_name: t.event_name,
            flavor: t.flavor,
            expression: t.expression_text,
            rule_name: t.rule_name,
            rule_arn: t.rule_arn,
            input: t.input,
            enabled: t.enabled,
            region: t.region,
            account_id: t.account_id,
        }
    }
}

impl ScheduledTarget {
    /// The payload EventBridge would deliver for a firing at `time`.
    pub fn event(&self, time: OffsetDateTime) -> Result<Value> {
        let time = time
            .replace_nanosecond(0)
            .expect("0 is a valid nanosecond")
            .to_offset(time::UtcOffset::UTC);
        let stamp = time.format(&Rfc3339).context("formatting the event time")?;
        let id = uuid::Uuid::new_v4().to_string();
        if let Some(input) = &self.input {
            let text = match self.flavor {
                // Scheduler fills its context attributes into the input.
                ScheduleFlavor::Scheduler => input
                    .replace("<aws.scheduler.schedule-arn>", &self.rule_arn)
                    .replace("<aws.scheduler.scheduled-time>", &stamp)
                    .replace("<aws.scheduler.execution-id>", &id)
                    .replace("<aws.scheduler.attempt-number>", "1"),
                ScheduleFlavor::EventBridgeRule => input.clone(),
            };
            return serde_json::from_str(&text).with_context(|| {
                format!(
                    "{}.{}: Input is not JSON",
                    self.function_logical_id, self.event_name
                )
            });
        }
        Ok(json!({
            "version": "0",
            "id": id,
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": self.account_id,
            "time": stamp,
            "region": self.region,
            "resources": [self.rule_arn],
            "detail": {},
        }))
    }
}

/// CloudFormation names a rule without `Name` `{stack}-{logicalId}-{random}`, at most 64
/// characters; locally the random part is left out so that names are stable.
fn generated_name(stack: &str, logical_id: &str) -> String {
    let mut name = format!("{stack}-{logical_id}");
    name.truncate(64);
    name
}

/// Every schedule of the template, resolved against a provisioned stack.
pub fn scheduled_targets(
    template: &Template,
    provisioned: &Provisioned,
) -> Result<Vec<ScheduledTarget>> {
    let mut out = Vec::new();
    for function in template.functions()? {
        for (event_name, source) in function.schedules() {
            let Some(binary) = function.binary.clone() else {
                bail!(
                    "{} has a schedule but no Metadata.BuildProperties.Binary to run",
                    function.logical_id
                );
            };
            out.push(target(
                provisioned,
                &function.logical_id,
                &binary,
                event_name,
                source,
            )?);
        }
    }
    Ok(out)
}

fn target(
    provisioned: &Provisioned,
    function_id: &str,
    binary: &str,
    event_name: &str,
    source: &ScheduleSource,
) -> Result<ScheduledTarget> {
    let context = || format!("{function_id}.{event_name}");
    let expression_text = provisioned
        .resolve_string(&source.expression)
        .with_context(context)?;
    let dialect = match source.flavor {
        ScheduleFlavor::EventBridgeRule => Dialect::EventBridgeRule,
        ScheduleFlavor::Scheduler => Dialect::Scheduler,
    };
    let expression = ScheduleExpr::parse(&expression_text, dialect).with_context(context)?;
    let rule_name = match &source.name {
        Some(name) => provisioned.resolve_string(name).with_context(context)?,
        None => generated_name(&provisioned.stack_name, &source.rule_logical_id),
    };
    let (region, account) = (&provisioned.region, &provisioned.account_id);
    let rule_arn = match source.flavor {
        ScheduleFlavor::EventBridgeRule => {
            format!("arn:aws:events:{region}:{account}:rule/{rule_name}")
        }
        ScheduleFlavor::Scheduler => {
            format!("arn:aws:scheduler:{region}:{account}:schedule/default/{rule_name}")
        }
    };
    let input = match &source.input {
        Some(v) => Some(provisioned.resolve_string(v).with_context(context)?),
        None => None,
    };
    Ok(ScheduledTarget {
        function_logical_id: function_id.to_string(),
        binary: binary.to_string(),
        event_name: event_name.to_string(),
        flavor: source.flavor,
        expression_text,
        expression,
        rule_name,
        rule_arn,
        input,
        enabled: source.enabled,
        region: region.clone(),
        account_id: account.clone(),
    })
}

/// Simulated time: starts at `sim_start` and runs `factor` times faster than real time.
#[derive(Debug, Clone, Copy)]
pub struct SimClock {
    real_start: Instant,
    sim_start: OffsetDateTime,
    factor: f64,
}

impl SimClock {
    pub fn new(factor: f64) -> Self {
        assert!(factor > 0.0, "the time factor must be positive");
        Self {
            real_start: Instant::now(),
            sim_start: OffsetDateTime::now_utc(),
            factor,
        }
    }

    pub fn now(&self) -> OffsetDateTime {
        let real = self.real_start.elapsed().as_secs_f64();
        self.sim_start + time::Duration::seconds_f64(real * self.factor)
    }

    /// The real instant at which simulated time reaches `at`.
    pub fn real_instant(&self, at: OffsetDateTime) -> Instant {
        let sim = (at - self.sim_start).as_seconds_f64().max(0.0);
        self.real_start + Duration::from_secs_f64(sim / self.factor)
    }

    pub fn start(&self) -> OffsetDateTime {
        self.sim_start
    }
}

/// One firing, for whoever watches the scheduler (tests, the demo report).
#[derive(Debug, Clone)]
pub struct Firing {
    pub rule_name: String,
    pub binary: String,
    pub scheduled_time: OffsetDateTime,
    pub outcome: Result<Outcome, String>,
}

/// Fires one schedule now (`time` = the current time): what the demo and tests use to
/// run a round without waiting for the schedule.
pub async fn fire_now(invoker: &dyn Invoker, target: &ScheduledTarget) -> Result<Outcome> {
    let event = target.event(OffsetDateTime::now_utc())?;
    invoker
        .invoke(&target.binary, &event)
        .await
        .with_context(|| format!("firing {}", target.rule_name))
}

/// The running scheduler.
pub struct SchedulerHandle {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    firings: Arc<Mutex<Vec<Firing>>>,
}

impl SchedulerHandle {
    /// Every firing so far (completed invocations).
    pub fn firings(&self) -> Vec<Firing> {
        self.firings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Runs every enabled target on `clock` until stopped. Invocations run concurrently, as
/// EventBridge does not wait for one firing before the next.
pub fn spawn_scheduler(
    targets: Vec<ScheduledTarget>,
    clock: SimClock,
    invoker: Arc<dyn Invoker>,
) -> SchedulerHandle {
    let (stop, mut stopped) = watch::channel(false);
    let firings = Arc::new(Mutex::new(Vec::new()));
    let log = firings.clone();
    let task = tokio::spawn(async move {
        let anchor = clock.start();
        let targets: Vec<ScheduledTarget> = targets.into_iter().filter(|t| t.enabled).collect();
        let mut next: Vec<Option<OffsetDateTime>> = targets
            .iter()
            .map(|t| t.expression.next_after(anchor, anchor))
            .collect();
        let mut running = tokio::task::JoinSet::new();
        while let Some((i, at)) = next
            .iter()
            .enumerate()
            .filter_map(|(i, t)| t.map(|t| (i, t)))
            .min_by_key(|(_, t)| *t)
        {
            let wake = tokio::time::Instant::from_std(clock.real_instant(at));
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                _ = stopped.changed() => break,
            }
            let target = targets[i].clone();
            next[i] = target.expression.next_after(at, anchor);
            let invoker = invoker.clone();
            let log = log.clone();
            running.spawn(async move {
                let outcome = match target.event(at) {
                    Ok(event) => invoker
                        .invoke(&target.binary, &event)
                        .await
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(format!("{e:#}")),
                };
                match &outcome {
                    Ok(Outcome::Ok(_)) => {
                        tracing::info!(rule = %target.rule_name, function = %target.binary, "scheduled event delivered")
                    }
                    Ok(Outcome::FunctionError { error_type, error_message }) => {
                        tracing::warn!(rule = %target.rule_name, function = %target.binary, %error_type, %error_message, "scheduled invocation failed")
                    }
                    Err(e) => {
                        tracing::warn!(rule = %target.rule_name, function = %target.binary, error = %e, "scheduled invocation not made")
                    }
                }
                log.lock().unwrap_or_else(PoisonError::into_inner).push(Firing {
                    rule_name: target.rule_name.clone(),
                    binary: target.binary.clone(),
                    scheduled_time: at,
                    outcome,
                });
            });
            while running.try_join_next().is_some() {}
        }
        while running.join_next().await.is_some() {}
    });
    SchedulerHandle {
        stop,
        task,
        firings,
    }
}
