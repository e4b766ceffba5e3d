//! Which keys each query row of a forward pass may attend to, as flat GPU-friendly arrays.

/// Per-query key visibility over a paged KV cache.
///
/// Query row `r` belongs to sequence `query_seq[r]`, whose logical KV positions map to physical
/// slots through `block_tables[query_seq[r] * max_blocks ..]`. It sees every logical position in
/// `[0, query_prefix[r])`, plus position `window_start[r] + j` for each `j < window_len` with
/// `window_mask[r * window_len + j] != 0` (the ancestors of a node in a draft tree).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AttentionLayout {
    /// Attention heads.
    pub n_head: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Token slots per KV block.
    pub block_size: usize,
    /// Width of one row of `block_tables`.
    pub max_blocks: usize,
    /// Physical block ids, `[n_sequences, max_blocks]`.
    pub block_tables: Vec<u32>,
    /// Sequence of each query row.
    pub query_seq: Vec<u32>,
    /// Number of leading logical positions each query sees in full.
    pub query_prefix: Vec<u32>,
    /// First logical position of each query's window.
    pub window_start: Vec<u32>,
    /// Window width shared by all queries (0 for plain causal attention).
    pub window_len: usize,
    /// Visibility of window keys, `[rows, window_len]`.
    pub window_mask: Vec<u8>,
}

impl AttentionLayout {
    /// Number of query rows.
    pub fn rows(&self) -> usize {
        self.query_seq.len()
    }

    /// Physical slot of logical position `pos` of sequence `seq`.
    pub fn slot(&self, seq: usize, pos: usize) -> usize {
        let block = self.block_tables[seq * self.max_blocks + pos / self.block_size] as usize;
        block * self.block_size + pos % self.block_size
    }

    /// Logical positions visible to query row `r`, in increasing order.
    pub fn visible_positions(&self, r: usize) -> impl Iterator<Item = usize> + '_ {
        let prefix = 0..self.query_prefix[r] as usize;
        let start = self.window_start[r] as usize;
        let mask = &self.window_mask[r * self.window_len..(r + 1) * self.window_len];
        prefix.chain(mask.iter().enumerate().filter(|(_, &m)| m != 0).map(move |(j, _)| start + j))
    }
}
