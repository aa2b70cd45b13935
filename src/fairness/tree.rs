//! The Merkle tree's arithmetic is `tlog_tiles` (RFC 6962 hashing, Go's sumdb/tlog layout);
//! this holds the hash readers it needs. Its readers are synchronous and each proof asks for
//! one set of stored hashes that depends only on the sizes, so a proof is made in two passes:
//! [`needed`] learns the indexes, the caller fetches them (from PostgreSQL), and [`Known`]
//! answers the second pass.

use std::cell::RefCell;
use std::collections::HashMap;

use tlog_tiles::{Error, Hash, HashReader};

/// Records the indexes asked for and answers with zero hashes.
#[derive(Default)]
pub struct Recorder(RefCell<Vec<u64>>);

impl HashReader for Recorder {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, Error> {
        self.0.borrow_mut().extend_from_slice(indexes);
        Ok(vec![Hash::default(); indexes.len()])
    }
}

/// The stored-hash indexes `compute` reads.
pub fn needed<T>(compute: impl FnOnce(&Recorder) -> Result<T, Error>) -> Result<Vec<u64>, Error> {
    let recorder = Recorder::default();
    compute(&recorder)?;
    Ok(recorder.0.into_inner())
}

/// Hashes already fetched (or just computed), by stored index; a missing one is an error.
#[derive(Default, Debug)]
pub struct Known(pub HashMap<u64, Hash>);

impl HashReader for Known {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, Error> {
        indexes
            .iter()
            .map(|i| self.0.get(i).copied().ok_or(Error::IndexesNotInTree))
            .collect()
    }
}

/// A whole tree in memory, built leaf by leaf: what a verifier rebuilds from the leaves.
#[derive(Default, Clone)]
pub struct MemoryTree {
    hashes: Vec<Hash>,
    size: u64,
}

impl HashReader for MemoryTree {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, Error> {
        indexes
            .iter()
            .map(|&i| {
                self.hashes
                    .get(i as usize)
                    .copied()
                    .ok_or(Error::IndexesNotInTree)
            })
            .collect()
    }
}

impl MemoryTree {
    pub fn push(&mut self, leaf_hash: Hash) -> Result<(), Error> {
        let new = tlog_tiles::stored_hashes_for_record_hash(self.size, leaf_hash, self)?;
        self.hashes.extend(new);
        self.size += 1;
        Ok(())
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn root(&self) -> Result<Hash, Error> {
        tlog_tiles::tree_hash(self.size, self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_passes_give_the_proofs_a_whole_tree_gives() {
        let mut tree = MemoryTree::default();
        for i in 0..23u32 {
            tree.push(tlog_tiles::record_hash(&i.to_be_bytes()))
                .unwrap();
        }
        let (t, n) = (23, 9);
        let indexes = needed(|r| tlog_tiles::prove_record(t, n, r)).unwrap();
        let fetched = Known(
            indexes
                .iter()
                .map(|&i| (i, tree.read_hashes(&[i]).unwrap()[0]))
                .collect(),
        );
        let proof = tlog_tiles::prove_record(t, n, &fetched).unwrap();
        assert_eq!(proof, tlog_tiles::prove_record(t, n, &tree).unwrap());
        let leaf = tlog_tiles::record_hash(&9u32.to_be_bytes());
        tlog_tiles::check_record(&proof, t, tree.root().unwrap(), n, leaf).unwrap();
    }
}
