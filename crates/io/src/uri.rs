//! Where a recording lives: a parsed store URI.

use std::fmt;
use std::path::PathBuf;

use crate::IoError;

/// A store location parsed from a user-supplied URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A directory on a local or shared filesystem (plain path or `file://`).
    File(PathBuf),
    /// A named in-process memory store (`memory://name`), shared by everything in the process.
    Memory(String),
    /// `s3://bucket/prefix` (credentials and endpoint from the standard AWS environment variables).
    S3 { bucket: String, prefix: String },
    /// `gs://bucket/prefix` (credentials from the standard Google environment variables).
    Gcs { bucket: String, prefix: String },
    /// A read-only HTTP(S) root (`http://host/path`, `https://host/path`).
    Http(String),
}

impl Location {
    /// Parses a plain path, `file://`, `memory://`, `s3://`, `gs://`, `http://` or `https://` URI.
    pub fn parse(uri: &str) -> Result<Location, IoError> {
        let bad = |reason: &str| IoError::InvalidUri {
            uri: uri.to_string(),
            reason: reason.to_string(),
        };
        if uri.trim().is_empty() {
            return Err(bad("empty location"));
        }
        let Some((scheme, rest)) = uri.split_once("://") else {
            return Ok(Location::File(PathBuf::from(uri)));
        };
        let bucket_prefix = |rest: &str| -> Result<(String, String), IoError> {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad("missing bucket name"));
            }
            Ok((bucket.to_string(), prefix.trim_matches('/').to_string()))
        };
        match scheme.to_ascii_lowercase().as_str() {
            "file" => {
                if rest.is_empty() {
                    return Err(bad("missing path"));
                }
                Ok(Location::File(PathBuf::from(rest)))
            }
            "memory" => {
                let name = rest.trim_matches('/');
                if name.is_empty() {
                    return Err(bad("memory:// needs a name, e.g. memory://scratch"));
                }
                Ok(Location::Memory(name.to_string()))
            }
            "s3" => {
                let (bucket, prefix) = bucket_prefix(rest)?;
                Ok(Location::S3 { bucket, prefix })
            }
            "gs" | "gcs" => {
                let (bucket, prefix) = bucket_prefix(rest)?;
                Ok(Location::Gcs { bucket, prefix })
            }
            "http" | "https" => {
                if rest.is_empty() {
                    return Err(bad("missing host"));
                }
                Ok(Location::Http(uri.trim_end_matches('/').to_string()))
            }
            other => Err(bad(&format!(
                "unsupported scheme '{other}' (expected a path, file://, memory://, s3://, gs://, http:// or https://)"
            ))),
        }
    }

    /// True when writes to this location are possible.
    pub fn is_writable(&self) -> bool {
        !matches!(self, Location::Http(_))
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::File(p) => write!(f, "{}", p.display()),
            Location::Memory(n) => write!(f, "memory://{n}"),
            Location::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
            Location::Gcs { bucket, prefix } => write!(f, "gs://{bucket}/{prefix}"),
            Location::Http(u) => f.write_str(u),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_scheme() {
        assert_eq!(
            Location::parse("a/b.zarr").unwrap(),
            Location::File("a/b.zarr".into())
        );
        assert_eq!(
            Location::parse("file:///x/y").unwrap(),
            Location::File("/x/y".into())
        );
        assert_eq!(
            Location::parse("memory://m").unwrap(),
            Location::Memory("m".into())
        );
        assert_eq!(
            Location::parse("s3://bkt/some/prefix/").unwrap(),
            Location::S3 {
                bucket: "bkt".into(),
                prefix: "some/prefix".into()
            }
        );
        assert_eq!(
            Location::parse("gs://bkt").unwrap(),
            Location::Gcs {
                bucket: "bkt".into(),
                prefix: String::new()
            }
        );
        assert_eq!(
            Location::parse("https://h/x.zarr/").unwrap(),
            Location::Http("https://h/x.zarr".into())
        );
        for bad in ["", "ftp://x", "s3://", "memory://", "file://"] {
            assert!(Location::parse(bad).is_err(), "{bad}");
        }
        assert!(!Location::parse("http://h/x").unwrap().is_writable());
    }
}
