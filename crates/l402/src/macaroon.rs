//! Macaroons in the libmacaroons / go-macaroon **V2 binary** format, with the HMAC-SHA256 chain
//! every L402 implementation uses.
//!
//! Crypto:
//!
//! ```text
//! derived = HMAC-SHA256(key = "macaroons-key-generator", msg = root_key)
//! sig_0   = HMAC-SHA256(key = derived, msg = identifier)
//! sig_i   = HMAC-SHA256(key = sig_{i-1}, msg = caveat_id_i)        (first-party caveats)
//! ```
//!
//! Binary layout (field tags: location 1, identifier 2, vid 4, signature 6, end-of-section 0;
//! lengths are unsigned LEB128 varints):
//!
//! ```text
//! 0x02 [0x01 len location] 0x02 len identifier 0x00
//! per caveat: [0x01 len location] 0x02 len caveat_id [0x04 len vid] 0x00
//! 0x00 0x06 0x20 <32-byte signature>
//! ```
//!
//! Parsing is strict and bounded: at most [`MAX_BINARY_LEN`] bytes and [`MAX_CAVEATS`] caveats,
//! minimal varints only, fields in ascending tag order, no trailing data. Because the encoding is
//! canonical, `to_binary(from_binary(b)) == b` for every accepted `b`.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, general_purpose::STANDARD};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The largest binary macaroon accepted by the parsers, in bytes (64 KiB).
pub const MAX_BINARY_LEN: usize = 64 * 1024;

/// The largest number of caveats accepted by the parsers.
pub const MAX_CAVEATS: usize = 256;

/// The V2 format version byte.
const VERSION_V2: u8 = 2;

const TAG_EOS: u8 = 0;
const TAG_LOCATION: u8 = 1;
const TAG_IDENTIFIER: u8 = 2;
const TAG_VID: u8 = 4;
const TAG_SIGNATURE: u8 = 6;

/// Key of the HMAC that turns a root key into the key of the signature chain.
const KEY_GENERATOR: &[u8] = b"macaroons-key-generator";

type HmacSha256 = Hmac<Sha256>;

/// HMAC-SHA256 of `msg` under `key`.
pub(crate) fn hmac_sha256(key: &[u8], msg: &[&[u8]]) -> [u8; 32] {
    KeyedHmac::new(key).mac(msg)
}

/// An HMAC-SHA256 key with its inner and outer pads already hashed: each MAC under it then
/// costs two SHA-256 compressions fewer (the key generator and the master key are used on
/// every verification).
#[derive(Clone)]
pub(crate) struct KeyedHmac(HmacSha256);

impl KeyedHmac {
    pub(crate) fn new(key: &[u8]) -> KeyedHmac {
        // HMAC accepts keys of any length, so this constructor cannot fail.
        let Ok(mac) = <HmacSha256 as Mac>::new_from_slice(key) else {
            unreachable!("HMAC-SHA256 accepts keys of any length")
        };
        KeyedHmac(mac)
    }

