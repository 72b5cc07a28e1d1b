//! Shared HTTP plumbing for backends that speak HTTP (the dev wallet, LNbits, and the node
//! backends lnd, Core Lightning and phoenixd through [`NodeHttp`]).

use std::error::Error as _;
use std::time::Duration;

use crate::BackendError;
use crate::rules::MAX_RESPONSE_BYTES;

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

/// A reqwest client builder with the given connect and total timeouts, over rustls with ring.
fn builder(connect: Duration, total: Duration) -> reqwest::ClientBuilder {
    ensure_crypto_provider();
    reqwest::Client::builder()
        .connect_timeout(connect)
        .timeout(total)
}

/// A reqwest client with the given connect and total timeouts, over rustls with ring.
pub(crate) fn client(
    connect: Duration,
    total: Duration,
) -> Result<reqwest::Client, reqwest::Error> {
    builder(connect, total).build()
}

/// Like [`client`], but never following redirects: for APIs authenticated by a custom header
/// (an API key), which reqwest would otherwise forward to wherever a redirect points.
pub(crate) fn api_client(
    connect: Duration,
    total: Duration,
) -> Result<reqwest::Client, reqwest::Error> {
    builder(connect, total)
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

/// Like [`api_client`], connecting to public addresses only ([`crate::net_guard::PublicOnly`]):
/// for a URL a third party gave.
pub(crate) fn public_api_client(
    connect: Duration,
    total: Duration,
) -> Result<reqwest::Client, reqwest::Error> {
    crate::net_guard::public_only(
        builder(connect, total).redirect(reqwest::redirect::Policy::none()),
    )
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

/// Reads a response body of at most `limit` bytes ([`MAX_RESPONSE_BYTES`] for ordinary
/// answers, [`crate::rules::MAX_PAYMENT_BYTES`] for payment results).
pub(crate) async fn read_limited(
    mut resp: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, BackendError> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| map_transport_error(&e))? {
        if body.len() + chunk.len() > limit {
            return Err(BackendError::InvalidResponse(format!(
                "response body larger than {limit} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
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

/// A short, printable excerpt of a body for error messages.
pub(crate) fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out: String = text.chars().filter(|c| !c.is_control()).take(200).collect();
    if text.chars().count() > 200 {
        out.push('…');
    }
    out
}

/// Whether a request may be sent again after a failure, decided by what repeating it would do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Idempotency {
    /// Repeating it is harmless (reads; creating an invoice, which at worst leaves an unused
    /// one): retried after any transient failure — connection errors, timeouts, resets, and
    /// `502`/`503`/`504` answers.
    Idempotent,
    /// Repeating it may act twice (paying): retried only when no connection was established, so
    /// the request cannot have reached the server.
    ConnectOnly,
}

/// How often and how fast to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RetryPolicy {
    /// Retries after the first attempt (0: a single attempt).
    pub(crate) retries: u32,
    /// Pause before the first retry; it doubles for each further one, up to [`MAX_BACKOFF`].
    pub(crate) backoff: Duration,
}

/// Longest pause between two attempts.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Default pause before the first retry.
pub(crate) const DEFAULT_BACKOFF: Duration = Duration::from_millis(100);

impl RetryPolicy {
    /// `retries` retries with the default backoff.
    pub(crate) fn new(retries: u32) -> RetryPolicy {
        RetryPolicy {
            retries,
            backoff: DEFAULT_BACKOFF,
        }
    }

    /// The pause before retry number `retry` (0-based).
    fn delay(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry.min(16)).unwrap_or(u32::MAX);
        self.backoff.saturating_mul(factor).min(MAX_BACKOFF)
    }
}

/// One failed attempt: the error, and whether another attempt is safe and may help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AttemptError {
    /// What went wrong.
    pub(crate) error: BackendError,
    /// Whether to try again (when retries are left).
    pub(crate) retryable: bool,
}

impl AttemptError {
    /// A failure that another attempt cannot fix.
    pub(crate) fn fatal(error: BackendError) -> AttemptError {
        AttemptError {
            error,
            retryable: false,
        }
    }
}

/// Reads an answer's body (at most `limit` bytes) within an attempt: a transient failure
/// (timeout, reset) is retryable when the call is idempotent.
async fn read_attempt(
    resp: reqwest::Response,
    limit: usize,
    idempotent: bool,
) -> Result<Vec<u8>, AttemptError> {
    read_limited(resp, limit)
        .await
        .map_err(|error| AttemptError {
            retryable: idempotent && error.is_transient(),
            error,
        })
}

/// One attempt of a JSON call to a node (lnd, Core Lightning, phoenixd): sends `req`, reads
/// at most `limit` bytes, turns an error status into `map_error`'s error (retryable when the
/// node says it is unavailable and the call is idempotent) and parses the JSON answer.
/// `service` and `what` name the call in errors.
pub(crate) async fn json_attempt<T: serde::de::DeserializeOwned>(
    req: reqwest::RequestBuilder,
    idempotency: Idempotency,
    limit: usize,
    (service, what): (&'static str, &'static str),
    map_error: impl FnOnce(reqwest::StatusCode, &[u8]) -> BackendError,
) -> Result<T, AttemptError> {
    let idempotent = idempotency == Idempotency::Idempotent;
    let resp = req
        .send()
        .await
        .map_err(|e| attempt_error(&e, idempotency))?;
    let status = resp.status();
    let bytes = read_attempt(resp, limit, idempotent).await?;
    if !status.is_success() {
        return Err(AttemptError {
            error: map_error(status, &bytes),
            retryable: idempotent && is_unavailable_status(status),
        });
    }
    serde_json::from_slice::<T>(&bytes).map_err(|e| {
        AttemptError::fatal(BackendError::InvalidResponse(format!(
            "{service} {what}: {e}: {}",
            snippet(&bytes)
        )))
    })
}

/// Runs `attempt` until it succeeds, fails with a non-retryable error, or `policy.retries`
/// retries are spent, pausing between attempts. `what` names the call in debug logs (it must
/// not contain secrets). Returns the last error.
pub(crate) async fn retry<T, F, Fut>(
    policy: RetryPolicy,
    what: &str,
    mut attempt: F,
) -> Result<T, BackendError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, AttemptError>>,
{
    let mut retry_number = 0;
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(AttemptError { error, retryable }) => {
                if !retryable || retry_number >= policy.retries {
                    return Err(error);
                }
                let delay = policy.delay(retry_number);
                tracing::debug!(
                    "{what}: attempt {} failed ({error}); retrying in {delay:?}",
                    retry_number + 1
                );
                tokio::time::sleep(delay).await;
                retry_number += 1;
            }
        }
    }
}

