//! Access tokens as a client presents them: any string is a valid token or
//! a typed error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn issuer() -> &'static ate::crypto::PublicSignKey {
    static KEY: OnceLock<ate::crypto::PublicSignKey> = OnceLock::new();
    KEY.get_or_init(|| ate::crypto::PrivateSignKey::generate(Default::default()).public().clone())
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = ate_client::token::verify(text, std::slice::from_ref(issuer()), 1_800_000_000_000_000, 60_000_000);
});
