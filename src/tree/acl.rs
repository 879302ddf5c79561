//! ACL checks and the authentication schemes the server knows: world, auth, digest,
//! ip, and super (a digest identity named in config that bypasses every ACL).

use std::net::IpAddr;

use base64::Engine;
use sha1::{Digest, Sha1};

use crate::proto::codes::perms;
use crate::proto::{Acl, ErrorCode, Id};

pub fn open_acl_unsafe() -> Vec<Acl> {
    vec![Acl {
        perms: perms::ALL,
        id: Id::new("world", "anyone"),
    }]
}

pub fn read_acl_unsafe() -> Vec<Acl> {
    vec![Acl {
        perms: perms::READ,
        id: Id::new("world", "anyone"),
    }]
}

/// `user:base64(sha1("user:password"))`, the digest scheme's stored form.
pub fn digest(user_password: &str) -> String {
    let user = user_password.split(':').next().unwrap_or("");
    let hash = Sha1::digest(user_password.as_bytes());
    format!(
        "{user}:{}",
        base64::engine::general_purpose::STANDARD.encode(hash)
    )
}

/// True when the identities in `auth` grant `perm` under `acl`.
pub fn allows(acl: &[Acl], perm: i32, auth: &[Id]) -> bool {
    if acl.is_empty() || auth.iter().any(|id| id.scheme == "super") {
        return true;
    }
    for a in acl {
        if a.perms & perm == 0 {
            continue;
        }
        if a.id.scheme == "world" && a.id.id == "anyone" {
            return true;
        }
        for id in auth.iter().filter(|id| id.scheme == a.id.scheme) {
            let matched = match id.scheme.as_str() {
                "ip" => ip_matches(&id.id, &a.id.id),
                _ => id.id == a.id.id,
            };
            if matched {
                return true;
            }
        }
    }
    false
}

fn ip_bytes(addr: &str) -> Option<Vec<u8>> {
    match addr.parse::<IpAddr>().ok()? {
        IpAddr::V4(v) => Some(v.octets().to_vec()),
        IpAddr::V6(v) => Some(v.octets().to_vec()),
    }
}

/// Parses an ip ACL expression `addr[/bits]`.
fn ip_expr(expr: &str) -> Option<(Vec<u8>, usize)> {
    let mut parts = expr.splitn(2, '/');
    let addr = ip_bytes(parts.next()?)?;
    let bits = match parts.next() {
        Some(b) => b.parse::<usize>().ok()?,
        None => addr.len() * 8,
    };
    if bits > addr.len() * 8 {
        return None;
    }
    Some((addr, bits))
}

fn ip_matches(client: &str, expr: &str) -> bool {
    let (Some(client), Some((net, bits))) = (ip_bytes(client), ip_expr(expr)) else {
        return false;
    };
    if client.len() != net.len() {
        return false;
    }
    (0..bits).all(|i| {
        let mask = 0x80u8 >> (i % 8);
        client[i / 8] & mask == net[i / 8] & mask
    })
}

fn id_is_valid(id: &Id) -> bool {
    match id.scheme.as_str() {
        "digest" => {
            let parts: Vec<&str> = id.id.split(':').collect();
            parts.len() == 2 && !parts[0].is_empty() && !parts[1].is_empty()
        }
        "ip" => ip_expr(&id.id).is_some(),
        // A certificate subject (X509AuthenticationProvider.isValid takes any).
        "x509" => !id.id.is_empty(),
        _ => false,
    }
}

/// Checks and normalises an ACL list from a create/setACL the way ZooKeeper's
/// fixupACL does: duplicates removed, `auth` expanded to the session's authenticated
/// identities, unknown schemes or malformed ids rejected with INVALIDACL.
pub fn fixup(acl: &[Acl], auth: &[Id]) -> Result<Vec<Acl>, ErrorCode> {
    let mut uniq: Vec<&Acl> = Vec::with_capacity(acl.len());
    for a in acl {
        if !uniq.contains(&a) {
            uniq.push(a);
        }
    }
    if uniq.is_empty() {
        return Err(ErrorCode::InvalidAcl);
    }
    let mut out = Vec::with_capacity(uniq.len());
    for a in uniq {
        if a.id.scheme == "world" && a.id.id == "anyone" {
            out.push(a.clone());
        } else if a.id.scheme == "auth" {
            let mut any = false;
            // The identities whose providers authenticate (ZooKeeper's
            // isAuthenticated): digest logins and TLS certificates, not IPs.
            for id in auth
                .iter()
                .filter(|id| id.scheme == "digest" || id.scheme == "x509")
            {
                any = true;
                out.push(Acl {
                    perms: a.perms,
                    id: id.clone(),
                });
            }
            if !any {
                return Err(ErrorCode::InvalidAcl);
            }
        } else if id_is_valid(&a.id) {
            out.push(a.clone());
        } else {
            return Err(ErrorCode::InvalidAcl);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_matches_zookeeper() {
        // DigestAuthenticationProvider.generateDigest("super:test")
        assert_eq!(digest("super:test"), "super:D/InIHSb7yEEbrWz8b9l71RjZJU=");
    }

    #[test]
    fn ip_acl_matches_by_prefix() {
        assert!(ip_matches("127.0.0.1", "127.0.0.0/8"));
        assert!(ip_matches("127.0.0.1", "127.0.0.1"));
        assert!(!ip_matches("127.0.0.2", "127.0.0.1"));
        assert!(!ip_matches("127.0.0.1", "10.0.0.0/8"));
    }

    #[test]
    fn fixup_expands_auth_and_rejects_garbage() {
        let me = vec![Id::new("ip", "127.0.0.1"), Id::new("digest", "u:h")];
        let acl = vec![Acl {
            perms: 31,
            id: Id::new("auth", ""),
        }];
        assert_eq!(
            fixup(&acl, &me).unwrap(),
            vec![Acl {
                perms: 31,
                id: Id::new("digest", "u:h")
            }]
        );
        assert_eq!(fixup(&acl, &me[..1]), Err(ErrorCode::InvalidAcl));
        assert_eq!(fixup(&[], &me), Err(ErrorCode::InvalidAcl));
        let bad = vec![Acl {
            perms: 31,
            id: Id::new("world", "someone"),
        }];
        assert_eq!(fixup(&bad, &me), Err(ErrorCode::InvalidAcl));
    }
}
