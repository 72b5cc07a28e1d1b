//! # turnpike-l402
//!
//! The L402 protocol core of Turnpike: pure functions and types, no I/O.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod amount;
pub mod bolt11;
pub mod caveat;
pub mod challenge;
pub mod credential;
pub mod hash;
pub mod identifier;
pub mod macaroon;
pub mod root_key;
pub mod token;

pub use amount::{Msat, Sats};
pub use hash::{HexError, PaymentHash, Preimage, TokenId};