/// Sends the request that `build` makes and reads its body (at most [`MAX_RESPONSE_BYTES`]),
/// retrying as `idempotency` allows. `build` is called once per attempt.
///
/// Returns the status and body of the answer, whatever the status, except that `502`, `503` and
/// `504` (a proxy or the server saying it cannot serve now) become
/// [`BackendError::Unreachable`] / [`BackendError::Timeout`] once retries are spent (at once for
/// [`Idempotency::ConnectOnly`]).
pub(crate) async fn send_with_retries<F>(
    policy: RetryPolicy,
    idempotency: Idempotency,
    what: &str,
    build: F,
) -> Result<(reqwest::StatusCode, Vec<u8>), BackendError>
where
    F: Fn() -> reqwest::RequestBuilder,
{
    let idempotent = idempotency == Idempotency::Idempotent;
    let build = &build;
    retry(policy, what, || async move {
        let resp = build().send().await.map_err(|e| {
            let error = map_transport_error(&e);
            // A connect error means nothing was sent. Anything else may have reached the server.
            let retryable = e.is_connect() || (idempotent && error.is_transient());
            AttemptError { error, retryable }
        })?;
        let status = resp.status();
        let body = read_attempt(resp, MAX_RESPONSE_BYTES, idempotent).await?;
        match status {
            reqwest::StatusCode::GATEWAY_TIMEOUT => Err(AttemptError {
                error: BackendError::Timeout,
                retryable: idempotent,
            }),
            reqwest::StatusCode::BAD_GATEWAY | reqwest::StatusCode::SERVICE_UNAVAILABLE => {
                Err(AttemptError {
                    error: BackendError::Unreachable(format!("HTTP {status}: {}", snippet(&body))),
                    retryable: idempotent,
                })
            }
            _ => Ok((status, body)),
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy {
            retries: 40,
            backoff: Duration::from_millis(100),
        };
        assert_eq!(p.delay(0), Duration::from_millis(100));
        assert_eq!(p.delay(1), Duration::from_millis(200));
        assert_eq!(p.delay(3), Duration::from_millis(800));
        assert_eq!(p.delay(5), MAX_BACKOFF);
        assert_eq!(p.delay(39), MAX_BACKOFF);
    }

    fn fast(retries: u32) -> RetryPolicy {
        RetryPolicy {
            retries,
            backoff: Duration::from_millis(1),
        }
    }

    #[tokio::test]
    async fn retries_only_retryable_errors_and_at_most_the_budget() {
        let calls = &AtomicU32::new(0);
        let r: Result<(), _> = retry(fast(2), "t", || async move {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(AttemptError {
                error: BackendError::Timeout,
                retryable: true,
            })
        })
        .await;
        assert_eq!(r, Err(BackendError::Timeout));
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        calls.store(0, Ordering::SeqCst);
        let r: Result<(), _> = retry(fast(5), "t", || async move {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(AttemptError::fatal(BackendError::AlreadyPaid))
        })
        .await;
        assert_eq!(r, Err(BackendError::AlreadyPaid));
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        calls.store(0, Ordering::SeqCst);
        let r = retry(fast(5), "t", || async move {
            if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                Err(AttemptError {
                    error: BackendError::Unreachable("x".into()),
                    retryable: true,
                })
            } else {
                Ok(7)
            }
        })
        .await;
        assert_eq!(r, Ok(7));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    /// A server that answers `503` to every request and counts them.
    async fn unavailable_server() -> (String, Arc<AtomicU32>) {
        let hits = Arc::new(AtomicU32::new(0));
        let counter = hits.clone();
        let app = axum::Router::new().fallback(move || {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                (axum::http::StatusCode::SERVICE_UNAVAILABLE, "busy")
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}/"), hits)
    }

    #[tokio::test]
    async fn unsafe_requests_are_not_repeated_once_sent() {
        let (url, hits) = unavailable_server().await;
        let c = client(Duration::from_secs(2), Duration::from_secs(5)).unwrap();

        let r = send_with_retries(fast(3), Idempotency::ConnectOnly, "pay", || c.post(&url)).await;
        assert!(matches!(r, Err(BackendError::Unreachable(ref m)) if m.contains("busy")));
        assert_eq!(
            hits.load(Ordering::SeqCst),
            1,
            "a sent payment must not be repeated"
        );

        hits.store(0, Ordering::SeqCst);
        let r = send_with_retries(fast(3), Idempotency::Idempotent, "get", || c.get(&url)).await;
        assert!(matches!(r, Err(BackendError::Unreachable(_))));
        assert_eq!(hits.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn connect_errors_are_retried_even_for_unsafe_requests() {
        // A port with nothing listening: bind, note the port, close.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        drop(listener);
        let c = client(Duration::from_secs(2), Duration::from_secs(5)).unwrap();
        let builds = AtomicU32::new(0);
        let r = send_with_retries(fast(2), Idempotency::ConnectOnly, "pay", || {
            builds.fetch_add(1, Ordering::SeqCst);
            c.post(&url)
        })
        .await;
        assert!(matches!(r, Err(BackendError::Unreachable(_))), "{r:?}");
        assert_eq!(builds.load(Ordering::SeqCst), 3);
    }
}

// ---------------------------------------------------------------------------------------------
// Deadlines, error classification and base URLs for the node backends (LND, Core Lightning,
// phoenixd); they retry with [`retry`] above.

/// Runs `call` (typically a [`retry`] loop) within `deadline`: past it, the call in flight is
/// dropped and the result is [`BackendError::Timeout`].
pub(crate) async fn within<T>(
    deadline: Duration,
    what: &str,
    call: impl std::future::Future<Output = Result<T, BackendError>>,
) -> Result<T, BackendError> {
    match tokio::time::timeout(deadline, call).await {
        Ok(result) => result,
        Err(_) => {
            tracing::debug!("{what}: no answer within {deadline:?}");
            Err(BackendError::Timeout)
        }
    }
}

/// Classifies a transport error (no HTTP answer) like [`send_with_retries`] does, except that a
/// server certificate that does not match a pinned one gives a precise, final
/// [`BackendError::Unreachable`] (`TLS: the server's certificate ... does not match the pinned
/// certificate ...`).
pub(crate) fn attempt_error(e: &reqwest::Error, idempotency: Idempotency) -> AttemptError {
    if let Some(mismatch) = pin_mismatch_in(e) {
        return AttemptError::fatal(BackendError::Unreachable(format!("TLS: {mismatch}")));
    }
    let error = map_transport_error(e);
    // A connect error means nothing was sent. Anything else may have reached the server.
    let retryable =
        e.is_connect() || (idempotency == Idempotency::Idempotent && error.is_transient());
    AttemptError { error, retryable }
}

/// Whether an HTTP status means "the service is not available right now" (a proxy in front of
/// it, or the service starting): worth retrying for calls that are safe to repeat.
pub(crate) fn is_unavailable_status(status: reqwest::StatusCode) -> bool {
    matches!(
        status,
        reqwest::StatusCode::BAD_GATEWAY
            | reqwest::StatusCode::SERVICE_UNAVAILABLE
            | reqwest::StatusCode::GATEWAY_TIMEOUT
    )
}

/// Normalises a base URL so that relative paths join below it: checks the scheme (`http` or
/// `https`) and the host, and makes the path end with `/`.
pub(crate) fn base_url(url: &str) -> Result<reqwest::Url, String> {
    // Errors never repeat the URL: it may hold a credential.
    let mut parsed = reqwest::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || !parsed.has_host() {
        return Err("not an http(s) URL with a host".into());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        // Never echo it: it holds a credential.
        return Err("credentials in the URL are not supported (use the secret settings)".into());
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err("a query or fragment is not allowed in the URL".into());
    }
    if !parsed.path().ends_with('/') {
        let path = format!("{}/", parsed.path());
        parsed.set_path(&path);
    }
    Ok(parsed)
}

// ---------------------------------------------------------------------------------------------
// Certificate pinning (LND's tls.cert, Core Lightning clnrest's server.pem).

/// A [`ServerCertVerifier`](rustls::client::danger::ServerCertVerifier) that accepts exactly the
/// pinned certificate(s): the server's end-entity certificate must be byte-for-byte (DER) one of
/// them. Nothing else is checked about it (issuer, names, validity period, CA flag): the pin is
/// the trust. This is what LND needs: its self-signed `tls.cert` has `CA:TRUE`, which the
/// standard WebPKI verifier rejects as an end-entity certificate (`CaUsedAsEndEntity`).
/// Handshake signatures are verified normally, with ring's algorithms, so only the holder of the
/// pinned certificate's key can complete the handshake.
#[derive(Debug)]
pub(crate) struct PinnedCertVerifier {
    pinned: Vec<rustls::pki_types::CertificateDer<'static>>,
    pinned_from: String,
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

/// The error a [`PinnedCertVerifier`] raises for a certificate that is not the pinned one.
#[derive(Clone)]
pub(crate) struct PinMismatch {
    presented_sha256: String,
    pinned_from: String,
}

impl std::fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the server's certificate (sha256 {}) does not match the pinned certificate {}",
            self.presented_sha256, self.pinned_from
        )
    }
}

/// Same as `Display`: rustls prints this error with `{:?}`.
impl std::fmt::Debug for PinMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for PinMismatch {}

/// Finds a [`PinMismatch`] in the sources of a reqwest error.
fn pin_mismatch_in(e: &reqwest::Error) -> Option<PinMismatch> {
    fn from_rustls(err: &rustls::Error) -> Option<PinMismatch> {
        match err {
            rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)) => {
                other.0.downcast_ref::<PinMismatch>().cloned()
            }
            _ => None,
        }
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(found) = err.downcast_ref::<rustls::Error>().and_then(from_rustls) {
            return Some(found);
        }
        // The connector nests io::Errors around the rustls error (`Other(InvalidData(...))`).
        let mut io = err.downcast_ref::<std::io::Error>();
        while let Some(inner) = io.and_then(|io| io.get_ref()) {
            if let Some(found) = inner.downcast_ref::<rustls::Error>().and_then(from_rustls) {
                return Some(found);
            }
            io = inner.downcast_ref::<std::io::Error>();
        }
        source = err.source();
    }
    None
}

impl PinnedCertVerifier {
    /// A verifier pinning every certificate in `pem` (read from `pinned_from`, named in errors).
    pub(crate) fn from_pem(pem: &[u8], pinned_from: &str) -> Result<Self, String> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let pinned = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{pinned_from}: not a PEM certificate file: {e}"))?;
        if pinned.is_empty() {
            return Err(format!("{pinned_from}: no PEM certificate in the file"));
        }
        Ok(PinnedCertVerifier {
            pinned,
            pinned_from: pinned_from.to_owned(),
            algorithms: rustls::crypto::ring::default_provider().signature_verification_algorithms,
        })
    }
}

