//! The paged KV cache: a backend KV pool plus per-sequence block tables.
//!
//! Sequences grow by whole blocks, roll back rejected speculative tokens by truncation, and
//! fork by sharing blocks (copy-on-write for a partially filled, shared tail block).

use crate::backend::{AttentionLayout, Backend, KvShape};
use crate::error::{Error, Result};
use crate::kv::allocator::BlockAllocator;

/// Handle of a sequence inside a [`PagedKvCache`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SeqId(pub usize);

#[derive(Clone, Debug, Default)]
struct BlockTable {
    blocks: Vec<u32>,
    len: usize,
}

/// Which keys one query row sees (see [`AttentionLayout`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryVisibility {
    /// The query's sequence.
    pub seq: SeqId,
    /// Logical positions `[0, prefix)` are visible.
    pub prefix: usize,
    /// First logical position of the window.
    pub window_start: usize,
    /// Visibility of window positions `window_start + j`.
    pub window: Vec<bool>,
}

impl QueryVisibility {
    /// Plain causal visibility for a token at logical position `pos`.
    pub fn causal(seq: SeqId, pos: usize) -> Self {
        Self { seq, prefix: pos + 1, window_start: pos + 1, window: Vec::new() }
    }
}

/// A paged KV cache for one model: the backend pool plus the host-side block bookkeeping.
pub struct PagedKvCache<B: Backend> {
    pool: B::KvPool,
    shape: KvShape,
    allocator: BlockAllocator,
    tables: Vec<Option<BlockTable>>,
}

impl<B: Backend> PagedKvCache<B> {
    /// A cache of `shape.num_blocks` blocks on `backend`.
    pub fn new(backend: &B, shape: KvShape) -> Result<Self> {
        Ok(Self { pool: backend.kv_pool(shape)?, shape, allocator: BlockAllocator::new(shape.num_blocks), tables: Vec::new() })
    }

    /// The pool geometry.
    pub fn shape(&self) -> KvShape {
        self.shape
    }

    /// The backend pool (for kernels).
    pub fn pool(&self) -> &B::KvPool {
        &self.pool
    }

    /// The backend pool, mutably (for kernels that write KV).
    pub fn pool_mut(&mut self) -> &mut B::KvPool {
        &mut self.pool
    }

    /// Free blocks left.
    pub fn free_blocks(&self) -> usize {
        self.allocator.free_count()
    }

    /// Start an empty sequence.
    pub fn add_sequence(&mut self) -> SeqId {
        let table = Some(BlockTable::default());
        match self.tables.iter().position(Option::is_none) {
            Some(i) => {
                self.tables[i] = table;
                SeqId(i)
            }
            None => {
                self.tables.push(table);
                SeqId(self.tables.len() - 1)
            }
        }
    }

    fn table(&self, seq: SeqId) -> Result<&BlockTable> {
        self.tables.get(seq.0).and_then(Option::as_ref).ok_or_else(|| Error::Internal(format!("unknown KV sequence {}", seq.0)))
    }

    fn table_mut(&mut self, seq: SeqId) -> Result<&mut BlockTable> {
        self.tables.get_mut(seq.0).and_then(Option::as_mut).ok_or_else(|| Error::Internal(format!("unknown KV sequence {}", seq.0)))
    }

    /// Tokens stored for `seq`.
    pub fn len(&self, seq: SeqId) -> Result<usize> {
        Ok(self.table(seq)?.len)
    }

    /// Forget every sequence and free every block (the pool's memory is kept for reuse).
    pub fn clear(&mut self) {
        self.allocator = BlockAllocator::new(self.shape.num_blocks);
        self.tables.clear();
    }

    /// Release every block of `seq` and forget it.
    pub fn free_sequence(&mut self, seq: SeqId) -> Result<()> {
        let table = self.tables.get_mut(seq.0).and_then(Option::take).ok_or_else(|| Error::Internal(format!("unknown KV sequence {}", seq.0)))?;
        for b in table.blocks {
            self.allocator.release(b);
        }
        Ok(())
    }

    /// Grow `seq` to `new_len` tokens, allocating blocks (all or none) and un-sharing a shared
    /// tail block that the new tokens would write into. Returns the physical slots of the new
    /// logical positions `old_len..new_len`.
    pub fn extend(&mut self, backend: &B, seq: SeqId, new_len: usize) -> Result<Vec<u32>> {
        let bs = self.shape.block_size;
        let table = self.table(seq)?.clone();
        if new_len <= table.len {
            return Ok(Vec::new());
        }
        let needed_blocks = new_len.div_ceil(bs) - table.blocks.len();
        let tail_shared = table.len % bs != 0 && self.allocator.refs(table.blocks[table.len / bs]) > 1;
        let fresh = self.allocator.allocate(needed_blocks + usize::from(tail_shared))?;
        let mut blocks = table.blocks;
        let mut fresh = fresh.into_iter();
        if tail_shared {
            let tail_index = table.len / bs;
            let old = blocks[tail_index];
            let new = fresh.next().expect("allocated above");
            let src: Vec<u32> = (0..table.len % bs).map(|i| old * bs as u32 + i as u32).collect();
            let dst: Vec<u32> = (0..table.len % bs).map(|i| new * bs as u32 + i as u32).collect();
            backend.kv_copy_host(&mut self.pool, &src, &dst)?;
            self.allocator.release(old);
            blocks[tail_index] = new;
        }
        blocks.extend(fresh);
        let slots = (table.len..new_len).map(|p| blocks[p / bs] * bs as u32 + (p % bs) as u32).collect();
        *self.table_mut(seq)? = BlockTable { blocks, len: new_len };
        Ok(slots)
    }

