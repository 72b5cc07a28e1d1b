//! Shared HTTP plumbing for backends that speak HTTP (the dev wallet now; LNbits, phoenixd,
//! LND REST later).

use std::error::Error as _;
use std::time::Duration;

use crate::BackendError;

/// Largest response body an HTTP backend reads, in bytes. Backends answer small JSON documents;
/// anything bigger is refused rather than buffered.
pub(crate) const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Makes sure rustls has a process-wide crypto provider, installing ring's if none is.
///
/// reqwest is built with `rustls-no-provider`, so building a client without a provider installed
/// would panic. The binary calls `rustls::crypto::ring::default_provider().install_default()` at
/// start; this function makes library code and tests safe regardless. Idempotent and cheap.
pub fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race with another installer is fine: some provider is installed either way.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// A reqwest client with the given connect and total timeouts, over rustls with ring.
pub(crate) fn client(
    connect: Duration,
    total: Duration,
) -> Result<reqwest::Client, reqwest::Error> {
    ensure_crypto_provider();
    reqwest::Client::builder()
        .connect_timeout(connect)
        .timeout(total)
        .build()
}

/// Maps a transport error to a [`BackendError`]: timeouts to `Timeout`, body decoding problems to
/// `InvalidResponse`, everything else (connect, TLS, reset...) to `Unreachable`.
pub(crate) fn map_transport_error(e: &reqwest::Error) -> BackendError {
    if e.is_timeout() {
        BackendError::Timeout
    } else if e.is_decode() {
        BackendError::InvalidResponse(error_chain(e))
    } else {
        BackendError::Unreachable(error_chain(e))
    }
}

/// An error and its sources on one line (reqwest's own message alone is often just
/// "error sending request").
pub(crate) fn error_chain(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// Reads a response body, refusing more than [`MAX_RESPONSE_BYTES`].
pub(crate) async fn read_body_limited(
    mut resp: reqwest::Response,
) -> Result<Vec<u8>, BackendError> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| map_transport_error(&e))? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(BackendError::InvalidResponse(format!(
                "response body larger than {MAX_RESPONSE_BYTES} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A short, printable excerpt of a body for error messages.
pub(crate) fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out: String = text.chars().filter(|c| !c.is_control()).take(200).collect();
    if text.chars().count() > 200 {
        out.push('…');
    }
    out
}
