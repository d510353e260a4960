//! Large objects go up in parts: an [`ObjectStore`] wrapper that turns a plain write of more than
//! one part's worth of bytes into a multipart upload (S3 `CreateMultipartUpload`/`UploadPart`/
//! `CompleteMultipartUpload`, GCS's XML multipart API), so that a big chunk or record is sent as
//! several requests, each retried on its own, instead of one long request that a transient error
//! sends back to the start. Everything else passes through unchanged.
//!
//! The part size is [`DEFAULT_PART_SIZE`] (16 MiB), or `TESSERA_PART_SIZE` (bytes; at least
//! 5 MiB, S3's smallest part) where set. A multipart upload is not visible until it completes;
//! one that fails is aborted, so no partial object is ever listed.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use futures_util::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult, Result, WriteMultipart,
};

/// Part size when `TESSERA_PART_SIZE` is not set.
pub const DEFAULT_PART_SIZE: usize = 16 << 20;
/// The smallest part S3 accepts (every part but the last).
pub const MIN_PART_SIZE: usize = 5 << 20;

/// The part size: `TESSERA_PART_SIZE` if set to a number of bytes >= [`MIN_PART_SIZE`], else
/// [`DEFAULT_PART_SIZE`].
pub fn part_size() -> usize {
    std::env::var("TESSERA_PART_SIZE")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n >= MIN_PART_SIZE)
        .unwrap_or(DEFAULT_PART_SIZE)
}

/// An object store that uploads objects larger than `part_size` in parts.
#[derive(Debug)]
pub struct PartedUploads {
    inner: Arc<dyn ObjectStore>,
    part_size: usize,
}

impl PartedUploads {
    /// Wraps `inner`; writes of more than `part_size` bytes become multipart uploads.
    pub fn new(inner: Arc<dyn ObjectStore>, part_size: usize) -> Self {
        PartedUploads { inner, part_size }
    }
}

impl fmt::Display for PartedUploads {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PartedUploads({}, {} B parts)",
            self.inner, self.part_size
        )
    }
}

#[async_trait]
impl ObjectStore for PartedUploads {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        // Conditional writes (create-only, compare-and-swap) need the single atomic request.
        if payload.content_length() <= self.part_size || !matches!(opts.mode, PutMode::Overwrite) {
            return self.inner.put_opts(location, payload, opts).await;
        }
        let upload = self
            .inner
            .put_multipart_opts(
                location,
                PutMultipartOptions {
                    tags: opts.tags,
                    attributes: opts.attributes,
                    extensions: opts.extensions,
                },
            )
            .await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, self.part_size);
        for bytes in payload.iter() {
            writer.put(bytes.clone());
        }
        // `finish` aborts the upload if a part or the completion fails.
        writer.finish().await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;
    use object_store::memory::InMemory;

    /// Counts the multipart uploads started on the store it wraps.
    #[derive(Debug)]
    struct Counting {
        inner: InMemory,
        multipart: std::sync::atomic::AtomicUsize,
    }

    impl fmt::Display for Counting {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "Counting")
        }
    }

    #[async_trait]
    impl ObjectStore for Counting {
        async fn put_opts(&self, l: &Path, p: PutPayload, o: PutOptions) -> Result<PutResult> {
            self.inner.put_opts(l, p, o).await
        }
        async fn put_multipart_opts(
            &self,
            l: &Path,
            o: PutMultipartOptions,
        ) -> Result<Box<dyn MultipartUpload>> {
            self.multipart
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.inner.put_multipart_opts(l, o).await
        }
        async fn get_opts(&self, l: &Path, o: GetOptions) -> Result<GetResult> {
            self.inner.get_opts(l, o).await
        }
        fn delete_stream(
            &self,
            s: BoxStream<'static, Result<Path>>,
        ) -> BoxStream<'static, Result<Path>> {
            self.inner.delete_stream(s)
        }
        fn list(&self, p: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
            self.inner.list(p)
        }
        async fn list_with_delimiter(&self, p: Option<&Path>) -> Result<ListResult> {
            self.inner.list_with_delimiter(p).await
        }
        async fn copy_opts(&self, f: &Path, t: &Path, o: CopyOptions) -> Result<()> {
            self.inner.copy_opts(f, t, o).await
        }
    }

    #[test]
    fn large_writes_go_in_parts_and_read_back_whole() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let counting = Arc::new(Counting {
                inner: InMemory::new(),
                multipart: Default::default(),
            });
            let store = PartedUploads::new(counting.clone(), MIN_PART_SIZE);
            let big: Vec<u8> = (0..(2 * MIN_PART_SIZE + 12345))
                .map(|i| (i % 251) as u8)
                .collect();
            let small = vec![7u8; 1000];
            store
                .put(&Path::from("a/big"), big.clone().into())
                .await
                .expect("put big");
            store
                .put(&Path::from("a/small"), small.clone().into())
                .await
                .expect("put small");
            assert_eq!(
                counting.multipart.load(std::sync::atomic::Ordering::SeqCst),
                1
            );
            let back = store.get(&Path::from("a/big")).await.expect("get");
            assert_eq!(back.bytes().await.expect("bytes").as_ref(), &big[..]);
            let back = store.get(&Path::from("a/small")).await.expect("get");
            assert_eq!(back.bytes().await.expect("bytes").as_ref(), &small[..]);
            // A create-only write stays one conditional request, and still refuses to overwrite.
            let refused = store
                .put_opts(
                    &Path::from("a/big"),
                    big.clone().into(),
                    PutMode::Create.into(),
                )
                .await;
            assert!(refused.is_err());
            assert_eq!(
                counting.multipart.load(std::sync::atomic::Ordering::SeqCst),
                1
            );
        });
    }
}
