//! The library API.
