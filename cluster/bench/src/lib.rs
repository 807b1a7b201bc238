//! Side-by-side benchmark of EventStore and etcd on one machine.
//!
//! `scripts/bench.sh` starts a three-node EventStore cluster and a
//! three-member etcd next to it on 127.0.0.1 and runs `eventstore-compare`,
//! which drives the same closed-loop workloads against both:
//! Save = etcd Put with a shared lease of the same TTL, Load = linearizable
//! Get, Delete = Delete. Cells (one system, one operation, one client
//! count, one value size) alternate between the two systems so that noise
//! from the machine hits both; the baseline (EventStore's gRPC health
//! check, the transport without Raft or storage) is measured at each client
//! count in the same sweep, and the disk's fsync latency on the data
//! directories' filesystem is measured in the same run.
//!
//! This package is benchmark machinery, not part of the product: the
//! `eventstore` binary carries no etcd client.
//!
//! - [`plan`]: which cells run, in which order;
//! - [`driver`]: connections to both systems and one request of each kind;
//! - [`cell`]: runs one cell (warm-up, then the measured window);
//! - [`fsync`]: the disk's write + fdatasync latency;
//! - [`report`]: the JSON report and the Markdown table;
//! - [`plot`]: SVG plots of throughput and latency against clients.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cell;
pub mod driver;
pub mod fsync;
pub mod plan;
pub mod plot;
pub mod report;
