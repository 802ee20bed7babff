//! Creates, on the local AWS emulator, exactly the DynamoDB tables, SQS queues,
//! Secrets Manager secrets and S3 buckets (with their encryption, public access block
//! and bucket policy) that a template declares, with the properties
//! it declares, and resolves the functions' environment (`Globals`) against
//! what was created. Local resources are derived from the template and
//! nothing else, so the local stack and the cloud stack cannot drift.
//!
//! Operations resources have no local counterpart and are skipped on purpose
//! ([`NOT_PROVISIONED`]): CloudWatch alarms, log groups (the functions log to
//! `.local/lambda-watch.log`) and SNS; so are the functions and their event sources,
//! which `cargo lambda watch` and the plumbing run. Parameters without a default (the
//! client secret) must be given, as CloudFormation requires. The template's `Conditions`
//! are evaluated against the parameters: a resource whose `Condition` is false is not
//! created, and `Fn::If` picks its branch.
//!
//! With `EntraCredential=certificate` and no `EntraCertificateKmsKeyArn`, the KMS key the
//! cloud stack is given is created here instead (RSA_2048, SIGN_VERIFY, as an operator
//! creates it), and `EntraCertificateThumbprint`, when not given, is the SHA-256 of its
//! public key (there is no certificate locally; microsoft-sim is told this thumbprint with
//! the key, see [`CertificateKey`]).

use std::collections::BTreeMap;

use anyhow::{Context, Result, anyhow, bail};
use aws_config::SdkConfig;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ProvisionedThroughput, ScalarAttributeType, TimeToLiveSpecification,
};
use aws_sdk_sqs::types::QueueAttributeName;
use serde_json::Value;

use crate::functions::{FunctionSpec, SERVERLESS_FUNCTION};
use crate::template::{Pending, Resolver, Template};

pub const TABLE: &str = "AWS::DynamoDB::Table";
pub const QUEUE: &str = "AWS::SQS::Queue";
pub const SECRET: &str = "AWS::SecretsManager::Secret";
pub const BUCKET: &str = "AWS::S3::Bucket";
pub const BUCKET_POLICY: &str = "AWS::S3::BucketPolicy";
pub const EVENT_BUS: &str = "AWS::Events::EventBus";

/// Resource types the local stack knows and does not create: operations (alarms, log
/// groups, SNS topics) have nothing to run against locally; functions, APIs, event
/// sources and schedules are run by `cargo lambda watch` and the plumbing.
pub const NOT_PROVISIONED: &[&str] = &[
    "AWS::CloudWatch::Alarm",
    "AWS::Logs::LogGroup",
    "AWS::SNS::Topic",
    "AWS::SNS::Subscription",
    "AWS::KMS::Key",
    "AWS::Serverless::Function",
    "AWS::Serverless::HttpApi",
    "AWS::Serverless::Api",
    "AWS::Events::Rule",
    "AWS::Scheduler::Schedule",
    "AWS::Lambda::EventSourceMapping",
    "AWS::Lambda::Permission",
    "AWS::IAM::Role",
];

/// The account moto reports for every resource.
pub const ACCOUNT_ID: &str = "123456789012";

/// One resource created from the template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Created {
    pub logical_id: String,
    pub resource_type: String,
    /// Table name, queue URL, or secret ARN: what `Ref` returns.
    pub physical_id: String,
}

/// What a provisioning run created, and the functions' environment resolved
/// against it.
#[derive(Debug, Clone)]
pub struct Provisioned {
    pub stack_name: String,
    pub created: Vec<Created>,
    /// `Globals.Function.Environment.Variables` with every reference resolved.
    pub env: BTreeMap<String, String>,
    pub region: String,
    pub account_id: String,
    /// What `Ref`/`Fn::GetAtt` resolve to in this stack (parameters, pseudo parameters,
    /// created resources, and the functions' names and ARNs), for resolving the rest of
    /// the template (function environments, event sources) after provisioning.
    pub resolver: Resolver,
    /// The certificate credential's KMS key, with `EntraCredential=certificate`.
    pub certificate: Option<CertificateKey>,
}

/// The app's certificate key on the local KMS: what microsoft-sim must register on the app
/// (`POST /_sim/apps/{clientId}/certificates`).
#[derive(Debug, Clone)]
pub struct CertificateKey {
    pub key_arn: String,
    /// DER SubjectPublicKeyInfo, as KMS `GetPublicKey` returns it.
    pub public_key_der: Vec<u8>,
    /// Hex, as `EntraCertificateThumbprint` holds it.
    pub thumbprint: String,
}

