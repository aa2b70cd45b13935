//! Operating the pipeline when something went wrong: `reconcile` rebuilds Redis from
//! PostgreSQL after Redis lost data; `audit` compares the two.

pub mod audit;
pub mod reconcile;

pub use audit::{audit, AuditError, AuditReport};
pub use reconcile::Reconciler;
