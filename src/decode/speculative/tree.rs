//! Draft trees: static shapes (LANTERN++-style), the drafted nodes, and the tree-attention
//! ancestor mask.
//!
//! A shape gives the number of children per node at each depth: `widths[d]` children under
//! **every** node at depth `d`, where depth 0 is the pending token (the root, not a drafted node)
//! and drafted nodes have depths `1..=widths.len()`. Each node's children are distinct tokens
//! drawn from the draft distribution at that node without replacement
//! ([`crate::acceptance::sample_children`]), so a node whose draft distribution has fewer
//! than `w` tokens in its support gets fewer children; shapes are an upper bound.
//!
//! Nodes ([`DraftNode`]) are numbered in BFS order: all depth-1 nodes, then all depth-2 nodes
//! grouped by parent in parent order, and so on; siblings are contiguous and in drafting order
//! ([`DraftTree`] grows a tree this way). Per-node distributions are indexed by [`slot`]: 0 at
//! the pending token, `1 + i` after node `i`.

use crate::error::{Error, Result};

/// Children per node at each depth; see the module docs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeShape {
    widths: Vec<usize>,
}

/// Largest tree spire drafts (nodes), keeping the verification pass small.
pub const MAX_TREE_NODES: usize = 256;

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

    /// Every node of the full tree in BFS order, with token 0: the static layout of a
    /// verification block (node `i` of a drafted tree is node `i` of its layout, and a
    /// sequence drafting `d < depth()` levels drafts the BFS prefix of depths `<= d`).
    pub fn layout(&self) -> Vec<DraftNode> {
        let mut tree = DraftTree::default();
        for d in 1..=self.depth() {
            tree.grow(|_| vec![0; self.width(d)]);
        }
        tree.into_nodes()
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
}

/// One node of a draft tree: its token, its parent node (`None` = child of the pending token)
/// and its depth (1 for children of the pending token).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DraftNode {
    /// BFS index of the node.
    pub index: usize,
    /// Drafted token.
    pub token: u32,
    /// Parent node, or `None` for a child of the pending token.
    pub parent: Option<usize>,
    /// Distance from the pending token.
    pub depth: usize,
}

/// The distribution slot at `node`: 0 at the pending token (`None`), `1 + i` after node `i`.
pub fn slot(node: Option<usize>) -> usize {
    node.map_or(0, |i| 1 + i)
}

/// A draft tree grown level by level in BFS order (see the module docs).
#[derive(Clone, Debug)]
pub struct DraftTree {
    nodes: Vec<DraftNode>,
    /// The last level (the pending token, `None`, before the first level is grown).
    frontier: Vec<Option<usize>>,
}

impl Default for DraftTree {
    /// A tree with no drafted node yet.
    fn default() -> Self {
        Self { nodes: Vec::new(), frontier: vec![None] }
    }
}

impl DraftTree {
    /// Grow the next level: under each node of the last level in order (the pending token for
    /// the first level), the tokens `children(parent)` returns, in drafting order. Returns the
    /// new level's nodes.
    pub fn grow(&mut self, mut children: impl FnMut(Option<usize>) -> Vec<u32>) -> &[DraftNode] {
        let depth = self.nodes.last().map_or(0, |n| n.depth) + 1;
        let start = self.nodes.len();
        for &parent in &self.frontier {
            for token in children(parent) {
                self.nodes.push(DraftNode { index: self.nodes.len(), token, parent, depth });
            }
        }
        self.frontier = (start..self.nodes.len()).map(Some).collect();
        &self.nodes[start..]
    }

    /// The nodes drafted so far, in BFS order.
    pub fn nodes(&self) -> &[DraftNode] {
        &self.nodes
    }

    /// The drafted nodes, in BFS order.
    pub fn into_nodes(self) -> Vec<DraftNode> {
        self.nodes
    }
}

