//! WeChat's message-push signature (wechat-api.md §6.2): SHA-1 of the token,
//! timestamp and nonce, sorted and joined.

use secrecy::{ExposeSecret, SecretString};
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

/// The hex signature WeChat computes for these values.
pub fn sign(token: &str, timestamp: &str, nonce: &str) -> String {
    let mut parts = [token, timestamp, nonce];
    parts.sort_unstable();
    hex::encode(Sha1::digest(parts.concat().as_bytes()))
}

/// True when `signature` is the one for `token`, `timestamp` and `nonce`;
/// compared in constant time so that a caller cannot guess it byte by byte.
pub fn verify(token: &SecretString, timestamp: &str, nonce: &str, signature: &str) -> bool {
    let expected = sign(token.expose_secret(), timestamp, nonce);
    let given = signature.to_ascii_lowercase();
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
}
