//! The index arrays of one forward pass, built once on the host and handed to the backend once
//! ([`crate::backend::Backend::upload_plan`]: one host-to-device copy on a device), then read by
//! every layer's RoPE, KV append and attention.

use super::AttentionLayout;

/// One embedding gather of a pass: `out[rows[i]] = table[ids[i]]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Gather {
    /// Table row of each gathered row.
    pub ids: Vec<u32>,
    /// Output row of each gathered row.
    pub rows: Vec<u32>,
}

/// What the rows of one forward pass read and where they sit: embedding gathers, RoPE rows, KV
/// slots and attention visibility. An op checks only the part it reads, so a test of one op may
/// leave the others empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ForwardPlan {
    /// Embedding gathers, one per table (a GPT's class and image-token embeddings).
    pub gathers: Vec<Gather>,
    /// RoPE table row of each row.
    pub positions: Vec<u32>,
    /// Physical KV slot each row writes.
    pub slots: Vec<u32>,
    /// Which keys each row attends to.
    pub layout: AttentionLayout,
}

impl ForwardPlan {
    /// A plan with one embedding gather (for an embedding-only call).
    pub fn gather(ids: &[u32], rows: &[u32]) -> Self {
        Self { gathers: vec![Gather { ids: ids.to_vec(), rows: rows.to_vec() }], ..Self::default() }
    }

    /// A plan with only RoPE positions (for a RoPE-only call).
    pub fn positions(positions: &[u32]) -> Self {
        Self { positions: positions.to_vec(), ..Self::default() }
    }

    /// A plan with only KV slots (for a KV-append-only call).
    pub fn slots(slots: &[u32]) -> Self {
        Self { slots: slots.to_vec(), ..Self::default() }
    }

    /// A plan with only an attention layout (for an attention-only call).
    pub fn layout(layout: AttentionLayout) -> Self {
        Self { layout, ..Self::default() }
    }
}
