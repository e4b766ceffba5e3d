//! Continuous speculative decoding (CSpD, arXiv 2411.11925) for MAR: a small MAR drafts γ steps
//! with the target's order and noise, one target pass verifies them with the aligned-trajectory
//! acceptance test (variance-product factor times the final-step Gaussian ratio, in log space),
//! and a rejected token is redrawn from the residual with the target's cached final Gaussian as
//! proposal. Where the paper and the official code differ, [`CspdOptions`] chooses (the paper by
//! default, [`CspdOptions::official_code`] for the code). Spec: shared/notes/continuous-sd-spec.md.
//!
//! [`generate_cspd_batch`] runs a batch of images in shared passes, each image with its own
//! order, noise and ragged acceptance, and gives each the output it gets alone
//! ([`generate_cspd`]). Both run on any pair of [`TokenPredictor`](crate::decode::mar::TokenPredictor)s:
//! MAR models ([`crate::decode::mar::MarPredictor`]) or the toy Gaussian models of the tests,
//! whose laws are known in closed form.

mod generate;
mod options;
mod plan;
mod stats;
mod verify;
mod window;

pub use generate::{generate_cspd, generate_cspd_batch, CspdOutput};
pub use options::{CspdOptions, FinalStep, VarianceFactor, VerifyMode, WindowCfg};
pub use stats::CspdStats;
pub use verify::{verify_token, TokenLaw, Verdict};