    /// HMAC-SHA256 of the concatenation of `msg`.
    pub(crate) fn mac(&self, msg: &[&[u8]]) -> [u8; 32] {
        let mut mac = self.0.clone();
        for part in msg {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }
}

/// The key generator's HMAC key, prepared once.
static KEY_GENERATOR_HMAC: std::sync::LazyLock<KeyedHmac> =
    std::sync::LazyLock::new(|| KeyedHmac::new(KEY_GENERATOR));

/// The macaroon signing key derived from a root key (libmacaroons' key generator step).
fn derived_key(root_key: &[u8]) -> [u8; 32] {
    KEY_GENERATOR_HMAC.mac(&[root_key])
}

/// Errors from decoding or verifying a macaroon.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MacaroonError {
    /// The input is empty.
    #[error("empty macaroon")]
    Empty,
    /// The input is larger than the parser accepts.
    #[error("macaroon too large: {len} bytes, the limit is {max}")]
    TooLarge {
        /// Size of the input (encoded form for text inputs).
        len: usize,
        /// The limit that was exceeded.
        max: usize,
    },
    /// A V1 (libmacaroons text-packet) macaroon: only V2 binary is supported.
    #[error("V1 macaroon format is not supported, only V2 binary")]
    UnsupportedV1,
    /// A JSON macaroon: only V2 binary is supported.
    #[error("JSON macaroon format is not supported, only V2 binary")]
    UnsupportedJson,
    /// The first byte is not a known format version.
    #[error("unknown macaroon format (first byte {0:#04x}); only V2 binary is supported")]
    UnknownFormat(u8),
    /// The input ends in the middle of a field.
    #[error("truncated macaroon")]
    Truncated,
    /// A length is not a valid minimal unsigned LEB128 varint.
    #[error("invalid varint length in macaroon")]
    InvalidVarint,
    /// The structure is not a valid V2 macaroon.
    #[error("malformed macaroon: {0}")]
    Malformed(&'static str),
    /// More caveats than [`MAX_CAVEATS`].
    #[error("macaroon has more than {max} caveats")]
    TooManyCaveats {
        /// The limit that was exceeded.
        max: usize,
    },
    /// The signature field is not 32 bytes.
    #[error("macaroon signature must be 32 bytes, got {0}")]
    BadSignatureLength(usize),
    /// Bytes follow the signature.
    #[error("trailing data after macaroon signature")]
    TrailingData,
    /// The text is not valid base64 (standard or URL-safe, padded or not).
    #[error("macaroon is not valid base64")]
    Base64,
    /// The text is not valid hex.
    #[error("macaroon is not valid hex")]
    Hex,
    /// The macaroon has third-party caveats, which need discharge macaroons (unsupported).
    #[error("third-party caveats are not supported")]
    ThirdPartyCaveat,
    /// The HMAC chain does not match the signature.
    #[error("macaroon signature does not verify")]
    InvalidSignature,
}

/// One caveat as stored in the binary form.
#[derive(Clone, PartialEq, Eq)]
struct RawCaveat {
    /// Third-party caveats only.
    location: Option<Vec<u8>>,
    id: Vec<u8>,
    /// Verification id: present exactly for third-party caveats (never empty).
    vid: Option<Vec<u8>>,
}

impl RawCaveat {
    fn is_first_party(&self) -> bool {
        self.vid.is_none()
    }
}

/// A macaroon: location, identifier, caveats and the HMAC signature chain over them.
///
/// The `Debug` output never shows the signature (a macaroon plus its preimage is a bearer
/// credential).
#[derive(Clone, PartialEq, Eq)]
pub struct Macaroon {
    location: Option<Vec<u8>>,
    identifier: Vec<u8>,
    caveats: Vec<RawCaveat>,
    signature: [u8; 32],
}

impl fmt::Debug for Macaroon {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Caveats<'a>(&'a [RawCaveat]);
        impl fmt::Debug for Caveats<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_list()
                    .entries(self.0.iter().map(|c| {
                        if c.is_first_party() {
                            String::from_utf8_lossy(&c.id).into_owned()
                        } else {
                            format!("<third-party caveat {}>", hex::encode(&c.id))
                        }
                    }))
                    .finish()
            }
        }
        f.debug_struct("Macaroon")
            .field(
                "location",
                &self.location.as_deref().map(String::from_utf8_lossy),
            )
            .field("identifier", &hex::encode(&self.identifier))
            .field("caveats", &Caveats(&self.caveats))
            .field("signature", &"<redacted>")
            .finish()
    }
}

impl Macaroon {
    /// A new macaroon signed with `root_key`. An empty `location` is omitted from the encoding
    /// (as go-macaroon does).
    pub fn new(root_key: &[u8], identifier: impl Into<Vec<u8>>, location: &str) -> Macaroon {
        let identifier = identifier.into();
        let derived = derived_key(root_key);
        let signature = hmac_sha256(&derived, &[&identifier]);
        Macaroon {
            location: (!location.is_empty()).then(|| location.as_bytes().to_vec()),
            identifier,
            caveats: Vec::new(),
            signature,
        }
    }

