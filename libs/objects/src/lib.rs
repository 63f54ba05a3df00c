//! Object storage for the files the services keep (statistics exports, image backups,
//! scheduled exports): one [`ObjectStorage`] over `object_store`'s file, S3 and memory stores,
//! chosen by `HAVEN_OBJECT_STORE_URL`, with streaming uploads and time-limited links.
//!
//! Links: S3 and S3-compatible stores (R2, MinIO) presign; the file and memory stores hand out
//! gateway links (`/api/objects/{key}?expires=&sig=`) signed with `HAVEN_OBJECT_LINK_SECRET`.

mod key;
mod link;

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::buffered::BufWriter;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::signer::{Method, Signer};
use object_store::{Attribute, Attributes, ObjectStore, ObjectStoreExt, PutPayload};
use secrecy::{ExposeSecret, SecretString};
use tokio::io::AsyncWriteExt;

pub use key::{KeyError, MAX_KEY_LEN, ObjectKey};
pub use link::{LinkError, LinkSigner, MAX_LINK_TTL, MIN_SECRET_LEN, WeakSecret, object_address};

/// Size of each part of a multipart upload, and of the buffer before an upload turns into
/// one: S3's minimum part size, so memory per upload stays a few MiB whatever the object.
pub const PART_SIZE: usize = 5 * 1024 * 1024;

/// Parts of one upload in flight at once.
const PARTS_IN_FLIGHT: usize = 2;

/// Where objects go and how links to them are made.
#[derive(Clone, Debug, clap::Args)]
pub struct ObjectsArgs {
    /// Object store: `file:///abs/dir` (default: `.haven/objects` in the working directory),
    /// `s3://bucket[/prefix]` (credentials and region from the usual `AWS_*` variables), or
    /// `memory://name` (tests; one store per name within a process).
    #[arg(long = "object-store-url", env = "HAVEN_OBJECT_STORE_URL")]
    pub url: Option<String>,
    /// Endpoint of an S3-compatible store (R2, MinIO, a local S3 server) for `s3://` URLs;
    /// AWS itself when unset. `http://` endpoints are allowed.
    #[arg(long = "object-store-endpoint", env = "HAVEN_OBJECT_STORE_ENDPOINT")]
    pub endpoint: Option<String>,
    /// S3 access key id (otherwise the AWS SDK's usual sources: `AWS_*` variables, instance
    /// or web-identity credentials).
    #[arg(long = "s3-access-key-id", env = "AWS_ACCESS_KEY_ID")]
    pub access_key_id: Option<String>,
    /// S3 secret access key.
    #[arg(
        long = "s3-secret-access-key",
        env = "AWS_SECRET_ACCESS_KEY",
        hide_env_values = true,
        value_parser = parse_secret
    )]
    pub secret_access_key: Option<SecretString>,
    /// S3 region (`auto` for R2).
    #[arg(long = "s3-region", env = "AWS_REGION")]
    pub region: Option<String>,
    /// Secret (at least 32 bytes) that signs links served through the gateway for the file
    /// and memory stores. Without it those stores make no links.
    #[arg(
        long = "object-link-secret",
        env = "HAVEN_OBJECT_LINK_SECRET",
        hide_env_values = true,
        value_parser = parse_secret
    )]
    pub link_secret: Option<SecretString>,
    /// Public base URL of the gateway, which serves the file store's links.
    #[arg(
        long = "objects-public-url",
        env = "HAVEN_PUBLIC_URL",
        default_value = "http://localhost:8080"
    )]
    pub public_url: String,
}

fn parse_secret(s: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(s))
}

impl ObjectsArgs {
    /// An S3 bucket at `endpoint` with the given credentials (tests against a local server).
    pub fn s3(endpoint: &str, bucket: &str, link_secret: &str, public_url: &str) -> Self {
        ObjectsArgs {
            url: Some(format!("s3://{bucket}")),
            endpoint: Some(endpoint.to_owned()),
            access_key_id: Some("haven-test".into()),
            secret_access_key: Some(SecretString::from("haven-test-secret")),
            region: Some("us-east-1".into()),
            link_secret: Some(SecretString::from(link_secret)),
            public_url: public_url.to_owned(),
        }
    }

    /// A named in-process memory store with the given link secret (tests).
    pub fn memory(name: &str, link_secret: &str, public_url: &str) -> Self {
        ObjectsArgs {
            url: Some(format!("memory://{name}")),
            endpoint: None,
            access_key_id: None,
            secret_access_key: None,
            region: None,
            link_secret: Some(SecretString::from(link_secret)),
            public_url: public_url.to_owned(),
        }
    }
}

