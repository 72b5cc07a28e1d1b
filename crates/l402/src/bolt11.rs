//! BOLT11 Lightning invoices: parsing and signature verification.
//!
//! [`Invoice::parse`] verifies the signature and extracts the fields an L402 gateway or payer
//! needs. It is deliberately more lenient than `lightning_invoice::Bolt11Invoice::from_str` in one
//! respect: it accepts invoices without a features (`9`) field, which some wallets (LNbits with
//! its FakeWallet, for one) issue. It stays strict on what matters for money: a valid signature,
//! exactly one payment hash, and an amount that is a whole number of millisatoshis.

use std::fmt;
use std::str::FromStr;

use bitcoin::hashes::Hash as _;
use lightning_invoice::{Currency, RawBolt11Invoice, SignedRawBolt11Invoice, TaggedField};

use crate::{Msat, PaymentHash};

/// Expiry that applies when an invoice has no expiry (`x`) field, per BOLT11: one hour.
pub const DEFAULT_EXPIRY_SECS: u64 = 3600;

/// `min_final_cltv_expiry_delta` that applies when an invoice has no `c` field, per BOLT11.
pub const DEFAULT_MIN_FINAL_CLTV_EXPIRY_DELTA: u64 = 18;

/// Longest invoice text accepted, in characters (the bech32 limit BOLT11 parsers use).
pub const MAX_INVOICE_LEN: usize = lightning_invoice::MAX_LENGTH;

const URI_PREFIX: &str = "lightning:";

/// Why a string is not an acceptable BOLT11 invoice.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvoiceError {
    /// The input is empty (after trimming and removing a `lightning:` prefix).
    #[error("the invoice is empty")]
    Empty,
    /// The input is longer than [`MAX_INVOICE_LEN`].
    #[error("the invoice is longer than {MAX_INVOICE_LEN} characters")]
    TooLong,
    /// Not a syntactically valid BOLT11 invoice (bad bech32, checksum, prefix or field encoding).
    #[error("malformed BOLT11 invoice: {0}")]
    Malformed(String),
    /// The signature does not verify (against the `n` field, or no key can be recovered).
    #[error("the invoice signature is invalid")]
    InvalidSignature,
    /// The invoice has no payment hash (`p`) field.
    #[error("the invoice has no payment hash")]
    MissingPaymentHash,
    /// The invoice has more than one payment hash (`p`) field.
    #[error("the invoice has more than one payment hash")]
    MultiplePaymentHashes,
    /// The amount is not a whole number of millisatoshis.
    #[error("the invoice amount is not a whole number of millisatoshis")]
    ImpreciseAmount,
    /// The amount does not fit in 64 bits of millisatoshis.
    #[error("the invoice amount is too large")]
    AmountOverflow,
}

/// The Bitcoin network an invoice is for, from its human-readable prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Network {
    /// Mainnet (`lnbc`).
    Bitcoin,
    /// Testnet (`lntb`).
    Testnet,
    /// Signet (`lntbs`).
    Signet,
    /// Regtest (`lnbcrt`).
    Regtest,
    /// Simnet (`lnsb`).
    Simnet,
}

