//! tessera-coordinator: runs a plan of tile tasks across workers.
//!
//! This first part is the scheduling core, [`scheduler`]: a pure state machine
//! (`step(run, event) -> actions`) for one run's tasks, leases, fencing tokens, retries with
//! backoff, quarantine and cancellation. It does no I/O and reads no clock, so it is
//! property-tested here and can be replayed from an event log. [`store`] is that log: an SQLite
//! database to which every event is written before it is applied, and from which every run is
//! rebuilt after a restart. [`service`] is the coordinator's logic over many runs (submit =
//! validate + plan, poll = grant across runs, report, extend, cancel), transport-free; [`grpc`]
//! serves it with tonic, each handler a thin conversion around it.

pub mod grpc;
pub mod scheduler;
pub mod service;
pub mod store;

pub use scheduler::{Action, Event, Outcome, Policy, Run, RunStatus, TaskState, step};
pub use service::{Coordinator, Grant, RunSummary, Settings, Submission, Submitted};
pub use store::{CoordinatorError, DurableRun, StateStore, StoredRun};

#[cfg(test)]
mod tests;
