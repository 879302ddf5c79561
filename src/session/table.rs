//! The global session table (ZooKeeper's SessionTracker), owned by the broadcast
//! core. Time is passed in, never read here, so expiry is testable.

use std::collections::HashMap;

/// Bytes of a session password.
pub const PASSWD_BYTES: usize = 16;

#[derive(Debug, Clone)]
pub struct Session {
    pub timeout_ms: i32,
    pub passwd: [u8; PASSWD_BYTES],
    pub deadline_ms: u64,
    /// The connection currently attached, if the session has one: (shard, conn id).
    pub attached: Option<(usize, u64)>,
}

#[derive(Debug)]
pub struct SessionTable {
    sessions: HashMap<i64, Session>,
    next_id: i64,
}

impl SessionTable {
    /// Session ids start from the clock as in ZooKeeper
    /// (`((millis << 24) >>> 8) | (serverId << 56)`), so ids are not reused across restarts.
    pub fn new(server_id: u8, now_wall_ms: i64) -> SessionTable {
        let base = ((now_wall_ms << 24) as u64 >> 8) as i64 | ((server_id as i64) << 56);
        SessionTable {
            sessions: HashMap::new(),
            next_id: base,
        }
    }

    pub fn next_session_id(&mut self) -> i64 {
        self.next_id += 1;
        self.next_id
    }

    pub fn insert(&mut self, id: i64, s: Session) {
        self.sessions.insert(id, s);
    }

    pub fn get(&self, id: i64) -> Option<&Session> {
        self.sessions.get(&id)
    }

    pub fn get_mut(&mut self, id: i64) -> Option<&mut Session> {
        self.sessions.get_mut(&id)
    }

    pub fn remove(&mut self, id: i64) -> Option<Session> {
        self.sessions.remove(&id)
    }

    pub fn clear(&mut self) {
        self.sessions.clear();
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Pushes a session's deadline to now + its timeout.
    pub fn touch(&mut self, id: i64, now_ms: u64) -> bool {
        match self.sessions.get_mut(&id) {
            Some(s) => {
                s.deadline_ms = now_ms + s.timeout_ms as u64;
                true
            }
            None => false,
        }
    }

    /// Sessions whose deadline has passed, oldest id first.
    pub fn expired(&self, now_ms: u64) -> Vec<i64> {
        let mut v: Vec<i64> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.deadline_ms <= now_ms)
            .map(|(id, _)| *id)
            .collect();
        v.sort_unstable();
        v
    }

    pub fn iter(&self) -> impl Iterator<Item = (&i64, &Session)> {
        self.sessions.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_after_their_timeout_unless_touched() {
        let mut t = SessionTable::new(0, 1_700_000_000_000);
        let id = t.next_session_id();
        t.insert(
            id,
            Session {
                timeout_ms: 4000,
                passwd: [0; 16],
                deadline_ms: 4000,
                attached: None,
            },
        );
        assert!(t.expired(3999).is_empty());
        assert!(t.touch(id, 3000));
        assert!(t.expired(6999).is_empty());
        assert_eq!(t.expired(7000), vec![id]);
    }

    #[test]
    fn session_ids_carry_the_server_id_in_the_top_byte() {
        let mut t = SessionTable::new(3, 1_700_000_000_000);
        assert_eq!(t.next_session_id() >> 56, 3);
    }
}