impl CertificateKey {
    /// The body of microsoft-sim's `POST /_sim/apps/{clientId}/certificates`.
    pub fn sim_registration(&self) -> Value {
        use base64::Engine as _;
        let public_key = base64::engine::general_purpose::STANDARD.encode(&self.public_key_der);
        if self.thumbprint.len() == 40 {
            serde_json::json!({"publicKey": public_key, "thumbprintSha1": self.thumbprint})
        } else {
            serde_json::json!({"publicKey": public_key, "thumbprintSha256": self.thumbprint})
        }
    }
}

/// With `EntraCredential=certificate`: the key given, or a new RSA_2048 signing key, and
/// the thumbprint given, or the SHA-256 of the public key. Fills the two parameters.
async fn certificate_key(
    sdk: &SdkConfig,
    stack_name: &str,
    refs: &mut BTreeMap<String, String>,
) -> Result<Option<CertificateKey>> {
    if refs.get("EntraCredential").map(String::as_str) != Some("certificate") {
        return Ok(None);
    }
    let kms = aws_sdk_kms::Client::new(sdk);
    let given = refs
        .get("EntraCertificateKmsKeyArn")
        .filter(|arn| !arn.is_empty())
        .cloned();
    let key_arn = match given {
        Some(arn) => arn,
        None => kms
            .create_key()
            .key_spec(aws_sdk_kms::types::KeySpec::Rsa2048)
            .key_usage(aws_sdk_kms::types::KeyUsageType::SignVerify)
            .description(format!("{stack_name}: the Entra app's certificate key"))
            .send()
            .await
            .context("creating the certificate's KMS key")?
            .key_metadata
            .map(|metadata| metadata.arn.unwrap_or(metadata.key_id))
            .ok_or_else(|| anyhow!("CreateKey returned no key"))?,
    };
    let public_key_der = kms
        .get_public_key()
        .key_id(&key_arn)
        .send()
        .await
        .with_context(|| format!("reading the public key of {key_arn}"))?
        .public_key
        .ok_or_else(|| anyhow!("GetPublicKey returned no key"))?
        .into_inner();
    let thumbprint = match refs
        .get("EntraCertificateThumbprint")
        .filter(|thumbprint| !thumbprint.is_empty())
    {
        Some(given) => given.clone(),
        None => {
            use sha2::Digest as _;
            hex::encode(sha2::Sha256::digest(&public_key_der))
        }
    };
    refs.insert("EntraCertificateKmsKeyArn".into(), key_arn.clone());
    refs.insert("EntraCertificateThumbprint".into(), thumbprint.clone());
    Ok(Some(CertificateKey {
        key_arn,
        public_key_der,
        thumbprint,
    }))
}

impl Provisioned {
    pub fn physical(&self, logical_id: &str) -> Option<&str> {
        self.created
            .iter()
            .find(|c| c.logical_id == logical_id)
            .map(|c| c.physical_id.as_str())
    }

    /// An attribute of a created resource (`Arn`, `QueueName`, ...).
    pub fn attribute(&self, logical_id: &str, attribute: &str) -> Option<&str> {
        self.resolver
            .attrs
            .get(&(logical_id.to_string(), attribute.to_string()))
            .map(String::as_str)
    }

    /// Resolves a template value (`!Ref`, `!GetAtt`, `!Sub`, ...) against this stack.
    pub fn resolve(&self, value: &Value) -> Result<Value> {
        self.resolver.resolve(value)
    }

    /// Resolves a template value that must be a string or a number.
    pub fn resolve_string(&self, value: &Value) -> Result<String> {
        Ok(match self.resolve(value)? {
            Value::String(s) => s,
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            other => bail!("expected a string, got {other}"),
        })
    }

    /// A function's environment (Globals overlaid with its own variables), resolved.
    pub fn function_env(&self, function: &FunctionSpec) -> Result<BTreeMap<String, String>> {
        function
            .environment
            .iter()
            .map(|(name, value)| {
                let text = self.resolve_string(value).with_context(|| {
                    format!(
                        "resolving {}'s environment variable {name}",
                        function.logical_id
                    )
                })?;
                Ok((name.clone(), text))
            })
            .collect()
    }
}

