//! Speculative decoding: drafters propose a chain or tree of tokens, the target verifies them
//! in one pass (tree-masked attention over the paged KV cache), an acceptance rule decides, and
//! rejected tokens are rolled back.
//!
//! - [`rules`]: vanilla (lossless), LANTERN / LANTERN++, COOL-SD, UniformRSD.
//! - [`tree`]: static tree shapes, drafted nodes and the tree-attention ancestor mask.
//! - [`verify`]: chain/tree verification on host distributions, assuming siblings drawn without
//!   replacement ([`sample_children`], from [`crate::acceptance`]); [`fused`]: the same through
//!   the backend's fused acceptance op, which the loop uses for every rule it can express.
//! - [`draft`]: the draft model and the EAGLE-style draft head; [`generate`]: the loop.
//! - [`analysis`]: exact output laws and TV distances of relaxed rules.
//! - [`config`]: what a request chooses.
//!
//! The model-independent core and the loop are re-exported here. One verification step, as
//! [`generate_speculative`] runs it: draft children with [`sample_children`] level by level into
//! a [`DraftTree`] (BFS node order, siblings in drawing order), run the target over the tree with
//! [`ancestor_mask`] visibility, then verify with the draft and target distributions and an
//! [`AcceptanceRule`] ([`fused::verify_block`]: the backend's fused op for vanilla, COOL-SD and
//! UniformRSD, [`verify_tree`] / [`verify_chain`] on the host otherwise); commit [`VerifyOutcome::path`] and
//! [`VerifyOutcome::next`].

pub mod analysis;
pub mod config;
pub mod draft;
pub mod fused;
pub mod generate;
pub mod rules;
pub mod tree;
pub mod verify;

pub use crate::acceptance::sample_children;
pub use analysis::{block_law, step_distribution, total_variation, BlockLaw};
pub use generate::generate_speculative;
pub use rules::{AcceptanceRule, Cool, LatentNeighbours, Lantern, LanternPlusPlus, UniformRsd, Vanilla};
pub use tree::{ancestor_mask, DraftNode, DraftTree, TreeShape, MAX_TREE_NODES};
pub use verify::{verify_chain, verify_tree, TreeDraft, VerifyOutcome};
