//! Verifiable fairness: every event's admissions, in position order, in an append-only Merkle
//! log (RFC 6962 hashing), with signed checkpoints (c2sp.org/tlog-checkpoint), so a winner can
//! prove their place and anyone can check the whole order and that it was never rewritten.
//!
//! `builder` appends from the persisted rows; `store` keeps the log in PostgreSQL and reads
//! proofs from it; `copy` holds a log in memory for its public readers; `verify` is the other
//! side, talking only to the public endpoints.

pub mod audit;
mod builder;
mod copy;
mod keys;
mod leaf;
pub mod store;
mod tree;
pub mod verify;

pub use builder::LogBuilder;
pub use copy::LogCopy;
pub use keys::{batch_window_us, open_checkpoint, origin, LogKey, DEVELOPMENT_KEY_NAME};
pub use leaf::{commitment, BadLeaf, Leaf, LeafKind, LEAF_BYTES, LEAF_VERSION, NONCE_BYTES};
pub use tree::MemoryTree;
