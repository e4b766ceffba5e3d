//! MAR's diffusion head (DiffLoss): the `SimpleMLPAdaLN` network over the backend
//! ([`DiffusionHead`]), its respaced cosine schedule in f64 ([`DiffusionSchedule`]) and the DDPM
//! sampler that takes its noise from outside ([`sample`]); spec §1.5.

mod head;
mod sampler;
mod schedule;

pub use head::{timestep_sinusoid, DiffusionHead, FREQUENCY_DIM};
pub use sampler::{sample, HeadNoise, HeadSample};
pub use schedule::{cosine_betas, space_timesteps, DiffusionSchedule, PosteriorStep};
