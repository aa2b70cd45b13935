//! A log held in memory: its leaves and the tree over them. Leaves are only appended, so a
//! copy at size `n` answers every leaf range and proof up to `n` for as long as the log lives,
//! without asking PostgreSQL again. Built from the leaves alone, as a verifier would.

use tlog_tiles::{Error, Hash};

use super::tree::MemoryTree;
use super::LEAF_BYTES;

/// Cloned to grow: readers keep the copy they hold while a larger one is built.
#[derive(Default, Clone)]
pub struct LogCopy {
    leaves: Vec<[u8; LEAF_BYTES]>,
    tree: MemoryTree,
}

impl LogCopy {
    pub fn size(&self) -> u64 {
        self.tree.size()
    }

    /// Appends the next leaf; a leaf of another length is refused.
    pub fn push(&mut self, leaf: &[u8]) -> anyhow::Result<()> {
        let bytes: [u8; LEAF_BYTES] = leaf.try_into().map_err(|_| {
            anyhow::anyhow!(
                "leaf {} is {} bytes, not {LEAF_BYTES}",
                self.size() + 1,
                leaf.len()
            )
        })?;
        self.tree.push(tlog_tiles::record_hash(&bytes))?;
        self.leaves.push(bytes);
        Ok(())
    }

    pub fn root(&self) -> Result<Hash, Error> {
        self.tree.root()
    }

    /// What the copy holds, about: a leaf and two stored hashes per leaf.
    pub fn bytes(&self) -> usize {
        self.leaves.len() * (LEAF_BYTES + 2 * 32)
    }

    /// The leaves at positions `start..end` (1-based, end exclusive), as far as the copy goes.
    pub fn leaves(&self, start: u32, end: u32) -> &[[u8; LEAF_BYTES]] {
        let len = self.leaves.len();
        let from = (start.max(1) as usize - 1).min(len);
        let to = (end.max(1) as usize - 1).clamp(from, len);
        &self.leaves[from..to]
    }

    /// RFC 6962 inclusion proof of `position`'s leaf in the tree of `size` leaves.
    pub fn inclusion(&self, position: u64, size: u64) -> Result<Vec<Hash>, Error> {
        tlog_tiles::prove_record(size, position.saturating_sub(1), &self.tree)
    }

    /// RFC 6962 consistency proof from the tree of `from` leaves to the tree of `to`.
    pub fn consistency(&self, from: u64, to: u64) -> Result<Vec<Hash>, Error> {
        tlog_tiles::prove_tree(to, from, &self.tree)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(i: u8) -> [u8; LEAF_BYTES] {
        [i; LEAF_BYTES]
    }

    #[test]
    fn proofs_from_a_grown_copy_check_against_the_smaller_roots() {
        let mut copy = LogCopy::default();
        let mut roots = vec![];
        for i in 0..13 {
            copy.push(&leaf(i)).unwrap();
            roots.push(copy.root().unwrap());
        }
        let grown = copy.clone();
        for size in 1..=13u64 {
            let root = roots[size as usize - 1];
            for position in 1..=size {
                let proof = grown.inclusion(position, size).unwrap();
                let hash = tlog_tiles::record_hash(&leaf(position as u8 - 1));
                tlog_tiles::check_record(&proof, size, root, position - 1, hash).unwrap();
            }
            let proof = grown.consistency(size, 13).unwrap();
            tlog_tiles::check_tree(&proof, 13, roots[12], size, root).unwrap();
        }
    }

    #[test]
    fn leaf_ranges_stop_at_the_copys_end_and_odd_leaves_are_refused() {
        let mut copy = LogCopy::default();
        for i in 0..5 {
            copy.push(&leaf(i)).unwrap();
        }
        assert_eq!(copy.leaves(2, 4), &[leaf(1), leaf(2)]);
        assert_eq!(copy.leaves(4, 100), &[leaf(3), leaf(4)]);
        assert!(copy.leaves(9, 12).is_empty());
        assert!(copy.push(&[0; 3]).is_err());
        assert_eq!(copy.size(), 5);
    }
}
