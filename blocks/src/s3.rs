//! [`S3Store`]: backups in any S3-compatible object store, through `object_store`'s `AmazonS3`.
//!
//! Key `k` is the object `<prefix>/k` in the bucket. Requests use path-style addressing, so an
//! endpoint such as `http://127.0.0.1:9000` works without DNS names per bucket; plain `http`
//! endpoints are allowed. Credentials are given in [`S3Config`] or read from the environment,
//! never from an instance-metadata service (a store without credentials fails at once instead of
//! waiting on a metadata endpoint), and are never printed: [`S3Credentials`] and [`S3Store`] have
//! `Debug` implementations that redact them, and every error text from `object_store` is passed
//! through [`S3Store::redact`] before it reaches a [`BlockError`].
//!
//! Retries: `object_store` retries each request under [`crate::RetryPolicy`] (see `retry.rs`);
//! its final error is classified here into [`BlockError::Transient`], [`BlockError::Credentials`],
//! [`BlockError::NotFound`], [`BlockError::BucketNotFound`] or [`BlockError::Store`].

use std::error::Error as StdError;
use std::fmt;
use std::path::Path as LocalPath;
use std::time::Instant;

use async_trait::async_trait;
use futures::stream::{self, StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use tokio::io::AsyncReadExt;

use crate::atomic::TempFile;
use crate::checksum::{verify, Summer};
use crate::key::{validate_key, validate_prefix};
use crate::local::check_bytes_size;
use crate::pace::UploadPacer;
use crate::retry::is_transient_io;
use crate::{
    BlockError, BlockStore, FileInfo, ListEntry, StoreOptions, BYTES_MAX, CHUNK_BYTES,
    UPLOAD_PARTS_INFLIGHT_MAX,
};

/// Replaces credentials in texts and `Debug` output.
const REDACTED: &str = "<redacted>";

/// Region used when none is given.
pub const REGION_DEFAULT: &str = "us-east-1";

/// S3 credentials: an access key pair and an optional session token. `Debug` shows none of them,
/// and there is no `Display`.
#[derive(Clone)]
pub struct S3Credentials {
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
}

impl fmt::Debug for S3Credentials {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("S3Credentials")
            .field("access_key_id", &REDACTED)
            .field("secret_access_key", &REDACTED)
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| REDACTED),
            )
            .finish()
    }
}

impl S3Credentials {
    /// Credentials given explicitly (from a config file, say).
    pub fn new(access_key_id: impl Into<String>, secret_access_key: impl Into<String>) -> Self {
        Self {
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
            session_token: None,
        }
    }

    /// Adds a session token (temporary credentials).
    pub fn with_session_token(mut self, session_token: impl Into<String>) -> Self {
        self.session_token = Some(session_token.into());
        self
    }

    /// Reads `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and, if set, `AWS_SESSION_TOKEN`.
    pub fn from_env() -> Result<Self, BlockError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Like [`S3Credentials::from_env`], with the variables read through `lookup`.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, BlockError> {
        let read = |name: &str| lookup(name).filter(|value| !value.is_empty());
        match (read("AWS_ACCESS_KEY_ID"), read("AWS_SECRET_ACCESS_KEY")) {
            (Some(access_key_id), Some(secret_access_key)) => Ok(Self {
                access_key_id,
                secret_access_key,
                session_token: read("AWS_SESSION_TOKEN"),
            }),
            _ => Err(BlockError::Credentials {
                store: "s3".to_string(),
                detail: "no credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or give \
                         them in the store's configuration"
                    .to_string(),
            }),
        }
    }

    /// The texts that must never be printed.
    fn secrets(&self) -> Vec<String> {
        let mut secrets = vec![self.access_key_id.clone(), self.secret_access_key.clone()];
        secrets.extend(self.session_token.clone());
        secrets
    }
}

/// Where an [`S3Store`] keeps its objects.
#[derive(Clone, Debug)]
pub struct S3Config {
    /// `http(s)://host:port` of an S3-compatible server; `None` means Amazon S3 itself.
    pub endpoint: Option<String>,
    /// The region requests are signed for (default [`REGION_DEFAULT`]).
    pub region: String,
    /// The bucket, which must exist.
    pub bucket: String,
    /// Key prefix inside the bucket: `""` or a valid key (see [`crate::key`]).
    pub prefix: String,
    /// Explicit credentials; `None` reads them from the environment ([`S3Credentials::from_env`]).
    pub credentials: Option<S3Credentials>,
}

