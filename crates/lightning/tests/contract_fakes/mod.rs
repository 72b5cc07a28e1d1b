//! # CONTRACT FAKES
//!
//! Stand-ins for the Lightning services Turnpike's node backends talk to — LND's REST API
//! ([`lnd`]), Core Lightning's clnrest ([`cln`]) and phoenixd's HTTP API ([`phoenixd`]) — for
//! tests on machines where those services cannot run.
//!
//! They are **contract** fakes: each is a small axum server on `127.0.0.1:0` built from the
//! service's published API reference (and, where the reference is silent, from the service's
//! source): the same paths and methods, the same authentication and the same answer to bad
//! credentials (status and error body), the same JSON field names and types (LND's base64 byte
//! fields and string-encoded 64-bit integers, CLN's integer msat amounts, phoenixd's camelCase
//! satoshi amounts and form-encoded requests), real signed BOLT11 invoices, and the state
//! machine that matters (unpaid → paid, paying twice). They are not simulations of the Lightning
//! network: "the network" is a set of remote invoices whose preimages the fake knows
//! ([`Node::remote_invoice`]), and "a payer" settles an invoice with a test call.
//!
//! Each fake can be told to misbehave ([`Fault`]) to exercise the backends' checks: never
//! answer, answer malformed JSON, a wrong preimage, a wrong amount, or `503` for a while.
//!
//! What they do not reproduce: anything not used by Turnpike's backends, LND's macaroon
//! cryptography and CLN's rune restrictions (a fake accepts exactly one secret), routing.

pub mod cln;
pub mod lnd;
pub mod phoenixd;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bitcoin::hashes::{Hash as _, sha256};
use bitcoin::secp256k1::{All, PublicKey, Secp256k1, SecretKey};
use lightning_invoice::{Currency, InvoiceBuilder, PaymentSecret};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use turnpike_lightning::{PaymentHash, Preimage};

/// Unix time now, in seconds.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Unix time now, in milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// How a fake misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// It behaves.
    #[default]
    None,
    /// It accepts requests and never answers.
    Hang,
    /// It answers successful calls with truncated JSON.
    MalformedJson,
    /// It reports preimages that do not hash to the payment hash.
    WrongPreimage,
    /// It creates invoices for, and reports payments of, another amount than asked.
    WrongAmount,
    /// It answers `503` to the next `n` requests, then behaves.
    Unavailable(usize),
}

/// State every fake shares: the fault, and a count of the API requests that reached it.
#[derive(Debug, Default)]
pub struct Common {
    fault: Mutex<Fault>,
    requests: AtomicUsize,
}

/// What a request should do according to the current [`Fault`].
pub enum Gate {
    /// Serve it, with this fault in effect for the answer.
    Serve(Fault),
    /// Answer `503`.
    Unavailable,
}

impl Common {
    /// Sets the fault.
    pub fn set_fault(&self, fault: Fault) {
        *lock(&self.fault) = fault;
    }

    /// API requests received so far (past authentication or not).
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// Counts a request and decides how to treat it; never returns for [`Fault::Hang`].
    pub async fn gate(&self) -> Gate {
        self.requests.fetch_add(1, Ordering::SeqCst);
        let fault = {
            let mut fault = lock(&self.fault);
            match *fault {
                Fault::Unavailable(n) if n > 0 => {
                    *fault = if n == 1 {
                        Fault::None
                    } else {
                        Fault::Unavailable(n - 1)
                    };
                    return Gate::Unavailable;
                }
                f => f,
            }
        };
        if fault == Fault::Hang {
            std::future::pending::<()>().await;
        }
        Gate::Serve(fault)
    }
}

/// Locks a mutex, ignoring poisoning (a panicking test must not hide the first panic).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A Lightning node key that signs real BOLT11 invoices.
pub struct Node {
    secp: Secp256k1<All>,
    key: SecretKey,
    /// The node id.
    pub id: PublicKey,
}

impl Default for Node {
    fn default() -> Self {
        Node::new()
    }
}

impl Node {
    /// A node with a random key.
    pub fn new() -> Self {
        let secp = Secp256k1::new();
        let key = loop {
            if let Ok(k) = SecretKey::from_slice(&rand::random::<[u8; 32]>()) {
                break k;
            }
        };
        let id = PublicKey::from_secret_key(&secp, &key);
        Node { secp, key, id }
    }

    /// The node id, hex.
    pub fn id_hex(&self) -> String {
        hex::encode(self.id.serialize())
    }

    /// Signs an invoice for `amount_msat` with payment hash `hash`, created at `timestamp`.
    pub fn invoice(
        &self,
        currency: Currency,
        amount_msat: u64,
        memo: &str,
        hash: &PaymentHash,
        timestamp: u64,
        expiry_secs: u64,
    ) -> String {
        InvoiceBuilder::new(currency)
            .description(memo.to_owned())
            .amount_milli_satoshis(amount_msat)
            .payment_hash(sha256::Hash::from_byte_array(hash.0))
            .payment_secret(PaymentSecret(rand::random()))
            .duration_since_epoch(Duration::from_secs(timestamp))
            .expiry_time(Duration::from_secs(expiry_secs))
            .min_final_cltv_expiry_delta(80)
            .build_signed(|msg| self.secp.sign_ecdsa_recoverable(msg, &self.key))
            .expect("the fake signs a valid invoice")
            .to_string()
    }
}

/// The fake network's other side: payees whose invoices a fake can pay because it knows their
/// preimages.
#[derive(Default)]
pub struct Remote {
    node: Node,
    /// Preimage and amount of every remote invoice, by payment hash.
    pub invoices: Mutex<HashMap<PaymentHash, (Preimage, u64)>>,
}