/// Provisions `template` under `stack_name`. Parameters take their value from
/// `params`, else from their `Default`.
pub async fn provision(
    sdk: &SdkConfig,
    template: &Template,
    stack_name: &str,
    params: &BTreeMap<String, String>,
) -> Result<Provisioned> {
    let ddb = aws_sdk_dynamodb::Client::new(sdk);
    let sqs = aws_sdk_sqs::Client::new(sdk);
    let sm = aws_sdk_secretsmanager::Client::new(sdk);
    // Path-style: the emulator on 127.0.0.1 has no per-bucket host names.
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(sdk)
            .force_path_style(true)
            .build(),
    );
    let region = sdk
        .region()
        .map(|r| r.to_string())
        .unwrap_or_else(|| "us-east-1".into());

    let mut resolver = Resolver::default();
    for (k, v) in [
        ("AWS::StackName", stack_name.to_string()),
        ("AWS::Region", region.clone()),
        ("AWS::AccountId", ACCOUNT_ID.to_string()),
        ("AWS::Partition", "aws".to_string()),
        ("AWS::URLSuffix", "amazonaws.com".to_string()),
    ] {
        resolver.refs.insert(k.to_string(), v);
    }
    for (name, decl) in &template.parameters {
        let value = params
            .get(name)
            .cloned()
            .or_else(|| match decl.get("Default") {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Null) | None => None,
                Some(other) => Some(other.to_string()),
            });
        match value {
            Some(v) => {
                resolver.refs.insert(name.clone(), v);
            }
            // As CloudFormation: a parameter without a default must be given.
            None => bail!("parameter {name} has no default: give it a value"),
        }
    }

    let certificate = certificate_key(sdk, stack_name, &mut resolver.refs).await?;
    resolver.evaluate_conditions(template)?;

    let mut todo: Vec<(&str, &Value)> = Vec::new();
    for (id, r) in &template.resources {
        if matches!(
            r.get("Type").and_then(Value::as_str),
            Some(TABLE | QUEUE | SECRET | BUCKET | BUCKET_POLICY | EVENT_BUS)
        ) && resolver
            .creates(r)
            .with_context(|| format!("resource {id}"))?
        {
            todo.push((id.as_str(), r));
        }
    }
    let mut created = Vec::new();

    // Create in dependency order: a resource whose properties refer to one not
    // created yet waits for the next round.
    while !todo.is_empty() {
        let before = created.len();
        let mut waiting = Vec::new();
        let mut blocked_on = Vec::new();
        for (id, res) in todo {
            let props = res
                .get("Properties")
                .cloned()
                .unwrap_or(Value::Object(Default::default()));
            let props = match resolver.resolve(&props) {
                Ok(p) => p,
                Err(e) => match e.downcast_ref::<Pending>() {
                    Some(p) => {
                        blocked_on.push(format!("{id} -> {}", p.0));
                        waiting.push((id, res));
                        continue;
                    }
                    None => return Err(e.context(format!("resolving {id}"))),
                },
            };
            let ty = res["Type"].as_str().unwrap_or_default();
            let physical = match ty {
                TABLE => create_table(&ddb, id, stack_name, &props, &mut resolver).await,
                QUEUE => create_queue(&sqs, id, stack_name, &props, &mut resolver).await,
                SECRET => create_secret(&sm, id, stack_name, &props, &mut resolver).await,
                BUCKET => create_bucket(&s3, id, stack_name, &props, &mut resolver).await,
                BUCKET_POLICY => put_bucket_policy(&s3, id, &props).await,
                EVENT_BUS => {
                    crate::streams::create_event_bus(sdk, id, stack_name, &props, &mut resolver)
                        .await
                }
                _ => unreachable!("filtered above"),
            }
            .with_context(|| format!("creating {id} ({ty})"))?;
            resolver.refs.insert(id.to_string(), physical.clone());
            created.push(Created {
                logical_id: id.to_string(),
                resource_type: ty.to_string(),
                physical_id: physical,
            });
        }
        if !waiting.is_empty() && created.len() == before {
            bail!(
                "unresolvable references in template: {}",
                blocked_on.join(", ")
            );
        }
        todo = waiting;
    }

    // Functions are not created locally (`cargo lambda watch` runs them), but their names
    // and ARNs resolve as CloudFormation would resolve them.
    for (id, function) in template.of_type(SERVERLESS_FUNCTION) {
        let name = match function.pointer("/Properties/FunctionName") {
            Some(declared) => match resolver
                .resolve(declared)
                .with_context(|| format!("resolving {id}'s FunctionName"))?
            {
                Value::String(name) => name,
                other => bail!("{id}'s FunctionName is not a string: {other}"),
            },
            None => format!("{stack_name}-{id}"),
        };
        resolver.attrs.insert(
            (id.to_string(), "Arn".into()),
            format!("arn:aws:lambda:{region}:{ACCOUNT_ID}:function:{name}"),
        );
        resolver.refs.insert(id.to_string(), name);
    }

    let mut env = BTreeMap::new();
    for (name, value) in template.function_env() {
        let resolved = resolver
            .resolve(&value)
            .with_context(|| format!("resolving Globals environment variable {name}"))?;
        let text = match resolved {
            Value::String(s) => s,
            other => other.to_string(),
        };
        env.insert(name, text);
    }
    Ok(Provisioned {
        stack_name: stack_name.to_string(),
        created,
        env,
        region,
        account_id: ACCOUNT_ID.to_string(),
        resolver,
        certificate,
    })
}

