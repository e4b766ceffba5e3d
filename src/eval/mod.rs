//! Image quality for `spire eval`: the evaluation network ([`net`]), FID in its feature space
//! ([`frechet`]), k-NN precision/recall ([`manifold`]), bootstrap intervals ([`bootstrap`]), the
//! shipped real-data reference ([`reference`]) and the scoring of one generated set
//! ([`quality`]). It sits beside the engine: it reads images, not models.

pub mod bootstrap;
pub mod frechet;
pub mod manifold;
pub mod net;
mod pool;
pub mod quality;
pub mod reference;
