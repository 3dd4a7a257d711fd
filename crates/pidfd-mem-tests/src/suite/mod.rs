//! The tests, grouped by contract section.

pub mod access;
pub mod control;
pub mod life;
pub mod open;
pub mod race;
pub mod security;
