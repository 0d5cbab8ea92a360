//! # topo-chaos
//!
//! A Jepsen-style fault campaign for Toposphere: concurrent clients drive a workload
//! through the public [`topo_core::Conn`] API while a seeded nemesis kills, pauses and
//! partitions servers (or client processes); every invocation and completion goes to a
//! history ([`history`]), which [`check`] then verifies against a model.
//!
//! - [`history`]: the JSON-lines event format, the shared monotonic clock, merging.
//! - [`check`]: per-key linearizability of registers (Wing–Gong/Lowe search, `info`
//!   operations may or may not have happened), and the lock workload's counter checks.
//! - [`workload`]: the client loops (register, lock), shared by in-process clients and
//!   worker processes.
//! - [`broken`]: a connection that acknowledges writes it drops, to prove the checks fail.

pub mod broken;
pub mod check;
pub mod history;
pub mod workload;
