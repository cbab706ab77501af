//! Decode arbitrary bytes as a stream of MQTT 5 packets.
//!
//! Properties, for two packet size limits:
//! - `v5::decode` never panics, and `Ok(None)` leaves the buffer untouched;
//! - every strict prefix of a decoded frame is `Ok(None)`;
//! - every decoded packet encodes, the encoding decodes back to the same
//!   packet consuming exactly the encoded bytes, and encoding again gives the
//!   same bytes (the encoding is canonical: property order, short forms);
//! - every error maps to a failure reason code.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use ordo_common::mqtt::v5::{decode, encode};
use ordo_common::mqtt::MAX_REMAINING_LENGTH;

const LIMITS: [usize; 2] = [MAX_REMAINING_LENGTH, 64];

fuzz_target!(|data: &[u8]| {
    for max in LIMITS {
        let mut buf = BytesMut::from(data);
        loop {
            let before = buf.clone();
            match decode(&mut buf, max) {
                Ok(Some(packet)) => {
                    let frame = &before[..before.len() - buf.len()];
                    for end in (0..frame.len().min(6)).chain([frame.len() - 1]) {
                        let mut part = BytesMut::from(&frame[..end]);
                        assert!(matches!(decode(&mut part, max), Ok(None)), "prefix {end}");
                        assert_eq!(&part[..], &frame[..end]);
                    }
                    let mut wire = BytesMut::new();
                    encode(&packet, &mut wire).expect("decoded packet must encode");
                    let first = wire.clone();
                    let again = decode(&mut wire, MAX_REMAINING_LENGTH);
                    assert_eq!(again, Ok(Some(packet.clone())), "round trip");
                    assert!(wire.is_empty());
                    let mut second = BytesMut::new();
                    encode(&packet, &mut second).expect("encode twice");
                    assert_eq!(first, second);
                }
                Ok(None) => {
                    assert_eq!(buf, before, "Ok(None) consumed bytes");
                    break;
                }
                Err(e) => {
                    assert!(e.reason_code().is_error());
                    break;
                }
            }
        }
    }
});