/// A block store in an S3 bucket.
pub struct S3Store {
    config: S3Config,
    options: StoreOptions,
    store: AmazonS3,
    pacer: UploadPacer,
    /// Credential texts removed from every error message.
    secrets: Vec<String>,
}

impl fmt::Debug for S3Store {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not `self.store`: object_store's own Debug output includes the credentials.
        formatter
            .debug_struct("S3Store")
            .field("endpoint", &self.config.endpoint)
            .field("region", &self.config.region)
            .field("bucket", &self.config.bucket)
            .field("prefix", &self.config.prefix)
            .field("credentials", &REDACTED)
            .field("options", &self.options)
            .finish()
    }
}

impl fmt::Display for S3Store {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "s3://{}", self.config.bucket)?;
        if !self.config.prefix.is_empty() {
            write!(formatter, "/{}", self.config.prefix)?;
        }
        match &self.config.endpoint {
            Some(endpoint) => write!(formatter, " at {endpoint}"),
            None => write!(formatter, " in {}", self.config.region),
        }
    }
}

impl S3Store {
    /// A store for `config`. Fails if the options are out of bounds, if no credentials are given
    /// nor set in the environment, or if `object_store` rejects the configuration. Makes no
    /// request: a missing bucket or rejected credentials show on the first operation.
    pub fn new(config: S3Config, options: StoreOptions) -> Result<Self, BlockError> {
        options.validate()?;
        let prefix = validate_prefix(&config.prefix)?.to_string();
        let config = S3Config { prefix, ..config };
        let credentials = match &config.credentials {
            Some(credentials) => credentials.clone(),
            None => S3Credentials::from_env().map_err(|error| match error {
                BlockError::Credentials { detail, .. } => BlockError::Credentials {
                    store: format!("s3://{}", config.bucket),
                    detail,
                },
                other => other,
            })?,
        };
        let client_options = ClientOptions::new()
            .with_allow_http(true)
            .with_connect_timeout(options.connect_timeout)
            .with_timeout(options.request_timeout);
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_access_key_id(&credentials.access_key_id)
            .with_secret_access_key(&credentials.secret_access_key)
            .with_allow_http(true)
            .with_retry(options.retry.object_store_config())
            .with_client_options(client_options);
        if let Some(token) = &credentials.session_token {
            builder = builder.with_token(token);
        }
        if let Some(endpoint) = &config.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        let secrets = credentials.secrets();
        let store = builder
            .build()
            .map_err(|error| BlockError::InvalidOptions {
                reason: redact_with(&secrets, &error.to_string()),
            })?;
        let pacer = UploadPacer::new(options.upload_bytes_per_second);
        Ok(Self {
            config,
            options,
            store,
            pacer,
            secrets,
        })
    }

    /// `text` with every credential replaced by `<redacted>`.
    pub fn redact(&self, text: &str) -> String {
        redact_with(&self.secrets, text)
    }

