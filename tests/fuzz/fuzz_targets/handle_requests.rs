//! Any sequence of request frames from two sessions, run through the broadcast core
//! (writes: validated, given zxids, applied) and the shard's read path (reads and watch
//! management) on one live tree, with the clock moving between them (session expiry,
//! TTLs, container cleanup). Never a panic; and the txn records the core framed for the
//! log, replayed onto an empty tree as recovery replays them, rebuild exactly the
//! tree the core holds: every node's path, Stat, data and ACL.
//!
//! Input: chunks of `control: u8 | frame length: u16 BE | frame` (a frame as a client
//! sends it after the length: xid, type, record). Control bit 0 picks the session
//! (the second one has a digest identity); bits 2..7 advance the clock by that many
//! 250 ms steps, followed by a tick.
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use ringkeeper::broadcast::messages::{CoreOp, Effect, ToCore};
use ringkeeper::broadcast::{Core, Now};
use ringkeeper::config::Config;
use ringkeeper::proto::{Id, Request};
use ringkeeper::session::watches::WatchTable;
use ringkeeper::shard::reads::{execute, LazyWatches, ReadContext};
use ringkeeper::tree::DataTree;

fn connect(core: &mut Core, conn_id: u64) -> i64 {
    let mut out = Vec::new();
    core.step(
        ToCore::Connect {
            shard: 0,
            conn_id,
            session_id: 0,
            passwd: vec![],
            timeout_ms: 4000,
        },
        &mut out,
    );
    out.iter()
        .find_map(|e| match &e.effect {
            Effect::Connected {
                granted: Some(g), ..
            } => Some(g.session_id),
            _ => None,
        })
        .expect("a session is granted")
}

/// Every node of `t`, in path order: (path, stat, data, acl).
fn nodes(t: &DataTree) -> Vec<(String, String, Vec<u8>, String)> {
    let mut v = Vec::new();
    let _ = t.for_each_node(|p, n| -> Result<(), ()> {
        v.push((
            p.to_string(),
            format!("{:?}", n.stat()),
            n.data().map(|d| d.to_vec()).unwrap_or_default(),
            format!("{:?}", n.acl()),
        ));
        Ok(())
    });
    v.sort();
    v
}

fuzz_target!(|data: &[u8]| {
    let mut cfg = Config::default();
    cfg.extended_types_enabled = true;
    cfg.container_check_interval_ms = 500;
    let mut core = Core::empty(Arc::new(cfg));
    let mut now = Now {
        mono_ms: 0,
        wall_ms: 1_700_000_000_000,
    };
    let sessions = [connect(&mut core, 1), connect(&mut core, 2)];
    let auths: [Arc<Vec<Id>>; 2] = [
        Arc::new(vec![]),
        Arc::new(vec![Id {
            scheme: "digest".into(),
            id: "alice:VrYvv0a5Tx5X5i4iBHXqT0Cd5L8=".into(),
        }]),
    ];
    let watches = std::sync::Mutex::new(WatchTable::default());
    let mut out = Vec::new();
    let mut fired = Vec::new();
    let mut replies = Vec::new();
    let mut rest = data;
    let mut steps = 0;
    while rest.len() >= 3 && steps < 200 {
        steps += 1;
        let control = rest[0];
        let len = u16::from_be_bytes([rest[1], rest[2]]) as usize;
        let frame = &rest[3..(3 + len).min(rest.len())];
        rest = &rest[(3 + len).min(rest.len())..];
        let who = (control & 1) as usize;
        let session_id = sessions[who];
        if let Ok((header, req)) = Request::decode(frame) {
            match CoreOp::from_request(req.clone()) {
                Some(op) => core.step(
                    ToCore::Request {
                        session_id,
                        conn_id: who as u64 + 1,
                        xid: header.xid,
                        op,
                        auth: auths[who].clone(),
                        cut_before: false,
                    },
                    &mut out,
                ),
                None => {
                    let tree = core.tree().clone();
                    let mut ctx = ReadContext {
                        tree: &tree,
                        session_id,
                        auth: &auths[who],
                        watches: LazyWatches::new(&watches),
                    };
                    replies.clear();
                    execute(&mut ctx, header.xid, &req, &mut replies);
                }
            }
        }
        let advance = (control >> 2) as u64;
        if advance > 0 {
            now.mono_ms += advance * 250;
            now.wall_ms += advance as i64 * 250;
            core.set_now(now);
            core.step(ToCore::Touch(vec![sessions[0]]), &mut out);
            core.tick(&mut out);
        }
        for e in out.drain(..) {
            let mut table = watches.lock().unwrap();
            for t in &e.triggers {
                table.fire(&t.path, t.event, &mut fired);
            }
            if let Effect::SessionClosed { session_id } = e.effect {
                table.remove_session(session_id);
            }
        }
    }
    // Recovery's view: the framed records replayed onto an empty tree.
    let framed = core.take_framed();
    let mut replayed = DataTree::new();
    let scan = ringkeeper_storage::record::scan(&framed.bytes);
    assert_eq!(scan.end, ringkeeper_storage::record::End::Clean);
    let mut triggers = Vec::new();
    for r in &scan.records {
        replayed
            .apply_logged(r.zxid, &framed.bytes[r.payload.clone()], &mut triggers)
            .expect("a txn the core logged replays");
        triggers.clear();
    }
    assert_eq!(replayed.last_zxid(), core.tree().last_zxid());
    assert_eq!(nodes(&replayed), nodes(core.tree()));
});
