//! Manifests: the SHA-256 of every stored object of a location (every file of a folder, every key
//! of an object store), so that an output can prove it is what was written and an input that it is
//! what was read. A manifest's own digest is the SHA-256 of its canonical JSON.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zarrs::storage::{ListableStorageTraits, ReadableStorageTraits, StorePrefix};

use crate::{IoError, Location, Store};

/// Size and SHA-256 (lowercase hex) of one stored object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    pub size: u64,
    pub sha256: String,
}

/// Digests of every object of a location, by key (`/`-separated path relative to the location).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub files: BTreeMap<String, FileDigest>,
}

/// One way two manifests differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Difference {
    /// In the recorded manifest, not found now.
    Missing(String),
    /// Found now, not in the recorded manifest.
    Added(String),
    /// Different content (recorded digest, digest now).
    Changed {
        key: String,
        recorded: String,
        now: String,
    },
}

impl std::fmt::Display for Difference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Difference::Missing(k) => write!(f, "{k}: missing"),
            Difference::Added(k) => write!(f, "{k}: not in the record"),
            Difference::Changed { key, recorded, now } => write!(
                f,
                "{key}: content changed (sha256 {} recorded, {} now)",
                &recorded[..recorded.len().min(12)],
                &now[..now.len().min(12)]
            ),
        }
    }
}

/// SHA-256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Manifest {
    /// Digests every object at `location` whose key does not start with one of `skip`: the files
    /// under a folder (or the file itself), or the keys of an object store.
    pub fn of(location: &Location, skip: &[&str]) -> Result<Manifest, IoError> {
        let keep = |key: &str| !skip.iter().any(|s| key.starts_with(s));
        let mut files = BTreeMap::new();
        match location {
            Location::File(path) => {
                if path.is_file() {
                    let name = path
                        .file_name()
                        .map(|n| n.to_string_lossy().to_string())
                        .unwrap_or_default();
                    files.insert(name, digest_file(path)?);
                } else {
                    walk(path, path, &keep, &mut files)?;
                }
            }
            _ => {
                let store = Store::open(location)?;
                let storage = store.storage();
                let keys =
                    storage
                        .list_prefix(&StorePrefix::root())
                        .map_err(|e| IoError::Store {
                            location: location.to_string(),
                            reason: format!("listing: {e}"),
                        })?;
                for key in keys {
                    if !keep(key.as_str()) {
                        continue;
                    }
                    let bytes = storage
                        .get(&key)
                        .map_err(|e| IoError::Store {
                            location: location.to_string(),
                            reason: format!("reading {key}: {e}"),
                        })?
                        .unwrap_or_default();
                    files.insert(
                        key.as_str().to_string(),
                        FileDigest {
                            size: bytes.len() as u64,
                            sha256: sha256_hex(&bytes),
                        },
                    );
                }
            }
        }
        Ok(Manifest { files })
    }

    /// SHA-256 of the manifest's canonical JSON (keys sorted).
    pub fn digest(&self) -> String {
        sha256_hex(serde_json::to_string(self).unwrap_or_default().as_bytes())
    }

    /// How `now` differs from `self` (the recorded manifest), in key order.
    pub fn compare(&self, now: &Manifest) -> Vec<Difference> {
        let mut out = Vec::new();
        for (key, rec) in &self.files {
            match now.files.get(key) {
                None => out.push(Difference::Missing(key.clone())),
                Some(d) if d.sha256 != rec.sha256 => out.push(Difference::Changed {
                    key: key.clone(),
                    recorded: rec.sha256.clone(),
                    now: d.sha256.clone(),
                }),
                Some(_) => {}
            }
        }
        for key in now.files.keys() {
            if !self.files.contains_key(key) {
                out.push(Difference::Added(key.clone()));
            }
        }
        out.sort_by(|a, b| key_of(a).cmp(key_of(b)));
        out
    }
}

fn key_of(d: &Difference) -> &str {
    match d {
        Difference::Missing(k) | Difference::Added(k) => k,
        Difference::Changed { key, .. } => key,
    }
}

fn digest_file(path: &Path) -> Result<FileDigest, IoError> {
    let file_err = |source| IoError::File {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(file_err)?;
    let mut h = Sha256::new();
    let size = std::io::copy(&mut f, &mut h).map_err(file_err)?;
    Ok(FileDigest {
        size,
        sha256: h.finalize().iter().map(|b| format!("{b:02x}")).collect(),
    })
}

fn walk(
    root: &Path,
    dir: &Path,
    keep: &dyn Fn(&str) -> bool,
    files: &mut BTreeMap<String, FileDigest>,
) -> Result<(), IoError> {
    let entries = std::fs::read_dir(dir).map_err(|source| IoError::File {
        path: dir.to_path_buf(),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| IoError::File {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        let key = path
            .strip_prefix(root)
            .unwrap_or(&path)
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        if !keep(&key) {
            continue;
        }
        if path.is_dir() {
            walk(root, &path, keep, files)?;
        } else {
            files.insert(key, digest_file(&path)?);
        }
    }
    Ok(())
}