impl Remote {
    /// A remote invoice for `amount_msat` that the fake can pay.
    pub fn invoice(&self, currency: Currency, amount_msat: u64, expiry_secs: u64) -> String {
        self.invoice_at(currency, amount_msat, now(), expiry_secs)
    }

    /// Like [`Remote::invoice`], created at `timestamp` (to make expired invoices).
    pub fn invoice_at(
        &self,
        currency: Currency,
        amount_msat: u64,
        timestamp: u64,
        expiry_secs: u64,
    ) -> String {
        let preimage = Preimage::random();
        let hash = preimage.payment_hash();
        lock(&self.invoices).insert(hash, (preimage, amount_msat));
        self.node.invoice(
            currency,
            amount_msat,
            "remote payee",
            &hash,
            timestamp,
            expiry_secs,
        )
    }

    /// The preimage of a remote invoice, when the network knows it.
    pub fn preimage(&self, hash: &PaymentHash) -> Option<Preimage> {
        lock(&self.invoices).get(hash).map(|(p, _)| *p)
    }

    /// The remote node's id, hex.
    pub fn id_hex(&self) -> String {
        self.node.id_hex()
    }
}

/// A TLS certificate and its key.
pub struct TlsIdentity {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The certificate, DER.
    pub cert_der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl TlsIdentity {
    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key_der.clone().into())
    }

    /// Writes the certificate (PEM) into `dir` as `name`; returns the path.
    pub fn write_pem(&self, dir: &std::path::Path, name: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, &self.cert_pem).expect("write the certificate");
        path
    }
}

/// A certificate like lnd's `tls.cert`: self-signed ECDSA P-256, `CA:TRUE`, key usages cert
/// sign + digital signature + key encipherment, server auth, for `localhost` and `127.0.0.1`.
pub fn lnd_style_certificate() -> TlsIdentity {
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .expect("certificate parameters");
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress([127, 0, 0, 1].into()));
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationName, "lnd autogenerated cert");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let key = rcgen::KeyPair::generate().expect("key pair");
    let cert = params.self_signed(&key).expect("self-signed certificate");
    TlsIdentity {
        cert_pem: cert.pem(),
        cert_der: cert.der().clone(),
        key_der: key.serialize_der(),
    }
}

/// Certificates like clnrest's: a CA (`ca.pem`) and a server certificate it signed
/// (`server.pem`, `CA:FALSE`). Returns `(ca, server)`.
pub fn clnrest_style_certificates() -> (TlsIdentity, TlsIdentity) {
    let mut ca_params = rcgen::CertificateParams::new(vec![
        "cln Root REST CA".to_owned(),
        "cln".to_owned(),
        "localhost".to_owned(),
    ])
    .expect("CA parameters");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .key_usages
        .push(rcgen::KeyUsagePurpose::KeyCertSign);
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);

    let mut params = rcgen::CertificateParams::new(vec![
        "cln rest server".to_owned(),
        "cln".to_owned(),
        "localhost".to_owned(),
    ])
    .expect("server parameters");
    params.is_ca = rcgen::IsCa::NoCa;
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress([127, 0, 0, 1].into()));
    let key = rcgen::KeyPair::generate().expect("server key");
    let cert = params.signed_by(&key, &issuer).expect("server certificate");
    (
        TlsIdentity {
            cert_pem: ca_cert.pem(),
            cert_der: ca_cert.der().clone(),
            key_der: ca_key.serialize_der(),
        },
        TlsIdentity {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            key_der: key.serialize_der(),
        },
    )
}

/// Serves `app` over plain HTTP on `127.0.0.1:0`.
pub async fn serve_http(app: axum::Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// Serves `app` over HTTPS on `127.0.0.1:0` with `identity`. Returns the address and a counter
/// of completed TLS handshakes.
pub async fn serve_https(
    app: axum::Router,
    identity: &TlsIdentity,
) -> (SocketAddr, Arc<AtomicUsize>) {
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(vec![identity.cert_der.clone()], identity.key())
    .expect("server TLS configuration");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = tcp.local_addr().expect("local address");
    let handshakes = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let counter = handshakes.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = tcp.accept().await else {
                return;
            };
            let (acceptor, tx, counter) = (acceptor.clone(), tx.clone(), counter.clone());
            tokio::spawn(async move {
                // A client that rejects our certificate aborts the handshake: nothing to serve.
                if let Ok(tls) = acceptor.accept(stream).await {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let _ = tx.send((tls, peer)).await;
                }
            });
        }
    });
    tokio::spawn(async move {
        let _ = axum::serve(TlsListener { rx, addr }, app).await;
    });
    (addr, handshakes)
}

/// An axum listener yielding TLS streams whose handshake completed.
struct TlsListener {
    rx: tokio::sync::mpsc::Receiver<(tokio_rustls::server::TlsStream<TcpStream>, SocketAddr)>,
    addr: SocketAddr,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(conn) => conn,
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.addr)
    }
}

/// A port on `127.0.0.1` with nothing listening.
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("local address").port()
}

/// A JSON response with `status`.
pub fn json(status: axum::http::StatusCode, value: serde_json::Value) -> axum::response::Response {
    use axum::response::IntoResponse;
    (status, axum::Json(value)).into_response()
}

/// A response whose body is truncated JSON, as a misbehaving service would send.
pub fn malformed(status: axum::http::StatusCode) -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        "{\"result\": {\"payment_hash\": ",
    )
        .into_response()
}

/// A `503` a proxy in front of the service would answer.
pub fn unavailable() -> axum::response::Response {
    use axum::response::IntoResponse;
    (
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        "503 Service Temporarily Unavailable",
    )
        .into_response()
}
