//! Benchmarks of fcfs-coupon, kept out of the service binary: `spike` drives a running
//! service over HTTP like a crowd; `issuance` measures how fast the pipeline drains winners;
//! `durability` measures what waiting for a replica costs an admission; `ceiling` measures one
//! event's admissions/s through the batched script; `compare` puts spike reports side by side;
//! `crowd` adds event-page readers and position pollers to the applying crowd.

pub mod compare;
pub mod crowd;
pub mod durability;
pub mod issuance;
pub mod rehearse;
pub mod spike;
