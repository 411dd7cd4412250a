//! (in progress)
pub mod ring;
