//! Operating the pipeline: `reconcile` watches Redis and rebuilds what it lost from
//! PostgreSQL; `audit` compares the two; `port` serves metrics and health to operators.

pub mod audit;
pub mod check_config;
pub mod health;
pub mod port;
pub mod reconcile;

pub use audit::{audit, AuditError, AuditReport};
pub use reconcile::Reconciler;
