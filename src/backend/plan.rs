//! The index arrays of one forward pass, built once on the host and packed into the step's one
//! upload ([`ForwardPlan::pack`], [`crate::backend::Backend::plan_in`]), then read by every
//! layer's RoPE, KV append and attention.

use super::{AttentionLayout, Packed};

/// One embedding gather of a pass: `out[rows[i]] = table[ids[i]]`, or, when `indirect`,
/// `out[rows[i]] = table[tokens[ids[i]]]` with the drafted tokens on the device.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Gather {
    /// Table row of each gathered row (indirect: its index into the device tokens).
    pub ids: Vec<u32>,
    /// Output row of each gathered row.
    pub rows: Vec<u32>,
    /// Whether `ids` index the device tokens instead of the table.
    pub indirect: bool,
}

/// Word offsets of a [`ForwardPlan`]'s arrays in a packed buffer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlanOffsets {
    /// RoPE positions.
    pub positions: usize,
    /// KV slots.
    pub slots: usize,
    /// Block tables, query sequences, query prefixes, window starts, window mask (bytes).
    pub layout: [usize; 5],
    /// Each gather's ids and rows.
    pub gathers: Vec<(usize, usize)>,
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
        Self { gathers: vec![Gather { ids: ids.to_vec(), rows: rows.to_vec(), indirect: false }], ..Self::default() }
    }

    /// Number of rows of the pass (its RoPE positions).
    pub fn rows(&self) -> usize {
        self.positions.len()
    }

    /// Append every array to `packed`; returns where they went.
    pub fn pack(&self, packed: &mut Packed) -> PlanOffsets {
        let l = &self.layout;
        PlanOffsets {
            positions: packed.push(&self.positions),
            slots: packed.push(&self.slots),
            layout: [packed.push(&l.block_tables), packed.push(&l.query_seq), packed.push(&l.query_prefix), packed.push(&l.window_start), packed.push_bytes(&l.window_mask)],
            gathers: self.gathers.iter().map(|g| (packed.push(&g.ids), packed.push(&g.rows))).collect(),
        }
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
