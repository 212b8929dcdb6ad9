//! The RESP codec against its own encoder: for arbitrary frames, parse(encode(f)) is f
//! (RESP3 for every frame; RESP2 for those without the types RESP2 lacks), every
//! proper prefix of an encoding is incomplete, and a frame followed by more bytes
//! takes exactly its own. Commands: an encoded array of bulks parses back as its words.

use bytes::{Bytes, BytesMut};
use peercache::resp::{Frame, Limits, ParseError, Proto, request};
use proptest::prelude::*;

/// Text a simple string or an error may hold: no CR or LF.
fn line() -> impl Strategy<Value = String> {
    "[^\r\n]{0,20}"
}

fn scalar(resp3: bool) -> BoxedStrategy<Frame> {
    let mut options = vec![
        line().prop_map(Frame::Simple).boxed(),
        line().prop_map(Frame::Error).boxed(),
        any::<i64>().prop_map(Frame::Integer).boxed(),
        proptest::collection::vec(any::<u8>(), 0..40)
            .prop_map(|b| Frame::Bulk(Bytes::from(b)))
            .boxed(),
        Just(Frame::Null).boxed(),
    ];
    if resp3 {
        options.push(any::<bool>().prop_map(Frame::Boolean).boxed());
    }
    proptest::strategy::Union::new(options).boxed()
}

/// Frames nested up to four deep; maps and booleans only for RESP3.
fn frame(resp3: bool) -> impl Strategy<Value = Frame> {
    scalar(resp3).prop_recursive(4, 48, 6, move |inner| {
        let array = proptest::collection::vec(inner.clone(), 0..6).prop_map(Frame::Array);
        if resp3 {
            let pairs =
                proptest::collection::vec((inner.clone(), inner), 0..4).prop_map(Frame::Map);
            prop_oneof![array, pairs].boxed()
        } else {
            array.boxed()
        }
    })
}

fn encode(f: &Frame, proto: Proto) -> BytesMut {
    let mut out = BytesMut::new();
    f.encode(proto, &mut out);
    out
}

proptest! {
    #[test]
    fn resp3_encode_then_parse_is_identity(f in frame(true), tail in proptest::collection::vec(any::<u8>(), 0..8)) {
        let mut wire = encode(&f, Proto::Resp3);
        let len = wire.len();
        wire.extend_from_slice(&tail);
        prop_assert_eq!(Frame::parse(&wire, &Limits::default()), Ok((f, len)));
    }

    #[test]
    fn resp2_encode_then_parse_is_identity(f in frame(false)) {
        let wire = encode(&f, Proto::Resp2);
        prop_assert_eq!(Frame::parse(&wire, &Limits::default()), Ok((f, wire.len())));
    }

    #[test]
    fn every_proper_prefix_is_incomplete(f in frame(true)) {
        let wire = encode(&f, Proto::Resp3);
        for end in 0..wire.len() {
            prop_assert_eq!(Frame::parse(&wire[..end], &Limits::default()), Err(ParseError::Incomplete));
        }
    }

    #[test]
    fn a_command_parses_back_as_its_words(words in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..30), 1..8)) {
        let f = Frame::Array(words.iter().map(|w| Frame::Bulk(Bytes::from(w.clone()))).collect());
        let wire = encode(&f, Proto::Resp2);
        let (args, used) = request::parse(&wire, &Limits::default()).expect("a whole command");
        prop_assert_eq!(used, wire.len());
        prop_assert_eq!(args.iter().map(|a| a.to_vec()).collect::<Vec<_>>(), words);
    }
}
