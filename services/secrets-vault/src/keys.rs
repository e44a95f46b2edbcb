//! Master keys: 32 bytes each, versioned, never printed, zeroized when
//! dropped.

use std::collections::BTreeMap;
use std::fmt;

use aes_gcm_siv::Aes256GcmSiv;
use aes_gcm_siv::aead::KeyInit;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Why a master key cannot be used. Messages never include key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not base64.
    #[error("master key version {0} is not base64 (standard alphabet, with padding)")]
    Encoding(u32),
    /// Not 32 bytes.
    #[error(
        "master key version {version} is {len} bytes; it must be 32 (base64 of 32 random bytes, e.g. `openssl rand -base64 32`)"
    )]
    Length {
        /// The version.
        version: u32,
        /// Its decoded length.
        len: usize,
    },
    /// Versions start at 1.
    #[error("master key versions are whole numbers from 1; got {0:?}")]
    Version(String),
    /// Nothing to encrypt with.
    #[error("no master key is configured")]
    Empty,
}

/// One version of the master key.
pub struct MasterKey {
    version: u32,
    bytes: Zeroizing<[u8; 32]>,
    /// Set up once (its key schedule zeroized on drop), not per value.
    cipher: Aes256GcmSiv,
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey(v{}, [redacted])", self.version)
    }
}

impl MasterKey {
    /// A key from its base64 text (surrounding whitespace ignored).
    pub fn from_base64(version: u32, text: &str) -> Result<Self, KeyError> {
        if version == 0 {
            return Err(KeyError::Version("0".into()));
        }
        let decoded = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map_err(|_| KeyError::Encoding(version))?,
        );
        let bytes: [u8; 32] = decoded
            .as_slice()
            .try_into()
            .map_err(|_| KeyError::Length {
                version,
                len: decoded.len(),
            })?;
        Ok(Self::from_bytes(version, Zeroizing::new(bytes)))
    }

    /// A new random key (for the development key of the embedded default).
    pub fn generate(version: u32) -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        getrandom::fill(bytes.as_mut()).expect("the OS random source");
        Self::from_bytes(version, bytes)
    }

    fn from_bytes(version: u32, bytes: Zeroizing<[u8; 32]>) -> Self {
        let cipher = Aes256GcmSiv::new_from_slice(bytes.as_ref()).expect("32-byte keys");
        Self {
            version,
            bytes,
            cipher,
        }
    }

    /// The key as base64, for writing the development key file.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(self.bytes.as_ref()))
    }

    /// The version.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// A check value that identifies the key without revealing it: the
    /// database records it, so a different key under the same version is
    /// refused at start instead of failing every decryption.
    pub fn check_value(&self) -> String {
        let digest = Sha256::new()
            .chain_update(b"twig-vault master key check v1\0")
            .chain_update(self.bytes.as_ref())
            .finalize();
        digest[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The AEAD keyed with this master key.
    pub(crate) fn cipher(&self) -> &Aes256GcmSiv {
        &self.cipher
    }
}

/// The configured master keys by version; the newest encrypts.
#[derive(Debug)]
pub struct Keyring {
    keys: BTreeMap<u32, MasterKey>,
}

impl Keyring {
    /// A keyring of `keys` (at least one).
    pub fn new(keys: impl IntoIterator<Item = MasterKey>) -> Result<Self, KeyError> {
        let keys: BTreeMap<u32, MasterKey> = keys.into_iter().map(|k| (k.version, k)).collect();
        if keys.is_empty() {
            return Err(KeyError::Empty);
        }
        Ok(Self { keys })
    }

    /// Parses `version` names such as `1`, `2`.
    pub fn parse_version(name: &str) -> Result<u32, KeyError> {
        match name.trim().parse::<u32>() {
            Ok(v) if v > 0 => Ok(v),
            _ => Err(KeyError::Version(name.to_string())),
        }
    }

    /// The key new writes use: the newest version.
    pub fn active(&self) -> &MasterKey {
        self.keys
            .values()
            .next_back()
            .expect("a keyring is never empty")
    }

    /// The key of `version`, if configured.
    pub fn get(&self, version: u32) -> Option<&MasterKey> {
        self.keys.get(&version)
    }

    /// Every configured key, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &MasterKey> {
        self.keys.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_length_or_encoding_is_refused_without_echoing_the_key() {
        let short = base64::engine::general_purpose::STANDARD.encode([7u8; 16]);
        let err = MasterKey::from_base64(1, &short).unwrap_err();
        assert_eq!(
            err,
            KeyError::Length {
                version: 1,
                len: 16
            }
        );
        assert!(!err.to_string().contains(&short));
        assert_eq!(
            MasterKey::from_base64(2, "not base64 at all!").unwrap_err(),
            KeyError::Encoding(2)
        );
        let good = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
        let key = MasterKey::from_base64(3, &format!(" {good}\n")).unwrap();
        assert_eq!(key.version(), 3);
        assert!(!format!("{key:?}").contains(&good));
        assert_eq!(key.check_value().len(), 16);
        assert!(Keyring::parse_version("0").is_err());
        assert!(Keyring::parse_version("v2").is_err());
    }

    #[test]
    fn the_newest_version_encrypts() {
        let ring = Keyring::new([MasterKey::generate(1), MasterKey::generate(3)]).unwrap();
        assert_eq!(ring.active().version(), 3);
        assert!(ring.get(2).is_none());
        assert_eq!(Keyring::new([]).unwrap_err(), KeyError::Empty);
    }
}
