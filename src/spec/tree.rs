//! Static draft-tree shapes (LANTERN++-style): how many children each node gets at each depth.

use crate::error::{Error, Result};

/// Children per node at each depth: `widths[d]` children under every node of depth `d`
/// (depth 0 is the pending token). `[1; L]` is a chain of length `L`; `[3, 2]` drafts 3
/// candidates for the first token and 2 continuations of each (9 nodes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeShape {
    widths: Vec<usize>,
}

/// Largest tree spire drafts (nodes), keeping the verification pass small.
pub const MAX_TREE_NODES: usize = 256;

impl TreeShape {
    /// A shape from per-depth widths; every width must be at least 1.
    pub fn from_widths(widths: &[usize]) -> Result<Self> {
        if widths.is_empty() || widths.contains(&0) {
            return Err(Error::InvalidRequest(format!("draft tree widths {widths:?} must be non-empty and all >= 1")));
        }
        let shape = Self { widths: widths.to_vec() };
        if shape.num_nodes() > MAX_TREE_NODES {
            return Err(Error::InvalidRequest(format!(
                "draft tree {widths:?} has {} nodes, more than the {MAX_TREE_NODES} spire verifies in one pass",
                shape.num_nodes()
            )));
        }
        Ok(shape)
    }

    /// A chain of `len` drafted tokens.
    pub fn chain(len: usize) -> Result<Self> {
        Self::from_widths(&vec![1; len])
    }

    /// Number of drafted levels.
    pub fn depth(&self) -> usize {
        self.widths.len()
    }

    /// Children per node at draft depth `d` (1-based: the pending token's children are depth 1).
    pub fn width(&self, d: usize) -> usize {
        self.widths[d - 1]
    }

    /// Total drafted nodes.
    pub fn num_nodes(&self) -> usize {
        self.widths.iter().scan(1usize, |level, &w| {
            *level = level.saturating_mul(w);
            Some(*level)
        }).fold(0usize, |acc, n| acc.saturating_add(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_counts() {
        assert_eq!(TreeShape::chain(4).unwrap().num_nodes(), 4);
        assert_eq!(TreeShape::from_widths(&[3, 2]).unwrap().num_nodes(), 9);
        assert!(TreeShape::from_widths(&[2, 0]).is_err());
        assert!(TreeShape::from_widths(&[16, 16, 16]).is_err());
    }
}
