//! WeChat's secure-mode message push (wechat-api.md §6.2): the body carries
//! `Encrypt`, AES-256-CBC under the console's EncodingAESKey with the key's first
//! 16 bytes as IV and PKCS#7 padding to 32-byte blocks. The plaintext is
//! `random(16) ‖ length(4, big-endian) ‖ message ‖ appid`.

use aes::Aes256;
use base64::Engine;
use cbc::cipher::block_padding::NoPadding;
use cbc::cipher::{BlockDecryptMut, KeyIvInit};

pub use crate::domain::AesKey;
use crate::domain::aes_key::LENIENT;

/// Why an encrypted push could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// `Encrypt` is not base64 of whole AES blocks.
    #[error("Encrypt is not base64 of whole AES blocks")]
    Encoding,
    /// The padding or the length inside is wrong: another key was used.
    #[error("Encrypt does not decrypt with intake.encoding_aes_key; check it against the console")]
    Key,
    /// It decrypted, but for another mini program.
    #[error("the push is for appid {0}, not this one")]
    Appid(String),
}

impl AesKey {
    /// The message inside `encrypt`, checked to be addressed to `appid`.
    pub fn decrypt(&self, encrypt: &str, appid: &str) -> Result<Vec<u8>, CryptoError> {
        let mut data = LENIENT
            .decode(encrypt.trim())
            .map_err(|_| CryptoError::Encoding)?;
        if data.is_empty() || data.len() % 16 != 0 {
            return Err(CryptoError::Encoding);
        }
        let iv: [u8; 16] = self.0[..16].try_into().expect("a 32-byte key");
        let plain = cbc::Decryptor::<Aes256>::new(&self.0.into(), &iv.into())
            .decrypt_padded_mut::<NoPadding>(&mut data)
            .map_err(|_| CryptoError::Encoding)?;
        // PKCS#7 to a 32-byte block: 1 to 32 bytes, each holding the count.
        let pad = usize::from(*plain.last().ok_or(CryptoError::Key)?);
        if !(1..=32).contains(&pad) || pad > plain.len() {
            return Err(CryptoError::Key);
        }
        let plain = &plain[..plain.len() - pad];
        if plain.len() < 20 {
            return Err(CryptoError::Key);
        }
        let len = u32::from_be_bytes(plain[16..20].try_into().expect("4 bytes")) as usize;
        let rest = &plain[20..];
        if len > rest.len() {
            return Err(CryptoError::Key);
        }
        let (message, to) = rest.split_at(len);
        if to != appid.as_bytes() {
            return Err(CryptoError::Appid(String::from_utf8_lossy(to).into_owned()));
        }
        Ok(message.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The vector of WeChat's own WXBizMsgCrypt samples (Python, Go, PHP): key,
    // appid and the `Encrypt` of a text message.
    const SAMPLE_KEY: &str = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG";
    const SAMPLE_APPID: &str = "wx2c2769f8efd9abc2";
    const SAMPLE_ENCRYPT: &str = "hyzAe4OzmOMbd6TvGdIOO6uBmdJoD0Fk53REIHvxYtJlE2B655HuD0m8KUePWB3+LrPXo87wzQ1QLvbeUgmBM4x6F8PGHQHFVAFmOD2LdJF9FrXpbUAh0B5GIItb52sn896wVsMSHGuPE328HnRGBcrS7C41IzDWyWNlZkyyXwon8T332jisa+h6tEDYsVticbSnyU8dKOIbgU6ux5VTjg3yt+WGzjlpKn6NPhRjpA912xMezR4kw6KWwMrCVKSVCZciVGCgavjIQ6X8tCOp3yZbGpy0VxpAe+77TszTfRd5RJSVO/HTnifJpXgCSUdUue1v6h0EIBYYI1BD1DlD+C0CR8e6OewpusjZ4uBl9FyJvnhvQl+q5rv1ixrcpCumEPo5MJSgM9ehVsNPfUM669WuMyVWQLCzpu9GhglF2PE=";

    #[test]
    fn opens_wechats_sample_message() {
        let key = AesKey::parse(SAMPLE_KEY).unwrap();
        let plain = key.decrypt(SAMPLE_ENCRYPT, SAMPLE_APPID).unwrap();
        let text = String::from_utf8(plain).unwrap();
        assert!(text.starts_with("<xml>"), "{text}");
        assert!(
            text.contains("<FromUserName><![CDATA[oyORnuP8q7ou2gfYjqLzSIWZf0rs]]></FromUserName>")
        );
        assert!(text.contains("<MsgId>6054768590064713728</MsgId>"));
        assert!(text.trim_end().ends_with("</xml>"));
    }

    #[test]
    fn refuses_another_appid_and_another_key() {
        let key = AesKey::parse(SAMPLE_KEY).unwrap();
        assert_eq!(
            key.decrypt(SAMPLE_ENCRYPT, "wx0123456789abcdef"),
            Err(CryptoError::Appid(SAMPLE_APPID.into()))
        );
        let other = AesKey::parse("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefg").unwrap();
        assert!(other.decrypt(SAMPLE_ENCRYPT, SAMPLE_APPID).is_err());
        assert_eq!(
            key.decrypt("not base64!", SAMPLE_APPID),
            Err(CryptoError::Encoding)
        );
        assert_eq!(
            key.decrypt("AAAA", SAMPLE_APPID),
            Err(CryptoError::Encoding)
        );
    }

    #[test]
    fn reads_only_a_43_character_key() {
        assert!(AesKey::parse(SAMPLE_KEY).is_ok());
        assert!(AesKey::parse(&SAMPLE_KEY[..42]).is_err());
        assert!(AesKey::parse(&format!("{SAMPLE_KEY}A")).is_err());
        assert!(AesKey::parse("abcdefghijklmnopqrstuvwxyz0123456789ABCDEF+").is_err());
        assert_eq!(
            format!("{:?}", AesKey::parse(SAMPLE_KEY).unwrap()),
            "AesKey([REDACTED])"
        );
    }
}
