//! Decode arbitrary bytes as one `wamp.2.cbor` message.
//!
//! A decoded message must survive a CBOR round trip unchanged. There is no
//! msgpack or JSON check: CBOR values those cannot carry the same way (text
//! starting with `\0` in JSON, float widths) may change on the way.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ordo_common::wamp::Serializer;
use ordo_fuzz::check_wamp;

fuzz_target!(|data: &[u8]| {
    check_wamp(Serializer::Cbor, data, &[]);
});
