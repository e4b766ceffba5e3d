//! The host side of one MAR forward pass: which rows the encoder keeps and where every row of
//! the encoder and decoder inputs comes from, as row-gather index lists packed into one upload.
//!
//! A pass runs one sequence per class (the conditional and, with CFG, the unconditional branch),
//! per image of a batch and per query (a mask over the image's tokens: one for a plain step, one
//! per drafted step when CSpD's target verifies a window), branch-major, then image-major. Per
//! sequence the encoder sees the
//! `buffer_size` buffer rows and the visible tokens of its mask in position order (its
//! `enc_lens` entry: sequences of different masks have different lengths); the decoder sees all
//! `buffer_size + seq_len` positions (`full_len` rows).

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

/// One mask over a pass's tokens and the positions whose conditions are wanted under it.
#[derive(Clone, Copy, Debug)]
pub struct MarQuery<'a> {
    /// `[seq_len]`, true = masked (unknown).
    pub mask: &'a [bool],
    /// Token positions whose head conditions `z` the pass returns for this mask.
    pub positions: &'a [usize],
}

/// One image of a pass: several masks over its tokens, each query a sequence of its own per
/// class, so a target can condition every drafted step of a window on what precedes it.
#[derive(Clone, Copy, Debug)]
pub struct MarBatchInput<'a> {
    /// Token latents `[seq_len, token_dim]`, row-major grid; rows masked in a query are not
    /// read by its sequences.
    pub tokens: &'a [f32],
    /// One class per sequence of each query; `None` is the unconditional embedding.
    pub classes: &'a [Option<usize>],
    /// The masks and wanted positions.
    pub queries: &'a [MarQuery<'a>],
}