impl Network {
    /// The lower-case name: `bitcoin`, `testnet`, `signet`, `regtest` or `simnet`.
    pub fn as_str(self) -> &'static str {
        match self {
            Network::Bitcoin => "bitcoin",
            Network::Testnet => "testnet",
            Network::Signet => "signet",
            Network::Regtest => "regtest",
            Network::Simnet => "simnet",
        }
    }

    /// The BOLT11 invoice prefix for this network, e.g. `lnbcrt` for regtest.
    pub fn invoice_prefix(self) -> &'static str {
        match self {
            Network::Bitcoin => "lnbc",
            Network::Testnet => "lntb",
            Network::Signet => "lntbs",
            Network::Regtest => "lnbcrt",
            Network::Simnet => "lnsb",
        }
    }

    fn from_currency(c: Currency) -> Network {
        match c {
            Currency::Bitcoin => Network::Bitcoin,
            Currency::BitcoinTestnet => Network::Testnet,
            Currency::Signet => Network::Signet,
            Currency::Regtest => Network::Regtest,
            Currency::Simnet => Network::Simnet,
        }
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for a network name that [`Network::from_str`] does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown network {0:?} (expected bitcoin, mainnet, testnet, signet, regtest or simnet)")]
pub struct UnknownNetwork(pub String);

impl FromStr for Network {
    type Err = UnknownNetwork;

    /// Parses a network name, case-insensitively; `mainnet` is accepted for `bitcoin`.
    fn from_str(s: &str) -> Result<Self, UnknownNetwork> {
        match s.to_ascii_lowercase().as_str() {
            "bitcoin" | "mainnet" => Ok(Network::Bitcoin),
            "testnet" => Ok(Network::Testnet),
            "signet" => Ok(Network::Signet),
            "regtest" => Ok(Network::Regtest),
            "simnet" => Ok(Network::Simnet),
            _ => Err(UnknownNetwork(s.to_owned())),
        }
    }
}

/// A parsed BOLT11 invoice whose signature has been verified.
///
/// Only the fields an L402 party needs are kept; the original text is available from
/// [`Invoice::as_str`] to hand to a Lightning backend.
#[derive(Clone, Debug)]
pub struct Invoice {
    text: String,
    payment_hash: PaymentHash,
    amount: Option<Msat>,
    timestamp: u64,
    expiry_secs: u64,
    network: Network,
    payee: [u8; 33],
    description: Option<String>,
    description_hash: Option<[u8; 32]>,
    min_final_cltv_expiry_delta: u64,
    has_features: bool,
}

impl Invoice {
    /// Parses and verifies a BOLT11 invoice.
    ///
    /// Surrounding whitespace and a `lightning:` URI prefix (any case) are removed; an all
    /// upper-case invoice (as found in QR codes) is accepted, mixed case is not. The signature
    /// is verified against the `n` field when present, otherwise the payee key is recovered
    /// from it. Invoices without a features field are accepted.
    pub fn parse(s: &str) -> Result<Invoice, InvoiceError> {
        let s = s.trim();
        let s = match s.get(..URI_PREFIX.len()) {
            Some(p) if p.eq_ignore_ascii_case(URI_PREFIX) => &s[URI_PREFIX.len()..],
            _ => s,
        };
        let s = s.trim_start();
        if s.is_empty() {
            return Err(InvoiceError::Empty);
        }
        if s.len() > MAX_INVOICE_LEN {
            return Err(InvoiceError::TooLong);
        }

        // `Bolt11Invoice::from_str` would also insist on a features field; the raw parser does
        // not, so we parse raw and apply our own semantic checks.
        let signed = SignedRawBolt11Invoice::from_str(s)
            .map_err(|e| InvoiceError::Malformed(e.to_string()))?;
        if !signed.check_signature() {
            return Err(InvoiceError::InvalidSignature);
        }
        let payee = match signed.raw_invoice().payee_pub_key() {
            Some(pk) => pk.0.serialize(),
            None => signed
                .recover_payee_pub_key()
                .map_err(|_| InvoiceError::InvalidSignature)?
                .0
                .serialize(),
        };
        let raw = signed.raw_invoice();

        let mut hashes = raw.known_tagged_fields().filter_map(|f| match f {
            TaggedField::PaymentHash(h) => Some(PaymentHash(h.0.to_byte_array())),
            _ => None,
        });
        let payment_hash = hashes.next().ok_or(InvoiceError::MissingPaymentHash)?;
        if hashes.next().is_some() {
            return Err(InvoiceError::MultiplePaymentHashes);
        }

        Ok(Invoice {
            text: s.to_ascii_lowercase(),
            payment_hash,
            amount: amount_of(raw)?,
            timestamp: raw.data.timestamp.as_unix_timestamp(),
            expiry_secs: raw
                .expiry_time()
                .map_or(DEFAULT_EXPIRY_SECS, |e| e.as_seconds()),
            network: Network::from_currency(raw.currency()),
            payee,
            description: raw.description().map(|d| d.as_inner().0.clone()),
            description_hash: raw.description_hash().map(|h| h.0.to_byte_array()),
            min_final_cltv_expiry_delta: raw
                .min_final_cltv_expiry_delta()
                .map_or(DEFAULT_MIN_FINAL_CLTV_EXPIRY_DELTA, |c| c.0),
            has_features: raw.features().is_some(),
        })
    }

    /// The invoice text: trimmed, without a `lightning:` prefix, lower case.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The payment hash; paying the invoice reveals its preimage.
    pub fn payment_hash(&self) -> PaymentHash {
        self.payment_hash
    }

    /// The amount requested, or `None` for an "any amount" invoice.
    pub fn amount(&self) -> Option<Msat> {
        self.amount
    }

    /// Creation time, unix seconds.
    pub fn timestamp(&self) -> u64 {
        self.timestamp
    }

    /// Seconds after [`Invoice::timestamp`] until the invoice expires ([`DEFAULT_EXPIRY_SECS`]
    /// when the invoice does not say).
    pub fn expiry_secs(&self) -> u64 {
        self.expiry_secs
    }

    /// Expiry time, unix seconds (saturating at `u64::MAX`).
    pub fn expires_at(&self) -> u64 {
        self.timestamp.saturating_add(self.expiry_secs)
    }

    /// Whether the invoice can no longer be paid at `now_unix`: true from [`Invoice::expires_at`] on.
    pub fn is_expired(&self, now_unix: u64) -> bool {
        now_unix >= self.expires_at()
    }

    /// The network the invoice is for.
    pub fn network(&self) -> Network {
        self.network
    }

    /// The payee's node id (33-byte compressed public key), from the `n` field or recovered from
    /// the signature.
    pub fn payee(&self) -> [u8; 33] {
        self.payee
    }

    /// The payee's node id as lower-case hex (66 characters).
    pub fn payee_hex(&self) -> String {
        hex::encode(self.payee)
    }

    /// The description (`d` field, the "memo"), if present. Untrusted text from the payee.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// The description hash (`h` field), if present.
    pub fn description_hash(&self) -> Option<[u8; 32]> {
        self.description_hash
    }

    /// The `min_final_cltv_expiry_delta` (`c` field), or the BOLT11 default of 18.
    pub fn min_final_cltv_expiry_delta(&self) -> u64 {
        self.min_final_cltv_expiry_delta
    }

    /// Whether the invoice carries a features (`9`) field.
    pub fn has_features(&self) -> bool {
        self.has_features
    }
}

impl fmt::Display for Invoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Invoice {
    type Err = InvoiceError;

    /// Same as [`Invoice::parse`].
    fn from_str(s: &str) -> Result<Self, InvoiceError> {
        Invoice::parse(s)
    }
}

/// The amount in msat. The human-readable part encodes it in pico-bitcoin (10 per msat), so an
/// amount that is not a multiple of 10 pBTC is refused rather than rounded.
fn amount_of(raw: &RawBolt11Invoice) -> Result<Option<Msat>, InvoiceError> {
    if raw.hrp.raw_amount.is_none() {
        return Ok(None);
    }
    let pico = raw.amount_pico_btc().ok_or(InvoiceError::AmountOverflow)?;
    if !pico.is_multiple_of(10) {
        return Err(InvoiceError::ImpreciseAmount);
    }
    Ok(Some(Msat(pico / 10)))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bitcoin::hashes::sha256;
    use bitcoin::secp256k1::{PublicKey, Secp256k1, SecretKey};
    use lightning_invoice::{InvoiceBuilder, PaymentSecret, RawTaggedField};
    use proptest::prelude::*;

    use super::*;
    use crate::Preimage;

    const TS: u64 = 1_700_000_000;

    fn key() -> SecretKey {
        SecretKey::from_slice(&[0x42; 32]).unwrap()
    }

    fn node_id() -> [u8; 33] {
        PublicKey::from_secret_key(&Secp256k1::new(), &key()).serialize()
    }

    fn raw(hash: PaymentHash) -> RawBolt11Invoice {
        InvoiceBuilder::new(Currency::Regtest)
            .description("turnpike test".to_owned())
            .amount_milli_satoshis(21_000)
            .payment_hash(sha256::Hash::from_byte_array(hash.0))
            .payment_secret(PaymentSecret([7; 32]))
            .duration_since_epoch(Duration::from_secs(TS))
            .expiry_time(Duration::from_secs(600))
            .min_final_cltv_expiry_delta(80)
            .build_raw()
            .unwrap()
    }

    fn sign(raw: RawBolt11Invoice) -> String {
        let secp = Secp256k1::new();
        raw.sign::<_, ()>(|m| Ok(secp.sign_ecdsa_recoverable(m, &key())))
            .unwrap()
            .to_string()
    }

    fn signed_text(hash: PaymentHash) -> String {
        sign(raw(hash))
    }

    #[test]
    fn parses_a_signed_regtest_invoice() {
        let preimage = Preimage([1; 32]);
        let hash = preimage.payment_hash();
        let text = signed_text(hash);
        assert!(text.starts_with("lnbcrt"));

        let inv = Invoice::parse(&text).unwrap();
        assert_eq!(inv.as_str(), text);
        assert_eq!(inv.to_string(), text);
        assert_eq!(inv.payment_hash(), hash);
        assert_eq!(inv.amount(), Some(Msat(21_000)));
        assert_eq!(inv.timestamp(), TS);
        assert_eq!(inv.expiry_secs(), 600);
        assert_eq!(inv.expires_at(), TS + 600);
        assert!(!inv.is_expired(TS));
        assert!(!inv.is_expired(TS + 599));
        assert!(inv.is_expired(TS + 600));
        assert_eq!(inv.network(), Network::Regtest);
        assert_eq!(inv.network().to_string(), "regtest");
        assert_eq!(inv.payee(), node_id());
        assert_eq!(inv.payee_hex(), hex::encode(node_id()));
        assert_eq!(inv.description(), Some("turnpike test"));
        assert_eq!(inv.description_hash(), None);
        assert_eq!(inv.min_final_cltv_expiry_delta(), 80);
        assert!(inv.has_features());
    }

    #[test]
    fn accepts_prefix_whitespace_and_upper_case() {
        let text = signed_text(Preimage([2; 32]).payment_hash());
        for variant in [
            format!("  lightning:{text}\n"),
            format!("LIGHTNING:{}", text.to_uppercase()),
            text.to_uppercase(),
        ] {
            let inv = Invoice::parse(&variant).unwrap();
            assert_eq!(inv.as_str(), text);
        }
        let mut mixed = text.clone();
        mixed.replace_range(0..4, "LNBC");
        assert!(Invoice::parse(&mixed).is_err());
    }

    #[test]
    fn accepts_an_invoice_without_features() {
        let hash = Preimage([3; 32]).payment_hash();
        let mut raw = raw(hash);
        raw.data
            .tagged_fields
            .retain(|f| !matches!(f, RawTaggedField::KnownSemantics(TaggedField::Features(_))));
        let text = sign(raw);
        // The upstream strict parser refuses it; that is why we parse raw.
        assert!(lightning_invoice::Bolt11Invoice::from_str(&text).is_err());

        let inv = Invoice::parse(&text).unwrap();
        assert!(!inv.has_features());
        assert_eq!(inv.payment_hash(), hash);
        assert_eq!(inv.amount(), Some(Msat(21_000)));
        assert_eq!(inv.payee(), node_id());
    }

    #[test]
    fn amountless_and_default_expiry() {
        let secp = Secp256k1::new();
        let text = InvoiceBuilder::new(Currency::Bitcoin)
            .description(String::new())
            .payment_hash(sha256::Hash::from_byte_array([9; 32]))
            .payment_secret(PaymentSecret([7; 32]))
            .duration_since_epoch(Duration::from_secs(TS))
            .min_final_cltv_expiry_delta(18)
            .build_signed(|m| secp.sign_ecdsa_recoverable(m, &key()))
            .unwrap()
            .to_string();
        let inv = Invoice::parse(&text).unwrap();
        assert_eq!(inv.amount(), None);
        assert_eq!(inv.expiry_secs(), DEFAULT_EXPIRY_SECS);
        assert_eq!(inv.network(), Network::Bitcoin);
    }

    #[test]
    fn rejects_tampering() {
        let text = signed_text(Preimage([4; 32]).payment_hash());
        // Change one character in the data part (keeping the checksum): bad checksum.
        let pos = text.len() / 2;
        let orig = text.as_bytes()[pos];
        let repl = if orig == b'q' { 'p' } else { 'q' };
        let mut tampered = text.clone();
        tampered.replace_range(pos..=pos, &repl.to_string());
        assert!(matches!(
            Invoice::parse(&tampered),
            Err(InvoiceError::Malformed(_))
        ));

        // A re-signed invoice whose signature was made by another key over other content: take
        // the signature of one invoice and attach it to another's data with a valid checksum.
        let other = {
            let secp = Secp256k1::new();
            let raw = raw(Preimage([5; 32]).payment_hash());
            let wrong_key = SecretKey::from_slice(&[0x43; 32]).unwrap();
            // Sign a different message so the signature does not match the content.
            let bogus = secp.sign_ecdsa_recoverable(
                &bitcoin::secp256k1::Message::from_digest([0x11; 32]),
                &wrong_key,
            );
            let mut raw_with_n = raw;
            raw_with_n
                .data
                .tagged_fields
                .push(RawTaggedField::KnownSemantics(TaggedField::PayeePubKey(
                    lightning_invoice::PayeePubKey(PublicKey::from_secret_key(&secp, &key())),
                )));
            raw_with_n.sign::<_, ()>(|_| Ok(bogus)).unwrap().to_string()
        };
        assert_eq!(
            Invoice::parse(&other).unwrap_err(),
            InvoiceError::InvalidSignature
        );
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(Invoice::parse("").unwrap_err(), InvoiceError::Empty);
        assert_eq!(
            Invoice::parse(" lightning: ").unwrap_err(),
            InvoiceError::Empty
        );
        assert!(matches!(
            Invoice::parse("lnbc1qqqq"),
            Err(InvoiceError::Malformed(_))
        ));
        assert_eq!(
            Invoice::parse(&"q".repeat(MAX_INVOICE_LEN + 1)).unwrap_err(),
            InvoiceError::TooLong
        );
    }

    #[test]
    fn network_names_round_trip() {
        for n in [
            Network::Bitcoin,
            Network::Testnet,
            Network::Signet,
            Network::Regtest,
            Network::Simnet,
        ] {
            assert_eq!(n.to_string().parse::<Network>().unwrap(), n);
        }
        assert_eq!("MAINNET".parse::<Network>().unwrap(), Network::Bitcoin);
        assert!("liquid".parse::<Network>().is_err());
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC*") {
            let _ = Invoice::parse(&s);
        }

        #[test]
        fn parse_never_panics_on_bech32_like_input(s in "(lightning:)?ln(bc|tb|bcrt|sb|tbs)[0-9]{0,6}[munp]?1[qpzry9x8gf2tvdw0s3jn54khce6mua7l]{0,400}") {
            let _ = Invoice::parse(&s);
        }

        #[test]
        fn parse_never_panics_on_mutated_invoices(pos in 0usize..400, c in "[qpzry9x8gf2tvdw0s3jn54khce6mua7l]") {
            let text = signed_text(Preimage([6; 32]).payment_hash());
            let pos = pos % text.len();
            let mut t = text.clone();
            t.replace_range(pos..=pos, &c);
            let _ = Invoice::parse(&t);
        }
    }
}
