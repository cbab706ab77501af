//! Decode arbitrary bytes as one `wamp.2.msgpack` message.
//!
//! A decoded message must survive a msgpack round trip unchanged. There is no
//! JSON check here: msgpack values JSON cannot carry exactly (ext types,
//! float32, NaN, non-string map keys, text starting with `\0`) change on the way.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ordo_common::wamp::Serializer;
use ordo_fuzz::check_wamp;

fuzz_target!(|data: &[u8]| {
    check_wamp(Serializer::MsgPack, data, &[]);
});
