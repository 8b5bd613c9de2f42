//! WeChat's side of secure mode, for tests of the callback.

/// WeChat's side of secure mode (wechat-api.md §6.2): the `Encrypt` value of a
/// push carrying `message`, for the mini program `appid`, under the console's
/// 43-character `encoding_aes_key`. `random` stands for WeChat's 16 random bytes.
pub fn encrypt_push(
    encoding_aes_key: &str,
    appid: &str,
    message: &str,
    random: [u8; 16],
) -> String {
    use aes::cipher::{BlockEncryptMut, KeyIvInit, block_padding::NoPadding};
    use base64::Engine;
    let lenient = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
    );
    let key = lenient
        .decode(format!("{encoding_aes_key}="))
        .expect("a 43-character EncodingAESKey");
    let mut plain = random.to_vec();
    plain.extend_from_slice(&(message.len() as u32).to_be_bytes());
    plain.extend_from_slice(message.as_bytes());
    plain.extend_from_slice(appid.as_bytes());
    // PKCS#7 to 32-byte blocks, as WeChat pads.
    let pad = 32 - plain.len() % 32;
    plain.extend(std::iter::repeat_n(pad as u8, pad));
    let len = plain.len();
    let encrypted = cbc::Encryptor::<aes::Aes256>::new(key[..32].into(), key[..16].into())
        .encrypt_padded_mut::<NoPadding>(&mut plain, len)
        .expect("whole blocks");
    base64::engine::general_purpose::STANDARD.encode(encrypted)
}
