//! TLS on `secureClientPort`, from ZooKeeper's `ssl.*` keys, with rustls: the key
//! store (a PEM file with the private key and the certificate chain, as ZooKeeper's
//! PEM key stores are), the trust store (PEM CA certificates clients are checked
//! against), `ssl.clientAuth` (need, the default; want; none), `ssl.enabledProtocols`
//! (or `ssl.protocol`) and `ssl.ciphersuites`. Everything is read and checked at
//! start-up: a key store that cannot be used stops the server with the key and file.
//!
//! A client's certificate becomes its `x509` ACL id: the subject's distinguished name
//! as Java's X500Principal.getName() writes it (RFC 2253: `CN=client,O=Example`), the
//! id ZooKeeper's X509AuthenticationProvider gives it; the name in
//! `X509AuthenticationProvider.superUser` is also `super`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::ring as provider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, SupportedCipherSuite};

/// `ssl.clientAuth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    Need,
    Want,
    None,
}

/// ZooKeeper's `ssl.*` settings for the client port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SslSettings {
    pub key_store: Option<PathBuf>,
    pub key_store_password: Option<String>,
    pub trust_store: Option<PathBuf>,
    pub client_auth: ClientAuth,
    /// TLS versions by Java's names (TLSv1.2, TLSv1.3); empty: both.
    pub protocols: Vec<String>,
    /// Cipher suites by their IANA names; empty: rustls's defaults.
    pub cipher_suites: Vec<String>,
    /// The certificate subject that is `super` (X509AuthenticationProvider.superUser).
    pub x509_super_user: Option<String>,
}

impl Default for SslSettings {
    fn default() -> Self {
        SslSettings {
            key_store: None,
            key_store_password: None,
            trust_store: None,
            client_auth: ClientAuth::Need,
            protocols: Vec::new(),
            cipher_suites: Vec::new(),
            x509_super_user: None,
        }
    }
}

/// Store types ZooKeeper names: only PEM is read here.
pub fn check_store_type(v: &str) -> Result<(), String> {
    if v.eq_ignore_ascii_case("PEM") {
        Ok(())
    } else {
        Err(format!(
            "ringkeeper reads PEM key and trust stores only, not {v}: convert it (keytool -importkeystore to PKCS12, then openssl pkcs12 -nodes)"
        ))
    }
}

pub fn parse_client_auth(v: &str) -> Result<ClientAuth, String> {
    match v.to_ascii_lowercase().as_str() {
        "need" => Ok(ClientAuth::Need),
        "want" => Ok(ClientAuth::Want),
        "none" => Ok(ClientAuth::None),
        _ => Err("must be need, want or none".into()),
    }
}

fn read_pem(path: &Path, key: &str) -> Result<Vec<rustls_pemfile::Item>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{key} {}: {e}", path.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    if text.contains("ENCRYPTED PRIVATE KEY") || text.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(format!(
            "{key} {}: the private key is encrypted; ringkeeper reads unencrypted PEM keys (openssl pkey -in key.pem -out plain.pem)",
            path.display()
        ));
    }
    let mut items = Vec::new();
    let mut rd = &bytes[..];
    loop {
        match rustls_pemfile::read_one(&mut rd) {
            Ok(Some(item)) => items.push(item),
            Ok(None) => break,
            Err(e) => return Err(format!("{key} {}: not PEM: {e}", path.display())),
        }
    }
    Ok(items)
}

fn suites(names: &[String]) -> Result<Vec<SupportedCipherSuite>, String> {
    let all = provider::ALL_CIPHER_SUITES;
    if names.is_empty() {
        return Ok(provider::DEFAULT_CIPHER_SUITES.to_vec());
    }
    let mut out = Vec::new();
    for n in names {
        // Java names TLS 1.3 suites TLS_AES_128_GCM_SHA256; rustls TLS13_AES_128_GCM_SHA256.
        let found = all.iter().find(|s| {
            let r = s.suite().as_str().unwrap_or_default();
            r == n || r.replacen("TLS13_", "TLS_", 1) == *n
        });
        match found {
            Some(s) => out.push(*s),
            None => {
                let known: Vec<String> = all
                    .iter()
                    .filter_map(|s| s.suite().as_str().map(|n| n.replacen("TLS13_", "TLS_", 1)))
                    .collect();
                return Err(format!(
                    "unknown cipher suite {n}; known: {}",
                    known.join(",")
                ));
            }
        }
    }
    Ok(out)
}