/// Which kind of store is behind an [`ObjectStorage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    File,
    S3,
    Memory,
}

/// Everything that can go wrong with a store, in terms an operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum ObjectsError {
    #[error("HAVEN_OBJECT_STORE_URL: {0}")]
    Config(String),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    WeakSecret(#[from] WeakSecret),
    #[error("no object at {0}")]
    NotFound(String),
    #[error("links to the {0:?} store need HAVEN_OBJECT_LINK_SECRET")]
    NoLinkSecret(Backend),
    #[error("link lifetime must be between 1 s and {} s", MAX_LINK_TTL.as_secs())]
    LinkTtl,
    #[error("object store: {0}")]
    Store(String),
    #[error("upload of {key} aborted: {reason}")]
    Source { key: String, reason: String },
}

impl ObjectsError {
    fn store(err: object_store::Error, key: &ObjectKey) -> ObjectsError {
        match err {
            object_store::Error::NotFound { .. } => ObjectsError::NotFound(key.to_string()),
            other => ObjectsError::Store(other.to_string()),
        }
    }
}

/// An object being read: its size, its content type and its bytes as a stream.
pub struct Download {
    pub size: u64,
    pub content_type: String,
    pub body: BoxStream<'static, Result<Bytes, ObjectsError>>,
}

/// One listed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    pub size: u64,
}

/// Process-wide memory stores by name, so a gateway and a service in one test process
/// see the same objects.
static MEMORY: LazyLock<Mutex<HashMap<String, Arc<InMemory>>>> = LazyLock::new(Default::default);

/// A configured store. Cheap to clone.
#[derive(Clone)]
pub struct ObjectStorage {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn ObjectStore>,
    backend: Backend,
    /// `s3://bucket/prefix`: every key lives under `prefix/`.
    prefix: Option<String>,
    s3: Option<S3Target>,
    links: Option<LinkSigner>,
    public_url: String,
    describe: String,
}

struct S3Target {
    store: Arc<AmazonS3>,
    /// Base of the unsigned address of an object, e.g. `https://host/bucket`.
    address_base: String,
}

impl std::fmt::Debug for ObjectStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStorage")
            .field("store", &self.inner.describe)
            .finish_non_exhaustive()
    }
}

