//! The host side of one MAR forward pass: which rows the encoder keeps and where every row of
//! the encoder and decoder inputs comes from, as row-gather index lists packed into one upload.
//!
//! A pass runs `seqs` sequences over the same tokens and mask (the conditional and, with CFG,
//! the unconditional branch), each with its own class row. Per sequence the encoder sees the
//! `buffer_size` buffer rows and the visible tokens in position order (`enc_len` rows); the
//! decoder sees all `buffer_size + seq_len` positions (`full_len` rows).

use crate::backend::{Backend, Packed, RowGather};
use crate::error::{Error, Result};
use crate::weights::MarConfig;

/// A row index that names no row: `gather_rows` writes a zero row for it.
const NO_ROW: u32 = u32::MAX;

/// What one MAR forward pass is asked: tokens, mask, the sequences' classes and the positions
/// whose conditions are wanted.
#[derive(Clone, Copy, Debug)]
pub struct MarInput<'a> {
    /// Token latents `[seq_len, token_dim]`, row-major grid; masked rows are never read.
    pub tokens: &'a [f32],
    /// `[seq_len]`, true = masked (unknown).
    pub mask: &'a [bool],
    /// One class per sequence; `None` is the unconditional embedding (`fake_latent`).
    pub classes: &'a [Option<usize>],
    /// Token positions whose head conditions `z` the pass returns, per sequence.
    pub positions: &'a [usize],
}

/// The index lists and encoder inputs of one pass (see the module doc).
#[derive(Clone, Debug)]
pub struct MarPass {
    /// Sequences in the pass.
    pub seqs: usize,
    /// Encoder rows per sequence: buffer plus visible tokens.
    pub enc_len: usize,
    /// Decoder rows per sequence: buffer plus every token.
    pub full_len: usize,
    /// Output rows per sequence (`MarInput::positions`).
    pub outputs: usize,
    /// Encoder inputs `[seqs * enc_len, token_dim]`: zero rows for the buffer, then the visible
    /// tokens.
    pub tokens: Vec<f32>,
    /// Every index list below, packed for one upload.
    pub words: Packed,
    /// Per encoder row, its row of the addend table (a class row, `fake_latent`, or the
    /// `z_proj` bias row for a token).
    pub enc_addend: RowGather,
    /// Per encoder row, its row of `encoder_pos_embed_learned`.
    pub enc_pos: RowGather,
    /// Per decoder row, the encoder row it continues, or none for a masked token.
    pub dec_rows: RowGather,
    /// Per decoder row, row 0 (`mask_token`) for a masked token, none otherwise.
    pub dec_mask: RowGather,
    /// Per decoder row, its row of `decoder_pos_embed_learned`.
    pub dec_pos: RowGather,
    /// Per output, its decoder row.
    pub out_rows: RowGather,
    /// Per output, its row of `diffusion_pos_embed_learned`.
    pub out_pos: RowGather,
}

/// Row of the addend table for a sequence's class (`class_num` is `fake_latent`).
fn class_row(cfg: &MarConfig, class: Option<usize>) -> u32 {
    class.unwrap_or(cfg.class_num) as u32
}

impl MarPass {
    /// Build the pass of `input` for a model of `cfg`, checking the input against it.
    pub fn new(cfg: &MarConfig, input: &MarInput) -> Result<Self> {
        check_input(cfg, input)?;
        let (seq_len, c, buffer) = (cfg.seq_len(), cfg.token_dim(), cfg.buffer_size);
        let visible: Vec<usize> = (0..seq_len).filter(|&p| !input.mask[p]).collect();
        let (enc_len, full_len) = (buffer + visible.len(), buffer + seq_len);
        let seqs = input.classes.len();
        // Encoder row of each decoder position (buffer rows and visible tokens), per sequence.
        let mut enc_row_of = vec![NO_ROW; full_len];
        for (row, pos) in (0..buffer).chain(visible.iter().map(|p| buffer + p)).enumerate() {
            enc_row_of[pos] = row as u32;
        }
        let mut tokens = vec![0f32; seqs * enc_len * c];
        let mut lists: [Vec<u32>; 7] = Default::default();
        let [enc_addend, enc_pos, dec_rows, dec_mask, dec_pos, out_rows, out_pos] = &mut lists;
        for (s, &class) in input.classes.iter().enumerate() {
            for (i, &p) in visible.iter().enumerate() {
                let at = (s * enc_len + buffer + i) * c;
                tokens[at..at + c].copy_from_slice(&input.tokens[p * c..(p + 1) * c]);
            }
            enc_addend.extend((0..enc_len).map(|row| if row < buffer { class_row(cfg, class) } else { cfg.class_num as u32 + 1 }));
            enc_pos.extend((0..buffer as u32).chain(visible.iter().map(|&p| (buffer + p) as u32)));
            let first_enc_row = (s * enc_len) as u32;
            dec_rows.extend(enc_row_of.iter().map(|&r| if r == NO_ROW { NO_ROW } else { first_enc_row + r }));
            dec_mask.extend(enc_row_of.iter().map(|&r| if r == NO_ROW { 0 } else { NO_ROW }));
            dec_pos.extend(0..full_len as u32);
            out_rows.extend(input.positions.iter().map(|&p| (s * full_len + buffer + p) as u32));
            out_pos.extend(input.positions.iter().map(|&p| p as u32));
        }
        let mut words = Packed::default();
        let [enc_addend, enc_pos, dec_rows, dec_mask, dec_pos, out_rows, out_pos] = lists.map(|list| RowGather::pack(&mut words, &list));
        Ok(Self { seqs, enc_len, full_len, outputs: input.positions.len(), tokens, words, enc_addend, enc_pos, dec_rows, dec_mask, dec_pos, out_rows, out_pos })
    }

