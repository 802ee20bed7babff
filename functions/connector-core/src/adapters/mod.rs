//! Implementations of the ports: in-memory ones for tests, and the real ones on
//! DynamoDB, S3, Secrets Manager and SQS.

pub mod backoff;
pub mod consent_memory;
pub mod dynamodb;
pub mod memory;
pub mod notifications_memory;
pub mod s3;
pub mod secrets;
pub mod slots_dynamodb;
pub mod sqs;
pub mod teams_dynamodb;
pub mod teams_memory;
pub mod teams_sqs;