impl rustls::client::danger::ServerCertVerifier for PinnedCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        if self
            .pinned
            .iter()
            .any(|pinned| pinned.as_ref() == end_entity.as_ref())
        {
            return Ok(rustls::client::danger::ServerCertVerified::assertion());
        }
        use bitcoin::hashes::{Hash as _, sha256};
        let mismatch = PinMismatch {
            presented_sha256: sha256::Hash::hash(end_entity.as_ref()).to_string(),
            pinned_from: self.pinned_from.clone(),
        };
        Err(rustls::Error::InvalidCertificate(
            rustls::CertificateError::Other(rustls::OtherError(std::sync::Arc::new(mismatch))),
        ))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A reqwest client for a node backend: connect timeout `connect`, no overall timeout (callers
/// bound each call with [`with_retries`]), and, when `pinned_cert` (a PEM file's bytes and its
/// path) is given, TLS that trusts only that certificate ([`PinnedCertVerifier`]); with
/// `public_only`, connecting only to public addresses ([`crate::net_guard::PublicOnly`]).
pub(crate) fn node_client(
    connect: Duration,
    pinned_cert: Option<(&[u8], &str)>,
    public_only: bool,
) -> Result<reqwest::Client, String> {
    ensure_crypto_provider();
    let mut builder = reqwest::Client::builder()
        .connect_timeout(connect)
        .redirect(reqwest::redirect::Policy::none());
    if public_only {
        builder = crate::net_guard::public_only(builder);
    }
    if let Some((pem, path)) = pinned_cert {
        let verifier = PinnedCertVerifier::from_pem(pem, path)?;
        let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS configuration: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(verifier))
        .with_no_client_auth();
        builder = builder.tls_backend_preconfigured(tls);
    }
    builder.build().map_err(|e| error_chain(&e))
}

