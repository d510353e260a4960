//! tessera-proto: the wire contract between the coordinator, its workers and its clients
//! (`proto/tessera/v1/tessera.proto`, package `tessera.v1`), compiled at build time by protox.
//!
//! Besides the generated code ([`v1`]) this crate holds what both ends must agree on:
//! - [`PROTOCOL_VERSION`], sent with every worker call and checked by the coordinator;
//! - bearer-token authentication: [`Bearer`] adds the token to every outgoing call, [`Auth`]
//!   checks it on every incoming one (compared in constant time);
//! - conversions between the wire messages and core types ([`RecordingInput`]).

use std::str::FromStr;

use tessera_core::task::RecordingInput;
use tessera_core::{RecordingMeta, Shape3};
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// The generated messages, clients (`runs_client`, `work_client`) and servers.
#[allow(missing_debug_implementations, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("tessera.v1");
}

/// The version of the worker protocol this build speaks. A coordinator refuses worker calls
/// carrying another one (fields are only ever added within `tessera.v1`; a change a peer must
/// understand bumps this).
pub const PROTOCOL_VERSION: u32 = 1;

/// What can go wrong turning wire messages into core types.
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("{field}: {reason}")]
    Field { field: &'static str, reason: String },
}

fn field(field: &'static str, reason: impl ToString) -> ProtoError {
    ProtoError::Field {
        field,
        reason: reason.to_string(),
    }
}

impl From<&RecordingInput> for v1::Recording {
    fn from(r: &RecordingInput) -> Self {
        v1::Recording {
            uri: r.uri.clone(),
            array: r.array.clone(),
            shape: vec![r.shape.t, r.shape.y, r.shape.x],
            chunks: r.chunks.to_vec(),
            meta_json: serde_json::to_string(&r.meta).unwrap_or_default(),
            digest: r.digest.clone(),
            described_json: r.described.to_string(),
        }
    }
}

impl TryFrom<v1::Recording> for RecordingInput {
    type Error = ProtoError;

    fn try_from(r: v1::Recording) -> Result<Self, ProtoError> {
        let [t, y, x] = <[u64; 3]>::try_from(r.shape.as_slice())
            .map_err(|_| field("recording.shape", "expected (frames, rows, columns)"))?;
        if t == 0 || y == 0 || x == 0 {
            return Err(field("recording.shape", format!("{t}x{y}x{x} is empty")));
        }
        let chunks = <[u64; 3]>::try_from(r.chunks.as_slice())
            .map_err(|_| field("recording.chunks", "expected 3 chunk lengths"))?;
        if chunks.contains(&0) {
            return Err(field("recording.chunks", "a chunk length is 0"));
        }
        if r.uri.is_empty() {
            return Err(field("recording.uri", "empty"));
        }
        if r.digest.is_empty() {
            return Err(field("recording.digest", "empty"));
        }
        let meta: RecordingMeta =
            serde_json::from_str(&r.meta_json).map_err(|e| field("recording.meta_json", e))?;
        let described = if r.described_json.is_empty() {
            serde_json::json!({"uri": r.uri})
        } else {
            serde_json::from_str(&r.described_json)
                .map_err(|e| field("recording.described_json", e))?
        };
        Ok(RecordingInput {
            uri: r.uri,
            array: r.array,
            shape: Shape3 { t, y, x },
            chunks,
            meta,
            digest: r.digest,
            described,
        })
    }
}

/// Adds `authorization: Bearer <token>` to every call of a client.
#[derive(Clone)]
pub struct Bearer(MetadataValue<tonic::metadata::Ascii>);

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bearer(<token>)")
    }
}

impl Bearer {
    /// A bearer for `token` (printable ASCII, as tokens are).
    pub fn new(token: &str) -> Result<Bearer, ProtoError> {
        MetadataValue::from_str(&format!("Bearer {token}"))
            .map(Bearer)
            .map_err(|_| field("token", "not printable ASCII"))
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// Checks `authorization: Bearer <token>` on every call of a server; a call without it, or with
/// another token, is refused (`UNAUTHENTICATED`) and logged with the peer's address.
#[derive(Clone)]
pub struct Auth {
    expected: Vec<u8>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Auth(<token>)")
    }
}

impl Auth {
    pub fn new(token: &str) -> Auth {
        Auth {
            expected: format!("Bearer {token}").into_bytes(),
        }
    }
}

/// Equality that takes the same time wherever the first difference is.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Interceptor for Auth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let given = request
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes().to_vec());
        match given {
            Some(g) if constant_time_eq(&g, &self.expected) => Ok(request),
            other => {
                let peer = request
                    .remote_addr()
                    .map_or_else(|| "unknown peer".to_string(), |a| a.to_string());
                let why = if other.is_some() {
                    "a wrong bearer token"
                } else {
                    "no bearer token"
                };
                eprintln!("refused a call from {peer}: {why}");
                Err(Status::unauthenticated(format!(
                    "refused: {why} (pass the coordinator's token with --token, --token-file or TESSERA_TOKEN)"
                )))
            }
        }
    }
}

/// Refuses a worker call speaking another protocol version.
pub fn check_protocol(version: u32) -> Result<(), Status> {
    if version == PROTOCOL_VERSION {
        Ok(())
    } else {
        Err(Status::failed_precondition(format!(
            "protocol version mismatch: the worker speaks version {version}, this coordinator speaks version {PROTOCOL_VERSION}; run the same tessera release on both"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recordings_round_trip_and_bad_ones_name_the_field() {
        let r = RecordingInput {
            uri: "/data/r.zarr".into(),
            array: "movie".into(),
            shape: Shape3 {
                t: 10,
                y: 20,
                x: 30,
            },
            chunks: [5, 20, 30],
            meta: RecordingMeta::default(),
            digest: "abc".into(),
            described: serde_json::json!({"uri": "/data/r.zarr"}),
        };
        let wire = v1::Recording::from(&r);
        assert_eq!(RecordingInput::try_from(wire.clone()).ok(), Some(r));
        let mut bad = wire.clone();
        bad.shape = vec![1, 2];
        let e = RecordingInput::try_from(bad).err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.starts_with("recording.shape")));
        let mut bad = wire;
        bad.meta_json = "{".into();
        let e = RecordingInput::try_from(bad).err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.starts_with("recording.meta_json")));
    }

    #[test]
    fn tokens_are_checked() {
        let mut auth = Auth::new("s3cret");
        let mut good = Bearer::new("s3cret").ok();
        let req = good.as_mut().map(|b| b.call(Request::new(())));
        assert!(matches!(req, Some(Ok(_))));
        let checked = req.and_then(Result::ok).map(|r| auth.call(r).is_ok());
        assert_eq!(checked, Some(true));
        let wrong = Bearer::new("guess")
            .ok()
            .map(|mut b| b.call(Request::new(())));
        let refused = wrong
            .and_then(Result::ok)
            .map(|r| auth.call(r).err().map(|s| s.code()));
        assert_eq!(refused, Some(Some(tonic::Code::Unauthenticated)));
        assert_eq!(
            auth.call(Request::new(())).err().map(|s| s.code()),
            Some(tonic::Code::Unauthenticated)
        );
        assert!(check_protocol(PROTOCOL_VERSION).is_ok());
        assert_eq!(
            check_protocol(PROTOCOL_VERSION + 1).err().map(|s| s.code()),
            Some(tonic::Code::FailedPrecondition)
        );
    }
}