/// Check the BFS layout of `nodes`: `nodes[i].index == i`, each parent precedes its children,
/// and depths count from the pending token.
pub(crate) fn check_bfs(nodes: &[DraftNode]) -> Result<()> {
    for (i, node) in nodes.iter().enumerate() {
        let parent_depth = match node.parent {
            None => 0,
            Some(parent) if parent < i => nodes[parent].depth,
            Some(parent) => {
                return Err(Error::InvalidRequest(format!("draft node {i} has parent {parent}, which does not precede it (BFS order)")))
            }
        };
        if node.index != i || node.depth != parent_depth + 1 {
            return Err(Error::InvalidRequest(format!("draft node {i} has index {} and depth {}, inconsistent with BFS order", node.index, node.depth)));
        }
    }
    Ok(())
}

/// Tree-attention visibility of `nodes` (BFS order, checked): `n * n` booleans, row-major, where
/// row `i` column `j` is true iff node `j` is node `i` or one of its ancestors. Every node also
/// sees the whole committed prefix, which is not part of the mask.
pub fn ancestor_mask(nodes: &[DraftNode]) -> Result<Vec<bool>> {
    check_bfs(nodes)?;
    let n = nodes.len();
    let mut mask = vec![false; n * n];
    for (i, node) in nodes.iter().enumerate() {
        // Row i = row of i's parent (already complete, as the parent precedes i) plus i itself.
        if let Some(p) = node.parent {
            mask.copy_within(p * n..p * n + p + 1, i * n);
        }
        mask[i * n + i] = true;
    }
    Ok(mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every node `shape` allows, grown level by level.
    fn full_tree(shape: &TreeShape) -> Vec<DraftNode> {
        let mut tree = DraftTree::default();
        for d in 1..=shape.depth() {
            tree.grow(|_| vec![0; shape.width(d)]);
        }
        tree.into_nodes()
    }

    fn node(index: usize, parent: Option<usize>, depth: usize) -> DraftNode {
        DraftNode { index, token: 0, parent, depth }
    }

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
        let nodes = full_tree(&TreeShape::from_widths(&[2, 2, 1]).unwrap());
        let parents: Vec<Option<usize>> = nodes.iter().map(|n| n.parent).collect();
        let depths: Vec<usize> = nodes.iter().map(|n| n.depth).collect();
        assert_eq!(parents, [None, None, Some(0), Some(0), Some(1), Some(1), Some(2), Some(3), Some(4), Some(5)]);
        assert_eq!(depths, [1, 1, 2, 2, 2, 2, 3, 3, 3, 3]);
        assert!(nodes.iter().enumerate().all(|(i, n)| n.index == i));
    }

    #[test]
    fn growing_stops_below_a_level_without_children() {
        let mut tree = DraftTree::default();
        assert_eq!(tree.grow(|_| vec![4, 5]).len(), 2);
        assert!(tree.grow(|_| Vec::new()).is_empty());
        assert!(tree.grow(|_| vec![6]).is_empty());
        assert_eq!(tree.nodes(), [DraftNode { index: 0, token: 4, parent: None, depth: 1 }, DraftNode { index: 1, token: 5, parent: None, depth: 1 }]);
    }

    #[test]
    fn ancestor_mask_sees_self_and_ancestors() {
        let shape = TreeShape::from_widths(&[2, 2]).unwrap();
        let mask = ancestor_mask(&full_tree(&shape)).unwrap();
        let n = shape.num_nodes();
        let row = |i: usize| -> Vec<usize> { (0..n).filter(|&j| mask[i * n + j]).collect() };
        assert_eq!(row(0), [0]);
        assert_eq!(row(1), [1]);
        assert_eq!(row(2), [0, 2]);
        assert_eq!(row(5), [1, 5]);
        let chain = ancestor_mask(&full_tree(&TreeShape::chain(3).unwrap())).unwrap();
        assert_eq!(chain, [true, false, false, true, true, false, true, true, true]);
    }

    #[test]
    fn ancestor_mask_rejects_non_bfs_parents() {
        assert!(ancestor_mask(&[node(0, None, 1), node(1, Some(1), 2)]).is_err());
        assert!(ancestor_mask(&[node(0, Some(0), 1)]).is_err());
        assert_eq!(ancestor_mask(&[node(0, None, 1), node(1, Some(0), 2)]).unwrap(), [true, false, true, true]);
    }
}
