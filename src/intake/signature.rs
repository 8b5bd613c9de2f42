//! WeChat's message-push signatures (wechat-api.md §6.2): SHA-1 of the token,
//! timestamp and nonce (and, for `msg_signature`, the `Encrypt` ciphertext),
//! sorted and joined.

use secrecy::{ExposeSecret, SecretString};
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

/// The hex signature WeChat computes for these values.
pub fn sign(token: &str, timestamp: &str, nonce: &str) -> String {
    digest(&mut [token, timestamp, nonce])
}

/// The hex `msg_signature` of a secure-mode push, which also covers its ciphertext.
pub fn sign_encrypted(token: &str, timestamp: &str, nonce: &str, encrypt: &str) -> String {
    digest(&mut [token, timestamp, nonce, encrypt])
}

fn digest(parts: &mut [&str]) -> String {
    parts.sort_unstable();
    hex::encode(Sha1::digest(parts.concat().as_bytes()))
}

/// True when `signature` is the one for `token`, `timestamp` and `nonce`.
pub(super) fn verify(token: &SecretString, timestamp: &str, nonce: &str, signature: &str) -> bool {
    same(&sign(token.expose_secret(), timestamp, nonce), signature)
}

/// True when `msg_signature` is the one for these values and `encrypt`.
pub(super) fn verify_encrypted(
    token: &SecretString,
    timestamp: &str,
    nonce: &str,
    encrypt: &str,
    msg_signature: &str,
) -> bool {
    let expected = sign_encrypted(token.expose_secret(), timestamp, nonce, encrypt);
    same(&expected, msg_signature)
}

/// Compared in constant time so that a caller cannot guess a signature byte by byte.
fn same(expected: &str, given: &str) -> bool {
    let given = given.to_ascii_lowercase();
    expected.len() == given.len() && bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_documented_example() {
        // wechat-api.md §6.2's worked example.
        assert_eq!(
            sign("AAAAA", "1714036504", "1514711492"),
            "f464b24fc39322e44b38aa78f5edd27bd1441696"
        );
        let token = SecretString::from("AAAAA");
        assert!(verify(
            &token,
            "1714036504",
            "1514711492",
            "f464b24fc39322e44b38aa78f5edd27bd1441696"
        ));
        assert!(!verify(
            &token,
            "1714036505",
            "1514711492",
            "f464b24fc39322e44b38aa78f5edd27bd1441696"
        ));
        assert!(!verify(&token, "1714036504", "1514711492", ""));
    }

    #[test]
    fn msg_signature_matches_wechats_sample() {
        // The vector of WeChat's WXBizMsgCrypt samples (see crypto.rs).
        let encrypt = "hyzAe4OzmOMbd6TvGdIOO6uBmdJoD0Fk53REIHvxYtJlE2B655HuD0m8KUePWB3+LrPXo87wzQ1QLvbeUgmBM4x6F8PGHQHFVAFmOD2LdJF9FrXpbUAh0B5GIItb52sn896wVsMSHGuPE328HnRGBcrS7C41IzDWyWNlZkyyXwon8T332jisa+h6tEDYsVticbSnyU8dKOIbgU6ux5VTjg3yt+WGzjlpKn6NPhRjpA912xMezR4kw6KWwMrCVKSVCZciVGCgavjIQ6X8tCOp3yZbGpy0VxpAe+77TszTfRd5RJSVO/HTnifJpXgCSUdUue1v6h0EIBYYI1BD1DlD+C0CR8e6OewpusjZ4uBl9FyJvnhvQl+q5rv1ixrcpCumEPo5MJSgM9ehVsNPfUM669WuMyVWQLCzpu9GhglF2PE=";
        let token = SecretString::from("spamtest");
        let good = "5d197aaffba7e9b25a30732f161a50dee96bd5fa";
        assert_eq!(
            sign_encrypted("spamtest", "1409735669", "1320562132", encrypt),
            good
        );
        assert!(verify_encrypted(
            &token,
            "1409735669",
            "1320562132",
            encrypt,
            good
        ));
        let tampered = encrypt.replacen('h', "i", 1);
        assert!(!verify_encrypted(
            &token,
            "1409735669",
            "1320562132",
            &tampered,
            good
        ));
    }
}