    /// Roll `seq` back to its first `new_len` tokens (rejected speculative tokens), freeing blocks
    /// no longer needed.
    pub fn truncate(&mut self, seq: SeqId, new_len: usize) -> Result<()> {
        let bs = self.shape.block_size;
        let table = self.table_mut(seq)?;
        if new_len >= table.len {
            return Ok(());
        }
        table.len = new_len;
        let keep = new_len.div_ceil(bs);
        let dropped: Vec<u32> = table.blocks.drain(keep..).collect();
        for b in dropped {
            self.allocator.release(b);
        }
        Ok(())
    }

    /// A new sequence sharing all of `seq`'s tokens (blocks are shared, copied on write).
    pub fn fork(&mut self, seq: SeqId) -> Result<SeqId> {
        let table = self.table(seq)?.clone();
        for &b in &table.blocks {
            self.allocator.share(b);
        }
        let child = self.add_sequence();
        *self.table_mut(child)? = table;
        Ok(child)
    }

    /// Physical slot of logical position `pos` of `seq`.
    pub fn slot(&self, seq: SeqId, pos: usize) -> Result<u32> {
        let table = self.table(seq)?;
        if pos >= table.len {
            return Err(Error::Internal(format!("KV position {pos} beyond sequence length {}", table.len)));
        }
        let bs = self.shape.block_size;
        Ok(table.blocks[pos / bs] * bs as u32 + (pos % bs) as u32)
    }

    /// Copy the KV of logical positions `from[i]` to `to[i]` within `seq` (compacting an
    /// accepted tree path onto consecutive positions).
    pub fn move_positions(&mut self, backend: &B, seq: SeqId, from: &[usize], to: &[usize]) -> Result<()> {
        let src = from.iter().map(|&p| self.slot(seq, p)).collect::<Result<Vec<_>>>()?;
        let dst = to.iter().map(|&p| self.slot(seq, p)).collect::<Result<Vec<_>>>()?;
        backend.kv_copy_host(&mut self.pool, &src, &dst)
    }

    /// Build the attention layout for query rows with the given visibility.
    pub fn layout(&self, queries: &[QueryVisibility]) -> Result<AttentionLayout> {
        self.layout_padded(queries, 0)
    }

    /// [`Self::layout`] with block tables at least `min_blocks` wide (padded with block 0, never
    /// read), so that the layout's geometry stays the same as sequences grow (graph replays).
    pub fn layout_padded(&self, queries: &[QueryVisibility], min_blocks: usize) -> Result<AttentionLayout> {
        let mut seqs: Vec<SeqId> = Vec::new();
        let mut query_seq = Vec::with_capacity(queries.len());
        for q in queries {
            let index = match seqs.iter().position(|&s| s == q.seq) {
                Some(i) => i,
                None => {
                    seqs.push(q.seq);
                    seqs.len() - 1
                }
            };
            query_seq.push(index as u32);
        }
        let tables = seqs.iter().map(|&s| self.table(s)).collect::<Result<Vec<_>>>()?;
        let max_blocks = tables.iter().map(|t| t.blocks.len()).max().unwrap_or(0).max(min_blocks).max(1);
        let mut block_tables = vec![0u32; seqs.len() * max_blocks];
        for (i, t) in tables.iter().enumerate() {
            block_tables[i * max_blocks..i * max_blocks + t.blocks.len()].copy_from_slice(&t.blocks);
        }
        let window_len = queries.iter().map(|q| q.window.len()).max().unwrap_or(0);
        let mut window_mask = vec![0u8; queries.len() * window_len];
        for (r, q) in queries.iter().enumerate() {
            let len = tables[query_seq[r] as usize].len;
            let last_visible = q.prefix.max(q.window_start + q.window.iter().rposition(|&v| v).map_or(0, |j| j + 1));
            if last_visible > len {
                return Err(Error::Internal(format!("query sees position {} beyond KV length {len}", last_visible - 1)));
            }
            for (j, &v) in q.window.iter().enumerate() {
                window_mask[r * window_len + j] = u8::from(v);
            }
        }
        Ok(AttentionLayout {
            n_head: self.shape.n_head,
            head_dim: self.shape.head_dim,
            block_size: self.shape.block_size,
            max_blocks,
            block_tables,
            query_seq,
            query_prefix: queries.iter().map(|q| q.prefix as u32).collect(),
            window_start: queries.iter().map(|q| q.window_start as u32).collect(),
            window_len,
            window_mask,
        })
    }
}
