//! Fuzz target: the ID-token path (header parse, kid peek, full verification against a real
//! key set) must answer any input with a typed rejection, never a panic.
#![no_main]

use std::sync::OnceLock;

use entrance::id_token::{self as verifier, Expectations, IssuerPolicy, KeySet, TenantAllowList};
use libfuzzer_sys::fuzz_target;

fn keys() -> &'static KeySet {
    static KEYS: OnceLock<KeySet> = OnceLock::new();
    KEYS.get_or_init(|| {
        KeySet::from_jwks_json(include_bytes!("../../tests/fixtures/entra/jwks.example.json"))
            .expect("the fixture parses")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let _ = verifier::peek_kid(token);
    let _ = verifier::peek_tid(token);
    let issuer = IssuerPolicy::Exact(
        "https://login.microsoftonline.com/aaaabbbb-0000-cccc-1111-dddd2222eeee/v2.0".into(),
    );
    let algs = verifier::allowed_algs(&["RS256".to_owned()]);
    let expectations = Expectations {
        issuer: &issuer,
        allowed_tenants: &TenantAllowList::Any,
        client_id: "00001111-aaaa-2222-bbbb-3333cccc4444",
        trusted_audiences: &[],
        allowed_algs: &algs,
        clock_skew: std::time::Duration::from_secs(300),
        now: 1_767_225_600,
        nonce: "n",
    };
    let _ = verifier::verify_id_token(token, keys(), &expectations);
});
