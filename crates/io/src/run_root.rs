//! The root attributes of a workflow run's output (`tessera` attribute, `kind: run`), as the
//! publish task writes them: what readers of a run (NWB export, report) need to know before they
//! read its arrays.

use ndarray::ArrayD;
use serde_json::{Map, Value};
use zarrs::array::ElementOwned;

use crate::{IoError, Output, Store};

/// A run's root attributes, checked.
#[derive(Debug, Clone)]
pub struct RunRoot {
    /// The whole `tessera` attribute (workflow, hashes, input, stages, status, ...).
    pub meta: Value,
    /// The movie's frames, height and width.
    pub frames: usize,
    pub height: usize,
    pub width: usize,
    /// Frames per second (NaN if the run did not record one).
    pub frame_rate_hz: f64,
}

impl RunRoot {
    /// Reads the root attributes of a run; an error says why they are not a run's.
    pub fn from_attributes(attrs: &Map<String, Value>) -> Result<RunRoot, String> {
        let meta = attrs.get("tessera").cloned().unwrap_or(Value::Null);
        if meta["kind"] != "run" {
            return Err(
                "not the output of a workflow run (`tessera run` or `tessera submit`)".into(),
            );
        }
        let dims: Vec<usize> = meta["shape"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_u64)
                    .map(|v| v as usize)
                    .collect()
            })
            .unwrap_or_default();
        let [frames, height, width] = dims[..] else {
            return Err(
                "the run's root attributes have no movie shape (written by tessera \
                        before 2026-11-29: run it again; committed tasks are reused)"
                    .into(),
            );
        };
        let frame_rate_hz = meta["frame_rate_hz"].as_f64().unwrap_or(f64::NAN);
        Ok(RunRoot {
            meta,
            frames,
            height,
            width,
            frame_rate_hz,
        })
    }

    /// Like [`RunRoot::from_attributes`], and the run must be complete.
    pub fn finished(attrs: &Map<String, Value>) -> Result<RunRoot, String> {
        let root = RunRoot::from_attributes(attrs)?;
        if root.meta["status"] != "complete" {
            return Err(format!(
                "the run is not complete (status {}): finish it (run the same command again) first",
                root.meta["status"]
            ));
        }
        Ok(root)
    }
}

/// Where readers of a run (the report, the NWB export) read it: a finished run's [`Store`], or
/// the [`Output`] the run's publish task is writing (before it is marked complete).
pub trait RunSource {
    fn array<T: ElementOwned>(&self, path: &str) -> Result<ArrayD<T>, IoError>;
    fn bytes(&self, key: &str) -> Result<Option<Vec<u8>>, IoError>;
    fn root_attributes(&self) -> Result<serde_json::Map<String, Value>, IoError>;
}

impl RunSource for Store {
    fn array<T: ElementOwned>(&self, path: &str) -> Result<ArrayD<T>, IoError> {
        self.read_array(path)
    }
    fn bytes(&self, key: &str) -> Result<Option<Vec<u8>>, IoError> {
        Ok(self.get(key)?.map(|b| b.to_vec()))
    }
    fn root_attributes(&self) -> Result<serde_json::Map<String, Value>, IoError> {
        Ok(self.attributes("")?.unwrap_or_default())
    }
}

impl RunSource for Output {
    fn array<T: ElementOwned>(&self, path: &str) -> Result<ArrayD<T>, IoError> {
        self.read_own_array(path)
    }
    fn bytes(&self, key: &str) -> Result<Option<Vec<u8>>, IoError> {
        self.store().bytes(key)
    }
    fn root_attributes(&self) -> Result<serde_json::Map<String, Value>, IoError> {
        self.store().root_attributes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(v: Value) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("tessera".into(), v);
        m
    }

    #[test]
    fn runs_are_recognised_and_unfinished_ones_refused() {
        let ok = attrs(serde_json::json!({"kind": "run", "status": "complete",
                                          "shape": [300, 64, 48], "frame_rate_hz": 30.0}));
        let r = RunRoot::finished(&ok).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (r.frames, r.height, r.width, r.frame_rate_hz),
            (300, 64, 48, 30.0)
        );
        let partial = attrs(serde_json::json!({"kind": "run", "status": "incomplete",
                                               "shape": [300, 64, 48]}));
        assert!(RunRoot::from_attributes(&partial).is_ok());
        let e = RunRoot::finished(&partial).unwrap_err();
        assert!(e.contains("not complete"), "{e}");
        let e = RunRoot::from_attributes(&attrs(serde_json::json!({"kind": "extraction"})))
            .unwrap_err();
        assert!(e.contains("not the output of a workflow run"), "{e}");
        let e = RunRoot::from_attributes(&attrs(serde_json::json!({"kind": "run"}))).unwrap_err();
        assert!(e.contains("no movie shape"), "{e}");
    }
}