    /// The object path of `key`.
    fn path_of(&self, key: &str) -> Result<Path, BlockError> {
        let full = if self.config.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.config.prefix)
        };
        Path::parse(&full).map_err(|error| BlockError::InvalidKey {
            key: key.to_string(),
            reason: error.to_string(),
        })
    }

    /// The key of an object path, if it lies under the store's prefix and is a valid key.
    fn key_of(&self, path: &Path) -> Option<String> {
        let path = path.as_ref();
        let key = if self.config.prefix.is_empty() {
            path
        } else {
            path.strip_prefix(self.config.prefix.as_str())?
                .strip_prefix('/')?
        };
        validate_key(key).ok().map(|()| key.to_string())
    }

    /// Classifies `object_store`'s final error (after its retries) into a [`BlockError`].
    fn map_error(
        &self,
        operation: &'static str,
        key: &str,
        started: Instant,
        error: object_store::Error,
    ) -> BlockError {
        let detail = summarize(&self.redact(&error_chain_text(&error)));
        let store = self.to_string();
        match &error {
            object_store::Error::NotFound { .. } if detail.contains("NoSuchBucket") => {
                BlockError::BucketNotFound {
                    store,
                    bucket: self.config.bucket.clone(),
                }
            }
            object_store::Error::NotFound { .. } => BlockError::NotFound {
                store,
                key: key.to_string(),
            },
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => {
                BlockError::Credentials { store, detail }
            }
            _ if CREDENTIAL_ERROR_CODES
                .iter()
                .any(|code| detail.contains(code)) =>
            {
                BlockError::Credentials { store, detail }
            }
            _ if is_transient(&error, &detail) => BlockError::Transient {
                operation,
                key: key.to_string(),
                attempts: attempts_made(&detail),
                elapsed_ms: started.elapsed().as_millis() as u64,
                detail,
            },
            _ => BlockError::Store {
                store,
                operation,
                key: key.to_string(),
                detail,
            },
        }
    }

    /// Reads `local_path` in chunks, paced, and uploads it with one put (below the multi-part
    /// threshold) or in parts. Returns what was read.
    async fn upload(
        &self,
        local_path: &LocalPath,
        key: &str,
        path: &Path,
        started: Instant,
    ) -> Result<FileInfo, BlockError> {
        let mut source = tokio::fs::File::open(local_path)
            .await
            .map_err(|error| BlockError::io("open", local_path, error))?;
        let size_bytes = source
            .metadata()
            .await
            .map_err(|error| BlockError::io("stat", local_path, error))?
            .len();
        let mut summer = Summer::new();
        let mut chunk = vec![0; CHUNK_BYTES];
        if size_bytes < self.options.multipart_threshold_bytes {
            // Bounded by the threshold (at most PART_BYTES_MAX-sized in practice).
            let mut body = Vec::with_capacity(size_bytes as usize);
            loop {
                let length = read_chunk(&mut source, &mut chunk, local_path).await?;
                if length == 0 {
                    break;
                }
                if body.len() + length > size_bytes as usize {
                    return Err(grew(local_path));
                }
                self.pacer.pace(length as u64).await;
                summer.update(&chunk[..length]);
                body.extend_from_slice(&chunk[..length]);
            }
            self.store
                .put(path, PutPayload::from(body))
                .await
                .map_err(|error| self.map_error("put_file", key, started, error))?;
            return Ok(summer.finish(key));
        }
        let upload = self
            .store
            .put_multipart(path)
            .await
            .map_err(|error| self.map_error("put_file", key, started, error))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, self.options.part_bytes);
        let written: Result<(), BlockError> = async {
            loop {
                let length = read_chunk(&mut source, &mut chunk, local_path).await?;
                if length == 0 {
                    return Ok(());
                }
                self.pacer.pace(length as u64).await;
                summer.update(&chunk[..length]);
                writer
                    .wait_for_capacity(UPLOAD_PARTS_INFLIGHT_MAX)
                    .await
                    .map_err(|error| self.map_error("put_file", key, started, error))?;
                writer.write(&chunk[..length]);
            }
        }
        .await;
        if let Err(error) = written {
            if let Err(abort_error) = writer.abort().await {
                tracing::debug!(key, error = %self.redact(&abort_error.to_string()),
                    "could not abort a failed multi-part upload");
            }
            return Err(error);
        }
        writer
            .finish()
            .await
            .map_err(|error| self.map_error("put_file", key, started, error))?;
        Ok(summer.finish(key))
    }
}

/// Error codes S3 servers use for missing, malformed or rejected credentials, whatever the status.
const CREDENTIAL_ERROR_CODES: [&str; 6] = [
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "AuthorizationHeaderMalformed",
    "AccessDenied",
];

fn redact_with(secrets: &[String], text: &str) -> String {
    secrets
        .iter()
        .filter(|secret| !secret.is_empty())
        .fold(text.to_string(), |text, secret| {
            text.replace(secret.as_str(), REDACTED)
        })
}

/// The messages of `error` and all its sources, one per line.
fn error_chain_text(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(current) = source {
        let message = current.to_string();
        // Wrappers often repeat their source's message; keep the text short.
        if !text.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        source = current.source();
    }
    text
}

/// Longest error detail kept, in bytes; longer ones are cut (an S3 error body can be large).
const DETAIL_BYTES_MAX: usize = 1024;

