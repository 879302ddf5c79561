//! The client wire protocol: framing, jute records, ZooKeeper's constants.

pub mod codes;
pub mod jute;
pub mod records;

pub use codes::{ErrorCode, EventType, OpCode};
pub use jute::{DecodeError, Reader};
pub use records::*;

/// Default `jute.maxbuffer`: the largest znode payload, 1 MiB - 1 as in ZooKeeper.
pub const JUTE_MAXBUFFER_DEFAULT: usize = 0xfffff;
/// Bytes a frame may exceed `jute.maxbuffer` by, for headers, path and ACL
/// (ZooKeeper's `zookeeper.jute.maxbuffer.extrasize` default).
pub const FRAME_EXTRA_BYTES: usize = 1024;

/// The four-letter words ZooKeeper answers on the client port.
pub const FOUR_LETTER_WORDS: &[&str] = &[
    "ruok", "srvr", "stat", "conf", "cons", "crst", "envi", "mntr", "wchs", "wchc", "wchp", "dump",
    "dirs", "isro", "srst", "gtmk", "stmk",
];

/// If a connection's first four bytes are a four-letter word, returns it.
pub fn four_letter_word(first4: [u8; 4]) -> Option<&'static str> {
    let s = std::str::from_utf8(&first4).ok()?;
    FOUR_LETTER_WORDS.iter().copied().find(|w| *w == s)
}

#[cfg(test)]
mod tests {
    use super::codes::perms;
    use super::*;
    use bytes::Bytes;
    use proptest::prelude::*;

    fn arb_path() -> impl Strategy<Value = String> {
        "(/[a-z0-9]{1,5}){1,3}"
    }

    fn arb_acl() -> impl Strategy<Value = Vec<Acl>> {
        prop::collection::vec(
            (0..=perms::ALL, "[a-z]{1,6}", "[a-z:0-9]{0,10}").prop_map(|(p, s, i)| Acl {
                perms: p,
                id: Id { scheme: s, id: i },
            }),
            0..3,
        )
    }

    fn arb_create() -> impl Strategy<Value = CreateRequest> {
        (
            arb_path(),
            prop::collection::vec(any::<u8>(), 0..32),
            arb_acl(),
            0..7i32,
            prop_oneof![
                Just(CreateKind::Create),
                Just(CreateKind::Create2),
                Just(CreateKind::Container),
                Just(CreateKind::Ttl)
            ],
            1..1_000_000i64,
        )
            .prop_map(|(path, data, acl, flags, kind, ttl)| CreateRequest {
                kind,
                path,
                data: if data.len() == 31 {
                    None
                } else {
                    Some(Bytes::from(data))
                },
                acl,
                flags,
                ttl_ms: if kind == CreateKind::Ttl { ttl } else { -1 },
            })
    }

    fn arb_write_op() -> impl Strategy<Value = WriteOp> {
        prop_oneof![
            arb_create().prop_map(WriteOp::Create),
            (arb_path(), any::<i32>())
                .prop_map(|(path, version)| WriteOp::Delete { path, version }),
            (arb_path(), any::<i32>()).prop_map(|(path, version)| WriteOp::Check { path, version }),
            (
                arb_path(),
                prop::collection::vec(any::<u8>(), 0..16),
                any::<i32>()
            )
                .prop_map(|(path, d, version)| WriteOp::SetData {
                    path,
                    data: Some(Bytes::from(d)),
                    version
                }),
        ]
    }

    fn arb_request() -> impl Strategy<Value = Request> {
        let strings = || prop::collection::vec(arb_path(), 0..3);
        prop_oneof![
            arb_create().prop_map(Request::Create),
            (arb_path(), any::<i32>())
                .prop_map(|(path, version)| Request::Delete { path, version }),
            (arb_path(), any::<bool>()).prop_map(|(path, watch)| Request::Exists { path, watch }),
            (arb_path(), any::<bool>()).prop_map(|(path, watch)| Request::GetData { path, watch }),
            (arb_path(), any::<bool>())
                .prop_map(|(path, watch)| Request::GetChildren2 { path, watch }),
            (arb_path(), arb_acl(), any::<i32>())
                .prop_map(|(path, acl, version)| Request::SetAcl { path, acl, version }),
            prop::collection::vec(arb_write_op(), 0..4).prop_map(Request::Multi),
            (
                any::<i64>(),
                strings(),
                strings(),
                strings(),
                strings(),
                strings()
            )
                .prop_map(|(z, d, e, c, p, r)| Request::SetWatches(SetWatches {
                    relative_zxid: z,
                    data: d,
                    exist: e,
                    child: c,
                    persistent: p,
                    persistent_recursive: r
                })),
            (arb_path(), 0..2i32).prop_map(|(path, mode)| Request::AddWatch { path, mode }),
            Just(Request::Ping),
            Just(Request::WhoAmI),
            Just(Request::CloseSession),
        ]
    }

    proptest! {
        #[test]
        fn request_round_trips(req in arb_request(), xid in any::<i32>()) {
            let mut buf = Vec::new();
            req.encode(xid, &mut buf);
            let (h, back) = Request::decode(&buf).unwrap();
            prop_assert_eq!(h.xid, xid);
            prop_assert_eq!(back, req);
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = Request::decode(&data);
            let _ = ConnectRequest::decode(&data);
        }

        #[test]
        fn truncated_requests_are_errors_not_panics(req in arb_request(), cut in 0usize..64) {
            let mut buf = Vec::new();
            req.encode(7, &mut buf);
            let cut = cut.min(buf.len());
            let _ = Request::decode(&buf[..buf.len() - cut]);
        }
    }

    #[test]
    fn connect_request_with_and_without_read_only_byte() {
        let mut req = ConnectRequest {
            protocol_version: 0,
            last_zxid_seen: 5,
            timeout_ms: 30000,
            session_id: 0,
            passwd: vec![0; 16],
            read_only: None,
        };
        let mut b = Vec::new();
        req.encode(&mut b);
        assert_eq!(ConnectRequest::decode(&b).unwrap(), req);
        req.read_only = Some(true);
        let mut b = Vec::new();
        req.encode(&mut b);
        assert_eq!(ConnectRequest::decode(&b).unwrap(), req);
    }

    #[test]
    fn unknown_opcode_is_reported() {
        let mut b = Vec::new();
        b.extend_from_slice(&1i32.to_be_bytes());
        b.extend_from_slice(&999i32.to_be_bytes());
        assert_eq!(Request::decode(&b), Err(DecodeError::UnknownOpCode(999)));
    }

    #[test]
    fn four_letter_words_are_recognised() {
        assert_eq!(four_letter_word(*b"ruok"), Some("ruok"));
        assert_eq!(four_letter_word([0, 0, 0, 45]), None);
    }

    #[test]
    fn multi_response_ends_with_terminator() {
        let mut b = Vec::new();
        Response::Multi(vec![MultiResult::Error(0), MultiResult::Error(-101)]).encode(&mut b);
        assert_eq!(b.len(), 2 * (4 + 1 + 4 + 4) + 9);
        assert_eq!(
            &b[b.len() - 9..],
            &[0xff, 0xff, 0xff, 0xff, 1, 0xff, 0xff, 0xff, 0xff]
        );
    }
}
