//! Envelope encryption with AES-256-GCM-SIV.
//!
//! Every sealed value has its own random data key. The value is encrypted
//! with the data key; the data key is encrypted ("wrapped") with a version
//! of the master key. Both encryptions take the value's [`Binding`] as
//! associated data, so a ciphertext copied to another organisation,
//! record, field or purpose does not decrypt — neither its value nor its
//! data key.
//!
//! The sealed form is text: `twig:k<version>:<base64url>`, where the
//! version names the master key that wraps the data key and the base64
//! holds `wrap nonce (12) | wrapped data key (48) | nonce (12) |
//! ciphertext (n + 16)`.

use aes_gcm_siv::aead::{AeadInOut, KeyInit};
use aes_gcm_siv::{Aes256GcmSiv, Nonce, Tag};
use base64::Engine as _;
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::keys::{Keyring, MasterKey};

const NONCE: usize = 12;
const TAG: usize = 16;
const WRAPPED: usize = 32 + TAG;
const HEADER: usize = NONCE + WRAPPED + NONCE;
/// The largest plaintext one seal takes.
pub const MAX_PLAINTEXT: usize = 64 * 1024;
/// The longest base64 body of a sealed value: that of the largest
/// plaintext. Anything longer is refused before it is decoded.
const MAX_BODY: usize = (HEADER + MAX_PLAINTEXT + TAG).div_ceil(3) * 4;

/// Where a value belongs; bound into both encryptions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The organisation.
    pub org: Uuid,
    /// What kind of value (e.g. `provider-key`, or a transit purpose).
    pub purpose: String,
    /// The record it belongs to.
    pub record: String,
    /// The field of the record.
    pub field: String,
}

impl Binding {
    /// Length-prefixed fields, so no two bindings encode alike.
    fn associated_data(&self, domain: &str, version: u32) -> Vec<u8> {
        let mut out = Vec::with_capacity(96);
        for part in [
            domain.as_bytes(),
            self.org.as_bytes().as_slice(),
            self.purpose.as_bytes(),
            self.record.as_bytes(),
            self.field.as_bytes(),
            &version.to_be_bytes(),
        ] {
            out.extend_from_slice(&u32::try_from(part.len()).unwrap_or(u32::MAX).to_be_bytes());
            out.extend_from_slice(part);
        }
        out
    }
}

/// Why a sealed value cannot be opened. Deliberately vague about which
/// check failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Not of the sealed form.
    #[error("not a sealed value (twig:k<version>:<base64>)")]
    Malformed,
    /// Its master key version is not configured.
    #[error("sealed with master key version {0}, which is not configured")]
    UnknownKey(u32),
    /// Altered, or sealed for another binding or with another key.
    #[error(
        "the sealed value does not open: altered, or sealed for another record, field or organisation"
    )]
    Rejected,
}

/// A sealed value, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// The master key version that wraps the data key.
    pub version: u32,
    bytes: Vec<u8>,
}

impl Sealed {
    /// Parses `twig:k<version>:<base64url>`.
    pub fn parse(text: &str) -> Result<Self, OpenError> {
        let rest = text.strip_prefix("twig:k").ok_or(OpenError::Malformed)?;
        let (version, body) = rest.split_once(':').ok_or(OpenError::Malformed)?;
        let version = version
            .parse::<u32>()
            .ok()
            .filter(|v| *v > 0)
            .ok_or(OpenError::Malformed)?;
        if body.len() > MAX_BODY {
            return Err(OpenError::Malformed);
        }
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| OpenError::Malformed)?;
        if bytes.len() < HEADER + TAG {
            return Err(OpenError::Malformed);
        }
        Ok(Self { version, bytes })
    }

    /// The text form.
    pub fn to_text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::with_capacity(20 + self.bytes.len().div_ceil(3) * 4);
        write!(out, "twig:k{}:", self.version).expect("writing to a String");
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(&self.bytes, &mut out);
        out
    }
}

fn cipher(key: &[u8; 32]) -> Aes256GcmSiv {
    Aes256GcmSiv::new_from_slice(key).expect("32-byte keys")
}

/// Encrypts `region[..len - TAG]` in place and writes the tag into its
/// last `TAG` bytes.
fn encrypt_in(cipher: &Aes256GcmSiv, nonce: &[u8], aad: &[u8], region: &mut [u8]) {
    let (message, tag) = region.split_at_mut(region.len() - TAG);
    let computed = cipher
        .encrypt_inout_detached(
            &Nonce::try_from(nonce).expect("12-byte nonces"),
            aad,
            message.into(),
        )
        .expect("encryption within the size limit");
    tag.copy_from_slice(&computed);
}