/// The server's TLS configuration from the `ssl.*` settings; the error names the key
/// and the file.
pub fn server_config(s: &SslSettings) -> Result<Arc<ServerConfig>, String> {
    let ks = s
        .key_store
        .as_ref()
        .ok_or("secureClientPort needs ssl.keyStore.location (a PEM file with the key and its certificate chain)")?;
    let mut certs: Vec<CertificateDer<'static>> = Vec::new();
    let mut key: Option<PrivateKeyDer<'static>> = None;
    for item in read_pem(ks, "ssl.keyStore.location")? {
        match item {
            rustls_pemfile::Item::X509Certificate(c) => certs.push(c),
            rustls_pemfile::Item::Pkcs1Key(k) => key = Some(k.into()),
            rustls_pemfile::Item::Pkcs8Key(k) => key = Some(k.into()),
            rustls_pemfile::Item::Sec1Key(k) => key = Some(k.into()),
            _ => {}
        }
    }
    let key = key.ok_or_else(|| {
        format!(
            "ssl.keyStore.location {}: no private key in it",
            ks.display()
        )
    })?;
    if certs.is_empty() {
        return Err(format!(
            "ssl.keyStore.location {}: no certificate in it",
            ks.display()
        ));
    }
    let verifier =
        match (s.client_auth, &s.trust_store) {
            (ClientAuth::None, _) => WebPkiClientVerifier::no_client_auth(),
            (_, None) => return Err(
                "ssl.clientAuth=need or want needs ssl.trustStore.location (PEM CA certificates)"
                    .into(),
            ),
            (auth, Some(ts)) => {
                let mut roots = RootCertStore::empty();
                for item in read_pem(ts, "ssl.trustStore.location")? {
                    if let rustls_pemfile::Item::X509Certificate(c) = item {
                        roots.add(c).map_err(|e| {
                            format!("ssl.trustStore.location {}: {e}", ts.display())
                        })?;
                    }
                }
                if roots.is_empty() {
                    return Err(format!(
                        "ssl.trustStore.location {}: no certificate in it",
                        ts.display()
                    ));
                }
                let b = WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    Arc::new(provider::default_provider()),
                );
                let b = if auth == ClientAuth::Want {
                    b.allow_unauthenticated()
                } else {
                    b
                };
                b.build()
                    .map_err(|e| format!("ssl.trustStore.location {}: {e}", ts.display()))?
            }
        };
    let mut versions = Vec::new();
    for p in &s.protocols {
        match p.as_str() {
            "TLSv1.2" => versions.push(&rustls::version::TLS12),
            "TLSv1.3" => versions.push(&rustls::version::TLS13),
            // Java's generic name: whatever the runtime supports.
            "TLS" => versions.extend([&rustls::version::TLS12, &rustls::version::TLS13]),
            other => {
                return Err(format!(
                    "TLS version {other} is not served (TLSv1.2, TLSv1.3)"
                ))
            }
        }
    }
    if versions.is_empty() {
        versions = vec![&rustls::version::TLS12, &rustls::version::TLS13];
    }
    let provider = rustls::crypto::CryptoProvider {
        cipher_suites: suites(&s.cipher_suites)?,
        ..provider::default_provider()
    };
    let config = ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&versions)
        .map_err(|e| format!("ssl.enabledProtocols/ssl.ciphersuites: {e}"))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| format!("ssl.keyStore.location {}: {e}", ks.display()))?;
    Ok(Arc::new(config))
}

/// RFC 2253's escaping of an attribute value, as Java writes it.
fn escape_rfc2253(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let n = v.chars().count();
    for (i, ch) in v.chars().enumerate() {
        let edge_space = ch == ' ' && (i == 0 || i + 1 == n);
        if matches!(ch, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || edge_space
            || (i == 0 && ch == '#')
        {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

fn short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "STREET",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "0.9.2342.19200300.100.1.25" => "DC",
        "0.9.2342.19200300.100.1.1" => "UID",
        _ => return None,
    })
}

/// A certificate's subject as Java's X500Principal.getName() (RFC 2253) writes it:
/// the RDNs last first, known attributes by their short names, others as
/// `oid=#hex` of their DER encoding.
pub fn subject_dn(cert_der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    let mut rdns = Vec::new();
    for rdn in cert.subject().iter_rdn() {
        let mut parts = Vec::new();
        for atv in rdn.iter() {
            let oid = atv.attr_type().to_id_string();
            let value = atv.attr_value();
            match (short_name(&oid), atv.as_str()) {
                (Some(name), Ok(text)) => parts.push(format!("{name}={}", escape_rfc2253(text))),
                _ => {
                    let data = value.data;
                    let mut der = vec![value.header.tag().0 as u8];
                    if data.len() < 128 {
                        der.push(data.len() as u8);
                    } else {
                        let len = (data.len() as u32).to_be_bytes();
                        let skip = len.iter().take_while(|b| **b == 0).count();
                        der.push(0x80 | (4 - skip) as u8);
                        der.extend_from_slice(&len[skip..]);
                    }
                    der.extend_from_slice(data);
                    let hex: String = der.iter().map(|b| format!("{b:02x}")).collect();
                    parts.push(format!("{oid}=#{hex}"));
                }
            }
        }
        rdns.push(parts.join("+"));
    }
    rdns.reverse();
    Some(rdns.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc2253_escapes_as_java_does() {
        assert_eq!(escape_rfc2253("a,b"), "a\\,b");
        assert_eq!(escape_rfc2253(" x "), "\\ x\\ ");
        assert_eq!(escape_rfc2253("#1"), "\\#1");
        assert_eq!(escape_rfc2253("plain name"), "plain name");
    }

    #[test]
    fn bad_settings_name_what_is_wrong() {
        let none = server_config(&SslSettings::default()).unwrap_err();
        assert!(none.contains("ssl.keyStore.location"), "{none}");
        let missing = server_config(&SslSettings {
            key_store: Some("/nonexistent/key.pem".into()),
            ..SslSettings::default()
        })
        .unwrap_err();
        assert!(missing.contains("/nonexistent/key.pem"), "{missing}");
        assert!(check_store_type("JKS").is_err() && check_store_type("pem").is_ok());
        assert!(suites(&["TLS_NOPE".into()])
            .unwrap_err()
            .contains("TLS_AES_128_GCM_SHA256"));
    }
}
