//! The paged KV cache (vLLM-style): fixed-size blocks, a block allocator, per-sequence block
//! tables, append, rollback of rejected tokens, and fork.

mod allocator;
mod cache;

pub use allocator::BlockAllocator;
pub use cache::{PagedKvCache, QueryVisibility, SeqId};