/// Decrypts `region[..len - TAG]` in place if the tag in its last `TAG`
/// bytes matches.
fn decrypt_in(
    cipher: &Aes256GcmSiv,
    nonce: &[u8],
    aad: &[u8],
    region: &mut [u8],
) -> Result<(), OpenError> {
    let (message, tag) = region.split_at_mut(region.len() - TAG);
    let tag = Tag::try_from(&*tag).map_err(|_| OpenError::Malformed)?;
    cipher
        .decrypt_inout_detached(
            &Nonce::try_from(nonce).map_err(|_| OpenError::Malformed)?,
            aad,
            message.into(),
            &tag,
        )
        .map_err(|_| OpenError::Rejected)
}

/// Seals `plaintext` for `binding` with the keyring's newest key.
pub fn seal(keys: &Keyring, binding: &Binding, plaintext: &[u8]) -> Sealed {
    let master = keys.active();
    // One draw from the OS: the data key, then the two nonces.
    let mut fresh = Zeroizing::new([0u8; 32 + 2 * NONCE]);
    getrandom::fill(fresh.as_mut()).expect("the OS random source");
    let (data_key, nonces) = fresh.split_at(32);
    let data_key: &[u8; 32] = data_key.try_into().expect("32 bytes");
    let (wrap_nonce, nonce) = nonces.split_at(NONCE);

    // Laid out as sealed, then encrypted in place: the data key first
    // (wrapped by the master key), then the value (by the data key).
    let mut bytes = Vec::with_capacity(HEADER + plaintext.len() + TAG);
    bytes.extend_from_slice(wrap_nonce);
    bytes.extend_from_slice(data_key);
    bytes.extend_from_slice(&[0; TAG]);
    bytes.extend_from_slice(nonce);
    bytes.extend_from_slice(plaintext);
    bytes.extend_from_slice(&[0; TAG]);
    encrypt_in(
        master.cipher(),
        wrap_nonce,
        &binding.associated_data("twig-vault data key", master.version()),
        &mut bytes[NONCE..NONCE + WRAPPED],
    );
    encrypt_in(
        &cipher(data_key),
        nonce,
        &binding.associated_data("twig-vault value", 0),
        &mut bytes[HEADER..],
    );
    Sealed {
        version: master.version(),
        bytes,
    }
}

fn unwrap_data_key(
    keys: &Keyring,
    binding: &Binding,
    sealed: &Sealed,
) -> Result<Zeroizing<[u8; 32]>, OpenError> {
    let master = keys
        .get(sealed.version)
        .ok_or(OpenError::UnknownKey(sealed.version))?;
    let mut region = Zeroizing::new([0u8; WRAPPED]);
    region.copy_from_slice(&sealed.bytes[NONCE..NONCE + WRAPPED]);
    decrypt_in(
        master.cipher(),
        &sealed.bytes[..NONCE],
        &binding.associated_data("twig-vault data key", master.version()),
        region.as_mut(),
    )?;
    let mut key = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(&region[..32]);
    Ok(key)
}

/// Opens `sealed` for `binding`; the plaintext is zeroized when dropped.
pub fn open(
    keys: &Keyring,
    binding: &Binding,
    sealed: &Sealed,
) -> Result<Zeroizing<Vec<u8>>, OpenError> {
    let data_key = unwrap_data_key(keys, binding, sealed)?;
    let mut value = Zeroizing::new(sealed.bytes[HEADER..].to_vec());
    decrypt_in(
        &cipher(&data_key),
        &sealed.bytes[NONCE + WRAPPED..HEADER],
        &binding.associated_data("twig-vault value", 0),
        value.as_mut_slice(),
    )?;
    let len = value.len() - TAG;
    value.truncate(len);
    Ok(value)
}

