//! What a node credential allows, read from the credential itself, so that a credential that
//! can spend is refused where only invoices are wanted (a hub provider's payout).
//!
//! - An **LND macaroon** lists its permissions in its identifier: lnd writes a version byte
//!   (`3`) and a protobuf `MacaroonId {nonce = 1, storageId = 2, repeated Op ops = 3}`, each
//!   `Op {entity = 1, repeated actions = 2}` (lnd `macaroons/service.go`, `macaroons.proto`),
//!   inside a libmacaroons V2 binary macaroon (`0x02`, then fields `type, varint length,
//!   bytes`: location `1`, identifier `2`). Caveats can only narrow those permissions, so the
//!   identifier's list is an upper bound: [`macaroon_operations`].
//! - A **Core Lightning rune** is base64url of a 32-byte hash followed by its restrictions as
//!   text: restrictions joined by `&`, each a set of alternatives joined by `|`, each
//!   `field condition value`, with `\` escaping (CLN `doc/lightning-createrune.7.md`; the first
//!   restriction `=<id>` is the unique id). A request must satisfy every restriction, so a
//!   restriction whose alternatives are all `method=<m>` limits the rune to those methods:
//!   [`rune_methods`].

use base64::Engine as _;

/// The `entity:action` permissions an invoice-only LND macaroon may hold (lnd's
/// `invoice.macaroon` has exactly these; `info:read` is allowed too).
pub const LND_INVOICE_PERMISSIONS: &[&str] = &[
    "invoices:read",
    "invoices:write",
    "address:read",
    "address:write",
    "onchain:read",
    "info:read",
];

/// The methods an invoice-only Core Lightning rune may allow.
pub const CLN_INVOICE_METHODS: &[&str] = &["invoice", "listinvoices", "getinfo"];

/// The `entity:action` permissions of an LND macaroon (hex), from its identifier.
pub fn macaroon_operations(hex_text: &str) -> Result<Vec<String>, String> {
    let bytes = hex::decode(hex_text.trim()).map_err(|_| "is not hex".to_owned())?;
    let id = macaroon_identifier(&bytes).ok_or("is not a binary (V2) macaroon")?;
    match id.split_first() {
        Some((3, message)) => lnd_operations(message)
            .ok_or_else(|| "has an identifier that is not lnd's (version 3, protobuf)".to_owned()),
        _ => Err("has an identifier that is not lnd's (version 3)".into()),
    }
}

/// Checks that an LND macaroon (hex) allows nothing beyond [`LND_INVOICE_PERMISSIONS`].
pub fn check_invoice_macaroon(hex_text: &str) -> Result<(), String> {
    let ops = macaroon_operations(hex_text)?;
    let extra: Vec<&str> = ops
        .iter()
        .map(String::as_str)
        .filter(|op| !LND_INVOICE_PERMISSIONS.contains(op))
        .collect();
    match extra.as_slice() {
        [] if ops.is_empty() => Err("grants no permission".into()),
        [] => Ok(()),
        _ => Err(format!(
            "grants {} (an invoice macaroon only creates and reads invoices: use invoice.macaroon)",
            extra.join(", ")
        )),
    }
}

/// The identifier field of a V2 binary macaroon.
fn macaroon_identifier(bytes: &[u8]) -> Option<&[u8]> {
    let mut rest = bytes.strip_prefix(&[2])?;
    loop {
        let (&kind, after) = rest.split_first()?;
        let (len, after) = varint(after)?;
        let len = usize::try_from(len).ok()?;
        let data = after.get(..len)?;
        rest = &after[len..];
        match kind {
            1 => continue,
            2 => return Some(data),
            _ => return None,
        }
    }
}

/// The ops of lnd's `MacaroonId` protobuf message.
fn lnd_operations(message: &[u8]) -> Option<Vec<String>> {
    let mut ops = Vec::new();
    for (field, value) in protobuf_fields(message)? {
        if field != 3 {
            continue;
        }
        let mut entity = None;
        let mut actions = Vec::new();
        for (f, v) in protobuf_fields(value)? {
            let text = std::str::from_utf8(v).ok()?;
            match f {
                1 => entity = Some(text),
                2 => actions.push(text),
                _ => {}
            }
        }
        let entity = entity?;
        ops.extend(actions.into_iter().map(|a| format!("{entity}:{a}")));
    }
    Some(ops)
}

