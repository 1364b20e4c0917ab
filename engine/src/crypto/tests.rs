use super::*;

#[test]
fn every_scheme_signs_verifies_and_rejects_tampering() {
    for scheme in [SignatureScheme::MlDsa65, SignatureScheme::MlDsa44, SignatureScheme::Falcon512] {
        let key = PrivateSignKey::generate(scheme);
        let signature = key.sign(b"merkle root");
        key.public().verify(b"merkle root", &signature).unwrap();
        assert_eq!(key.public().verify(b"merkle rooT", &signature), Err(CryptoError::BadSignature));
        let mut bad = signature.clone();
        bad[10] ^= 1;
        assert_eq!(key.public().verify(b"merkle root", &bad), Err(CryptoError::BadSignature));
        assert_eq!(key.public().verify(b"merkle root", &signature[..5]), Err(CryptoError::BadSignature));
        let other = PrivateSignKey::generate(scheme);
        assert_eq!(other.public().verify(b"merkle root", &signature), Err(CryptoError::BadSignature));
        // Round trips through the versioned encoding.
        let decoded = PrivateSignKey::decode(&key.encode()).unwrap();
        assert_eq!(decoded.id(), key.id());
        decoded.public().verify(b"x", &key.sign(b"x")).unwrap();
        assert_eq!(PublicSignKey::decode(&key.public().encode()).unwrap(), *key.public());
    }
}

#[test]
fn key_ids_are_full_length_and_distinct() {
    let a = PrivateSignKey::generate(SignatureScheme::MlDsa44);
    let b = PrivateSignKey::generate(SignatureScheme::MlDsa44);
    assert_ne!(a.id(), b.id());
    assert_eq!(a.id().as_bytes().len(), 32);
    let read = ReadKey::generate().unwrap();
    assert_ne!(read.id(), ReadKey::generate().unwrap().id());
}

#[test]
fn secrets_never_appear_in_debug_output() {
    let read = ReadKey::from_bytes([0xAB; 32]);
    let text = format!("{read:?}");
    assert!(text.contains("redacted") && !text.to_lowercase().contains("abab"), "{text}");
    let sign = PrivateSignKey::generate(SignatureScheme::MlDsa44);
    assert!(format!("{sign:?}").contains("redacted"));
    let kem = PrivateEncryptKey::generate();
    assert!(format!("{kem:?}").contains("redacted"));
}

#[test]
fn read_keys_encrypt_with_unique_nonces_and_detect_tampering() {
    let key = ReadKey::generate().unwrap();
    let (nonce_a, sealed) = key.encrypt(b"header", b"secret payload").unwrap();
    let (nonce_b, _) = key.encrypt(b"header", b"secret payload").unwrap();
    assert_ne!(nonce_a, nonce_b);
    assert_eq!(key.decrypt(&nonce_a, b"header", &sealed).unwrap(), b"secret payload");
    assert_eq!(key.decrypt(&nonce_a, b"headeR", &sealed), Err(CryptoError::DecryptionFailed));
    for index in 0..sealed.len() {
        let mut bad = sealed.clone();
        bad[index] ^= 0x80;
        assert_eq!(key.decrypt(&nonce_a, b"header", &bad), Err(CryptoError::DecryptionFailed));
    }
    let other = ReadKey::generate().unwrap();
    assert_eq!(other.decrypt(&nonce_a, b"header", &sealed), Err(CryptoError::DecryptionFailed));
    assert_eq!(ReadKey::decode(&key.encode()).unwrap(), key);
}

#[test]
fn sealing_appended_to_a_buffer_opens_like_a_sealed_copy() {
    let key = ReadKey::generate().unwrap();
    let mut out = b"head".to_vec();
    let nonce = key.encrypt_append(b"aad", b"a data key", &mut out).unwrap();
    assert_eq!(&out[..4], b"head", "what was there stays");
    assert_eq!(out.len(), 4 + b"a data key".len() + AEAD_TAG_LEN);
    assert_eq!(key.decrypt(&nonce, b"aad", &out[4..]).unwrap(), b"a data key");
    assert_eq!(key.decrypt(&nonce, b"AAD", &out[4..]), Err(CryptoError::DecryptionFailed));
    let again = key.encrypt_append(b"aad", b"a data key", &mut Vec::new()).unwrap();
    assert_ne!(nonce, again, "a fresh nonce each time");
}

#[test]
fn read_keys_are_shared_through_ml_kem() {
    let alice_read = ReadKey::generate().unwrap();
    let bob = PrivateEncryptKey::generate();
    let wrapped = bob.public().wrap_read_key(&alice_read).unwrap();
    assert_eq!(bob.unwrap_read_key(&wrapped).unwrap(), alice_read);
    // Someone else cannot unwrap it, and tampering is detected.
    let eve = PrivateEncryptKey::generate();
    assert_eq!(eve.unwrap_read_key(&wrapped), Err(CryptoError::DecryptionFailed));
    let mut forged = wrapped.clone();
    forged.recipient = eve.id();
    assert_eq!(eve.unwrap_read_key(&forged), Err(CryptoError::DecryptionFailed));
    let mut bad = wrapped.clone();
    bad.sealed_key[0] ^= 1;
    assert_eq!(bob.unwrap_read_key(&bad), Err(CryptoError::DecryptionFailed));
    let mut bad = wrapped;
    bad.kem_ciphertext.truncate(10);
    assert_eq!(bob.unwrap_read_key(&bad), Err(CryptoError::DecryptionFailed));
    let decoded = PrivateEncryptKey::decode(&bob.encode()).unwrap();
    assert_eq!(decoded.id(), bob.id());
    assert_eq!(PublicEncryptKey::decode(&bob.public().encode()).unwrap(), *bob.public());
}

#[test]
fn malformed_key_encodings_are_typed_errors() {
    let good = PrivateSignKey::generate(SignatureScheme::MlDsa44).encode();
    assert!(matches!(PrivateSignKey::decode(&good[..good.len() - 1]), Err(CryptoError::Malformed)));
    let mut longer = good.to_vec();
    longer.push(0);
    assert!(matches!(PrivateSignKey::decode(&longer), Err(CryptoError::Malformed)));
    let mut version = good.to_vec();
    version[0] = 9;
    assert!(matches!(PrivateSignKey::decode(&version), Err(CryptoError::UnsupportedVersion(9))));
    assert!(matches!(PublicSignKey::decode(&good), Err(CryptoError::WrongKeyKind { .. })));
    let mut scheme = good.to_vec();
    scheme[2] = 77;
    assert!(matches!(PrivateSignKey::decode(&scheme), Err(CryptoError::UnknownAlgorithm { .. })));
    // A secret that does not belong to its public half is refused.
    let other = PrivateSignKey::generate(SignatureScheme::MlDsa44).encode();
    let public_len = u32::from_le_bytes(good[3..7].try_into().unwrap()) as usize;
    let mut mismatched = good[..7 + public_len].to_vec();
    mismatched.extend_from_slice(&other[7 + public_len..]);
    assert!(matches!(PrivateSignKey::decode(&mismatched), Err(CryptoError::Malformed)));
    for garbage in [&b""[..], &[1u8][..], &[1, 2, 1, 255, 255, 255, 255][..]] {
        assert!(PrivateSignKey::decode(garbage).is_err());
        assert!(ReadKey::decode(garbage).is_err());
        assert!(PublicEncryptKey::decode(garbage).is_err());
    }
}