    /// Appends a first-party caveat and extends the signature chain. Anyone holding a macaroon
    /// can do this, so caveats can only restrict what a macaroon grants.
    pub fn add_first_party_caveat(&mut self, caveat: impl AsRef<[u8]>) {
        let id = caveat.as_ref().to_vec();
        self.signature = hmac_sha256(&self.signature, &[&id]);
        self.caveats.push(RawCaveat {
            location: None,
            id,
            vid: None,
        });
    }

    /// The identifier bytes.
    pub fn identifier(&self) -> &[u8] {
        &self.identifier
    }

    /// The location, or `None` if it is absent or not UTF-8. Not covered by the signature.
    pub fn location(&self) -> Option<&str> {
        self.location
            .as_deref()
            .and_then(|l| std::str::from_utf8(l).ok())
    }

    /// The raw location bytes, `None` if the location field is absent.
    pub fn location_bytes(&self) -> Option<&[u8]> {
        self.location.as_deref()
    }

    /// The first-party caveats, in order.
    pub fn first_party_caveats(&self) -> impl Iterator<Item = &[u8]> {
        self.caveats
            .iter()
            .filter(|c| c.is_first_party())
            .map(|c| c.id.as_slice())
    }

    /// Whether any caveat is a third-party caveat (such a macaroon never verifies here).
    pub fn has_third_party_caveats(&self) -> bool {
        self.caveats.iter().any(|c| !c.is_first_party())
    }

    /// The number of caveats, first- and third-party.
    pub fn caveat_count(&self) -> usize {
        self.caveats.len()
    }

    /// The signature: the last HMAC of the chain.
    pub fn signature(&self) -> &[u8; 32] {
        &self.signature
    }