impl ObjectStorage {
    /// Opens the store `args` name (creating the file store's directory).
    pub fn open(args: &ObjectsArgs) -> Result<ObjectStorage, ObjectsError> {
        let links = args.link_secret.clone().map(LinkSigner::new).transpose()?;
        let raw = match &args.url {
            Some(url) if !url.trim().is_empty() => url.trim().to_owned(),
            _ => {
                let cwd = std::env::current_dir()
                    .map_err(|e| ObjectsError::Config(format!("no working directory: {e}")))?;
                format!("file://{}", cwd.join(".haven/objects").display())
            }
        };
        let url = url::Url::parse(&raw)
            .map_err(|e| ObjectsError::Config(format!("{raw:?} is not a URL: {e}")))?;
        let (store, backend, prefix, s3, describe): (
            Arc<dyn ObjectStore>,
            Backend,
            Option<String>,
            Option<S3Target>,
            String,
        ) = match url.scheme() {
            "file" => {
                let dir = url.to_file_path().map_err(|()| {
                    ObjectsError::Config(format!("{raw:?} must be file:///absolute/dir"))
                })?;
                std::fs::create_dir_all(&dir).map_err(|e| {
                    ObjectsError::Config(format!("cannot create {}: {e}", dir.display()))
                })?;
                let fs = LocalFileSystem::new_with_prefix(&dir)
                    .map_err(|e| ObjectsError::Config(e.to_string()))?
                    // A file reported stored is on disk, not in the page cache.
                    .with_fsync(true)
                    .with_automatic_cleanup(true);
                let describe = format!("file://{}", dir.display());
                (Arc::new(fs), Backend::File, None, None, describe)
            }
            "memory" => {
                let name = url.host_str().unwrap_or_default().to_owned();
                let mut stores = MEMORY.lock().unwrap_or_else(|p| p.into_inner());
                let store = stores
                    .entry(name.clone())
                    .or_insert_with(|| Arc::new(InMemory::new()))
                    .clone();
                (
                    store,
                    Backend::Memory,
                    None,
                    None,
                    format!("memory://{name}"),
                )
            }
            "s3" => {
                let bucket = url
                    .host_str()
                    .filter(|b| !b.is_empty())
                    .ok_or_else(|| ObjectsError::Config(format!("{raw:?} names no bucket")))?
                    .to_owned();
                let prefix = url.path().trim_matches('/');
                let prefix = (!prefix.is_empty()).then(|| prefix.to_owned());
                if let Some(p) = &prefix {
                    ObjectKey::parse(p)
                        .map_err(|e| ObjectsError::Config(format!("bucket prefix: {e}")))?;
                }
                let mut builder = AmazonS3Builder::from_env().with_bucket_name(&bucket);
                if let Some(id) = &args.access_key_id {
                    builder = builder.with_access_key_id(id);
                }
                if let Some(secret) = &args.secret_access_key {
                    builder = builder.with_secret_access_key(secret.expose_secret());
                }
                if let Some(region) = &args.region {
                    builder = builder.with_region(region);
                }
                if let Some(endpoint) = args.endpoint.as_deref().filter(|e| !e.is_empty()) {
                    builder = builder
                        .with_endpoint(endpoint)
                        .with_allow_http(endpoint.starts_with("http://"));
                }
                let endpoint = builder.get_config_value(&AmazonS3ConfigKey::Endpoint);
                let region = builder
                    .get_config_value(&AmazonS3ConfigKey::Region)
                    .unwrap_or_else(|| "us-east-1".into());
                let address_base = match endpoint {
                    Some(endpoint) => format!("{}/{bucket}", endpoint.trim_end_matches('/')),
                    None => format!("https://{bucket}.s3.{region}.amazonaws.com"),
                };
                let s3 = Arc::new(
                    builder
                        .build()
                        .map_err(|e| ObjectsError::Config(e.to_string()))?,
                );
                let describe = format!("s3://{bucket} at {address_base}");
                let target = S3Target {
                    store: s3.clone(),
                    address_base,
                };
                (s3, Backend::S3, prefix, Some(target), describe)
            }
            other => {
                return Err(ObjectsError::Config(format!(
                    "unsupported scheme {other:?} (use file://, s3:// or memory://)"
                )));
            }
        };
        Ok(ObjectStorage {
            inner: Arc::new(Inner {
                store,
                backend,
                prefix,
                s3,
                links,
                public_url: args.public_url.trim_end_matches('/').to_owned(),
                describe,
            }),
        })
    }

    pub fn backend(&self) -> Backend {
        self.inner.backend
    }

    /// `file:///…`, `s3://bucket at …` or `memory://name`, for logs (no credentials).
    pub fn describe(&self) -> &str {
        &self.inner.describe
    }

    fn path(&self, key: &ObjectKey) -> Path {
        let full = match &self.inner.prefix {
            Some(prefix) => format!("{prefix}/{key}"),
            None => key.to_string(),
        };
        Path::from_iter(full.split('/'))
    }

    fn attributes(&self, key: &ObjectKey) -> Attributes {
        let mut attributes = Attributes::new();
        match self.inner.backend {
            // The file store keeps no attributes; the type comes from the extension on read.
            Backend::File => {}
            Backend::S3 | Backend::Memory => {
                attributes.insert(Attribute::ContentType, key.content_type().into());
            }
        }
        attributes
    }

    /// Stores a small object in one request, replacing any object at `key`.
    pub async fn put(&self, key: &ObjectKey, bytes: Bytes) -> Result<u64, ObjectsError> {
        let size = bytes.len() as u64;
        let opts = object_store::PutOptions {
            attributes: self.attributes(key),
            ..Default::default()
        };
        self.inner
            .store
            .put_opts(&self.path(key), PutPayload::from(bytes), opts)
            .await
            .map_err(|e| ObjectsError::store(e, key))?;
        Ok(size)
    }

