//! The event plumbing of one provisioned stack, started together: the scheduler for every
//! schedule of the template and an event source mapping for every SQS and DynamoDB stream
//! event source, all invoking through one [`Invoker`]. What the template does not declare
//! does not run.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Result;
use aws_config::SdkConfig;

use crate::esm::{
    EsmCounts, EsmHandle, EsmOptions, MappingConfig, event_source_mappings, spawn_all,
};
use crate::invoke::Invoker;
use crate::provision::Provisioned;
use crate::scheduler::{
    Firing, ScheduledTarget, SchedulerHandle, SimClock, scheduled_targets, spawn_scheduler,
};
use crate::streams::{StreamHandle, StreamMappingConfig, StreamOptions, stream_mappings};
use crate::template::Template;

#[derive(Debug, Clone, Copy)]
pub struct PlumbingOptions {
    /// How much faster than real time schedules run (1.0 = as on AWS; 60.0 = an hour a
    /// minute).
    pub time_factor: f64,
    /// Run the schedules at all (off when a driver fires them itself).
    pub schedules: bool,
    pub esm: EsmOptions,
    pub streams: StreamOptions,
}

impl Default for PlumbingOptions {
    fn default() -> Self {
        Self {
            time_factor: 1.0,
            schedules: true,
            esm: EsmOptions::default(),
            streams: StreamOptions::default(),
        }
    }
}

/// What the template declares, resolved: for printing and for drivers.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Wiring {
    pub schedules: Vec<ScheduledTarget>,
    pub mappings: Vec<MappingConfig>,
    /// DynamoDB stream event sources (event-publisher).
    #[serde(default)]
    pub streams: Vec<StreamMappingConfig>,
}

impl Wiring {
    pub fn from_template(template: &Template, provisioned: &Provisioned) -> Result<Self> {
        Ok(Self {
            schedules: scheduled_targets(template, provisioned)?,
            mappings: event_source_mappings(template, provisioned)?,
            streams: stream_mappings(template, provisioned)?,
        })
    }
}

/// The running plumbing.
pub struct Plumbing {
    pub wiring: Wiring,
    scheduler: Option<SchedulerHandle>,
    mappings: BTreeMap<String, EsmHandle>,
    streams: Vec<StreamHandle>,
}

impl Plumbing {
    pub fn start(
        wiring: Wiring,
        sdk: &SdkConfig,
        invoker: Arc<dyn Invoker>,
        options: PlumbingOptions,
    ) -> Self {
        let sqs = aws_sdk_sqs::Client::new(sdk);
        let mappings = spawn_all(wiring.mappings.clone(), &sqs, invoker.clone(), options.esm);
        let streams = crate::streams::spawn_all(
            wiring.streams.clone(),
            sdk,
            invoker.clone(),
            options.streams,
        );
        let scheduler = options.schedules.then(|| {
            spawn_scheduler(
                wiring.schedules.clone(),
                SimClock::new(options.time_factor),
                invoker,
            )
        });
        Self {
            wiring,
            scheduler,
            mappings,
            streams,
        }
    }

    /// Counters per mapping (`Function.Event`).
    pub fn counts(&self) -> BTreeMap<String, EsmCounts> {
        self.mappings
            .iter()
            .map(|(k, h)| (k.clone(), h.counts()))
            .collect()
    }

    pub fn firings(&self) -> Vec<Firing> {
        self.scheduler
            .as_ref()
            .map(SchedulerHandle::firings)
            .unwrap_or_default()
    }

    /// Stops polling and scheduling, and waits for invocations in flight.
    pub async fn stop(self) -> Result<()> {
        if let Some(s) = self.scheduler {
            s.stop().await;
        }
        for (_, m) in self.mappings {
            m.stop().await?;
        }
        for s in self.streams {
            s.stop().await?;
        }
        Ok(())
    }
}
