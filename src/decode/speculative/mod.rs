//! Speculative decoding: drafters propose a chain or tree of tokens, the target verifies them
//! in one pass (tree-masked attention over the paged KV cache), an acceptance rule decides, and
//! rejected tokens are rolled back.
//!
//! - [`rules`]: vanilla (lossless), LANTERN / LANTERN++, COOL-SD, UniformRSD.
//! - [`tree`]: static tree shapes, drafted nodes and the tree-attention ancestor mask.
//! - [`verify`]: chain/tree verification on host distributions, assuming siblings drawn without
//!   replacement ([`sample_children`], from [`crate::acceptance`]); the decoding loop uses the
//!   backend's fused acceptance op instead for every rule it can express, and this walk for the
//!   others (LANTERN).
//! - [`draft`]: the draft model and the EAGLE-style draft head; the loop is
//!   [`crate::decode::batch`].
//! - [`analysis`]: exact output laws and TV distances of relaxed rules.
//! - [`config`]: what a request chooses.
//!
//! The model-independent core is re-exported here. One verification step on the host: draft
//! children with [`sample_children`] level by level into a [`DraftTree`] (BFS node order,
//! siblings in drawing order), run the target over the tree with [`ancestor_mask`] visibility,
//! then verify with the draft and target distributions and an [`AcceptanceRule`]
//! ([`verify_tree`] / [`verify_chain`]); commit [`VerifyOutcome::path`] and
//! [`VerifyOutcome::next`]. The batched loop does the same on the device.

pub mod analysis;
pub mod config;
pub mod draft;
pub mod rules;
pub mod tree;
pub mod verify;

pub use crate::acceptance::sample_children;
pub use analysis::{block_law, step_distribution, total_variation, BlockLaw};
pub use rules::{AcceptanceRule, Cool, LatentNeighbours, Lantern, LanternPlusPlus, UniformRsd, Vanilla};
pub use tree::{ancestor_mask, DraftNode, DraftTree, TreeShape, MAX_TREE_NODES};
pub use verify::{verify_chain, verify_tree, TreeDraft, VerifyOutcome};