    /// The V2 binary encoding.
    pub fn to_binary(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            40 + self.identifier.len()
                + self.location.as_ref().map_or(0, |l| l.len() + 4)
                + self.caveats.iter().map(|c| c.id.len() + 8).sum::<usize>(),
        );
        out.push(VERSION_V2);
        if let Some(loc) = &self.location {
            put_field(&mut out, TAG_LOCATION, loc);
        }
        put_field(&mut out, TAG_IDENTIFIER, &self.identifier);
        out.push(TAG_EOS);
        for c in &self.caveats {
            if let Some(loc) = &c.location {
                put_field(&mut out, TAG_LOCATION, loc);
            }
            put_field(&mut out, TAG_IDENTIFIER, &c.id);
            if let Some(vid) = &c.vid {
                put_field(&mut out, TAG_VID, vid);
            }
            out.push(TAG_EOS);
        }
        out.push(TAG_EOS);
        put_field(&mut out, TAG_SIGNATURE, &self.signature);
        out
    }

    /// Decodes the V2 binary encoding. V1 and JSON macaroons are rejected with a clear error.
    pub fn from_binary(bytes: &[u8]) -> Result<Macaroon, MacaroonError> {
        if bytes.len() > MAX_BINARY_LEN {
            return Err(MacaroonError::TooLarge {
                len: bytes.len(),
                max: MAX_BINARY_LEN,
            });
        }
        let (&first, _) = bytes.split_first().ok_or(MacaroonError::Empty)?;
        match first {
            VERSION_V2 => {}
            b'{' => return Err(MacaroonError::UnsupportedJson),
            b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => return Err(MacaroonError::UnsupportedV1),
            other => return Err(MacaroonError::UnknownFormat(other)),
        }
        let mut r = Reader { buf: bytes, pos: 1 };

        // Header section: [location] identifier EOS.
        let [location, identifier, vid] = r.section()?;
        if vid.is_some() {
            return Err(MacaroonError::Malformed(
                "verification id in macaroon header",
            ));
        }
        let identifier = identifier.ok_or(MacaroonError::Malformed("missing identifier"))?;

        // Caveat sections, ended by an empty section.
        let mut caveats = Vec::new();
        loop {
            let [loc, id, vid] = r.section()?;
            if loc.is_none() && id.is_none() && vid.is_none() {
                break;
            }
            if caveats.len() == MAX_CAVEATS {
                return Err(MacaroonError::TooManyCaveats { max: MAX_CAVEATS });
            }
            let id = id.ok_or(MacaroonError::Malformed("caveat without identifier"))?;
            match (loc, vid) {
                (Some(_), None) => {
                    return Err(MacaroonError::Malformed(
                        "location not allowed in first-party caveat",
                    ));
                }
                (_, Some([])) => {
                    return Err(MacaroonError::Malformed("empty caveat verification id"));
                }
                _ => {}
            }
            caveats.push(RawCaveat {
                location: loc.map(<[u8]>::to_vec),
                id: id.to_vec(),
                vid: vid.map(<[u8]>::to_vec),
            });
        }

        // Signature field, then nothing.
        let tag = r.byte()?;
        if tag != TAG_SIGNATURE {
            return Err(MacaroonError::Malformed("expected signature field"));
        }
        let sig = r.field_data()?;
        let signature: [u8; 32] = sig
            .try_into()
            .map_err(|_| MacaroonError::BadSignatureLength(sig.len()))?;
        if r.pos != r.buf.len() {
            return Err(MacaroonError::TrailingData);
        }
        Ok(Macaroon {
            location: location.map(<[u8]>::to_vec),
            identifier: identifier.to_vec(),
            caveats,
            signature,
        })
    }

    /// Base64 of the V2 binary form: standard alphabet, padded (what Aperture sends).
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.to_binary())
    }

    /// Decodes base64 of the V2 binary form. Accepts the standard or the URL-safe alphabet,
    /// padded or not; surrounding whitespace is ignored.
    pub fn from_base64(s: &str) -> Result<Macaroon, MacaroonError> {
        let s = s.trim();
        let max = MAX_BINARY_LEN.div_ceil(3) * 4;
        if s.len() > max {
            return Err(MacaroonError::TooLarge { len: s.len(), max });
        }
        if s.starts_with('{') {
            return Err(MacaroonError::UnsupportedJson);
        }
        if s.is_empty() {
            return Err(MacaroonError::Empty);
        }
        let url_safe = s.contains(['-', '_']);
        let engine = if url_safe {
            &URL_SAFE_LENIENT
        } else {
            &STANDARD_LENIENT
        };
        let bytes = engine.decode(s).map_err(|_| MacaroonError::Base64)?;
        Macaroon::from_binary(&bytes)
    }

    /// Lowercase hex of the V2 binary form (the `Macaroon:` / gRPC metadata form).
    pub fn to_hex(&self) -> String {
        hex::encode(self.to_binary())
    }

    /// Decodes hex (either case) of the V2 binary form; surrounding whitespace is ignored.
    pub fn from_hex(s: &str) -> Result<Macaroon, MacaroonError> {
        let s = s.trim();
        let max = MAX_BINARY_LEN * 2;
        if s.len() > max {
            return Err(MacaroonError::TooLarge { len: s.len(), max });
        }
        if s.starts_with('{') {
            return Err(MacaroonError::UnsupportedJson);
        }
        if s.is_empty() {
            return Err(MacaroonError::Empty);
        }
        let bytes = hex::decode(s).map_err(|_| MacaroonError::Hex)?;
        Macaroon::from_binary(&bytes)
    }

    /// Recomputes the HMAC chain from `root_key` and compares it with the signature in constant
    /// time. Fails on any third-party caveat (discharge macaroons are not supported).
    pub fn verify_signature(&self, root_key: &[u8]) -> Result<(), MacaroonError> {
        if self.has_third_party_caveats() {
            return Err(MacaroonError::ThirdPartyCaveat);
        }
        let derived = derived_key(root_key);
        let mut sig = hmac_sha256(&derived, &[&self.identifier]);
        for c in &self.caveats {
            sig = hmac_sha256(&sig, &[&c.id]);
        }
        if bool::from(sig.ct_eq(&self.signature)) {
            Ok(())
        } else {
            Err(MacaroonError::InvalidSignature)
        }
    }
}

