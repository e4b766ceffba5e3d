//! The paged KV cache: append across blocks, rollback, fork with copy-on-write, exhaustion.

use spire::backend::{Backend, CpuBackend, ForwardPlan, KvDtype, KvShape};
use spire::kv::{PagedKvCache, QueryVisibility};
use spire::Error;

const SHAPE: KvShape = KvShape { n_layer: 2, num_blocks: 6, block_size: 4, n_head: 1, head_dim: 2, dtype: KvDtype::F32 };

/// Write a recognisable key/value (`value`) at the given slots of every layer.
fn write(cache: &mut PagedKvCache<CpuBackend>, slots: &[u32], value: f32) {
    let width = SHAPE.row_width();
    let qkv: Vec<f32> = slots.iter().flat_map(|_| std::iter::repeat_n(value, 3 * width)).collect();
    for layer in 0..SHAPE.n_layer {
        CpuBackend.kv_write(cache.pool_mut(), layer, &qkv, &ForwardPlan::slots(slots)).unwrap();
    }
}

/// Attention output of a single query with q = 0 (uniform weights) is the mean of visible values.
fn mean_value(cache: &PagedKvCache<CpuBackend>, seq: spire::kv::SeqId, len: usize) -> f32 {
    let layout = cache.layout(&[QueryVisibility { seq, prefix: len, window_start: len, window: vec![] }]).unwrap();
    let mut out = vec![0.0; SHAPE.row_width()];
    CpuBackend.attention(&vec![0.0; 3 * SHAPE.row_width()], cache.pool(), 1, &ForwardPlan::layout(layout), &mut out).unwrap();
    out[0]
}

#[test]
fn append_spans_blocks_and_rollback_frees_them() {
    let mut cache = PagedKvCache::new(&CpuBackend, SHAPE).unwrap();
    let seq = cache.add_sequence();
    let slots = cache.extend(&CpuBackend, seq, 10).unwrap();
    assert_eq!(slots.len(), 10);
    assert_eq!(cache.free_blocks(), 3);
    write(&mut cache, &slots, 1.0);
    cache.truncate(seq, 5).unwrap();
    assert_eq!(cache.len(seq).unwrap(), 5);
    assert_eq!(cache.free_blocks(), 4);
    assert!((mean_value(&cache, seq, 5) - 1.0).abs() < 1e-6);
    assert!(cache.slot(seq, 5).is_err(), "positions past the rollback are gone");
}

#[test]
fn fork_shares_blocks_and_copies_the_tail_on_write() {
    let mut cache = PagedKvCache::new(&CpuBackend, SHAPE).unwrap();
    let parent = cache.add_sequence();
    let slots = cache.extend(&CpuBackend, parent, 6).unwrap();
    write(&mut cache, &slots, 2.0);
    let free_before = cache.free_blocks();
    let child = cache.fork(parent).unwrap();
    assert_eq!(cache.free_blocks(), free_before, "a fork allocates nothing");
    // The child appends into the shared, half-full tail block: it must get its own copy.
    let child_slots = cache.extend(&CpuBackend, child, 7).unwrap();
    write(&mut cache, &child_slots, 9.0);
    assert_eq!(cache.slot(child, 0).unwrap(), cache.slot(parent, 0).unwrap(), "full blocks stay shared");
    assert_ne!(cache.slot(child, 5).unwrap(), cache.slot(parent, 5).unwrap(), "the tail block was copied");
    assert!((mean_value(&cache, parent, 6) - 2.0).abs() < 1e-6, "the parent is untouched");
    let expected_child = (6.0 * 2.0 + 9.0) / 7.0;
    assert!((mean_value(&cache, child, 7) - expected_child).abs() < 1e-6);
    cache.free_sequence(child).unwrap();
    cache.free_sequence(parent).unwrap();
    assert_eq!(cache.free_blocks(), SHAPE.num_blocks);
}

#[test]
fn exhaustion_is_reported_and_leaves_the_cache_usable() {
    let mut cache = PagedKvCache::new(&CpuBackend, SHAPE).unwrap();
    let seq = cache.add_sequence();
    let err = cache.extend(&CpuBackend, seq, 100).unwrap_err();
    assert!(matches!(err, Error::KvCacheExhausted { needed: 25, free: 6, total: 6 }), "{err}");
    assert!(err.to_string().contains("--kv-blocks"));
    assert_eq!(cache.extend(&CpuBackend, seq, 8).unwrap().len(), 8);
}

#[test]
fn tree_window_hides_non_ancestors() {
    let mut cache = PagedKvCache::new(&CpuBackend, SHAPE).unwrap();
    let seq = cache.add_sequence();
    let slots = cache.extend(&CpuBackend, seq, 4).unwrap();
    write(&mut cache, &slots[..2], 1.0);
    write(&mut cache, &slots[2..3], 5.0); // sibling A
    write(&mut cache, &slots[3..4], 7.0); // sibling B
    let sees_b_only = QueryVisibility { seq, prefix: 2, window_start: 2, window: vec![false, true] };
    let layout = cache.layout(&[sees_b_only]).unwrap();
    let mut out = vec![0.0; SHAPE.row_width()];
    CpuBackend.attention(&vec![0.0; 3 * SHAPE.row_width()], cache.pool(), 0, &ForwardPlan::layout(layout), &mut out).unwrap();
    assert!((out[0] - 3.0).abs() < 1e-6, "mean of 1, 1, 7 = 3, got {}", out[0]);
}