fn name_or_default(props: &Value, key: &str, stack: &str, id: &str) -> String {
    props
        .get(key)
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| format!("{stack}-{id}"))
}

fn str_field<'a>(v: &'a Value, key: &str) -> Result<&'a str> {
    v.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("missing {key}"))
}

fn key_schema(v: &Value) -> Result<Vec<KeySchemaElement>> {
    v.as_array()
        .ok_or_else(|| anyhow!("KeySchema must be a list"))?
        .iter()
        .map(|k| {
            Ok(KeySchemaElement::builder()
                .attribute_name(str_field(k, "AttributeName")?)
                .key_type(KeyType::from(str_field(k, "KeyType")?))
                .build()?)
        })
        .collect()
}

fn projection(v: Option<&Value>) -> Result<Projection> {
    let mut p = Projection::builder();
    if let Some(v) = v {
        if let Some(t) = v.get("ProjectionType").and_then(Value::as_str) {
            p = p.projection_type(ProjectionType::from(t));
        }
        for a in v
            .get("NonKeyAttributes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            p = p.non_key_attributes(a.as_str().unwrap_or_default());
        }
    } else {
        p = p.projection_type(ProjectionType::All);
    }
    Ok(p.build())
}

fn throughput(v: Option<&Value>) -> Result<ProvisionedThroughput> {
    let units = |k: &str| v.and_then(|t| t.get(k)).and_then(as_i64).unwrap_or(5);
    Ok(ProvisionedThroughput::builder()
        .read_capacity_units(units("ReadCapacityUnits"))
        .write_capacity_units(units("WriteCapacityUnits"))
        .build()?)
}

fn as_i64(v: &Value) -> Option<i64> {
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

async fn create_table(
    ddb: &aws_sdk_dynamodb::Client,
    id: &str,
    stack: &str,
    props: &Value,
    resolver: &mut Resolver,
) -> Result<String> {
    let name = name_or_default(props, "TableName", stack, id);
    let on_demand = props.get("BillingMode").and_then(Value::as_str) == Some("PAY_PER_REQUEST");
    let mut req = ddb
        .create_table()
        .table_name(&name)
        .set_key_schema(Some(key_schema(
            props.get("KeySchema").unwrap_or(&Value::Null),
        )?));
    for a in props
        .get("AttributeDefinitions")
        .and_then(Value::as_array)
        .ok_or_else(|| anyhow!("AttributeDefinitions missing"))?
    {
        req = req.attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(str_field(a, "AttributeName")?)
                .attribute_type(ScalarAttributeType::from(str_field(a, "AttributeType")?))
                .build()?,
        );
    }
    req = if on_demand {
        req.billing_mode(BillingMode::PayPerRequest)
    } else {
        req.billing_mode(BillingMode::Provisioned)
            .provisioned_throughput(throughput(props.get("ProvisionedThroughput"))?)
    };
    for g in props
        .get("GlobalSecondaryIndexes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let mut gsi = GlobalSecondaryIndex::builder()
            .index_name(str_field(g, "IndexName")?)
            .set_key_schema(Some(key_schema(
                g.get("KeySchema").unwrap_or(&Value::Null),
            )?))
            .projection(projection(g.get("Projection"))?);
        if !on_demand {
            gsi = gsi.provisioned_throughput(throughput(g.get("ProvisionedThroughput"))?);
        }
        req = req.global_secondary_indexes(gsi.build()?);
    }
    // `StreamSpecification` (the platform's events read the streams: crate::streams).
    if let Some(view) = props
        .pointer("/StreamSpecification/StreamViewType")
        .and_then(Value::as_str)
    {
        req = req.stream_specification(
            aws_sdk_dynamodb::types::StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(aws_sdk_dynamodb::types::StreamViewType::from(view))
                .build()?,
        );
    }
    let out = req.send().await?;
    if let Some(stream_arn) = out.table_description().and_then(|d| d.latest_stream_arn()) {
        resolver
            .attrs
            .insert((id.to_string(), "StreamArn".into()), stream_arn.to_string());
    }
    let arn = out
        .table_description()
        .and_then(|d| d.table_arn())
        .map(str::to_string)
        .unwrap_or_else(|| format!("arn:aws:dynamodb:us-east-1:123456789012:table/{name}"));
    if let Some(ttl) = props.get("TimeToLiveSpecification") {
        let enabled = ttl
            .get("Enabled")
            .map(|e| e == true || e == "true")
            .unwrap_or(false);
        if enabled {
            ddb.update_time_to_live()
                .table_name(&name)
                .time_to_live_specification(
                    TimeToLiveSpecification::builder()
                        .attribute_name(str_field(ttl, "AttributeName")?)
                        .enabled(true)
                        .build()?,
                )
                .send()
                .await?;
        }
    }
    resolver.attrs.insert((id.to_string(), "Arn".into()), arn);
    Ok(name)
}

