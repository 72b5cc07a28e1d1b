//! # turnpike-x402
//!
//! The x402 protocol core of Turnpike: pure types and functions, no I/O, no async.
//!
//! - [`PaymentRequirements`] / [`PaymentRequired`]: what a 402 offers, as the v2
//!   `PAYMENT-REQUIRED` header and the v1 JSON body.
//! - [`PaymentPayload`]: a payment from `PAYMENT-SIGNATURE` (v2) or `X-PAYMENT` (v1).
//! - [`verify()`]: the checks a server makes itself before asking a facilitator (scheme,
//!   network, asset, `payTo`, exact amount, time window, EIP-712 signature recovering `from`).
//! - [`facilitator`]: the `/verify` and `/settle` bodies and answers, and `PAYMENT-RESPONSE`.
//! - [`PayerKey`]: the paying side, signing an EIP-3009 authorisation for offered requirements.
//! - [`TokenAmount`]: exact amounts in base units; `"0.01"` USDC parses to 10000, exactly.
//!
//! Only the `exact` scheme on EVM chains via EIP-3009 (`transferWithAuthorization`) from
//! externally owned accounts is supported.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod amount;
pub mod facilitator;
pub mod network;
pub mod payer;
pub mod payload;
pub mod requirements;
pub mod verify;
pub mod wire;

pub use alloy_primitives::{Address, B256, U256, keccak256};
pub use amount::{AmountError, TokenAmount};
pub use facilitator::{SettleResponse, VerifyResponse};
pub use network::{Network, NetworkError};
pub use payer::{KeyError, PayerKey};
pub use payload::{Accepted, Authorization, EvmSignature, PaymentPayload};
pub use requirements::{
    PaymentRequired, PaymentRequirements, ResourceInfo, TokenDomain, X402Version,
};
pub use verify::{Verified, VerifyError, verify};
pub use wire::{DecodeError, parse_address};
