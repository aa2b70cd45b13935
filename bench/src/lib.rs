//! Benchmarks of fcfs-coupon, kept out of the service binary: `spike` drives a running
//! service over HTTP like a crowd; `issuance` measures how fast the pipeline drains winners;
//! `durability` measures what waiting for a replica costs an admission.

pub mod durability;
pub mod issuance;
pub mod spike;