/// CloudFormation property → SQS attribute, for the properties SQS takes as attributes.
const QUEUE_ATTRIBUTES: &[(&str, &str)] = &[
    ("VisibilityTimeout", "VisibilityTimeout"),
    ("MessageRetentionPeriod", "MessageRetentionPeriod"),
    ("DelaySeconds", "DelaySeconds"),
    (
        "ReceiveMessageWaitTimeSeconds",
        "ReceiveMessageWaitTimeSeconds",
    ),
    ("MaximumMessageSize", "MaximumMessageSize"),
    ("FifoQueue", "FifoQueue"),
    ("ContentBasedDeduplication", "ContentBasedDeduplication"),
    ("RedrivePolicy", "RedrivePolicy"),
    ("RedriveAllowPolicy", "RedriveAllowPolicy"),
];

async fn create_queue(
    sqs: &aws_sdk_sqs::Client,
    id: &str,
    stack: &str,
    props: &Value,
    resolver: &mut Resolver,
) -> Result<String> {
    let fifo = props
        .get("FifoQueue")
        .map(|v| v == true || v == "true")
        .unwrap_or(false);
    let mut name = name_or_default(props, "QueueName", stack, id);
    if fifo && !name.ends_with(".fifo") {
        name.push_str(".fifo");
    }
    let mut req = sqs.create_queue().queue_name(&name);
    for (prop, attr) in QUEUE_ATTRIBUTES {
        if let Some(v) = props.get(*prop) {
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Object(_) => serde_json::to_string(v)?,
                other => other.to_string(),
            };
            req = req.attributes(QueueAttributeName::from(*attr), text);
        }
    }
    let url = req
        .send()
        .await?
        .queue_url()
        .ok_or_else(|| anyhow!("no queue url"))?
        .to_string();
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await?;
    let arn = attrs
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .cloned()
        .ok_or_else(|| anyhow!("no queue arn"))?;
    resolver.attrs.insert((id.to_string(), "Arn".into()), arn);
    resolver
        .attrs
        .insert((id.to_string(), "QueueName".into()), name);
    resolver
        .attrs
        .insert((id.to_string(), "QueueUrl".into()), url.clone());
    Ok(url)
}

async fn create_secret(
    sm: &aws_sdk_secretsmanager::Client,
    id: &str,
    stack: &str,
    props: &Value,
    resolver: &mut Resolver,
) -> Result<String> {
    let name = name_or_default(props, "Name", stack, id);
    let value = match props.get("SecretString").and_then(Value::as_str) {
        Some(s) => s.to_string(),
        // A generated secret: locally any random value does.
        None => uuid::Uuid::new_v4().simple().to_string(),
    };
    let mut req = sm.create_secret().name(&name).secret_string(value);
    if let Some(d) = props.get("Description").and_then(Value::as_str) {
        req = req.description(d);
    }
    let arn = req
        .send()
        .await?
        .arn()
        .ok_or_else(|| anyhow!("no secret arn"))?
        .to_string();
    resolver
        .attrs
        .insert((id.to_string(), "Id".into()), arn.clone());
    Ok(arn)
}

