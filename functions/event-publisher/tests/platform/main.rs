//! The platform's events end to end on moto: mail-sync's real worker imports a mailbox
//! from microsoft-sim into the template's tables (through mail-sync's own test harness),
//! the tables' streams are read by local-stack's DynamoDB stream event source mapping,
//! which invokes the real event-publisher handler, which puts the events on the
//! template's bus, where a rule (as the platform subscribes) sends them to an SQS queue.

#[path = "../../../mail-sync/tests/sync/support.rs"]
mod support;

mod roundtrip;