    /// Streams `body` into `key`: buffered up to [`PART_SIZE`], then a multipart upload with
    /// at most two parts in flight, so memory does not grow with the object. A failing body
    /// aborts the upload and leaves no object (an earlier object at `key` stays).
    pub async fn put_stream<S, E>(&self, key: &ObjectKey, body: S) -> Result<u64, ObjectsError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        let mut writer =
            BufWriter::with_capacity(self.inner.store.clone(), self.path(key), PART_SIZE)
                .with_max_concurrency(PARTS_IN_FLIGHT)
                .with_attributes(self.attributes(key));
        let mut body = std::pin::pin!(body);
        let mut size = 0u64;
        let failure = loop {
            match body.next().await {
                Some(Ok(chunk)) => {
                    size += chunk.len() as u64;
                    if let Err(e) = writer.put(chunk).await {
                        break ObjectsError::store(e, key);
                    }
                }
                Some(Err(e)) => {
                    break ObjectsError::Source {
                        key: key.to_string(),
                        reason: e.to_string(),
                    };
                }
                None => match writer.shutdown().await {
                    Ok(()) => return Ok(size),
                    Err(e) => {
                        return Err(ObjectsError::Store(format!("completing {key}: {e}")));
                    }
                },
            }
        };
        if let Err(e) = writer.abort().await {
            tracing::warn!(%key, error = %e, "aborting a failed upload failed");
        }
        Err(failure)
    }

    /// Opens `key` for reading.
    pub async fn get(&self, key: &ObjectKey) -> Result<Download, ObjectsError> {
        let result = self
            .inner
            .store
            .get(&self.path(key))
            .await
            .map_err(|e| ObjectsError::store(e, key))?;
        let size = result.meta.size;
        let content_type = result
            .attributes
            .get(&Attribute::ContentType)
            .map(|v| v.to_string())
            .unwrap_or_else(|| key.content_type().to_owned());
        let owned = key.clone();
        let body = result
            .into_stream()
            .map_err(move |e| ObjectsError::store(e, &owned))
            .boxed();
        Ok(Download {
            size,
            content_type,
            body,
        })
    }

    /// The object's size, or `None` when there is none.
    pub async fn size(&self, key: &ObjectKey) -> Result<Option<u64>, ObjectsError> {
        match self.inner.store.head(&self.path(key)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(ObjectsError::store(e, key)),
        }
    }

    /// Removes `key`; removing a missing object is not an error.
    pub async fn delete(&self, key: &ObjectKey) -> Result<(), ObjectsError> {
        match self.inner.store.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(ObjectsError::store(e, key)),
        }
    }

    /// Every object under `prefix` (a key prefix ending at a `/`), keys relative to the store.
    pub fn list(&self, prefix: &ObjectKey) -> BoxStream<'static, Result<Listed, ObjectsError>> {
        let strip = self.inner.prefix.clone().map(|p| format!("{p}/"));
        let location = self.path(prefix);
        self.inner
            .store
            .list(Some(&location))
            .map(move |item| {
                let meta = item.map_err(|e| ObjectsError::Store(e.to_string()))?;
                let full = meta.location.to_string();
                let key = match &strip {
                    Some(p) => full.strip_prefix(p.as_str()).unwrap_or(&full).to_owned(),
                    None => full,
                };
                Ok(Listed {
                    key,
                    size: meta.size,
                })
            })
            .boxed()
    }

    /// The object's permanent, unsigned address, fit to store in a record: reading it
    /// needs credentials (S3) or a signature (the gateway).
    pub fn address(&self, key: &ObjectKey) -> String {
        match &self.inner.s3 {
            Some(s3) => format!("{}/{}", s3.address_base, self.path(key)),
            None => object_address(&self.inner.public_url, key),
        }
    }

    /// A link that reads `key` until `ttl` from now: presigned by S3, or signed for the
    /// gateway's `/api/objects/` route.
    pub async fn link(&self, key: &ObjectKey, ttl: Duration) -> Result<String, ObjectsError> {
        if ttl.is_zero() || ttl > MAX_LINK_TTL {
            return Err(ObjectsError::LinkTtl);
        }
        if let Some(s3) = &self.inner.s3 {
            let url = s3
                .store
                .signed_url(Method::GET, &self.path(key), ttl)
                .await
                .map_err(|e| ObjectsError::store(e, key))?;
            return Ok(url.to_string());
        }
        let links = self
            .inner
            .links
            .as_ref()
            .ok_or(ObjectsError::NoLinkSecret(self.inner.backend))?;
        let expires = chrono::Utc::now().timestamp() + ttl.as_secs() as i64;
        Ok(links.link(&self.inner.public_url, key, expires))
    }

    /// Checks a gateway link's `expires` and `sig` for `key`.
    pub fn verify_link(
        &self,
        key: &ObjectKey,
        expires: i64,
        signature: &str,
    ) -> Result<(), VerifyError> {
        let links = self.inner.links.as_ref().ok_or(VerifyError::NoSecret)?;
        links
            .verify(key, expires, signature, chrono::Utc::now().timestamp())
            .map_err(VerifyError::Link)
    }
}

/// Why a gateway link was not honoured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("this store serves no signed links (HAVEN_OBJECT_LINK_SECRET is unset)")]
    NoSecret,
    #[error(transparent)]
    Link(LinkError),
}