/// A bucket as CloudFormation names one (lowercase, as S3 requires), with the template's
/// default encryption and public access block.
async fn create_bucket(
    s3: &aws_sdk_s3::Client,
    id: &str,
    stack: &str,
    props: &Value,
    resolver: &mut Resolver,
) -> Result<String> {
    use aws_sdk_s3::types::{
        PublicAccessBlockConfiguration, ServerSideEncryption, ServerSideEncryptionByDefault,
        ServerSideEncryptionConfiguration, ServerSideEncryptionRule,
    };
    let name = name_or_default(props, "BucketName", stack, id).to_ascii_lowercase();
    s3.create_bucket().bucket(&name).send().await?;
    if let Some(rules) = props
        .pointer("/BucketEncryption/ServerSideEncryptionConfiguration")
        .and_then(Value::as_array)
    {
        let mut config = ServerSideEncryptionConfiguration::builder();
        for rule in rules {
            let algorithm = rule
                .pointer("/ServerSideEncryptionByDefault/SSEAlgorithm")
                .and_then(Value::as_str)
                .ok_or_else(|| anyhow!("an encryption rule without SSEAlgorithm"))?;
            let mut default = ServerSideEncryptionByDefault::builder()
                .sse_algorithm(ServerSideEncryption::from(algorithm));
            if let Some(key) = rule
                .pointer("/ServerSideEncryptionByDefault/KMSMasterKeyID")
                .and_then(Value::as_str)
            {
                default = default.kms_master_key_id(key);
            }
            config = config.rules(
                ServerSideEncryptionRule::builder()
                    .apply_server_side_encryption_by_default(default.build()?)
                    .set_bucket_key_enabled(rule.get("BucketKeyEnabled").and_then(Value::as_bool))
                    .build(),
            );
        }
        s3.put_bucket_encryption()
            .bucket(&name)
            .server_side_encryption_configuration(config.build()?)
            .send()
            .await?;
    }
    if let Some(block) = props.get("PublicAccessBlockConfiguration") {
        let flag = |key: &str| block.get(key).and_then(Value::as_bool);
        s3.put_public_access_block()
            .bucket(&name)
            .public_access_block_configuration(
                PublicAccessBlockConfiguration::builder()
                    .set_block_public_acls(flag("BlockPublicAcls"))
                    .set_block_public_policy(flag("BlockPublicPolicy"))
                    .set_ignore_public_acls(flag("IgnorePublicAcls"))
                    .set_restrict_public_buckets(flag("RestrictPublicBuckets"))
                    .build(),
            )
            .send()
            .await?;
    }
    resolver.attrs.insert(
        (id.to_string(), "Arn".into()),
        format!("arn:aws:s3:::{name}"),
    );
    resolver.attrs.insert(
        (id.to_string(), "DomainName".into()),
        format!("{name}.s3.amazonaws.com"),
    );
    Ok(name)
}

/// Whether a policy statement denies requests not made over TLS.
pub fn denies_plain_http(statement: &Value) -> bool {
    statement["Effect"] == "Deny"
        && statement
            .pointer("/Condition/Bool/aws:SecureTransport")
            .is_some_and(|v| v == "false" || v == false)
}

/// The template's bucket policy, but for its TLS-only statements: the emulator is served
/// over plain HTTP on loopback, and moto enforces bucket policies, so they would refuse
/// every local request (moto's own refusal of plain HTTP under that statement is what
/// connector-core's `moto_bodies` test checks, on a scratch bucket).
async fn put_bucket_policy(s3: &aws_sdk_s3::Client, id: &str, props: &Value) -> Result<String> {
    let bucket = str_field(props, "Bucket")?;
    let mut document = props
        .get("PolicyDocument")
        .cloned()
        .ok_or_else(|| anyhow!("missing PolicyDocument"))?;
    if let Some(statements) = document.get_mut("Statement").and_then(Value::as_array_mut) {
        statements.retain(|statement| !denies_plain_http(statement));
        if statements.is_empty() {
            return Ok(format!("{bucket}-{id}"));
        }
    }
    s3.put_bucket_policy()
        .bucket(bucket)
        .policy(document.to_string())
        .send()
        .await?;
    Ok(format!("{bucket}-{id}"))
}