/// `detail` on one line: whitespace collapsed, an S3 XML error body replaced by its code and
/// message, and cut to [`DETAIL_BYTES_MAX`].
fn summarize(detail: &str) -> String {
    let between = |text: &str, open: &str, close: &str| -> Option<String> {
        let start = text.find(open)? + open.len();
        let length = text[start..].find(close)?;
        Some(text[start..start + length].to_string())
    };
    let mut summary = match (detail.find("<?xml"), between(detail, "<Code>", "</Code>")) {
        (Some(xml_start), Some(code)) => {
            let message = between(detail, "<Message>", "</Message>").unwrap_or_default();
            format!("{}S3 error {code}: {message}", &detail[..xml_start])
        }
        _ => detail.to_string(),
    };
    summary = summary.split_whitespace().collect::<Vec<_>>().join(" ");
    if summary.len() > DETAIL_BYTES_MAX {
        let mut cut = DETAIL_BYTES_MAX;
        while !summary.is_char_boundary(cut) {
            cut -= 1;
        }
        summary.truncate(cut);
        summary.push_str(" ...");
    }
    summary
}

/// Whether `error` is one a later attempt may not see: a connection refused, reset or timed out,
/// a 5xx, 408 or 429 status, or an S3 "InternalError"/"SlowDown" body. `object_store` does not
/// expose the status of its final error as a type, so statuses are read from its message
/// ("... status code: 503 ...").
fn is_transient(error: &object_store::Error, detail: &str) -> bool {
    let mut current: Option<&(dyn StdError + 'static)> = Some(error);
    while let Some(error) = current {
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            if is_transient_io(io.kind()) {
                return true;
            }
        }
        if let Some(http) = error.downcast_ref::<object_store::client::HttpError>() {
            use object_store::client::HttpErrorKind;
            if matches!(
                http.kind(),
                HttpErrorKind::Connect
                    | HttpErrorKind::Request
                    | HttpErrorKind::Timeout
                    | HttpErrorKind::Interrupted
            ) {
                return true;
            }
        }
        current = error.source();
    }
    let status = detail
        .split("status code: ")
        .nth(1)
        .and_then(|rest| rest.get(..3))
        .and_then(|digits| digits.parse::<u16>().ok());
    if let Some(status) = status {
        return status >= 500 || status == 408 || status == 429;
    }
    detail.contains("timed out")
        || detail.contains("error sending request")
        || detail.contains("InternalError")
        || detail.contains("SlowDown")
}

/// Attempts `object_store` made, read from its message ("after 4 retries"); 1 if it says none.
fn attempts_made(detail: &str) -> u32 {
    detail
        .split("after ")
        .skip(1)
        .find_map(|rest| rest.split(" retries").next()?.parse::<u32>().ok())
        .map_or(1, |retries| retries.saturating_add(1))
}

async fn read_chunk(
    source: &mut tokio::fs::File,
    chunk: &mut [u8],
    local_path: &LocalPath,
) -> Result<usize, BlockError> {
    source
        .read(chunk)
        .await
        .map_err(|error| BlockError::io("read", local_path, error))
}

fn grew(local_path: &LocalPath) -> BlockError {
    BlockError::io(
        "read",
        local_path,
        std::io::Error::other("the file grew while it was being uploaded"),
    )
}

#[async_trait]
impl BlockStore for S3Store {
    async fn put_file(&self, local_path: &LocalPath, key: &str) -> Result<FileInfo, BlockError> {
        validate_key(key)?;
        let path = self.path_of(key)?;
        let started = Instant::now();
        let info = self.upload(local_path, key, &path, started).await?;
        // Pair check across the boundary: the store holds as many bytes as were read.
        let stored = self
            .store
            .head(&path)
            .await
            .map_err(|error| self.map_error("put_file", key, started, error))?;
        if stored.size != info.size_bytes {
            return Err(BlockError::Store {
                store: self.to_string(),
                operation: "put_file",
                key: key.to_string(),
                detail: format!(
                    "uploaded {} bytes but the store holds {}",
                    info.size_bytes, stored.size
                ),
            });
        }
        Ok(info)
    }