/// The index lists and encoder inputs of one pass (see the module doc).
#[derive(Clone, Debug)]
pub struct MarPass {
    /// Sequences in the pass: classes times queries, class-major.
    pub seqs: usize,
    /// Encoder rows of each sequence: buffer plus the visible tokens of its mask.
    pub enc_lens: Vec<usize>,
    /// Decoder rows per sequence: buffer plus every token.
    pub full_len: usize,
    /// Output rows of the pass: per sequence, its query's positions.
    pub outputs: usize,
    /// Encoder inputs `[enc_rows, token_dim]`: per sequence, zero rows for the buffer, then its
    /// visible tokens.
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
        let query = MarQuery { mask: input.mask, positions: input.positions };
        Self::batch(cfg, &[MarBatchInput { tokens: input.tokens, classes: input.classes, queries: &[query] }])
    }

    /// Build the pass of a batch of images, each with its queries over its own tokens, checking
    /// them against `cfg`. Every image has the same number of classes (branches); sequences run
    /// branch-major (every image's conditional sequences, then every image's unconditional
    /// ones), then image by image, then query by query.
    pub fn batch(cfg: &MarConfig, images: &[MarBatchInput]) -> Result<Self> {
        let Some(branches) = images.first().map(|image| image.classes.len()) else {
            return Err(Error::InvalidRequest("a MAR pass needs at least one image".into()));
        };
        for image in images {
            check_input(cfg, image)?;
            if image.classes.len() != branches {
                return Err(Error::InvalidRequest(format!("the images of a MAR pass need the same branches: {branches} and {} classes", image.classes.len())));
            }
        }
        let (seq_len, c, buffer) = (cfg.seq_len(), cfg.token_dim(), cfg.buffer_size);
        let full_len = buffer + seq_len;
        let visible: Vec<Vec<Vec<usize>>> = images.iter().map(|image| image.queries.iter().map(|q| (0..seq_len).filter(|&p| !q.mask[p]).collect()).collect()).collect();
        let sequences = || {
            (0..branches).flat_map(|branch| {
                images.iter().zip(&visible).flat_map(move |(image, visible)| visible.iter().zip(image.queries).map(move |(v, q)| (image.classes[branch], image.tokens, v, q)))
            })
        };
        let enc_lens: Vec<usize> = sequences().map(|(_, _, v, _)| buffer + v.len()).collect();
        let mut tokens = vec![0f32; enc_lens.iter().sum::<usize>() * c];
        let mut lists: [Vec<u32>; 7] = Default::default();
        let [enc_addend, enc_pos, dec_rows, dec_mask, dec_pos, out_rows, out_pos] = &mut lists;
        let mut first_enc_row = 0;
        for (s, (class, image_tokens, visible, query)) in sequences().enumerate() {
            // Encoder row of each decoder position (buffer rows and visible tokens).
            let mut enc_row_of = vec![NO_ROW; full_len];
            for (row, pos) in (0..buffer).chain(visible.iter().map(|p| buffer + p)).enumerate() {
                enc_row_of[pos] = (first_enc_row + row) as u32;
            }
            for (i, &p) in visible.iter().enumerate() {
                let at = (first_enc_row + buffer + i) * c;
                tokens[at..at + c].copy_from_slice(&image_tokens[p * c..(p + 1) * c]);
            }
            enc_addend.extend((0..enc_lens[s]).map(|row| if row < buffer { class_row(cfg, class) } else { cfg.class_num as u32 + 1 }));
            enc_pos.extend((0..buffer as u32).chain(visible.iter().map(|&p| (buffer + p) as u32)));
            dec_rows.extend(&enc_row_of);
            dec_mask.extend(enc_row_of.iter().map(|&r| if r == NO_ROW { 0 } else { NO_ROW }));
            dec_pos.extend(0..full_len as u32);
            out_rows.extend(query.positions.iter().map(|&p| (s * full_len + buffer + p) as u32));
            out_pos.extend(query.positions.iter().map(|&p| p as u32));
            first_enc_row += enc_lens[s];
        }
        let mut words = Packed::default();
        let outputs = out_rows.len();
        let [enc_addend, enc_pos, dec_rows, dec_mask, dec_pos, out_rows, out_pos] = lists.map(|list| RowGather::pack(&mut words, &list));
        Ok(Self { seqs: enc_lens.len(), enc_lens, full_len, outputs, tokens, words, enc_addend, enc_pos, dec_rows, dec_mask, dec_pos, out_rows, out_pos })
    }

    /// Encoder rows of the whole pass.
    pub fn enc_rows(&self) -> usize {
        self.enc_lens.iter().sum()
    }

    /// Hand the index lists to the backend (one upload).
    pub fn upload<B: Backend>(&self, backend: &B) -> Result<B::Words> {
        let mut words = backend.words(0)?;
        backend.upload_words_into(&mut words, self.words.words())?;
        Ok(words)
    }
}

