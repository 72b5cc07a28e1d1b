//! Checking, once per token, that its invoice really is settled.
//!
//! A credential proves payment by its preimage. A backend that could hand out the preimage of
//! an unpaid invoice (LNbits 1.6.2 does, for an expired internal invoice "paid" by another
//! account) would let anyone mint a valid credential for free; asking the backend before a
//! token's first call closes that. The answer is remembered, so later calls need no lookup.

use std::collections::HashSet;

/// Token ids are random (and authenticated before they get here): a fast hash will do.
type TokenSet = HashSet<TokenId, foldhash::fast::RandomState>;
use std::sync::Mutex;

use turnpike_l402::TokenId;

/// Shards of the remembered set.
const SHARDS: usize = 16;
/// Tokens remembered per shard; a full shard is emptied (its tokens are looked up again).
const PER_SHARD: usize = 8192;

/// Tokens whose invoices were seen settled, in bounded memory.
#[derive(Debug)]
pub struct SettledTokens {
    shards: Vec<Mutex<TokenSet>>,
}

impl Default for SettledTokens {
    fn default() -> Self {
        SettledTokens {
            shards: (0..SHARDS)
                .map(|_| Mutex::new(TokenSet::default()))
                .collect(),
        }
    }
}

impl SettledTokens {
    fn shard(&self, token: &TokenId) -> &Mutex<TokenSet> {
        // The last byte: random in every id (minted ids begin with their time).
        &self.shards[usize::from(token.0[31]) % SHARDS]
    }

    /// Whether `token`'s invoice was already seen settled.
    pub fn contains(&self, token: &TokenId) -> bool {
        self.shard(token)
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(token)
    }

    /// Remembers that `token`'s invoice is settled.
    pub fn insert(&self, token: TokenId) {
        let mut set = self.shard(&token).lock().unwrap_or_else(|p| p.into_inner());
        if set.len() >= PER_SHARD {
            set.clear();
        }
        set.insert(token);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_within_bounds() {
        let s = SettledTokens::default();
        let t = TokenId::random();
        assert!(!s.contains(&t));
        s.insert(t);
        assert!(s.contains(&t));
        for _ in 0..(SHARDS * PER_SHARD * 2) {
            s.insert(TokenId::random());
        }
        let total: usize = s.shards.iter().map(|m| m.lock().unwrap().len()).sum();
        assert!(total <= SHARDS * PER_SHARD);
    }
}