/// Re-wraps the data key of `sealed` with `to` (the value's ciphertext is
/// kept as it is).
pub fn rewrap(
    keys: &Keyring,
    to: &MasterKey,
    binding: &Binding,
    sealed: &Sealed,
) -> Result<Sealed, OpenError> {
    let data_key = unwrap_data_key(keys, binding, sealed)?;
    let mut bytes = sealed.bytes.clone();
    getrandom::fill(&mut bytes[..NONCE]).expect("the OS random source");
    bytes[NONCE..NONCE + 32].copy_from_slice(data_key.as_ref());
    let (wrap_nonce, rest) = bytes.split_at_mut(NONCE);
    encrypt_in(
        to.cipher(),
        wrap_nonce,
        &binding.associated_data("twig-vault data key", to.version()),
        &mut rest[..WRAPPED],
    );
    Ok(Sealed {
        version: to.version(),
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use proptest::prelude::*;

    use super::*;

    fn ring() -> Keyring {
        Keyring::new([MasterKey::generate(1)]).unwrap()
    }

    fn binding() -> Binding {
        Binding {
            org: Uuid::from_u128(7),
            purpose: "provider-key".into(),
            record: "rec-1".into(),
            field: "value".into(),
        }
    }

    #[test]
    fn seals_and_opens() {
        let keys = ring();
        let sealed = seal(&keys, &binding(), b"sk-secret");
        let text = sealed.to_text();
        assert!(text.starts_with("twig:k1:"));
        let parsed = Sealed::parse(&text).unwrap();
        assert_eq!(
            open(&keys, &binding(), &parsed).unwrap().as_slice(),
            b"sk-secret"
        );
    }

    #[test]
    fn a_moved_ciphertext_does_not_open() {
        let keys = ring();
        let sealed = seal(&keys, &binding(), b"sk-secret");
        let moved = [
            Binding {
                org: Uuid::from_u128(8),
                ..binding()
            },
            Binding {
                record: "rec-2".into(),
                ..binding()
            },
            Binding {
                field: "other".into(),
                ..binding()
            },
            Binding {
                purpose: "oauth-token".into(),
                ..binding()
            },
        ];
        for b in moved {
            assert_eq!(open(&keys, &b, &sealed), Err(OpenError::Rejected), "{b:?}");
        }
        // Another master key under the same version does not open it either.
        assert_eq!(open(&ring(), &binding(), &sealed), Err(OpenError::Rejected));
        assert_eq!(
            open(
                &Keyring::new([MasterKey::generate(2)]).unwrap(),
                &binding(),
                &sealed
            ),
            Err(OpenError::UnknownKey(1))
        );
    }

    #[test]
    fn the_same_plaintext_never_seals_alike() {
        let keys = ring();
        let all: HashSet<String> = (0..1_000)
            .map(|_| seal(&keys, &binding(), b"same").to_text())
            .collect();
        assert_eq!(all.len(), 1_000);
    }

    #[test]
    fn rewrap_moves_to_the_new_key_and_keeps_the_value() {
        let old = MasterKey::generate(1);
        let old_text = old.to_base64();
        let keys = Keyring::new([MasterKey::from_base64(1, &old_text).unwrap()]).unwrap();
        let sealed = seal(&keys, &binding(), b"value");
        let both = Keyring::new([old, MasterKey::generate(2)]).unwrap();
        let moved = rewrap(&both, both.active(), &binding(), &sealed).unwrap();
        assert_eq!(moved.version, 2);
        assert_eq!(
            open(&both, &binding(), &moved).unwrap().as_slice(),
            b"value"
        );
        // Only the new key is needed now.
        let new_only =
            Keyring::new([MasterKey::from_base64(2, &both.active().to_base64()).unwrap()]).unwrap();
        assert_eq!(
            open(&new_only, &binding(), &moved).unwrap().as_slice(),
            b"value"
        );
    }

    /// Values sealed earlier keep opening: each part is the standard
    /// AES-256-GCM-SIV output (ciphertext then tag) of the documented layout.
    #[test]
    fn the_layout_is_standard_aes_gcm_siv() {
        use aes_gcm_siv::aead::{Aead, Payload};
        let keys = ring();
        let sealed = seal(&keys, &binding(), b"sk-layout");
        let b = &sealed.bytes;
        let data_key = keys
            .active()
            .cipher()
            .decrypt(
                &Nonce::try_from(&b[..NONCE]).unwrap(),
                Payload {
                    msg: &b[NONCE..NONCE + WRAPPED],
                    aad: &binding().associated_data("twig-vault data key", 1),
                },
            )
            .unwrap();
        let value = cipher(data_key.as_slice().try_into().unwrap())
            .decrypt(
                &Nonce::try_from(&b[NONCE + WRAPPED..HEADER]).unwrap(),
                Payload {
                    msg: &b[HEADER..],
                    aad: &binding().associated_data("twig-vault value", 0),
                },
            )
            .unwrap();
        assert_eq!(value, b"sk-layout");
    }

    #[test]
    fn malformed_text_is_refused() {
        for bad in [
            "",
            "twig:k1:",
            "twig:k0:AAAA",
            "twig:kx:AAAA",
            "vault:v1:AAAA",
            "twig:k1:@@@",
        ] {
            assert_eq!(Sealed::parse(bad), Err(OpenError::Malformed), "{bad:?}");
        }
        // The largest plaintext's sealed form parses; anything longer not.
        let largest = seal(&ring(), &binding(), &vec![7; MAX_PLAINTEXT]).to_text();
        assert!(Sealed::parse(&largest).is_ok());
        let huge = format!("twig:k1:{}", "A".repeat(MAX_BODY + 4));
        assert_eq!(Sealed::parse(&huge), Err(OpenError::Malformed));
    }

    proptest! {
        /// Any single flipped bit anywhere is a refusal, never a wrong
        /// plaintext.
        #[test]
        fn one_flipped_bit_never_opens(plaintext in proptest::collection::vec(any::<u8>(), 0..200), bit in any::<usize>()) {
            let keys = ring();
            let mut sealed = seal(&keys, &binding(), &plaintext);
            let bit = bit % (sealed.bytes.len() * 8);
            sealed.bytes[bit / 8] ^= 1 << (bit % 8);
            prop_assert_eq!(open(&keys, &binding(), &sealed), Err(OpenError::Rejected));
        }
    }
}
