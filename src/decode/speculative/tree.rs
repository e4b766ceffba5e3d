//! Static draft-tree shapes (LANTERN++-style) and the tree-attention ancestor mask.
//!
//! A shape gives the number of children per node at each depth: `widths[d]` children under
//! **every** node at depth `d`, where depth 0 is the pending token (the root, not a drafted node)
//! and drafted nodes have depths `1..=widths.len()`. Each node's children are distinct tokens
//! drawn from the draft distribution at that node without replacement
//! ([`crate::acceptance::sample_children`]), so a node whose draft distribution has fewer
//! than `w` tokens in its support gets fewer children; shapes are an upper bound.
//!
//! Nodes are numbered in BFS order: all depth-1 nodes, then all depth-2 nodes grouped by parent
//! in parent order, and so on; siblings are contiguous and in drafting order.

use crate::error::{Error, Result};

/// Children per node at each depth; see the module docs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeShape {
    widths: Vec<usize>,
}

/// Largest tree spire drafts (nodes), keeping the verification pass small.
pub const MAX_TREE_NODES: usize = 256;

/// One drafted node of a shape: its parent (`None` = child of the pending token) and its depth
/// (1 for children of the pending token).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TreeNode {
    /// BFS index of the parent node, or `None` under the pending token.
    pub parent: Option<usize>,
    /// Distance from the pending token (1-based).
    pub depth: usize,
}

impl TreeShape {
    /// A shape from per-depth widths; every width must be at least 1 and the tree at most
    /// [`MAX_TREE_NODES`] nodes. `[4, 2, 2, 1]` drafts 4 + 8 + 16 + 16 = 44 nodes.
    pub fn from_widths(widths: &[usize]) -> Result<Self> {
        if widths.is_empty() || widths.contains(&0) {
            return Err(Error::InvalidRequest(format!("draft tree widths {widths:?} must be non-empty and all >= 1 (use --draft-len >= 1, or --spec none for plain decoding)")));
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

    /// A chain of `len` drafted tokens (`widths = [1; len]`).
    pub fn chain(len: usize) -> Result<Self> {
        Self::from_widths(&vec![1; len])
    }

    /// Children per node at each depth, `widths()[d]` under nodes of depth `d`.
    pub fn widths(&self) -> &[usize] {
        &self.widths
    }

    /// Number of drafted levels.
    pub fn depth(&self) -> usize {
        self.widths.len()
    }

    /// Children per node at draft depth `d` (1-based: the pending token's children are depth 1);
    /// 0 outside `1..=depth()`.
    pub fn width(&self, d: usize) -> usize {
        d.checked_sub(1).and_then(|i| self.widths.get(i)).copied().unwrap_or(0)
    }

    /// Total drafted nodes.
    pub fn num_nodes(&self) -> usize {
        self.widths
            .iter()
            .scan(1usize, |level, &w| {
                *level = level.saturating_mul(w);
                Some(*level)
            })
            .fold(0usize, |acc, n| acc.saturating_add(n))
    }

    /// The drafted nodes in BFS order.
    pub fn nodes(&self) -> Vec<TreeNode> {
        let mut nodes = Vec::with_capacity(self.num_nodes());
        let mut frontier: Vec<Option<usize>> = vec![None];
        for (level, &w) in self.widths.iter().enumerate() {
            let start = nodes.len();
            for &parent in &frontier {
                nodes.extend(std::iter::repeat_n(TreeNode { parent, depth: level + 1 }, w));
            }
            frontier = (start..nodes.len()).map(Some).collect();
        }
        nodes
    }

    /// The full shape's ancestor mask; see [`ancestor_mask`].
    pub fn ancestor_mask(&self) -> Vec<bool> {
        let parents: Vec<Option<usize>> = self.nodes().iter().map(|n| n.parent).collect();
        mask_of_valid(&parents)
    }
}

/// Tree-attention visibility for nodes with parents `parents` (BFS order, each parent index
/// smaller than the node's): `n * n` booleans, row-major, where row `i` column `j` is true iff
/// node `j` is node `i` or one of its ancestors. Every node also sees the whole committed
/// prefix, which is not part of the mask.
pub fn ancestor_mask(parents: &[Option<usize>]) -> Result<Vec<bool>> {
    if let Some((i, _)) = parents.iter().enumerate().find(|&(i, p)| p.is_some_and(|p| p >= i)) {
        return Err(Error::InvalidRequest(format!("draft tree node {i} has a parent that does not precede it (nodes must be in BFS order)")));
    }
    Ok(mask_of_valid(parents))
}

/// [`ancestor_mask`] for parents already known to precede their children.
fn mask_of_valid(parents: &[Option<usize>]) -> Vec<bool> {
    let n = parents.len();
    let mut mask = vec![false; n * n];
    for i in 0..n {
        // Row i = row of i's parent (already complete, as the parent precedes i) plus i itself.
        if let Some(p) = parents[i] {
            mask.copy_within(p * n..p * n + p + 1, i * n);
        }
        mask[i * n + i] = true;
    }
    mask
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_counts() {
        assert_eq!(TreeShape::chain(4).unwrap().num_nodes(), 4);
        assert_eq!(TreeShape::from_widths(&[3, 2]).unwrap().num_nodes(), 9);
        assert_eq!(TreeShape::from_widths(&[4, 2, 2, 1]).unwrap().num_nodes(), 44);
        assert!(TreeShape::from_widths(&[2, 0]).is_err());
        assert!(TreeShape::from_widths(&[]).is_err());
        assert!(TreeShape::from_widths(&[16, 16, 16]).is_err());
        let shape = TreeShape::from_widths(&[3, 2]).unwrap();
        assert_eq!((shape.width(0), shape.width(1), shape.width(2), shape.width(3)), (0, 3, 2, 0));
    }

    #[test]
    fn nodes_are_bfs_with_contiguous_siblings() {
        let nodes = TreeShape::from_widths(&[2, 2, 1]).unwrap().nodes();
        let parents: Vec<Option<usize>> = nodes.iter().map(|n| n.parent).collect();
        let depths: Vec<usize> = nodes.iter().map(|n| n.depth).collect();
        assert_eq!(parents, [None, None, Some(0), Some(0), Some(1), Some(1), Some(2), Some(3), Some(4), Some(5)]);
        assert_eq!(depths, [1, 1, 2, 2, 2, 2, 3, 3, 3, 3]);
    }

    #[test]
    fn ancestor_mask_sees_self_and_ancestors() {
        let shape = TreeShape::from_widths(&[2, 2]).unwrap();
        let mask = shape.ancestor_mask();
        let n = shape.num_nodes();
        let row = |i: usize| -> Vec<usize> { (0..n).filter(|&j| mask[i * n + j]).collect() };
        assert_eq!(row(0), [0]);
        assert_eq!(row(1), [1]);
        assert_eq!(row(2), [0, 2]);
        assert_eq!(row(5), [1, 5]);
        let chain = TreeShape::chain(3).unwrap().ancestor_mask();
        assert_eq!(chain, [true, false, false, true, true, false, true, true, true]);
    }

    #[test]
    fn ancestor_mask_rejects_non_bfs_parents() {
        assert!(ancestor_mask(&[None, Some(1)]).is_err());
        assert!(ancestor_mask(&[Some(0)]).is_err());
        assert_eq!(ancestor_mask(&[None, Some(0)]).unwrap(), [true, false, true, true]);
    }
}
