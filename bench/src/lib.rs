//! Benchmarks of fcfs-coupon, kept out of the service binary: `spike` drives a running
//! service over HTTP like a crowd; `issuance` measures how fast the pipeline drains winners.

pub mod issuance;
pub mod spike;
