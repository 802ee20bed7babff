//! The body store on S3: one private bucket (template.yaml `MessageBodiesBucket`: SSE,
//! every public access blocked, TLS only), one object per mail activity under
//! `{tenantId}/{userId}/`.

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{Delete, ObjectIdentifier};
use futures::{StreamExt, TryStreamExt, stream};
use tracing::instrument;

use crate::ports::{BodyStore, StoreError};

/// S3's limit of keys in one DeleteObjects.
const DELETE_LIMIT: usize = 1_000;
/// Single-object calls in flight at once.
const CONCURRENCY: usize = 8;

/// An S3 client from a configuration built on the shared SDK config
/// (`aws_sdk_s3::config::Builder::from(&sdk)`). `endpoint_overridden`
/// (`sdk.endpoint_url().is_some()`): path-style addressing, as a local emulator on
/// 127.0.0.1 has no per-bucket host names; virtual-hosted otherwise.
pub fn s3_client(builder: aws_sdk_s3::config::Builder, endpoint_overridden: bool) -> Client {
    Client::from_conf(builder.force_path_style(endpoint_overridden).build())
}

pub struct S3BodyStore {
    client: Client,
    bucket: String,
}

fn backend(
    operation: &'static str,
    bucket: &str,
    error: impl std::error::Error + Send + Sync + 'static,
) -> StoreError {
    StoreError::Backend {
        operation,
        resource: bucket.to_owned(),
        source: Box::new(error),
    }
}

impl S3BodyStore {
    pub fn new(client: Client, bucket: impl Into<String>) -> Self {
        Self {
            client,
            bucket: bucket.into(),
        }
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// One DeleteObjects of up to 1,000 keys.
    async fn delete_chunk(&self, chunk: Vec<String>) -> Result<(), StoreError> {
        let objects = chunk
            .iter()
            .map(|key| ObjectIdentifier::builder().key(key).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| backend("DeleteObjects", &self.bucket, error))?;
        let delete = Delete::builder()
            .set_objects(Some(objects))
            .quiet(true)
            .build()
            .map_err(|error| backend("DeleteObjects", &self.bucket, error))?;
        let output = self
            .client
            .delete_objects()
            .bucket(&self.bucket)
            .delete(delete)
            .send()
            .await
            .map_err(|error| backend("DeleteObjects", &self.bucket, error))?;
        match output.errors().len() {
            0 => Ok(()),
            failed => Err(StoreError::Unprocessed {
                operation: "DeleteObjects",
                resource: self.bucket.clone(),
                remaining: failed,
                attempts: 1,
            }),
        }
    }

    /// Every key under `prefix`, page by page.
    async fn keys_under(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let output = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|error| backend("ListObjectsV2", &self.bucket, error))?;
            keys.extend(
                output
                    .contents()
                    .iter()
                    .filter_map(|object| object.key().map(str::to_owned)),
            );
            match output.next_continuation_token() {
                Some(next) if output.is_truncated() == Some(true) => token = Some(next.to_owned()),
                _ => return Ok(keys),
            }
        }
    }
}

#[async_trait]
impl BodyStore for S3BodyStore {
    #[instrument(skip_all, fields(bucket = %self.bucket, bytes = bytes.len()))]
    async fn put_body(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type("application/json")
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|error| backend("PutObject", &self.bucket, error))?;
        Ok(())
    }

    #[instrument(skip_all, fields(bucket = %self.bucket))]
    async fn get_body(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let output = match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(output) => output,
            Err(error) if error.as_service_error().is_some_and(|e| e.is_no_such_key()) => {
                return Ok(None);
            }
            Err(error) => return Err(backend("GetObject", &self.bucket, error)),
        };
        let bytes = output
            .body
            .collect()
            .await
            .map_err(|error| backend("GetObject", &self.bucket, error))?;
        Ok(Some(bytes.into_bytes().to_vec()))
    }

    #[instrument(skip_all, fields(bucket = %self.bucket, count = keys.len()))]
    async fn delete_bodies(&self, keys: &[String]) -> Result<(), StoreError> {
        let chunks: Vec<Vec<String>> = keys.chunks(DELETE_LIMIT).map(<[String]>::to_vec).collect();
        stream::iter(chunks)
            .map(|chunk| self.delete_chunk(chunk))
            .buffer_unordered(CONCURRENCY)
            .try_collect::<Vec<()>>()
            .await
            .map(drop)
    }

    #[instrument(skip_all, fields(bucket = %self.bucket))]
    async fn delete_prefix(&self, prefix: &str) -> Result<u64, StoreError> {
        let keys = self.keys_under(prefix).await?;
        self.delete_bodies(&keys).await?;
        Ok(keys.len() as u64)
    }

    #[instrument(skip_all, fields(bucket = %self.bucket))]
    async fn count_prefix(&self, prefix: &str) -> Result<u64, StoreError> {
        Ok(self.keys_under(prefix).await?.len() as u64)
    }
}
