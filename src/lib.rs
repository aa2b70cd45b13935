//! fcfs-coupon: first-come, first-served coupon issuing.
//!
//! The modules follow the pipeline: `api` (HTTP) → `gate` (the Redis admission gate) →
//! `issuer` (batches winners onto Kafka) → `kafka` → `consumer` → `store` (PostgreSQL).
//! The stages are siblings that share only `domain`, the validated value types. `ops` holds
//! what operators run when something went wrong (reconcile, audit); `startup` assembles a
//! process from `configuration`; `cli` is the command line.

pub mod api;
pub mod auth;
pub mod cli;
pub mod configuration;
pub mod consumer;
pub mod domain;
pub mod fairness;
pub mod gate;
pub mod issuer;
pub mod kafka;
pub mod metrics;
pub mod ops;
pub mod startup;
pub mod store;
pub mod telemetry;
