//! Decode arbitrary bytes as a stream of MQTT packets.
//!
//! Properties, for two packet size limits (the largest legal one and a small
//! one that makes `PacketTooLarge` reachable):
//! - `decode` never panics, and `Ok(None)` leaves the buffer untouched;
//! - every strict prefix of a decoded frame is `Ok(None)` (more bytes needed),
//!   never an error or a different packet;
//! - every decoded packet encodes, and the encoding decodes back to the same
//!   packet, consuming exactly the encoded bytes;
//! - the encoding is the frame itself, except that the remaining length is
//!   rewritten in its shortest form (the only non-canonical thing the decoder
//!   accepts).
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use ordo_common::mqtt::{decode, encode, Packet, MAX_REMAINING_LENGTH};

/// Packet size limits to decode each input with.
const LIMITS: [usize; 2] = [MAX_REMAINING_LENGTH, 64];

fuzz_target!(|data: &[u8]| {
    for max in LIMITS {
        decode_stream(data, max);
    }
});

/// Decode packets off the front of `data` until it is short or malformed.
fn decode_stream(data: &[u8], max: usize) {
    let mut buf = BytesMut::from(data);
    loop {
        let before = buf.clone();
        match decode(&mut buf, max) {
            Ok(Some(packet)) => {
                let frame = &before[..before.len() - buf.len()];
                assert!(!frame.is_empty(), "decoded {packet:?} from no bytes");
                check_prefixes(frame, max);
                check_round_trip(&packet, frame);
            }
            Ok(None) => {
                assert_eq!(buf, before, "Ok(None) consumed bytes");
                return;
            }
            Err(_) => return,
        }
    }
}

/// Check that strict prefixes of a decodable frame ask for more bytes.
///
/// Every prefix that ends inside the fixed header is tried, plus a few in the
/// body (all of them would make the target quadratic in the input size).
fn check_prefixes(frame: &[u8], max: usize) {
    let mut ends: Vec<usize> = (0..frame.len().min(6)).collect();
    ends.extend([frame.len() / 2, frame.len() - 1]);
    for end in ends {
        let mut buf = BytesMut::from(&frame[..end]);
        match decode(&mut buf, max) {
            Ok(None) => assert_eq!(&buf[..], &frame[..end], "Ok(None) consumed bytes"),
            other => panic!("prefix of {end} bytes of {frame:02x?} gave {other:?}"),
        }
    }
}

/// Encode `packet`, decode it back and compare with the packet and its frame.
fn check_round_trip(packet: &Packet, frame: &[u8]) {
    let mut encoded = BytesMut::new();
    if let Err(e) = encode(packet, &mut encoded) {
        panic!("decoded {packet:?} from {frame:02x?} but encode refused it: {e}");
    }
    let wire = encoded.clone();
    match decode(&mut encoded, MAX_REMAINING_LENGTH) {
        Ok(Some(again)) => assert_eq!(&again, packet, "round trip changed the packet"),
        other => panic!("encoding {wire:02x?} of {packet:?} decoded as {other:?}"),
    }
    assert!(
        encoded.is_empty(),
        "encoding of {packet:?} left {} bytes after the packet",
        encoded.len()
    );

    // Same first byte and body; only the remaining-length field may shrink.
    let (frame_header, frame_body) = split_fixed_header(frame);
    let (wire_header, wire_body) = split_fixed_header(&wire);
    assert_eq!(frame[0], wire[0], "first byte changed in the round trip");
    assert_eq!(
        frame_body, wire_body,
        "body of {packet:?} re-encoded differently"
    );
    assert!(wire_header.len() <= frame_header.len());
}

/// Split a complete frame into its fixed header and its body.
fn split_fixed_header(frame: &[u8]) -> (&[u8], &[u8]) {
    // The remaining length ends at the first byte without the continuation bit;
    // the frame was accepted by `decode`, so there is one within 4 bytes.
    let len_bytes = frame[1..]
        .iter()
        .position(|b| b & 0x80 == 0)
        .map_or(frame.len() - 1, |i| i + 1);
    frame.split_at(1 + len_bytes)
}