/// The length-delimited fields of a protobuf message (`None` if it holds any other kind, or
/// is malformed).
fn protobuf_fields(mut message: &[u8]) -> Option<Vec<(u64, &[u8])>> {
    let mut fields = Vec::new();
    while !message.is_empty() {
        let (key, after) = varint(message)?;
        if key & 7 != 2 {
            return None;
        }
        let (len, after) = varint(after)?;
        let len = usize::try_from(len).ok()?;
        fields.push((key >> 3, after.get(..len)?));
        message = &after[len..];
    }
    Some(fields)
}

/// A base-128 varint and what follows it.
fn varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, &bytes[i + 1..]));
        }
    }
    None
}

/// The methods a Core Lightning rune is limited to (`None`: it is not limited to a list of
/// methods, so it may call any, `pay` included).
pub fn rune_methods(rune: &str) -> Result<Option<Vec<String>>, String> {
    let bytes = base64::engine::general_purpose::URL_SAFE
        .decode(rune.trim())
        .map_err(|_| "is not base64url".to_owned())?;
    let text = bytes
        .get(32..)
        .and_then(|r| std::str::from_utf8(r).ok())
        .ok_or("is not a rune")?;
    let mut narrowest: Option<Vec<String>> = None;
    for restriction in split_unescaped(text, '&') {
        let mut methods = Vec::new();
        for alternative in split_unescaped(&restriction, '|') {
            match alternative.strip_prefix("method=") {
                Some(m) => methods.push(m.to_owned()),
                None => {
                    methods.clear();
                    break;
                }
            }
        }
        if methods.is_empty() {
            continue;
        }
        narrowest = Some(match narrowest {
            // Every restriction must hold: only methods in both are allowed.
            Some(prev) => prev.into_iter().filter(|m| methods.contains(m)).collect(),
            None => methods,
        });
    }
    Ok(narrowest)
}

/// Checks that a rune may call nothing beyond [`CLN_INVOICE_METHODS`].
pub fn check_invoice_rune(rune: &str) -> Result<(), String> {
    let invoice_only = "(create one with lightning-cli createrune \
                        restrictions='[[\"method=invoice\",\"method=listinvoices\"]]')";
    match rune_methods(rune)? {
        None => Err(format!("may call any method, pay included {invoice_only}")),
        Some(methods) => {
            let extra: Vec<&str> = methods
                .iter()
                .map(String::as_str)
                .filter(|m| !CLN_INVOICE_METHODS.contains(m))
                .collect();
            if extra.is_empty() {
                Ok(())
            } else {
                Err(format!("allows {} {invoice_only}", extra.join(", ")))
            }
        }
    }
}

/// Splits `text` at `sep` not escaped by `\`, removing the escapes.
fn split_unescaped(text: &str, sep: char) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        let current = parts.last_mut().expect("never empty");
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    if next != sep {
                        current.push('\\');
                    }
                    current.push(next);
                }
            }
            c if c == sep => parts.push(String::new()),
            c => current.push(c),
        }
    }
    parts
}

/// Test credentials: an lnd macaroon granting `ops` (`entity:action`), and a rune with the
/// given restrictions text. Neither is signed by anything (the signature/hash is zeros).
pub mod test_credentials {
    use base64::Engine as _;

    /// An lnd V2 macaroon (hex) whose identifier grants `ops`.
    pub fn lnd_macaroon(ops: &[&str]) -> String {
        let mut message = field(1, &[7u8; 16]);
        message.extend(field(2, b"0"));
        let mut entities: Vec<(&str, Vec<&str>)> = Vec::new();
        for op in ops {
            let (entity, action) = op.split_once(':').expect("entity:action");
            match entities.iter_mut().find(|(e, _)| *e == entity) {
                Some((_, actions)) => actions.push(action),
                None => entities.push((entity, vec![action])),
            }
        }
        for (entity, actions) in entities {
            let mut op = field(1, entity.as_bytes());
            for action in actions {
                op.extend(field(2, action.as_bytes()));
            }
            message.extend(field(3, &op));
        }
        let mut id = vec![3u8];
        id.extend(message);
        let mut mac = vec![2u8, 1, 3];
        mac.extend(b"lnd");
        mac.push(2);
        mac.extend(varint(id.len() as u64));
        mac.extend(id);
        mac.extend([0, 0, 6, 32]);
        mac.extend([0u8; 32]);
        hex::encode(mac)
    }

