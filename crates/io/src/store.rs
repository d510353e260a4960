//! Opening a store by location: filesystem, in-process memory, S3, GCS or HTTP, all behind zarrs'
//! synchronous storage traits.
//!
//! Local files use zarrs' own filesystem store (no async runtime in the way). Object stores go through
//! `object_store` and zarrs' async-to-sync adapter on a private tokio runtime, so callers stay
//! synchronous. Such calls must not be made from inside an async context: async callers run them in
//! `spawn_blocking`.
//!
//! Object stores take their credentials, region and endpoint from the standard environment
//! (`AWS_*` for S3 and S3-compatible servers, `GOOGLE_*` for GCS, as `object_store`'s `from_env`
//! reads them), and for S3 also from the AWS CLI's shared files (`~/.aws/credentials`,
//! `~/.aws/config`, profile `AWS_PROFILE`: [`crate::aws_profile`]). Every request is retried on transient failures (5xx such as `503 Slow Down`, 429,
//! 408, refused or reset connections, timeouts of idempotent requests): up to [`RETRIES`] times,
//! with exponential backoff from 100 ms to 15 s and jitter, within 3 minutes of the first try.
//! Only then does the error reach the task (which the coordinator retries in turn).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use object_store::ObjectStore;
use object_store::prefix::PrefixStore;
use zarrs::storage::storage_adapter::async_to_sync::{
    AsyncToSyncBlockOn, AsyncToSyncStorageAdapter,
};
use zarrs::storage::store::MemoryStore;
use zarrs::storage::{
    Bytes, ListableStorageTraits, ReadableStorageTraits, ReadableWritableListableStorage, StoreKey,
    StorePrefix, WritableStorageTraits,
};
use zarrs_object_store::AsyncObjectStore;

use crate::{IoError, Location};

/// A store opened at a location.
#[derive(Clone)]
pub struct Store {
    location: Location,
    storage: ReadableWritableListableStorage,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("location", &self.location)
            .finish()
    }
}

#[derive(Debug)]
struct TokioBlockOn(tokio::runtime::Runtime);

impl AsyncToSyncBlockOn for TokioBlockOn {
    fn block_on<F: core::future::Future>(&self, future: F) -> F::Output {
        self.0.block_on(future)
    }
}

fn memory_stores() -> &'static Mutex<HashMap<String, Arc<MemoryStore>>> {
    static STORES: OnceLock<Mutex<HashMap<String, Arc<MemoryStore>>>> = OnceLock::new();
    STORES.get_or_init(|| Mutex::new(HashMap::new()))
}

impl Store {
    /// Opens (or, for a filesystem location being created, prepares) the store at `location`.
    /// Filesystem stores are created lazily: nothing is written until something is stored.
    pub fn open(location: &Location) -> Result<Store, IoError> {
        let fail = |reason: String| IoError::Store {
            location: location.to_string(),
            reason,
        };
        let storage: ReadableWritableListableStorage = match location {
            Location::File(path) => Arc::new(
                zarrs::filesystem::FilesystemStore::new(path).map_err(|e| fail(e.to_string()))?,
            ),
            Location::Memory(name) => {
                let mut stores = memory_stores()
                    .lock()
                    .map_err(|_| fail("memory store registry poisoned".into()))?;
                stores
                    .entry(name.clone())
                    .or_insert_with(|| Arc::new(MemoryStore::new()))
                    .clone()
            }
            Location::S3 { bucket, prefix } => {
                let s3 = crate::aws_profile::apply(object_store::aws::AmazonS3Builder::from_env())
                    .map_err(fail)?
                    .with_bucket_name(bucket)
                    .with_retry(retry_config())
                    .build()
                    .map_err(|e| fail(e.to_string()))?;
                object_store_adapter(Arc::new(s3), prefix).map_err(fail)?
            }
            Location::Gcs { bucket, prefix } => {
                let gcs = object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_bucket_name(bucket)
                    .with_retry(retry_config())
                    .build()
                    .map_err(|e| fail(e.to_string()))?;
                object_store_adapter(Arc::new(gcs), prefix).map_err(fail)?
            }
            Location::Http(url) => {
                let http = object_store::http::HttpBuilder::new()
                    .with_url(url)
                    .with_client_options(object_store::ClientOptions::new().with_allow_http(true))
                    .with_retry(retry_config())
                    .build()
                    .map_err(|e| fail(e.to_string()))?;
                object_store_adapter(Arc::new(http), "").map_err(fail)?
            }
        };
        Ok(Store {
            location: location.clone(),
            storage,
        })
    }

    /// The location this store was opened at.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// The zarrs storage handle.
    pub fn storage(&self) -> &ReadableWritableListableStorage {
        &self.storage
    }

    /// Reads a raw key (e.g. a JSON sidecar such as `ground_truth/regions.json`); `None` if absent.
    pub fn get(&self, key: &str) -> Result<Option<Bytes>, IoError> {
        let k = StoreKey::new(key).map_err(|e| IoError::Invalid(e.to_string()))?;
        self.storage.get(&k).map_err(|e| IoError::Store {
            location: self.location.to_string(),
            reason: format!("reading '{key}': {e}"),
        })
    }