    async fn get_file(
        &self,
        key: &str,
        local_path: &LocalPath,
        expected: Option<&FileInfo>,
    ) -> Result<FileInfo, BlockError> {
        validate_key(key)?;
        let path = self.path_of(key)?;
        let started = Instant::now();
        let result = self
            .store
            .get(&path)
            .await
            .map_err(|error| self.map_error("get_file", key, started, error))?;
        let mut body = result.into_stream();
        let mut temporary = TempFile::create(local_path).await?;
        let mut summer = Summer::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|error| self.map_error("get_file", key, started, error))?;
            summer.update(&chunk);
            temporary.write_all(&chunk).await?;
        }
        let info = summer.finish(key);
        if let Some(expected) = expected {
            verify(&info, expected)?;
        }
        temporary.publish().await?;
        Ok(info)
    }

    async fn put_bytes(&self, key: &str, bytes: Vec<u8>) -> Result<FileInfo, BlockError> {
        validate_key(key)?;
        check_bytes_size(key, bytes.len())?;
        let path = self.path_of(key)?;
        let started = Instant::now();
        let mut summer = Summer::new();
        summer.update(&bytes);
        self.store
            .put(&path, PutPayload::from(bytes))
            .await
            .map_err(|error| self.map_error("put_bytes", key, started, error))?;
        Ok(summer.finish(key))
    }

    async fn get_bytes(&self, key: &str) -> Result<Vec<u8>, BlockError> {
        validate_key(key)?;
        let path = self.path_of(key)?;
        let started = Instant::now();
        let result = self
            .store
            .get(&path)
            .await
            .map_err(|error| self.map_error("get_bytes", key, started, error))?;
        if result.meta.size > BYTES_MAX {
            return Err(BlockError::TooLarge {
                key: key.to_string(),
                size_bytes: result.meta.size,
                limit_bytes: BYTES_MAX,
            });
        }
        let bytes = result
            .bytes()
            .await
            .map_err(|error| self.map_error("get_bytes", key, started, error))?;
        Ok(bytes.to_vec())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ListEntry>, BlockError> {
        let prefix = validate_prefix(prefix)?;
        let started = Instant::now();
        let listed: Vec<object_store::ObjectMeta> =
            if prefix.is_empty() && self.config.prefix.is_empty() {
                self.store.list(None).try_collect().await
            } else {
                let path = if prefix.is_empty() {
                    Path::parse(&self.config.prefix).map_err(|error| BlockError::InvalidKey {
                        key: self.config.prefix.clone(),
                        reason: error.to_string(),
                    })?
                } else {
                    self.path_of(prefix)?
                };
                self.store.list(Some(&path)).try_collect().await
            }
            .map_err(|error| self.map_error("list", prefix, started, error))?;
        let mut entries: Vec<ListEntry> = listed
            .into_iter()
            .filter_map(|meta| {
                Some(ListEntry {
                    key: self.key_of(&meta.location)?,
                    size_bytes: meta.size,
                })
            })
            .collect();
        entries.sort_by(|left, right| left.key.cmp(&right.key));
        Ok(entries)
    }

    async fn exists(&self, key: &str) -> Result<bool, BlockError> {
        validate_key(key)?;
        let path = self.path_of(key)?;
        let started = Instant::now();
        match self.store.head(&path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(error) => Err(self.map_error("exists", key, started, error)),
        }
    }

    async fn delete(&self, key: &str) -> Result<(), BlockError> {
        validate_key(key)?;
        let path = self.path_of(key)?;
        let started = Instant::now();
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(error) => Err(self.map_error("delete", key, started, error)),
        }
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<u64, BlockError> {
        let prefix = validate_prefix(prefix)?;
        let entries = self.list(prefix).await?;
        let started = Instant::now();
        let paths = entries
            .iter()
            .map(|entry| self.path_of(&entry.key))
            .collect::<Result<Vec<Path>, BlockError>>()?;
        let count = paths.len() as u64;
        // object_store batches these into DeleteObjects requests of at most 1000 keys.
        let mut deleted = self
            .store
            .delete_stream(stream::iter(paths.into_iter().map(Ok)).boxed());
        while let Some(result) = deleted.next().await {
            match result {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(error) => return Err(self.map_error("delete_prefix", prefix, started, error)),
            }
        }
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(credentials: Option<S3Credentials>) -> S3Config {
        S3Config {
            endpoint: Some("http://127.0.0.1:9".to_string()),
            region: REGION_DEFAULT.to_string(),
            bucket: "backups".to_string(),
            prefix: "cluster-a".to_string(),
            credentials,
        }
    }

    /// Proves credentials never show: not in the Debug output of the credentials, the config or
    /// the store, not in its Display, and not in an error text that contained them.
    #[test]
    fn credentials_are_redacted() {
        let credentials = S3Credentials::new("AKIAMARKABKEYID", "markab-secret-0123456789")
            .with_session_token("markab-session-token");
        let store =
            S3Store::new(config(Some(credentials.clone())), StoreOptions::default()).unwrap();
        let texts = [
            format!("{credentials:?}"),
            format!("{:?}", config(Some(credentials.clone()))),
            format!("{store:?}"),
            format!("{store:#?}"),
            store.to_string(),
            store.redact(
                "<AWSAccessKeyId>AKIAMARKABKEYID</AWSAccessKeyId> markab-secret-0123456789",
            ),
        ];
        for text in texts {
            for secret in [
                "AKIAMARKABKEYID",
                "markab-secret-0123456789",
                "markab-session-token",
            ] {
                assert!(!text.contains(secret), "{secret} shows in {text}");
            }
        }
        assert_eq!(
            store.to_string(),
            "s3://backups/cluster-a at http://127.0.0.1:9"
        );
    }

    /// Proves a store without explicit credentials reads them from the environment, and that
    /// missing ones are a clear Credentials error naming the variables.
    #[test]
    fn credentials_from_the_environment() {
        let present = S3Credentials::from_lookup(|name| match name {
            "AWS_ACCESS_KEY_ID" => Some("id".to_string()),
            "AWS_SECRET_ACCESS_KEY" => Some("secret".to_string()),
            _ => None,
        })
        .unwrap();
        assert_eq!(present.secrets(), ["id", "secret"]);
        let error = S3Credentials::from_lookup(|name| {
            (name == "AWS_ACCESS_KEY_ID").then(|| "id".to_string())
        })
        .unwrap_err();
        assert!(matches!(error, BlockError::Credentials { .. }), "{error}");
        assert!(
            error.to_string().contains("AWS_SECRET_ACCESS_KEY"),
            "{error}"
        );
    }

    /// Proves the classification of object_store's messages: statuses 5xx, 408 and 429 are
    /// transient, other statuses are not, and the attempt count is read from the message.
    #[test]
    fn failures_are_classified() {
        let generic = |message: &str| object_store::Error::Generic {
            store: "S3",
            source: message.to_string().into(),
        };
        for (message, transient) in [
            (
                "Server returned non-2xx status code: 503 Service Unavailable: ",
                true,
            ),
            (
                "Server returned non-2xx status code: 429 Too Many Requests: ",
                true,
            ),
            (
                "Server returned non-2xx status code: 400 Bad Request: ",
                false,
            ),
            (
                "Server returned error response: <Code>SlowDown</Code>",
                true,
            ),
            ("operation timed out", true),
            ("invalid XML", false),
        ] {
            assert_eq!(
                is_transient(&generic(message), message),
                transient,
                "{message}"
            );
        }
        let refused = object_store::Error::Generic {
            store: "S3",
            source: Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
        };
        assert!(is_transient(&refused, ""));
        assert_eq!(
            attempts_made("Error performing PUT http://x in 1.2s, after 4 retries, max_retries: 4"),
            5
        );
        assert_eq!(
            attempts_made("Error performing PUT http://x in 1.2s - refused"),
            1
        );
    }

    /// Proves error details are one bounded line, with an S3 XML body reduced to its code and
    /// message.
    #[test]
    fn details_are_summarized() {
        let body = "PUT failed - 403 Forbidden: <?xml version=\"1.0\"?>\n<Error>\n  \
                    <Code>InvalidAccessKeyId</Code>\n  <Message>No such key id.</Message>\n</Error>";
        assert_eq!(
            summarize(body),
            "PUT failed - 403 Forbidden: S3 error InvalidAccessKeyId: No such key id."
        );
        let long = "é".repeat(DETAIL_BYTES_MAX);
        let summary = summarize(&long);
        assert!(summary.len() <= DETAIL_BYTES_MAX + 4 && summary.ends_with(" ..."));
    }
}
