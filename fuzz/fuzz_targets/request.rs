//! The daemon's request decoder: any line a client may send. What decodes encodes and decodes
//! back to the same request.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(envelope) = serde_json::from_str::<hgd_protocol::Envelope>(line) else {
        return;
    };
    let encoded = serde_json::to_string(&envelope).expect("a decoded request encodes");
    let decoded: hgd_protocol::Envelope =
        serde_json::from_str(&encoded).expect("an encoded request decodes");
    assert_eq!(format!("{decoded:?}"), format!("{envelope:?}"));
});
