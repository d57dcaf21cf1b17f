//! Web Push's cryptography: the message encryption of RFC 8291
//! (aes128gcm, RFC 8188) and the VAPID signature of RFC 8292. No I/O.
//!
//! Built on `ring` (already compiled for rustls) and jsonwebtoken's ES256
//! rather than a Web Push crate: `web-push` and `ece` need OpenSSL, and
//! `web-push-native` brings a second generation of the RustCrypto digest
//! crates for what is here some sixty lines, checked against the RFC's own
//! example below and, in the tests, against independent decrypters.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ring::rand::SystemRandom;
use ring::{aead, agreement, hkdf, signature};

#[derive(Debug, thiserror::Error)]
pub enum PushCryptoError {
    #[error("{0}")]
    BadKey(&'static str),
    #[error("cryptographic failure")]
    Crypto,
    #[error("the payload is too large for one push")]
    TooLarge,
}

impl From<ring::error::Unspecified> for PushCryptoError {
    fn from(_: ring::error::Unspecified) -> Self {
        PushCryptoError::Crypto
    }
}

/// Push services accept 4096 bytes of body; the header (86) and the tag
/// (16) and the delimiter (1) leave this much for the padded payload.
pub const MAX_PLAINTEXT: usize = 4096 - 86 - 16 - 1;
const RECORD_SIZE: u32 = 4096;

pub fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// base64url, with or without padding (browsers send it without).
pub fn unb64(s: &str) -> Option<Vec<u8>> {
    B64.decode(s.trim_end_matches('=')).ok()
}

struct Len(usize);
impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

fn hkdf(salt: &[u8], ikm: &[u8], info: &[u8], n: usize) -> Result<Vec<u8>, PushCryptoError> {
    let mut out = vec![0; n];
    hkdf::Salt::new(hkdf::HKDF_SHA256, salt)
        .extract(ikm)
        .expand(&[info], Len(n))?
        .fill(&mut out)?;
    Ok(out)
}

/// The body of one push, given the ECDH secret and both public keys: a
/// single record, `plaintext` padded with zeros so that the payload and
/// padding take `padded` bytes (at least the plaintext's length).
pub fn seal(
    ecdh_secret: &[u8],
    as_pub: &[u8],
    ua_pub: &[u8],
    auth: &[u8],
    salt: &[u8; 16],
    plaintext: &[u8],
    padded: usize,
) -> Result<Vec<u8>, PushCryptoError> {
    let padded = padded.max(plaintext.len());
    if padded > MAX_PLAINTEXT {
        return Err(PushCryptoError::TooLarge);
    }
    let mut key_info = Vec::with_capacity(144);
    key_info.extend_from_slice(b"WebPush: info\0");
    key_info.extend_from_slice(ua_pub);
    key_info.extend_from_slice(as_pub);
    let ikm = hkdf(auth, ecdh_secret, &key_info, 32)?;
    let cek = hkdf(salt, &ikm, b"Content-Encoding: aes128gcm\0", 16)?;
    let nonce = hkdf(salt, &ikm, b"Content-Encoding: nonce\0", 12)?;
    // The delimiter of the last record (2), then zeros: RFC 8188 padding.
    let mut record = Vec::with_capacity(padded + 17);
    record.extend_from_slice(plaintext);
    record.push(2);
    record.resize(padded + 1, 0);
    let key = aead::LessSafeKey::new(aead::UnboundKey::new(&aead::AES_128_GCM, &cek)?);
    key.seal_in_place_append_tag(
        aead::Nonce::try_assume_unique_for_key(&nonce)?,
        aead::Aad::empty(),
        &mut record,
    )?;
    let mut body = Vec::with_capacity(86 + record.len());
    body.extend_from_slice(salt);
    body.extend_from_slice(&RECORD_SIZE.to_be_bytes());
    body.push(as_pub.len() as u8);
    body.extend_from_slice(as_pub);
    body.extend_from_slice(&record);
    Ok(body)
}

/// Encrypts `plaintext` for a subscription (its `p256dh` key and `auth`
/// secret) with a fresh key pair and salt.
pub fn encrypt(
    ua_pub: &[u8],
    auth: &[u8],
    plaintext: &[u8],
    padded: usize,
) -> Result<Vec<u8>, PushCryptoError> {
    check_subscription_keys(ua_pub, auth)?;
    let rng = SystemRandom::new();
    let eph = agreement::EphemeralPrivateKey::generate(&agreement::ECDH_P256, &rng)?;
    let as_pub = eph.compute_public_key()?;
    let mut salt = [0u8; 16];
    ring::rand::SecureRandom::fill(&rng, &mut salt)?;
    let peer = agreement::UnparsedPublicKey::new(&agreement::ECDH_P256, ua_pub);
    agreement::agree_ephemeral(eph, &peer, |secret| {
        seal(
            secret,
            as_pub.as_ref(),
            ua_pub,
            auth,
            &salt,
            plaintext,
            padded,
        )
    })
    .map_err(|_| PushCryptoError::BadKey("p256dh: not a P-256 public key"))?
}

/// A subscription's keys as RFC 8291 needs them: an uncompressed P-256
/// point (65 bytes, 0x04 first, on the curve) and a 16-byte secret.
pub fn check_subscription_keys(ua_pub: &[u8], auth: &[u8]) -> Result<(), PushCryptoError> {
    if ua_pub.len() != 65 || ua_pub[0] != 4 {
        return Err(PushCryptoError::BadKey(
            "keys.p256dh: must be an uncompressed P-256 public key (65 bytes)",
        ));
    }
    if auth.len() != 16 {
        return Err(PushCryptoError::BadKey("keys.auth: must be 16 bytes"));
    }
    // On the curve: an agreement with it succeeds.
    let rng = SystemRandom::new();
    let eph = agreement::EphemeralPrivateKey::generate(&agreement::ECDH_P256, &rng)?;
    let peer = agreement::UnparsedPublicKey::new(&agreement::ECDH_P256, ua_pub);
    agreement::agree_ephemeral(eph, &peer, |_| ())
        .map_err(|_| PushCryptoError::BadKey("keys.p256dh: not a point on the P-256 curve"))
}

/// The server's VAPID key pair. Its private half never prints.
pub struct Vapid {
    pkcs8: Vec<u8>,
    public: Vec<u8>,
}

impl std::fmt::Debug for Vapid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vapid")
            .field("public", &b64(&self.public))
            .finish_non_exhaustive()
    }
}