/// The settings of a node backend reached over HTTP (lnd, Core Lightning, phoenixd), as its
/// configuration gives them.
pub(crate) struct NodeSettings<'a> {
    /// What the node is called in messages, e.g. `"lnd REST"`.
    pub(crate) service: &'static str,
    /// What its credential is called, e.g. `"macaroon"`.
    pub(crate) credential: &'static str,
    pub(crate) url: &'a str,
    /// A certificate to pin, when the backend takes one.
    pub(crate) tls_cert: Option<PinnedCert<'a>>,
    /// Connect to public addresses only (a URL a third party gave: a hub provider's node).
    pub(crate) public_only: bool,
    pub(crate) timeout_secs: u64,
    pub(crate) retries: u32,
    pub(crate) payment_timeout_secs: u64,
}

/// Where a node backend's certificate to pin comes from.
#[derive(Debug, Clone, Copy)]
pub(crate) enum PinnedCert<'a> {
    /// A PEM file (`tls_cert_path`).
    File(&'a std::path::Path),
    /// PEM text given as a value (a hub provider's payout).
    Pem(&'a str),
}

/// The [`NodeSettings`] of a node backend's configuration `$config`: every node configuration
/// has the fields `url` and `limits` ([`crate::rules::CallLimits`]).
macro_rules! node_settings {
    ($config:expr, $service:literal, $credential:literal, $cert:expr) => {
        crate::http::NodeSettings {
            service: $service,
            credential: $credential,
            url: &$config.url,
            tls_cert: $cert.map(crate::http::PinnedCert::File),
            public_only: false,
            timeout_secs: $config.limits.timeout_secs,
            retries: $config.limits.retries,
            payment_timeout_secs: $config.limits.payment_timeout_secs,
        }
    };
}
pub(crate) use node_settings;

/// The `with_timeouts` method of a node backend whose [`NodeHttp`] is its field `http`.
macro_rules! with_timeouts_method {
    () => {
        /// Replaces the timeouts: `call` for each call (retries included), `payment` for a
        /// payment. For tests and embedding; the configuration has whole seconds.
        pub fn with_timeouts(
            mut self,
            call: std::time::Duration,
            payment: std::time::Duration,
        ) -> Self {
            self.http.set_timeouts(call, payment);
            self
        }
    };
}
pub(crate) use with_timeouts_method;

/// Builds a node backend from values (a hub provider's payout) with `Self::build(&config,
/// settings)`: `$config` is its configuration (secrets inline), `$cert` a [`PinnedCert`] to pin,
/// and it connects to public addresses only when `$public_only`.
macro_rules! node_from_values {
    ($config:expr, $service:literal, $credential:literal, $cert:expr, $public_only:expr) => {{
        let config = $config;
        let mut settings = crate::http::node_settings!(config, $service, $credential, None);
        settings.tls_cert = $cert;
        settings.public_only = $public_only;
        Self::build(&config, settings)
    }};
}
pub(crate) use node_from_values;

/// Why a node backend's connection could not be set up; each backend maps it onto its own
/// configuration error (see `node_setup_error!`).
#[derive(Debug)]
pub(crate) enum NodeSetupError {
    InvalidUrl(String),
    Invalid(String),
    TlsCert(String),
    HttpClient(String),
}

/// `impl From<NodeSetupError> for $error`, naming the variants each kind maps to.
macro_rules! node_setup_error {
    ($error:ident: $url:ident, $invalid:ident, $cert:ident, $client:ident) => {
        impl From<crate::http::NodeSetupError> for $error {
            fn from(e: crate::http::NodeSetupError) -> Self {
                use crate::http::NodeSetupError as E;
                match e {
                    E::InvalidUrl(m) => $error::$url(m),
                    E::Invalid(m) => $error::$invalid(m),
                    E::TlsCert(m) => $error::$cert(m),
                    E::HttpClient(m) => $error::$client(m),
                }
            }
        }
    };
}
pub(crate) use node_setup_error;

/// The connection of a node backend reached over HTTP: client, base URL, timeouts and retries,
/// set up and checked the same way for each. It holds no credential (the URL has none either).
#[derive(Debug, Clone)]
pub(crate) struct NodeHttp {
    pub(crate) client: reqwest::Client,
    pub(crate) base: reqwest::Url,
    /// Time allowed for each call, retries included.
    pub(crate) timeout: Duration,
    /// Time allowed for a payment.
    pub(crate) payment_timeout: Duration,
    pub(crate) retries: u32,
    /// Whether a certificate is pinned (`tls_cert_path`).
    pub(crate) pinned: bool,
}

impl NodeHttp {
    /// Checks the URL and the limits ([`crate::rules::check_limits`]); returns the base URL.
    /// Done before the backend reads its credential, so that errors come in that order.
    pub(crate) fn check(settings: &NodeSettings<'_>) -> Result<reqwest::Url, NodeSetupError> {
        let base = base_url(settings.url).map_err(NodeSetupError::InvalidUrl)?;
        crate::rules::check_limits(
            settings.timeout_secs,
            settings.retries,
            Some(settings.payment_timeout_secs),
        )
        .map_err(NodeSetupError::Invalid)?;
        Ok(base)
    }

    /// Reads the certificate to pin (only over https), builds the client (connect timeout
    /// `connect`) and warns when the credential would travel over plain http to another host.
    pub(crate) fn connect(
        base: reqwest::Url,
        settings: &NodeSettings<'_>,
        connect: Duration,
    ) -> Result<NodeHttp, NodeSetupError> {
        if settings.tls_cert.is_some() && base.scheme() != "https" {
            return Err(NodeSetupError::TlsCert(
                "a certificate to pin is given but the url is not https".into(),
            ));
        }
        let pem = match settings.tls_cert {
            Some(PinnedCert::File(path)) => {
                let pem = std::fs::read(path).map_err(|e| {
                    NodeSetupError::TlsCert(format!("cannot read {}: {e}", path.display()))
                })?;
                Some((pem, path.display().to_string()))
            }
            Some(PinnedCert::Pem(text)) => Some((text.as_bytes().to_vec(), "tls_cert".to_owned())),
            None => None,
        };
        let client = node_client(
            connect,
            pem.as_ref()
                .map(|(pem, path)| (pem.as_slice(), path.as_str())),
            settings.public_only,
        )
        .map_err(|e| {
            if pem.is_some() && e.contains("PEM") {
                NodeSetupError::TlsCert(e)
            } else {
                NodeSetupError::HttpClient(e)
            }
        })?;
        if base.scheme() == "http" && !is_loopback(&base) {
            tracing::warn!(
                url = %base,
                "{} over plain http to a non-loopback host: the {} travels unencrypted",
                settings.service,
                settings.credential
            );
        }
        Ok(NodeHttp {
            client,
            base,
            timeout: Duration::from_secs(settings.timeout_secs),
            payment_timeout: Duration::from_secs(settings.payment_timeout_secs),
            retries: settings.retries,
            pinned: settings.tls_cert.is_some(),
        })
    }

    /// Replaces the timeouts: `call` for each call (retries included), `payment` for a payment.
    pub(crate) fn set_timeouts(&mut self, call: Duration, payment: Duration) {
        self.timeout = call;
        self.payment_timeout = payment;
    }

    /// Without a pinned certificate, a node's own certificate fails standard verification
    /// (`CaUsedAsEndEntity`, `UnknownIssuer`): adds `hint` on how to fix it.
    pub(crate) fn tls_hint(&self, error: BackendError, hint: &str) -> BackendError {
        match error {
            BackendError::Unreachable(m)
                if !self.pinned && m.contains("invalid peer certificate") =>
            {
                BackendError::Unreachable(format!("{m} ({hint})"))
            }
            other => other,
        }
    }
}

/// Whether a URL's host is the loopback interface (`localhost`, `127.0.0.0/8`, `::1`).
pub(crate) fn is_loopback(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => bare.eq_ignore_ascii_case("localhost"),
    }
}
