//! tessera-coordinator: runs a plan of tile tasks across workers.
//!
//! This first part is the scheduling core, [`scheduler`]: a pure state machine
//! (`step(run, event) -> actions`) for one run's tasks, leases, fencing tokens, retries with
//! backoff, quarantine and cancellation. It does no I/O and reads no clock, so it is
//! property-tested here and can be replayed from an event log; the durable store and the gRPC
//! service (issue "Coordinator and workers over gRPC") wrap it without changing it.

pub mod scheduler;

pub use scheduler::{Action, Event, Outcome, Policy, Run, RunStatus, TaskState, step};

#[cfg(test)]
mod tests;
