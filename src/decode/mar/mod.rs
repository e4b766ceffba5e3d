//! MAR generation (continuous tokens, masked autoregression in a random order): the step
//! schedule ([`schedule`]), one batched prediction of a model ([`TokenPredictor`]) and the loop
//! of one image with its noise given from outside ([`generate_tokens`]). The CSpD loop
//! (`decode::cspd`) shares all three.

mod generate;
mod predict;
pub mod schedule;

pub use generate::{generate_tokens, generate_with, MarNoise, MarSampling};
pub use predict::{MarPredictor, StepQuery, TokenPredictor};
pub use schedule::CfgSchedule;
