//! The EncodingAESKey of WeChat's secure-mode push, parsed once from the config
//! (decrypting with it is the intake's business).

use base64::Engine;
use base64::alphabet::STANDARD;
use base64::engine::{GeneralPurpose, GeneralPurposeConfig};

/// Decodes base64 whether or not the unused bits of the last symbol are zero: an
/// EncodingAESKey is 43 random characters, so its last one often has them set.
pub(crate) const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

/// The 32-byte AES key behind a 43-character EncodingAESKey.
#[derive(Clone, PartialEq, Eq)]
pub struct AesKey(pub(crate) [u8; 32]);

impl std::fmt::Debug for AesKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AesKey([REDACTED])")
    }
}

impl AesKey {
    /// Reads the console's EncodingAESKey.
    pub fn parse(encoding_aes_key: &str) -> Result<Self, &'static str> {
        const RULE: &str =
            "must be the 43-character EncodingAESKey from the console (letters and digits)";
        if encoding_aes_key.len() != 43
            || !encoding_aes_key.chars().all(|c| c.is_ascii_alphanumeric())
        {
            return Err(RULE);
        }
        let bytes = LENIENT
            .decode(format!("{encoding_aes_key}="))
            .map_err(|_| RULE)?;
        bytes.try_into().map(Self).map_err(|_| RULE)
    }
}
