//! fcfs-coupon: first-come, first-served coupon issuing.
//!
//! The modules follow the pipeline: `api` (HTTP) → `gate` (the Redis admission gate) →
//! `issuer` (batches winners onto Kafka) → `kafka` → `consumer` → `store` (PostgreSQL).
//! `domain` holds the validated value types they share. `reconcile` rebuilds Redis from
//! PostgreSQL after Redis lost data; `audit` compares the two.

pub mod api;
pub mod audit;
pub mod auth;
pub mod bench;
pub mod cli;
pub mod configuration;
pub mod consumer;
pub mod domain;
pub mod gate;
pub mod issuer;
pub mod kafka;
pub mod metrics;
pub mod reconcile;
pub mod startup;
pub mod store;
pub mod telemetry;