    /// A rune (base64url) with `restrictions` (e.g. `=0&method=invoice|method=listinvoices`).
    pub fn cln_rune(restrictions: &str) -> String {
        let mut bytes = vec![0x5au8; 32];
        bytes.extend(restrictions.as_bytes());
        base64::engine::general_purpose::URL_SAFE.encode(bytes)
    }

    fn field(number: u64, data: &[u8]) -> Vec<u8> {
        let mut out = varint(number << 3 | 2);
        out.extend(varint(data.len() as u64));
        out.extend(data);
        out
    }

    fn varint(mut v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return out;
            }
            out.push(b | 0x80);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_credentials::{cln_rune, lnd_macaroon};
    use super::*;
    use proptest::prelude::*;

    /// The first bytes of an lnd macaroon (the contract fake's secret).
    const TRUNCATED: &str = "0201036c6e6402f801030a10c1f7aa8f0b2d6e2b0b7f3e1a7c6d5e4f1201301a160a0761646472657373120472656164120577726974651a130a04696e666f120472656164120577726974651a170a08696e766f69636573120472656164120577726974651a210a086d616361726f6f6e120867656e6572617465120472656164120577726974651a160a076d6573736167651204726561641205777269746512";

    #[test]
    fn macaroon_permissions_are_read_from_the_identifier() {
        let baker = lnd_macaroon(&["invoices:write", "macaroon:generate"]);
        let ops = macaroon_operations(&baker).unwrap();
        assert_eq!(ops, ["invoices:write", "macaroon:generate"]);
        let e = check_invoice_macaroon(&baker).unwrap_err();
        assert!(e.contains("macaroon:generate"), "{e}");
        // Cut short: the identifier is longer than what is left.
        assert!(check_invoice_macaroon(TRUNCATED).is_err());
        let invoice = lnd_macaroon(&[
            "address:read",
            "address:write",
            "invoices:read",
            "invoices:write",
            "onchain:read",
        ]);
        assert!(check_invoice_macaroon(&invoice).is_ok());
        let admin = lnd_macaroon(&["invoices:read", "offchain:write"]);
        assert!(
            check_invoice_macaroon(&admin)
                .unwrap_err()
                .contains("offchain:write")
        );
        assert!(check_invoice_macaroon(&lnd_macaroon(&[])).is_err());
        assert!(check_invoice_macaroon("zz").is_err());
        assert!(check_invoice_macaroon("0102").is_err());
    }

    #[test]
    fn runes_must_be_limited_to_invoice_methods() {
        assert!(check_invoice_rune("zFMd1fjhrAYxUeFA54TjloZqOt8JrA_i_nYwIgXkag49MA==").is_err());
        assert!(check_invoice_rune(&cln_rune("=0&method=invoice|method=listinvoices")).is_ok());
        assert!(check_invoice_rune(&cln_rune("=0&method=invoice|method=pay")).is_err());
        // An alternative that is not a method equality lets any method through.
        assert!(check_invoice_rune(&cln_rune("=0&method=invoice|time<99999999999")).is_err());
        assert!(check_invoice_rune(&cln_rune("=0&method^list")).is_err());
        // Restrictions add up: pay is in one list but not the other.
        assert!(
            check_invoice_rune(&cln_rune(
                "=0&method=invoice|method=pay&method=invoice|method=listinvoices"
            ))
            .is_ok()
        );
        // An escaped separator is part of the value, not a new alternative.
        assert!(check_invoice_rune(&cln_rune("=0&method=invoice\\|method=pay")).is_err());
        assert!(check_invoice_rune("not base64!").is_err());
    }

    proptest! {
        #[test]
        fn macaroons_round_trip(ops in proptest::collection::vec("[a-z]{1,8}:[a-z]{1,8}", 0..6)) {
            let refs: Vec<&str> = ops.iter().map(String::as_str).collect();
            let mut got = macaroon_operations(&lnd_macaroon(&refs)).unwrap();
            let mut want = ops.clone();
            got.sort();
            want.sort();
            prop_assert_eq!(got, want);
        }

        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = macaroon_operations(&hex::encode(&bytes));
            let _ = rune_methods(&base64::engine::general_purpose::URL_SAFE.encode(&bytes));
        }
    }
}
