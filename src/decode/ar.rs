//! Plain autoregressive decoding: one target forward per image token (the baseline).

use crate::backend::Backend;
use crate::decode::guided::GuidedSeqs;
use crate::decode::DecodeContext;
use crate::error::Result;
use crate::kv::PagedKvCache;
use crate::model::{Gpt, StepRow, TokenInput};
use crate::sampling::dist;

/// Generate `gpt.config().block_size` tokens for `class`, one target forward per token.
pub fn generate_ar<B: Backend>(ctx: &mut DecodeContext<'_, B>, gpt: &Gpt<B>, cache: &mut PagedKvCache<B>, class: u32) -> Result<Vec<u32>> {
    let config = gpt.config();
    let total = config.block_size;
    let seqs = GuidedSeqs::open(cache, ctx.params.uses_cfg(), config.num_classes);
    let mut tokens = Vec::with_capacity(total);
    let mut input = TokenInput::Class(class);
    for i in 0..total {
        let rows = seqs.mirror(vec![StepRow::causal(seqs.cond, input, i)]);
        let out = gpt.forward(ctx.backend, cache, &rows)?;
        ctx.stats.target_forwards += 1;
        let probs = seqs.distributions(&out, 1, &ctx.params, &format!("image token {i}"))?.remove(0);
        let token = dist::sample(&probs, &mut ctx.rng) as u32;
        tokens.push(token);
        input = TokenInput::Image(token);
        (ctx.progress)(i + 1, total);
    }
    ctx.stats.tokens += total;
    Ok(tokens)
}