const LENIENT: GeneralPurposeConfig = GeneralPurposeConfig::new()
    .with_decode_padding_mode(DecodePaddingMode::Indifferent)
    .with_decode_allow_trailing_bits(false);
const STANDARD_LENIENT: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, LENIENT);
const URL_SAFE_LENIENT: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, LENIENT);

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn put_field(out: &mut Vec<u8>, tag: u8, data: &[u8]) {
    out.push(tag);
    put_varint(out, data.len() as u64);
    out.extend_from_slice(data);
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, MacaroonError> {
        let b = *self.buf.get(self.pos).ok_or(MacaroonError::Truncated)?;
        self.pos += 1;
        Ok(b)
    }

    /// A minimal unsigned LEB128 varint.
    fn varint(&mut self) -> Result<u64, MacaroonError> {
        let mut n: u64 = 0;
        for i in 0..10u32 {
            let b = self.byte()?;
            let low = u64::from(b & 0x7f);
            if i == 9 && b > 1 {
                return Err(MacaroonError::InvalidVarint);
            }
            n |= low << (7 * i);
            if b & 0x80 == 0 {
                if i > 0 && b == 0 {
                    // Non-minimal encoding.
                    return Err(MacaroonError::InvalidVarint);
                }
                return Ok(n);
            }
        }
        Err(MacaroonError::InvalidVarint)
    }

    /// A varint length and that many bytes.
    fn field_data(&mut self) -> Result<&'a [u8], MacaroonError> {
        let len = self.varint()?;
        let remaining = self.buf.len() - self.pos;
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l <= remaining)
            .ok_or(MacaroonError::Truncated)?;
        let data = &self.buf[self.pos..self.pos + len];
        self.pos += len;
        Ok(data)
    }

    /// One section: fields with tags location, identifier, vid in strictly ascending order,
    /// then EOS. Returns them as `[location, identifier, vid]`.
    fn section(&mut self) -> Result<[Option<&'a [u8]>; 3], MacaroonError> {
        let mut fields: [Option<&'a [u8]>; 3] = [None; 3];
        let mut last_tag = TAG_EOS;
        loop {
            let tag = self.byte()?;
            if tag == TAG_EOS {
                return Ok(fields);
            }
            let slot = match tag {
                TAG_LOCATION => 0,
                TAG_IDENTIFIER => 1,
                TAG_VID => 2,
                TAG_SIGNATURE => {
                    return Err(MacaroonError::Malformed("unexpected signature field"));
                }
                _ => return Err(MacaroonError::Malformed("unknown field tag")),
            };
            if tag <= last_tag {
                return Err(MacaroonError::Malformed("fields out of order or repeated"));
            }
            last_tag = tag;
            fields[slot] = Some(self.field_data()?);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIB_KEY: &[u8] = b"this is our super secret key; only we should know it";

    #[test]
    fn libmacaroons_reference_signatures() {
        let mut m = Macaroon::new(LIB_KEY, "we used our secret key", "http://mybank/");
        assert_eq!(
            hex::encode(m.signature()),
            "e3d9e02908526c4c0039ae15114115d97fdd68bf2ba379b342aaf0f617d0552f"
        );
        m.add_first_party_caveat("account = 3735928559");
        assert_eq!(
            hex::encode(m.signature()),
            "1efe4763f290dbce0c1d08477367e11f4eee456a64933cf662d79772dbb82128"
        );
        m.verify_signature(LIB_KEY).unwrap();
        assert_eq!(
            m.verify_signature(b"wrong key"),
            Err(MacaroonError::InvalidSignature)
        );
    }

    #[test]
    fn aperture_test_macaroon_bytes() {
        // Aperture auth test vector (l402-vectors.md 4 / aperture.md 3.5).
        let key = b"aabbccddeeff00112233445566778899";
        let mut m = Macaroon::new(key, "AA==", "aperture");
        m.add_first_party_caveat(
            "preimage=49349dfea4abed3cd14f6d356afa83de9787b609f088c8df09bacc7b4bd21b39",
        );
        assert_eq!(
            m.to_hex(),
            "0201086170657274757265020441413d3d000249707265696d6167653d343933343964666561346162\
             6564336364313466366433353661666138336465393738376236303966303838633864663039626163\
             633762346264323162333900000620a329f0d7149ad54162e7448d868825e9a508d4de95fb86d5d006\
             0002493ca6b5"
        );
        assert_eq!(Macaroon::from_hex(&m.to_hex()).unwrap(), m);
        assert_eq!(Macaroon::from_base64(&m.to_base64()).unwrap(), m);
    }

    #[test]
    fn empty_location_is_omitted_and_round_trips() {
        let m = Macaroon::new(b"k", "id", "");
        assert_eq!(m.location(), None);
        let bin = m.to_binary();
        assert_eq!(&bin[..4], &[2, 2, 2, b'i']);
        assert_eq!(Macaroon::from_binary(&bin).unwrap(), m);
    }

    #[test]
    fn empty_location_field_is_preserved() {
        // pymacaroons writes an empty location field (0x01 0x00).
        let m = Macaroon::new(b"k", "id", "x");
        let mut bin = m.to_binary();
        bin.splice(1..4, [1u8, 0]);
        let parsed = Macaroon::from_binary(&bin).unwrap();
        assert_eq!(parsed.location(), Some(""));
        assert_eq!(parsed.to_binary(), bin);
        parsed.verify_signature(b"k").unwrap();
    }

    #[test]
    fn rejects_other_formats() {
        assert_eq!(Macaroon::from_binary(&[]), Err(MacaroonError::Empty));
        assert_eq!(
            Macaroon::from_binary(b"{\"v\":2}"),
            Err(MacaroonError::UnsupportedJson)
        );
        assert_eq!(
            Macaroon::from_binary(b"0010location x\n"),
            Err(MacaroonError::UnsupportedV1)
        );
        assert_eq!(
            Macaroon::from_base64("{\"v\":2,\"i\":\"x\"}"),
            Err(MacaroonError::UnsupportedJson)
        );
        // A V1 macaroon (pymacaroons V1 serialization, URL-safe base64).
        assert_eq!(
            Macaroon::from_base64(
                "MDAxY2xvY2F0aW9uIGh0dHA6Ly9teWJhbmsvCjAwMjZpZGVudGlmaWVyIHdlIHVzZWQgb3VyIHNlY3JldCBrZXkKMDAyZnNpZ25hdHVyZSDj2eApCFJsTAA5rhURQRXZf91ovyujebNCqvD2F9BVLwo"
            ),
            Err(MacaroonError::UnsupportedV1)
        );
        assert_eq!(
            Macaroon::from_binary(&[3, 0]),
            Err(MacaroonError::UnknownFormat(3))
        );
    }

    #[test]
    fn rejects_structural_errors() {
        let mut m = Macaroon::new(b"k", "id", "loc");
        m.add_first_party_caveat("a=b");
        let good = m.to_binary();
        // Trailing data.
        let mut t = good.clone();
        t.push(0);
        assert_eq!(Macaroon::from_binary(&t), Err(MacaroonError::TrailingData));
        // Truncations never parse.
        for n in 0..good.len() {
            assert!(Macaroon::from_binary(&good[..n]).is_err(), "prefix {n}");
        }
        // Short signature.
        let mut s = good[..good.len() - 33].to_vec();
        s.extend_from_slice(&[31]);
        s.extend_from_slice(&[0; 31]);
        assert_eq!(
            Macaroon::from_binary(&s),
            Err(MacaroonError::BadSignatureLength(31))
        );
        // Identifier before location.
        assert!(matches!(
            Macaroon::from_binary(&[2, 2, 1, b'i', 1, 1, b'l', 0, 0, 6, 0]),
            Err(MacaroonError::Malformed(_))
        ));
        // Missing identifier.
        assert!(matches!(
            Macaroon::from_binary(&[2, 1, 1, b'l', 0, 0, 6, 0]),
            Err(MacaroonError::Malformed(_))
        ));
        // Non-minimal varint (0x83 0x00 for 3).
        assert_eq!(
            Macaroon::from_binary(&[2, 2, 0x83, 0x00, b'a', b'b', b'c', 0]),
            Err(MacaroonError::InvalidVarint)
        );
        // Huge length.
        assert_eq!(
            Macaroon::from_binary(&[2, 2, 0xff, 0xff, 0xff, 0xff, 0x0f]),
            Err(MacaroonError::Truncated)
        );
        // Overlong varint.
        assert_eq!(
            Macaroon::from_binary(&[
                2, 2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f
            ]),
            Err(MacaroonError::InvalidVarint)
        );
        // Too large.
        assert!(matches!(
            Macaroon::from_binary(&vec![2u8; MAX_BINARY_LEN + 1]),
            Err(MacaroonError::TooLarge { .. })
        ));
    }

    #[test]
    fn caveat_limit() {
        let mut m = Macaroon::new(b"k", "id", "loc");
        for _ in 0..MAX_CAVEATS {
            m.add_first_party_caveat("x=y");
        }
        assert!(Macaroon::from_binary(&m.to_binary()).is_ok());
        m.add_first_party_caveat("x=y");
        assert_eq!(
            Macaroon::from_binary(&m.to_binary()),
            Err(MacaroonError::TooManyCaveats { max: MAX_CAVEATS })
        );
    }

    #[test]
    fn third_party_caveats_parse_but_never_verify() {
        // Header, one third-party caveat (location, id, vid), end, signature.
        let mut bin = vec![2, 2, 2, b'i', b'd', 0];
        bin.extend_from_slice(&[1, 3, b'l', b'o', b'c', 2, 1, b'c', 4, 2, b'v', b'v', 0, 0]);
        bin.extend_from_slice(&[6, 32]);
        bin.extend_from_slice(&[7; 32]);
        let m = Macaroon::from_binary(&bin).unwrap();
        assert!(m.has_third_party_caveats());
        assert_eq!(m.first_party_caveats().count(), 0);
        assert_eq!(m.to_binary(), bin);
        assert_eq!(
            m.verify_signature(b"k"),
            Err(MacaroonError::ThirdPartyCaveat)
        );
        // First-party caveat with a location is rejected (as pymacaroons does).
        let bad = [2, 2, 1, b'i', 0, 1, 1, b'l', 2, 1, b'c', 0, 0, 6, 0];
        assert!(matches!(
            Macaroon::from_binary(&bad),
            Err(MacaroonError::Malformed(_))
        ));
    }

    #[test]
    fn base64_variants() {
        let mut m = Macaroon::new(b"k", vec![0xfb, 0xff, 0xfe], "loc");
        m.add_first_party_caveat([0xff, 0xfe, 0xfd]);
        let std = m.to_base64();
        let unpadded = std.trim_end_matches('=');
        let url = std.replace('+', "-").replace('/', "_");
        assert!(
            std.contains(['+', '/']),
            "test needs both alphabets to differ: {std}"
        );
        for s in [
            std.clone(),
            unpadded.to_owned(),
            url.clone(),
            url.trim_end_matches('=').to_owned(),
            format!("  {std}\n"),
        ] {
            assert_eq!(Macaroon::from_base64(&s).unwrap(), m, "{s}");
        }
        assert_eq!(Macaroon::from_base64("!!!!"), Err(MacaroonError::Base64));
        assert_eq!(Macaroon::from_base64(" "), Err(MacaroonError::Empty));
        assert_eq!(Macaroon::from_hex("0g"), Err(MacaroonError::Hex));
        assert_eq!(Macaroon::from_hex(&m.to_hex().to_uppercase()).unwrap(), m);
    }

    #[test]
    fn debug_redacts_signature() {
        let m = Macaroon::new(b"k", "id", "loc");
        let dbg = format!("{m:?}");
        assert!(dbg.contains("<redacted>"));
        assert!(!dbg.contains(&hex::encode(m.signature())));
    }
}
