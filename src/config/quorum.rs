//! The ensemble a zoo.cfg describes, read as ZooKeeper reads it (QuorumPeerConfig and
//! QuorumPeer.QuorumServer): `server.N` lines, the `myid` file in dataDir, `peerType`
//! and `standaloneEnabled`.

use std::path::Path;

use thiserror::Error;

use super::ServerId;

/// Whether a member votes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LearnerType {
    Participant,
    Observer,
}

/// One address of a member: where it listens for learners and for election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumAddress {
    pub host: String,
    pub quorum_port: u16,
    pub election_port: u16,
}

/// A `server.N=host:quorumPort:electionPort[:participant|:observer][;[clientAddr:]clientPort]`
/// line; `|` separates several addresses of one member (3.6+).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumServer {
    pub id: ServerId,
    pub addresses: Vec<QuorumAddress>,
    pub learner_type: LearnerType,
    /// The member's client address and port, if the line gives them.
    pub client: Option<(String, u16)>,
}

/// Splits `host:port[:...]`, where the host may be a bracketed IPv6 address
/// (ZooKeeper's ConfigUtils.splitWithLeadingHostname).
fn split_with_leading_host(s: &str) -> Result<Vec<String>, String> {
    if let Some(rest) = s.strip_prefix('[') {
        let end = rest
            .find(']')
            .ok_or_else(|| format!("{s} starts with '[' but has no matching ']'"))?;
        let host = &rest[..end];
        let after = &rest[end + 1..];
        let mut parts = vec![host.to_string()];
        if !after.is_empty() {
            let after = after
                .strip_prefix(':')
                .ok_or_else(|| format!("{s} does not have a ':' after the ']'"))?;
            parts.extend(after.split(':').map(str::to_string));
        }
        Ok(parts)
    } else {
        Ok(s.split(':').map(str::to_string).collect())
    }
}

fn port(s: &str) -> Result<u16, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a port number"))
}

/// Parses the value of a `server.N` line as ZooKeeper does.
pub fn parse_server_line(id: ServerId, spec: &str) -> Result<QuorumServer, String> {
    let wrong = || {
        format!(
            "{spec} does not have the form server_config or \
             server_config;client_config where server_config is \
             host:port:port or host:port:port:type and client_config \
             is port or host:port"
        )
    };
    let halves: Vec<&str> = spec.split(';').collect();
    if halves.len() > 2 {
        return Err(wrong());
    }
    let client = match halves.get(1) {
        None => None,
        Some(c) => {
            let parts = split_with_leading_host(c.trim())?;
            match parts.as_slice() {
                [p] => Some(("0.0.0.0".to_string(), port(p)?)),
                [h, p] => Some((h.clone(), port(p)?)),
                _ => return Err(wrong()),
            }
        }
    };
    let mut addresses = Vec::new();
    let mut learner_type = LearnerType::Participant;
    for addr in halves[0].split('|') {
        let parts = split_with_leading_host(addr.trim())?;
        if parts.len() < 3 || parts.len() > 4 {
            return Err(wrong());
        }
        addresses.push(QuorumAddress {
            host: parts[0].clone(),
            quorum_port: port(&parts[1])?,
            election_port: port(&parts[2])?,
        });
        if let Some(t) = parts.get(3) {
            learner_type = match t.to_ascii_lowercase().as_str() {
                "participant" => LearnerType::Participant,
                "observer" => LearnerType::Observer,
                _ => return Err(format!("Unrecognised peertype: {t}")),
            };
        }
    }
    Ok(QuorumServer {
        id,
        addresses,
        learner_type,
        client,
    })
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum MyIdError {
    #[error("{0} file is missing (each member of an ensemble needs its id in dataDir/myid)")]
    Missing(String),
    #[error("cannot read {file}: {reason}")]
    Unreadable { file: String, reason: String },
    #[error("{file}: serverid {text:?} is not a number")]
    NotANumber { file: String, text: String },
}

/// Reads `dataDir/myid`: the member's id, alone on the first line.
pub fn read_myid(data_dir: &Path) -> Result<ServerId, MyIdError> {
    let path = data_dir.join("myid");
    let file = path.display().to_string();
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(MyIdError::Missing(file)),
        Err(e) => {
            return Err(MyIdError::Unreadable {
                file,
                reason: e.to_string(),
            })
        }
    };
    let first = text.lines().next().unwrap_or("").trim();
    first.parse().map_err(|_| MyIdError::NotANumber {
        file,
        text: first.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_lines_of_every_form() {
        let s = parse_server_line(1, "zk1:2888:3888").unwrap();
        assert_eq!(s.addresses[0].host, "zk1");
        assert_eq!(
            (s.addresses[0].quorum_port, s.addresses[0].election_port),
            (2888, 3888)
        );
        assert_eq!(s.learner_type, LearnerType::Participant);
        assert_eq!(s.client, None);
        let s = parse_server_line(4, "127.0.0.4:2888:3888:observer;2181").unwrap();
        assert_eq!(s.learner_type, LearnerType::Observer);
        assert_eq!(s.client, Some(("0.0.0.0".into(), 2181)));
        let s = parse_server_line(2, "[::1]:2888:3888:participant;[::1]:2182").unwrap();
        assert_eq!(s.addresses[0].host, "::1");
        assert_eq!(s.client, Some(("::1".into(), 2182)));
        let s = parse_server_line(3, "a:1:2|b:3:4").unwrap();
        assert_eq!(s.addresses.len(), 2);
        assert_eq!(s.addresses[1].host, "b");
    }

    #[test]
    fn malformed_server_lines_are_refused_with_zookeepers_words() {
        assert!(parse_server_line(1, "zk1:2888")
            .unwrap_err()
            .contains("does not have the form"));
        assert!(parse_server_line(1, "zk1:2888:3888:leader")
            .unwrap_err()
            .contains("Unrecognised peertype: leader"));
        assert!(parse_server_line(1, "zk1:2888:x")
            .unwrap_err()
            .contains("not a port"));
        assert!(parse_server_line(1, "a:1:2;3;4").is_err());
    }

    #[test]
    fn myid_is_read_and_its_problems_name_the_file() {
        let dir = std::env::temp_dir().join(format!("rk-myid-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let _ = std::fs::remove_file(dir.join("myid"));
        assert!(matches!(read_myid(&dir), Err(MyIdError::Missing(f)) if f.ends_with("/myid")));
        std::fs::write(dir.join("myid"), "three\n").unwrap();
        assert!(matches!(read_myid(&dir), Err(MyIdError::NotANumber { .. })));
        std::fs::write(dir.join("myid"), " 3 \n").unwrap();
        assert_eq!(read_myid(&dir), Ok(3));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
