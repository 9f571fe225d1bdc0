//! Client secrets sealed at rest (issue 17): AES-256-GCM (NIST SP 800-38D) under
//! `ENTRANCE_DATA_KEY`, a fresh 96-bit random nonce per seal, and the connection id as
//! associated data, so a sealed secret moved to another connection's entry does not open.
//! Stored as base64 of nonce ‖ ciphertext ‖ tag.

use aes_gcm::{
    Aes256Gcm, Key, Nonce,
    aead::{Aead, AeadCore, KeyInit, OsRng, Payload},
};
use base64::Engine;
use secrecy::{ExposeSecret, SecretString};

use crate::config::DataKey;

const NONCE_BYTES: usize = 12;

/// Why a sealed secret did not open.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SealError {
    #[error("the sealed secret is not base64 or too short")]
    Malformed,
    #[error(
        "the sealed secret does not open with this key (another ENTRANCE_DATA_KEY, or altered)"
    )]
    WrongKey,
}

fn cipher(key: &DataKey) -> Aes256Gcm {
    Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&key.0))
}

pub(crate) fn seal(
    key: &DataKey,
    secret: &SecretString,
    context: &str,
) -> Result<String, SealError> {
    let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
    let sealed = cipher(key)
        .encrypt(
            &nonce,
            Payload {
                msg: secret.expose_secret().as_bytes(),
                aad: context.as_bytes(),
            },
        )
        .map_err(|_| SealError::Malformed)?;
    let mut out = nonce.to_vec();
    out.extend(sealed);
    Ok(base64::engine::general_purpose::STANDARD.encode(out))
}

pub(crate) fn open(key: &DataKey, sealed: &str, context: &str) -> Result<SecretString, SealError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(sealed)
        .map_err(|_| SealError::Malformed)?;
    if bytes.len() <= NONCE_BYTES {
        return Err(SealError::Malformed);
    }
    let (nonce, ciphertext) = bytes.split_at(NONCE_BYTES);
    let plain = cipher(key)
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad: context.as_bytes(),
            },
        )
        .map_err(|_| SealError::WrongKey)?;
    String::from_utf8(plain)
        .map(SecretString::from)
        .map_err(|_| SealError::WrongKey)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_secret_opens_only_with_its_key_and_its_connection() {
        let key = DataKey([7; 32]);
        let secret = SecretString::from("bP88Q~value");
        let sealed = seal(&key, &secret, "fabrikam").expect("sealed");
        assert!(!sealed.contains("bP88Q"));
        assert_ne!(
            sealed,
            seal(&key, &secret, "fabrikam").expect("sealed"),
            "a fresh nonce"
        );
        let opened = open(&key, &sealed, "fabrikam").expect("opens");
        assert_eq!(opened.expose_secret(), "bP88Q~value");
        assert!(matches!(
            open(&DataKey([8; 32]), &sealed, "fabrikam"),
            Err(SealError::WrongKey)
        ));
        assert!(matches!(
            open(&key, &sealed, "contoso"),
            Err(SealError::WrongKey)
        ));
        assert!(matches!(
            open(&key, "AAAA", "fabrikam"),
            Err(SealError::Malformed)
        ));
    }

    #[test]
    fn the_key_is_32_bytes_of_base64_or_refused_with_the_fix() {
        let good =
            DataKey::from_base64("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=").expect("32 bytes");
        assert_eq!(good.0[31], 31);
        for bad in ["not base64!", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwd"] {
            let e = DataKey::from_base64(bad).expect_err("refused").to_string();
            assert!(
                e.contains("ENTRANCE_DATA_KEY") && e.contains("openssl rand -base64 32"),
                "{e}"
            );
        }
        assert!(!format!("{good:?}").contains("AAEC"), "never printed");
    }
}
