//! MAR generation (continuous tokens, masked autoregression in a random order): the step
//! schedule ([`schedule`]), one batched prediction of a model ([`TokenPredictor`]) and the loop
//! of a batch of images with their noise given from outside ([`generate_batch`]). The CSpD loop
//! (`decode::cspd`) shares all three.

mod generate;
mod predict;
pub mod schedule;

pub use generate::{generate_batch, generate_tokens, MarImage, MarNoise, MarSampling};
pub use predict::{ImageQueries, MarPredictor, StepQuery, TokenPredictor};
pub use schedule::CfgSchedule;