    /// Writes a raw key.
    pub fn set(&self, key: &str, value: Vec<u8>) -> Result<(), IoError> {
        if !self.location.is_writable() {
            return Err(IoError::ReadOnly {
                location: self.location.to_string(),
            });
        }
        let k = StoreKey::new(key).map_err(|e| IoError::Invalid(e.to_string()))?;
        self.storage
            .set(&k, Bytes::from(value))
            .map_err(|e| IoError::Write {
                location: self.location.to_string(),
                what: format!("'{key}'"),
                reason: e.to_string(),
            })
    }
}

impl Store {
    /// Keys of every object under the folder `prefix` (e.g. `rois/traces`; empty for all), sorted.
    pub fn list(&self, prefix: &str) -> Result<Vec<String>, IoError> {
        let p = prefix.trim_matches('/');
        let sp = if p.is_empty() {
            StorePrefix::root()
        } else {
            StorePrefix::new(format!("{p}/")).map_err(|e| IoError::Invalid(e.to_string()))?
        };
        let mut keys: Vec<String> = self
            .storage
            .list_prefix(&sp)
            .map_err(|e| IoError::Store {
                location: self.location.to_string(),
                reason: format!("listing '{p}': {e}"),
            })?
            .into_iter()
            .map(|k| k.as_str().to_string())
            .collect();
        keys.sort();
        Ok(keys)
    }

    /// Copies every object under `prefix` (a folder, or one key) from `from` into this store at
    /// the same keys, byte for byte; returns how many objects were copied.
    pub fn copy_from(&self, from: &Store, prefix: &str) -> Result<usize, IoError> {
        let p = prefix.trim_matches('/');
        let mut keys = from.list(p)?;
        if keys.is_empty() && from.get(p)?.is_some() {
            keys.push(p.to_string());
        }
        for key in &keys {
            if let Some(bytes) = from.get(key)? {
                self.set(key, bytes.to_vec())?;
            }
        }
        Ok(keys.len())
    }
}

impl Store {
    /// Refuses a store whose root group tessera marked incomplete (an interrupted write).
    pub fn check_complete(&self) -> Result<(), IoError> {
        let status = self.attributes("")?.and_then(|a| {
            a.get("tessera")
                .and_then(|t| t.get("status"))
                .and_then(|s| s.as_str())
                .map(str::to_string)
        });
        match status {
            Some(s) if s != "complete" => Err(IoError::Incomplete {
                location: self.location.to_string(),
                path: "/".into(),
                status: s,
            }),
            _ => Ok(()),
        }
    }

    /// Reads a whole (small) array of any rank, e.g. a ground-truth table. `T` must match its type.
    pub fn read_array<T: zarrs::array::ElementOwned>(
        &self,
        path: &str,
    ) -> Result<ndarray::ArrayD<T>, IoError> {
        self.check_complete()?;
        self.read_array_unchecked(path)
    }

    /// [`Store::read_array`] without the completeness check: for an output reading back what it
    /// wrote before it is finished.
    pub(crate) fn read_array_unchecked<T: zarrs::array::ElementOwned>(
        &self,
        path: &str,
    ) -> Result<ndarray::ArrayD<T>, IoError> {
        let p = format!("/{}", path.trim_matches('/'));
        let fail = |reason: String| IoError::Read {
            location: self.location.to_string(),
            path: p.clone(),
            what: "array".into(),
            reason,
        };
        let array =
            zarrs::array::Array::open(self.storage.clone(), &p).map_err(|e| fail(e.to_string()))?;
        array
            .retrieve_array_subset::<ndarray::ArrayD<T>>(&array.subset_all())
            .map_err(|e| fail(e.to_string()))
    }

    /// Reads the attributes of the array or group at `path` (`None` when nothing is there).
    pub fn attributes(
        &self,
        path: &str,
    ) -> Result<Option<serde_json::Map<String, serde_json::Value>>, IoError> {
        let dir = path.trim_matches('/');
        let key = if dir.is_empty() {
            "zarr.json".to_string()
        } else {
            format!("{dir}/zarr.json")
        };
        let Some(bytes) = self.get(&key)? else {
            return Ok(None);
        };
        let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| IoError::Read {
            location: self.location.to_string(),
            path: path.to_string(),
            what: "zarr.json".into(),
            reason: e.to_string(),
        })?;
        Ok(v.get("attributes")
            .and_then(|a| a.as_object())
            .cloned()
            .or_else(|| Some(serde_json::Map::new())))
    }
}

/// Attempts after the first for a request that failed transiently.
pub const RETRIES: usize = 10;

/// How object-store requests are retried (see the module's documentation).
fn retry_config() -> object_store::RetryConfig {
    object_store::RetryConfig {
        backoff: object_store::BackoffConfig {
            init_backoff: std::time::Duration::from_millis(100),
            max_backoff: std::time::Duration::from_secs(15),
            base: 2.0,
        },
        max_retries: RETRIES,
        retry_timeout: std::time::Duration::from_secs(180),
    }
}

fn object_store_adapter(
    store: Arc<dyn ObjectStore>,
    prefix: &str,
) -> Result<ReadableWritableListableStorage, String> {
    let store: Arc<dyn ObjectStore> = Arc::new(crate::multipart::PartedUploads::new(
        store,
        crate::multipart::part_size(),
    ));
    let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
        store
    } else {
        Arc::new(PrefixStore::new(store, prefix))
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the I/O runtime: {e}"))?;
    let async_store = Arc::new(AsyncObjectStore::new(store));
    Ok(Arc::new(AsyncToSyncStorageAdapter::new(
        async_store,
        TokioBlockOn(rt),
    )))
}