impl Vapid {
    /// A new key pair, as PKCS#8 DER (what the store keeps).
    pub fn generate() -> Result<Vec<u8>, PushCryptoError> {
        let doc = signature::EcdsaKeyPair::generate_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &SystemRandom::new(),
        )?;
        Ok(doc.as_ref().to_vec())
    }

    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Vapid, PushCryptoError> {
        let kp = signature::EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            pkcs8,
            &SystemRandom::new(),
        )
        .map_err(|_| PushCryptoError::BadKey("the stored VAPID key is unreadable"))?;
        Ok(Vapid {
            pkcs8: pkcs8.to_vec(),
            public: signature::KeyPair::public_key(&kp).as_ref().to_vec(),
        })
    }

    /// The public key as browsers take it (`applicationServerKey`).
    pub fn public_b64(&self) -> String {
        b64(&self.public)
    }

    /// The `Authorization` header for a push to `audience` (the endpoint's
    /// origin), valid until `exp` (unix seconds).
    pub fn authorization(
        &self,
        audience: &str,
        subject: &str,
        exp: u64,
    ) -> Result<String, PushCryptoError> {
        #[derive(serde::Serialize)]
        struct Claims<'a> {
            aud: &'a str,
            exp: u64,
            sub: &'a str,
        }
        let key = jsonwebtoken::EncodingKey::from_ec_der(&self.pkcs8);
        let jwt = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
            &Claims {
                aud: audience,
                exp,
                sub: subject,
            },
            &key,
        )
        .map_err(|_| PushCryptoError::Crypto)?;
        Ok(format!("vapid t={jwt}, k={}", self.public_b64()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Vec<u8> {
        unb64(s).unwrap()
    }

    /// RFC 8291, Appendix A, byte for byte.
    #[test]
    fn matches_the_rfc_example() {
        let salt: [u8; 16] = d("DGv6ra1nlYgDCS1FRnbzlw").try_into().unwrap();
        let body = seal(
            &d("kyrL1jIIOHEzg3sM2ZWRHDRB62YACZhhSlknJ672kSs"),
            &d("BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8"),
            &d("BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4"),
            &d("BTBZMqHH6r4Tts7J_aSIgg"),
            &salt,
            b"When I grow up, I want to be a watermelon",
            0,
        )
        .unwrap();
        assert_eq!(
            b64(&body),
            "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN"
        );
    }

    #[test]
    fn padding_fixes_the_length() {
        let ua = d(
            "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4",
        );
        let auth = d("BTBZMqHH6r4Tts7J_aSIgg");
        let a = encrypt(&ua, &auth, b"short", 512).unwrap();
        let b = encrypt(&ua, &auth, &[b'x'; 400], 512).unwrap();
        assert_eq!(a.len(), b.len());
        assert_eq!(a.len(), 86 + 512 + 1 + 16);
        assert!(encrypt(&ua, &auth, &[0; 10], MAX_PLAINTEXT + 1).is_err());
    }

    #[test]
    fn bad_subscription_keys_are_refused() {
        let auth = d("BTBZMqHH6r4Tts7J_aSIgg");
        assert!(check_subscription_keys(&[4; 65], &auth).is_err());
        assert!(check_subscription_keys(&[4; 33], &auth).is_err());
        let ua = d(
            "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4",
        );
        assert!(check_subscription_keys(&ua, &auth).is_ok());
        assert!(check_subscription_keys(&ua, &auth[..8]).is_err());
    }

    #[test]
    fn vapid_signs_a_token_its_public_key_verifies() {
        let v = Vapid::from_pkcs8(&Vapid::generate().unwrap()).unwrap();
        let h = v
            .authorization("https://push.example", "mailto:a@b", 4_000_000_000)
            .unwrap();
        let (t, k) = h
            .strip_prefix("vapid t=")
            .and_then(|r| r.split_once(", k="))
            .unwrap();
        assert_eq!(k, v.public_b64());
        let pk = d(k);
        let key = jsonwebtoken::DecodingKey::from_ec_components(&b64(&pk[1..33]), &b64(&pk[33..]))
            .unwrap();
        let mut val = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
        val.set_audience(&["https://push.example"]);
        let data = jsonwebtoken::decode::<serde_json::Value>(t, &key, &val).unwrap();
        assert_eq!(data.claims["sub"], "mailto:a@b");
        assert!(!format!("{v:?}").contains(&b64(&v.pkcs8)));
    }
}
