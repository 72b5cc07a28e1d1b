//! # turnpike-aperture
//!
//! Moving from Lightning Labs' Aperture to Turnpike without losing paying customers:
//!
//! - [`secrets`]: accept the L402 tokens an existing Aperture minted, verifying them with the
//!   root keys in Aperture's own database (read-only, cached);
//! - [`import`]: convert an `aperture.yaml` into a `turnpike.toml`, listing what cannot be
//!   converted.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod import;
pub mod secrets;

pub use secrets::{ApertureError, AperturePolicy, ApertureTokens};
