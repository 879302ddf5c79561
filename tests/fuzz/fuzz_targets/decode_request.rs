//! Any bytes as a request frame or a handshake: decoding must return an error, never
//! panic; whatever decodes must encode back to bytes that decode to the same request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringkeeper::proto::{ConnectRequest, Request};

fuzz_target!(|data: &[u8]| {
    let _ = ConnectRequest::decode(data);
    if let Ok((header, req)) = Request::decode(data) {
        let mut again = Vec::new();
        req.encode(header.xid, &mut again);
        let (h2, req2) = Request::decode(&again).expect("re-encoded request must decode");
        assert_eq!(h2.xid, header.xid);
        assert_eq!(req2, req);
    }
});
