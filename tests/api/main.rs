//! Integration tests: the real application against real Redis and PostgreSQL.
//! Each test gets its own database, Redis key prefix and JWT secret, so they run in parallel.

// The apply handler's future, awaited inside a test's, nests deeper than the default allows.
#![recursion_limit = "256"]

mod abuse;
mod admission;
mod bad_input;
mod batching;
mod bench;
mod census;
mod chaos;
mod clock;
mod cluster;
mod contract;
mod crowd;
mod dashboard;
mod deploy;
mod fairness;
mod fairness_builder;
mod fairness_reads;
mod faults;
mod fuzz;
mod helpers;
mod identity;
mod invariants;
mod issuance;
mod lineage;
mod observability;
mod production;
mod recovery;
mod redis_loss;
mod rehearsal;
mod repair;
mod resilience;
mod retention;
mod scale_out;
mod sentinel;
mod sold_out;
mod swagger;
mod tls;
mod window;