    /// Hand the index lists to the backend (one upload).
    pub fn upload<B: Backend>(&self, backend: &B) -> Result<B::Words> {
        let mut words = backend.words(0)?;
        backend.upload_words_into(&mut words, self.words.words())?;
        Ok(words)
    }
}

/// Error unless `input` fits a model of `cfg`.
fn check_input(cfg: &MarConfig, input: &MarInput) -> Result<()> {
    let (seq_len, c) = (cfg.seq_len(), cfg.token_dim());
    let bad = |what: String| Err(Error::InvalidRequest(what));
    if input.tokens.len() != seq_len * c || input.mask.len() != seq_len {
        return bad(format!("a MAR pass needs {seq_len} tokens of {c} values and {seq_len} mask flags, got {} values and {} flags", input.tokens.len(), input.mask.len()));
    }
    if input.classes.is_empty() {
        return bad("a MAR pass needs at least one sequence (class)".into());
    }
    if let Some(class) = input.classes.iter().flatten().find(|&&k| k >= cfg.class_num) {
        return bad(format!("class {class} outside the model's {} classes", cfg.class_num));
    }
    if let Some(p) = input.positions.iter().find(|&&p| p >= seq_len) {
        return bad(format!("position {p} outside the {seq_len} tokens"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> MarConfig {
        let text = r#"{"file": "m", "img_size": 32, "vae_stride": 16, "patch_size": 1, "vae_embed_dim": 2,
            "encoder_embed_dim": 8, "encoder_depth": 1, "encoder_num_heads": 2, "decoder_embed_dim": 8,
            "decoder_depth": 1, "decoder_num_heads": 2, "mlp_ratio": 4.0, "class_num": 5, "buffer_size": 2,
            "diffloss_d": 1, "diffloss_w": 8}"#;
        serde_json::from_str(text).unwrap()
    }

    fn list(pass: &MarPass, gather: RowGather) -> Vec<u32> {
        pass.words.words()[gather.at..gather.at + gather.rows].to_vec()
    }

    #[test]
    fn encoder_keeps_buffer_and_visible_rows_and_decoder_scatters_them_back() {
        // 2x2 grid, tokens 1 and 3 masked, conditional class 4 and the unconditional branch.
        let tokens = [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5];
        let mask = [false, true, false, true];
        let pass = MarPass::new(&config(), &MarInput { tokens: &tokens, mask: &mask, classes: &[Some(4), None], positions: &[3, 1] }).unwrap();
        assert_eq!((pass.seqs, pass.enc_len, pass.full_len, pass.outputs), (2, 4, 6, 2));
        let seq_tokens = [0.0, 0.0, 0.0, 0.0, 0.0, 0.5, 2.0, 2.5];
        assert_eq!(pass.tokens, [seq_tokens, seq_tokens].concat());
        assert_eq!(list(&pass, pass.enc_addend), [4, 4, 6, 6, 5, 5, 6, 6]);
        assert_eq!(list(&pass, pass.enc_pos), [0, 1, 2, 4, 0, 1, 2, 4]);
        let none = NO_ROW;
        assert_eq!(list(&pass, pass.dec_rows), [0, 1, 2, none, 3, none, 4, 5, 6, none, 7, none]);
        assert_eq!(list(&pass, pass.dec_mask), [none, none, none, 0, none, 0, none, none, none, 0, none, 0]);
        assert_eq!(list(&pass, pass.dec_pos), [0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5]);
        assert_eq!(list(&pass, pass.out_rows), [5, 3, 11, 9]);
        assert_eq!(list(&pass, pass.out_pos), [3, 1, 3, 1]);
    }

    #[test]
    fn inputs_that_do_not_fit_the_model_are_invalid_requests() {
        let (tokens, mask) = ([0.0; 8], [true; 4]);
        let input = MarInput { tokens: &tokens, mask: &mask, classes: &[Some(0)], positions: &[0] };
        let err = |input: MarInput| MarPass::new(&config(), &input).unwrap_err().to_string();
        assert!(err(MarInput { tokens: &tokens[..6], ..input }).contains("4 tokens of 2 values"));
        assert!(err(MarInput { classes: &[Some(5)], ..input }).contains("class 5 outside"));
        assert!(err(MarInput { positions: &[4], ..input }).contains("position 4 outside"));
        assert!(err(MarInput { classes: &[], ..input }).contains("at least one sequence"));
    }
}