/// Error unless `input` fits a model of `cfg`.
fn check_input(cfg: &MarConfig, input: &MarBatchInput) -> Result<()> {
    let (seq_len, c) = (cfg.seq_len(), cfg.token_dim());
    let bad = |what: String| Err(Error::InvalidRequest(what));
    if input.tokens.len() != seq_len * c {
        return bad(format!("a MAR pass needs {seq_len} tokens of {c} values, got {} values", input.tokens.len()));
    }
    if let Some(query) = input.queries.iter().find(|q| q.mask.len() != seq_len) {
        return bad(format!("a MAR pass needs {seq_len} mask flags per query, got {}", query.mask.len()));
    }
    if input.classes.is_empty() || input.queries.is_empty() {
        return bad("a MAR pass needs at least one sequence (class) and one query (mask)".into());
    }
    if let Some(class) = input.classes.iter().flatten().find(|&&k| k >= cfg.class_num) {
        return bad(format!("class {class} outside the model's {} classes", cfg.class_num));
    }
    if let Some(p) = input.queries.iter().flat_map(|q| q.positions).find(|&&p| p >= seq_len) {
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
        assert_eq!((pass.seqs, pass.enc_lens.clone(), pass.full_len, pass.outputs), (2, vec![4, 4], 6, 4));
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
    fn queries_of_different_masks_are_sequences_of_their_own_lengths_class_major() {
        // Query 0 sees token 0; query 1 sees tokens 0 and 2; both branches: 4 sequences.
        let tokens = [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5];
        let (first, second) = ([false, true, true, true], [false, true, false, true]);
        let queries = [MarQuery { mask: &first, positions: &[2] }, MarQuery { mask: &second, positions: &[1, 3] }];
        let pass = MarPass::batch(&config(), &[MarBatchInput { tokens: &tokens, classes: &[Some(4), None], queries: &queries }]).unwrap();
        assert_eq!((pass.seqs, pass.enc_lens.clone(), pass.enc_rows(), pass.outputs), (4, vec![3, 4, 3, 4], 14, 6));
        let (one, two) = ([0.0, 0.0, 0.0, 0.0, 0.0, 0.5], [0.0, 0.0, 0.0, 0.0, 0.0, 0.5, 2.0, 2.5]);
        assert_eq!(pass.tokens, [&one[..], &two, &one, &two].concat());
        assert_eq!(list(&pass, pass.enc_addend), [4, 4, 6, 4, 4, 6, 6, 5, 5, 6, 5, 5, 6, 6]);
        let none = NO_ROW;
        // Decoder rows continue the sequence's own encoder rows (sequence 1 starts at row 3).
        assert_eq!(list(&pass, pass.dec_rows)[6..12], [3, 4, 5, none, 6, none]);
        assert_eq!(list(&pass, pass.out_rows), [4, 6 + 3, 6 + 5, 12 + 4, 18 + 3, 18 + 5]);
        assert_eq!(list(&pass, pass.out_pos), [2, 1, 3, 2, 1, 3]);
    }

    #[test]
    fn images_of_a_batch_run_branch_major_each_with_its_own_tokens() {
        // Two images, one query each, both branches: cond A, cond B, uncond A, uncond B.
        let (a, b) = ([0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5], [9.0; 8]);
        let (mask_a, mask_b) = ([false, true, true, true], [true, true, false, true]);
        let (qa, qb) = ([MarQuery { mask: &mask_a, positions: &[1] }], [MarQuery { mask: &mask_b, positions: &[0, 3] }]);
        let images = [MarBatchInput { tokens: &a, classes: &[Some(4), None], queries: &qa }, MarBatchInput { tokens: &b, classes: &[Some(1), None], queries: &qb }];
        let pass = MarPass::batch(&config(), &images).unwrap();
        assert_eq!((pass.seqs, pass.enc_lens.clone(), pass.outputs), (4, vec![3, 3, 3, 3], 6));
        let (seq_a, seq_b) = ([0.0, 0.0, 0.0, 0.0, 0.0, 0.5], [0.0, 0.0, 0.0, 0.0, 9.0, 9.0]);
        assert_eq!(pass.tokens, [seq_a, seq_b, seq_a, seq_b].concat());
        assert_eq!(list(&pass, pass.enc_addend), [4, 4, 6, 1, 1, 6, 5, 5, 6, 5, 5, 6]);
        assert_eq!(list(&pass, pass.out_rows), [3, 6 + 2, 6 + 5, 12 + 3, 18 + 2, 18 + 5]);
        let one_branch = MarBatchInput { classes: &[Some(1)], ..images[1] };
        assert!(MarPass::batch(&config(), &[images[0], one_branch]).unwrap_err().to_string().contains("same branches"));
        assert!(MarPass::batch(&config(), &[]).unwrap_err().to_string().contains("at least one image"));
    }

    #[test]
    fn inputs_that_do_not_fit_the_model_are_invalid_requests() {
        let (tokens, mask) = ([0.0; 8], [true; 4]);
        let input = MarInput { tokens: &tokens, mask: &mask, classes: &[Some(0)], positions: &[0] };
        let err = |input: MarInput| MarPass::new(&config(), &input).unwrap_err().to_string();
        assert!(err(MarInput { tokens: &tokens[..6], ..input }).contains("4 tokens of 2 values"));
        assert!(err(MarInput { mask: &mask[..3], ..input }).contains("4 mask flags per query, got 3"));
        assert!(err(MarInput { classes: &[Some(5)], ..input }).contains("class 5 outside"));
        assert!(err(MarInput { positions: &[4], ..input }).contains("position 4 outside"));
        assert!(err(MarInput { classes: &[], ..input }).contains("at least one sequence (class) and one query"));
    }
}
