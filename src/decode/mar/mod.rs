//! MAR generation (continuous tokens, masked autoregression in a random order): the step
//! schedule ([`schedule`]) and the loop of one image with its noise given from outside
//! ([`generate_tokens`]). The CSpD loop will share both.

mod generate;
pub mod schedule;

pub use generate::{generate_tokens, MarNoise, MarSampling};
pub use schedule::CfgSchedule;
