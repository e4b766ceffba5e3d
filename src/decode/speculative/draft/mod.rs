//! Drafters: cheap models that propose a chain or tree of tokens for the target to verify.
//!
//! A drafter is driven level by level by the decoding loop: [`Drafter::start`] brings its caches
//! up to the committed sequence and returns the draft distribution for the first drafted
//! position; [`Drafter::expand`] feeds one level of new tree nodes and returns the draft
//! distribution after each; [`Drafter::commit`] tells it what the target accepted.

mod head;
mod model;
mod sequence;

pub use head::HeadDrafter;
pub use model::ModelDrafter;
pub use sequence::{tree_rows, SequenceState};

use crate::backend::Backend;
use crate::decode::speculative::tree::DraftNode;
use crate::decode::DecodeContext;
use crate::error::Result;
use crate::model::StepOutput;

/// Where a drafted node sits in the draft tree.
pub trait Drafter<B: Backend> {
    /// Feed everything committed since the last step (ending with the pending token at position
    /// `state.pending_position()`) and return the draft distribution for the next token.
    fn start(&mut self, ctx: &mut DecodeContext<'_, B>, state: &SequenceState) -> Result<Vec<f32>>;

    /// Feed `nodes` (the next level of the draft tree, indices continuing the BFS numbering) and
    /// return the draft distribution after each node.
    fn expand(&mut self, ctx: &mut DecodeContext<'_, B>, state: &SequenceState, nodes: &[DraftNode]) -> Result<Vec<Vec<f32>>>;

    /// The target accepted the nodes `path` (root to leaf) and appended one token; `target`
    /// is the verification pass's output (row 0: the pending token, row `1 + i`: node `i`, then
    /// the unconditional mirror when CFG is on) and `state` is already updated.
    fn commit(&mut self, ctx: &mut DecodeContext<'_, B>, state: &SequenceState, path: &[usize], target: &StepOutput) -> Result<()>;
}
