//! Secret bytes: private keys, account credentials, TSIG secrets, passwords read from files.
//!
//! A leaf shared by the store (which seals them), the issuer (which makes keys and account
//! credentials) and hooks (which convert keys): none of them has to know the others to pass
//! one along. Knows nothing else.

use std::fmt;

/// Secret bytes (a private key, account credentials): never printed, zeroed on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(zeroize::Zeroizing<Vec<u8>>);

impl Secret {
    /// Wraps secret bytes.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(zeroize::Zeroizing::new(bytes))
    }

    /// The bytes, for the one place that needs them.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_the_length_only() {
        let s = Secret::new(b"hunter2".to_vec());
        assert_eq!(format!("{s:?}"), "Secret(7 bytes)");
        assert_eq!(s.expose(), b"hunter2");
    }
}
