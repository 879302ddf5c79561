//! Server configuration: ZooKeeper's `zoo.cfg` read as it is, plus the settings
//! ZooKeeper takes as Java system properties (accepted with or without their
//! `zookeeper.` prefix). No file at all gives the embedded default: standalone on
//! 127.0.0.1:2181 with data under ./data.

pub mod quorum;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{file}:{line}: invalid value {value:?} for {key}: {reason}")]
    BadValue {
        file: String,
        line: usize,
        key: String,
        value: String,
        reason: String,
    },
    #[error("{file}:{line}: expected key=value, found {text:?}")]
    BadLine {
        file: String,
        line: usize,
        text: String,
    },
    #[error("cannot read config file {file}: {reason}")]
    Unreadable { file: String, reason: String },
    #[error("{0}")]
    Inconsistent(String),
}

/// A member's id in an ensemble (myid, the N of `server.N`).
pub type ServerId = i64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub tick_time_ms: u32,
    pub init_limit: u32,
    pub sync_limit: u32,
    pub data_dir: PathBuf,
    pub data_log_dir: Option<PathBuf>,
    pub client_port: u16,
    pub client_port_address: IpAddr,
    /// `secureClientPort`: TLS clients (see [`crate::tls`]), on
    /// `secureClientPortAddress` (default: clientPortAddress).
    pub secure_client_port: Option<u16>,
    pub secure_client_port_address: Option<IpAddr>,
    pub ssl: crate::tls::SslSettings,
    /// Connections one client IP may hold; 0 = unlimited.
    pub max_client_cnxns: u32,
    min_session_timeout_ms: Option<u32>,
    max_session_timeout_ms: Option<u32>,
    /// Enabled four-letter words; "*" in the file enables all.
    pub four_letter_words: BTreeSet<String>,
    /// The `server.N` lines, in id order.
    pub servers: Vec<quorum::QuorumServer>,
    /// `peerType`: what this member is if its own line does not say.
    pub peer_type: quorum::LearnerType,
    /// `standaloneEnabled` (default true): one server line alone means standalone.
    pub standalone_enabled: bool,
    /// `readonlymode.enabled`: a member cut off from its quorum serves reads to
    /// clients that asked for read-only mode (ZooKeeper's read-only mode).
    pub read_only_mode_enabled: bool,
    pub snap_count: u64,
    /// A txn log write (with its sync) slower than this is logged as a warning and
    /// counted (`fsync.warningthresholdms`, ZooKeeper's default 1000 ms).
    pub fsync_warning_threshold_ms: u64,
    pub force_sync: bool,
    pub pre_alloc_size_kb: u64,
    pub autopurge_snap_retain_count: u32,
    pub autopurge_purge_interval_hours: u32,
    /// Start from the newest snapshot that reads back, if the newest does not
    /// (recovery.fallbackToOlderSnapshot; off: an unreadable snapshot stops start-up).
    pub fallback_to_older_snapshot: bool,
    pub extended_types_enabled: bool,
    /// Hard quotas fail writes with QUOTAEXCEEDED (zookeeper.enforceQuota; ZooKeeper's
    /// default, off, only logs).
    pub enforce_quota: bool,
    pub container_check_interval_ms: u64,
    pub container_max_per_minute: u32,
    /// How long a new connection may take to send its handshake or a four-letter
    /// word (zookeeper.nio.sessionlessCnxnTimeout).
    pub sessionless_conn_timeout_ms: u64,
    pub super_digest: Option<String>,
    pub jute_maxbuffer: usize,
    /// Requests in flight (at the broadcast core) before the shards stop reading
    /// from client connections (globalOutstandingLimit, default 1000; 0: no limit).
    pub global_outstanding_limit: u32,
    /// ZooKeeper 3.6's zookeeper.request_throttle_max_requests: the same back-pressure
    /// at a lower limit, if set (0, the default: off).
    pub request_throttle_max_requests: u32,
    /// The AdminServer (`admin.enableServer`): ZooKeeper's HTTP commands, on
    /// `admin.serverAddress`:`admin.serverPort` under `admin.commandURL`. On by default
    /// with a zoo.cfg, as in ZooKeeper; off in the embedded default.
    pub admin_enable_server: bool,
    pub admin_server_address: IpAddr,
    pub admin_server_port: u16,
    pub admin_command_url: String,
    /// Whether the AdminServer's `snapshot` command may run (`admin.snapshot.enabled`),
    /// and how often (`admin.rateLimiterIntervalInMS`).
    pub admin_snapshot_enabled: bool,
    pub admin_rate_limiter_interval_ms: u64,
    /// The Prometheus endpoint (`metricsProvider.className` naming ZooKeeper's
    /// PrometheusMetricsProvider): `/metrics` on httpHost:httpPort.
    pub prometheus_enabled: bool,
    pub prometheus_host: IpAddr,
    pub prometheus_port: u16,
    /// A request answered later than this many ms after it arrived is logged as a
    /// warning (at most one line a second per shard) and counted; 0: never.
    pub slow_request_threshold_ms: u64,
    /// Log filter directives (tracing's EnvFilter: `info`, `info,ringkeeper::peering=debug`);
    /// RUST_LOG, when set, wins.
    pub log_level: String,
    /// Log lines as JSON objects (one per line) instead of text.
    pub log_json: bool,
    /// Client shards (one executor each).
    pub shards: usize,
    /// `shards` and `coreOnShard` were set, not left to their defaults (which a member
    /// that shares the machine with other members replaces, see `share_cpus`).
    pub layout_given: bool,
    /// Each executor gets a CPU of its own when there are CPUs to spare. Off for a
    /// member that shares the machine's CPUs with other members of its ensemble.
    pub pin_executors: bool,
    /// How long an executor polls for work before parking in the kernel. Every write
    /// crosses from a shard to the broadcast core and back; spinning briefly saves the
    /// two wake-ups (measured: one session's setData p50 143 -> 100 us) for at most
    /// this much CPU after each burst of work. 0 parks at once.
    pub spin_before_park_us: u64,
    /// Run the broadcast core on shard 0's executor instead of its own: no cross-core
    /// hand-off for shard 0's writes, and no executor competing with the shards for a
    /// core on a small machine. Default: on when the machine has at most 2 cores.
    pub core_on_shard: bool,
    /// Where the config came from, for `conf` and messages.
    pub source: String,
    /// Keys that were not recognised (each warned about once at start-up).
    pub unknown_keys: Vec<String>,
}

/// Name of the directory, under dataDir and dataLogDir, that holds our files (as
/// ZooKeeper keeps its own under `version-2`).
pub const STORAGE_SUBDIR: &str = "ringkeeper";

impl Config {
    /// Where snapshots live.
    pub fn snapshot_dir(&self) -> PathBuf {
        self.data_dir.join(STORAGE_SUBDIR)
    }

    /// Where the txn log lives (dataLogDir, else dataDir).
    pub fn log_dir(&self) -> PathBuf {
        self.data_log_dir
            .as_ref()
            .unwrap_or(&self.data_dir)
            .join(STORAGE_SUBDIR)
    }
}

/// A log filter from tracing's directive syntax (`info`, `info,ringkeeper::peering=debug`).
/// Only ASCII is taken: module paths and levels are ASCII, and tracing's own parser
/// panics on some non-ASCII text (found by fuzzing the config).
pub fn log_filter(text: &str) -> Result<tracing_subscriber::EnvFilter, String> {
    const EXAMPLE: &str = "e.g. info or info,ringkeeper::peering=debug";
    if let Some(c) = text.chars().find(|c| !c.is_ascii() || c.is_ascii_control()) {
        return Err(format!(
            "not a log filter ({c:?} is not allowed); {EXAMPLE}"
        ));
    }
    tracing_subscriber::EnvFilter::try_new(text)
        .map_err(|e| format!("not a log filter ({e}); {EXAMPLE}"))
}

impl Default for Config {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Config {
            tick_time_ms: 2000,
            init_limit: 10,
            sync_limit: 5,
            data_dir: PathBuf::from("./data"),
            data_log_dir: None,
            client_port: 2181,
            client_port_address: IpAddr::from([127, 0, 0, 1]),
            secure_client_port: None,
            secure_client_port_address: None,
            ssl: crate::tls::SslSettings::default(),
            max_client_cnxns: 60,
            min_session_timeout_ms: None,
            max_session_timeout_ms: None,
            four_letter_words: ["srvr".to_string()].into_iter().collect(),
            servers: Vec::new(),
            peer_type: quorum::LearnerType::Participant,
            standalone_enabled: true,
            read_only_mode_enabled: false,
            snap_count: 100_000,
            fsync_warning_threshold_ms: 1000,
            force_sync: true,
            pre_alloc_size_kb: 65536,
            autopurge_snap_retain_count: 3,
            autopurge_purge_interval_hours: 0,
            fallback_to_older_snapshot: false,
            extended_types_enabled: false,
            enforce_quota: false,
            container_check_interval_ms: 60_000,
            sessionless_conn_timeout_ms: 10_000,
            container_max_per_minute: 10_000,
            super_digest: None,
            jute_maxbuffer: crate::proto::JUTE_MAXBUFFER_DEFAULT,
            global_outstanding_limit: 1000,
            request_throttle_max_requests: 0,
            slow_request_threshold_ms: 1000,
            log_level: "info".into(),
            log_json: false,
            admin_enable_server: false,
            admin_server_address: IpAddr::from([127, 0, 0, 1]),
            admin_server_port: 8080,
            admin_command_url: "/commands".into(),
            admin_snapshot_enabled: true,
            admin_rate_limiter_interval_ms: 300_000,
            prometheus_enabled: false,
            prometheus_host: IpAddr::from([127, 0, 0, 1]),
            prometheus_port: 7000,
            shards: default_layout(cores).0,
            layout_given: false,
            pin_executors: true,
            spin_before_park_us: 50,
            core_on_shard: default_layout(cores).1,
            source: "embedded default".into(),
            unknown_keys: Vec::new(),
        }
    }
}

/// Shards and whether the broadcast core shares shard 0's executor, for `cores` CPUs:
/// up to 2, a shard per CPU with the core on shard 0's executor; above, the core gets
/// a CPU of its own.
fn default_layout(cores: usize) -> (usize, bool) {
    let cores = cores.max(1);
    if cores <= 2 {
        (cores, true)
    } else {
        (cores - 1, false)
    }
}

fn parse_num<T: std::str::FromStr>(v: &str) -> Result<T, String> {
    v.trim()
        .parse::<T>()
        .map_err(|_| "not a valid number in range".to_string())
}

fn parse_bool(v: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" => Ok(true),
        "false" | "no" => Ok(false),
        _ => Err("expected true/false or yes/no".into()),
    }
}

impl Config {
    pub fn min_session_timeout_ms(&self) -> u32 {
        self.min_session_timeout_ms.unwrap_or(self.tick_time_ms * 2)
    }

    pub fn max_session_timeout_ms(&self) -> u32 {
        self.max_session_timeout_ms
            .unwrap_or(self.tick_time_ms * 20)
    }

    /// The session timeout the server grants for a requested one.
    pub fn negotiate_timeout_ms(&self, requested: i32) -> i32 {
        let min = self.min_session_timeout_ms() as i32;
        let max = self.max_session_timeout_ms() as i32;
        requested.clamp(min, max.max(min))
    }

    /// The requests in flight at which the shards stop reading (0: none).
    pub fn outstanding_limit(&self) -> u32 {
        match (
            self.global_outstanding_limit,
            self.request_throttle_max_requests,
        ) {
            (0, r) => r,
            (g, 0) => g,
            (g, r) => g.min(r),
        }
    }

    /// Largest accepted frame: jute.maxbuffer plus room for headers.
    pub fn frame_bytes_limit(&self) -> usize {
        self.jute_maxbuffer + crate::proto::FRAME_EXTRA_BYTES
    }

    pub fn four_letter_word_enabled(&self, word: &str) -> bool {
        self.four_letter_words.contains("*") || self.four_letter_words.contains(word)
    }

    /// Reads a zoo.cfg file on top of the defaults. A file that does not set
    /// clientPortAddress listens on every interface, as ZooKeeper does.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Unreadable {
            file: path.display().to_string(),
            reason: e.to_string(),
        })?;
        // A zoo.cfg gets ZooKeeper's defaults: every address, the AdminServer on.
        let mut cfg = Config {
            client_port_address: IpAddr::from([0, 0, 0, 0]),
            admin_enable_server: true,
            admin_server_address: IpAddr::from([0, 0, 0, 0]),
            prometheus_host: IpAddr::from([0, 0, 0, 0]),
            source: path.display().to_string(),
            ..Config::default()
        };
        cfg.apply_text(&text, &path.display().to_string())?;
        cfg.check()?;
        Ok(cfg)
    }

    /// Applies `key=value` lines (zoo.cfg syntax: `#` comments, blank lines).
    pub fn apply_text(&mut self, text: &str, file: &str) -> Result<(), ConfigError> {
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                return Err(ConfigError::BadLine {
                    file: file.into(),
                    line: i + 1,
                    text: line.into(),
                });
            };
            self.set(k.trim(), v.trim(), file, i + 1)?;
        }
        Ok(())
    }

    /// Sets one key. Unknown keys are recorded (and warned about), not rejected.
    pub fn set(
        &mut self,
        key: &str,
        value: &str,
        file: &str,
        line: usize,
    ) -> Result<(), ConfigError> {
        let bad = |reason: String| ConfigError::BadValue {
            file: file.into(),
            line,
            key: key.into(),
            value: value.into(),
            reason,
        };
        let k = key.strip_prefix("zookeeper.").unwrap_or(key);
        match k {
            "tickTime" => self.tick_time_ms = parse_num(value).map_err(bad)?,
            "initLimit" => self.init_limit = parse_num(value).map_err(bad)?,
            "syncLimit" => self.sync_limit = parse_num(value).map_err(bad)?,
            "dataDir" => self.data_dir = PathBuf::from(value),
            "dataLogDir" => self.data_log_dir = Some(PathBuf::from(value)),
            "clientPort" => self.client_port = parse_num(value).map_err(bad)?,
            "clientPortAddress" => {
                self.client_port_address =
                    value.parse().map_err(|_| bad("not an IP address".into()))?
            }
            "maxClientCnxns" => self.max_client_cnxns = parse_num(value).map_err(bad)?,
            "secureClientPort" => self.secure_client_port = Some(parse_num(value).map_err(bad)?),
            "secureClientPortAddress" => {
                self.secure_client_port_address =
                    Some(value.parse().map_err(|_| bad("not an IP address".into()))?)
            }
            "ssl.keyStore.location" => self.ssl.key_store = Some(PathBuf::from(value)),
            "ssl.keyStore.password" => self.ssl.key_store_password = Some(value.to_string()),
            "ssl.trustStore.location" => self.ssl.trust_store = Some(PathBuf::from(value)),
            "ssl.keyStore.type" | "ssl.trustStore.type" => {
                crate::tls::check_store_type(value).map_err(bad)?
            }
            "ssl.clientAuth" => {
                self.ssl.client_auth = crate::tls::parse_client_auth(value).map_err(bad)?
            }
            "ssl.protocol" => {
                if self.ssl.protocols.is_empty() {
                    self.ssl.protocols = vec![value.to_string()];
                }
            }
            "ssl.enabledProtocols" => {
                self.ssl.protocols = value
                    .split(',')
                    .map(|p| p.trim().to_string())
                    .filter(|p| !p.is_empty())
                    .collect()
            }
            "ssl.ciphersuites" => {
                self.ssl.cipher_suites = value
                    .split(',')
                    .map(|p| p.trim().to_string())
                    .filter(|p| !p.is_empty())
                    .collect()
            }
            "X509AuthenticationProvider.superUser" => {
                self.ssl.x509_super_user = Some(value.to_string())
            }
            "minSessionTimeout" => {
                let v: i64 = parse_num(value).map_err(bad)?;
                self.min_session_timeout_ms = u32::try_from(v).ok();
            }
            "maxSessionTimeout" => {
                let v: i64 = parse_num(value).map_err(bad)?;
                self.max_session_timeout_ms = u32::try_from(v).ok();
            }
            "4lw.commands.whitelist" => {
                let words: BTreeSet<String> = value
                    .split(',')
                    .map(|w| w.trim().to_string())
                    .filter(|w| !w.is_empty())
                    .collect();
                for w in &words {
                    if w != "*" && !crate::proto::FOUR_LETTER_WORDS.contains(&w.as_str()) {
                        return Err(bad(format!("unknown four-letter word {w:?}")));
                    }
                }
                self.four_letter_words = words;
            }
            "recovery.fallbackToOlderSnapshot" => {
                self.fallback_to_older_snapshot = parse_bool(value).map_err(bad)?
            }
            "snapCount" => self.snap_count = parse_num(value).map_err(bad)?,
            "fsync.warningthresholdms" => {
                self.fsync_warning_threshold_ms = parse_num(value).map_err(bad)?
            }
            "forceSync" => self.force_sync = parse_bool(value).map_err(bad)?,
            "preAllocSize" => self.pre_alloc_size_kb = parse_num(value).map_err(bad)?,
            "autopurge.snapRetainCount" => {
                let n: u32 = parse_num(value).map_err(bad)?;
                // ZooKeeper silently raises values below 3 to 3.
                self.autopurge_snap_retain_count = n.max(3);
            }
            "autopurge.purgeInterval" => {
                self.autopurge_purge_interval_hours = parse_num(value).map_err(bad)?
            }
            "enforceQuota" => self.enforce_quota = parse_bool(value).map_err(bad)?,
            "extendedTypesEnabled" => {
                self.extended_types_enabled = parse_bool(value).map_err(bad)?
            }
            "znode.container.checkIntervalMs" => {
                self.container_check_interval_ms = parse_num(value).map_err(bad)?
            }
            "nio.sessionlessCnxnTimeout" => {
                let ms: u64 = parse_num(value).map_err(bad)?;
                if ms == 0 {
                    return Err(bad("must be at least 1 ms".into()));
                }
                self.sessionless_conn_timeout_ms = ms;
            }
            "znode.container.maxPerMinute" => {
                self.container_max_per_minute = parse_num(value).map_err(bad)?
            }
            "DigestAuthenticationProvider.superDigest" => {
                if !value.contains(':') {
                    return Err(bad("expected user:base64digest".into()));
                }
                self.super_digest = Some(value.to_string());
            }
            "jute.maxbuffer" => {
                let v = value.trim();
                let n = if let Some(hex) = v.strip_prefix("0x") {
                    usize::from_str_radix(hex, 16).map_err(|_| bad("not a number".into()))?
                } else {
                    parse_num(v).map_err(bad)?
                };
                if n == 0 {
                    return Err(bad("must be positive".into()));
                }
                self.jute_maxbuffer = n;
            }
            "globalOutstandingLimit" => {
                self.global_outstanding_limit = parse_num(value).map_err(bad)?
            }
            "request_throttle_max_requests" => {
                self.request_throttle_max_requests = parse_num(value).map_err(bad)?
            }
            "admin.enableServer" => self.admin_enable_server = parse_bool(value).map_err(bad)?,
            "admin.serverPort" => self.admin_server_port = parse_num(value).map_err(bad)?,
            "admin.serverAddress" => {
                self.admin_server_address =
                    value.parse().map_err(|_| bad("not an IP address".into()))?
            }
            "admin.commandURL" => {
                if !value.starts_with('/') || value.contains(char::is_whitespace) {
                    return Err(bad("must be a path starting with /".into()));
                }
                self.admin_command_url = value.trim_end_matches('/').to_string();
                if self.admin_command_url.is_empty() {
                    return Err(bad("must not be the root".into()));
                }
            }
            "admin.snapshot.enabled" => {
                self.admin_snapshot_enabled = parse_bool(value).map_err(bad)?
            }
            "admin.rateLimiterIntervalInMS" => {
                self.admin_rate_limiter_interval_ms = parse_num(value).map_err(bad)?
            }
            "metricsProvider.className" => {
                self.prometheus_enabled = match value {
                    "org.apache.zookeeper.metrics.prometheus.PrometheusMetricsProvider" => true,
                    "org.apache.zookeeper.metrics.impl.NullMetricsProvider"
                    | "org.apache.zookeeper.metrics.impl.DefaultMetricsProvider" => false,
                    _ => {
                        return Err(bad(
                            "the metrics providers are ZooKeeper's PrometheusMetricsProvider, \
                             DefaultMetricsProvider and NullMetricsProvider"
                                .into(),
                        ))
                    }
                }
            }
            "metricsProvider.httpHost" => {
                self.prometheus_host = value.parse().map_err(|_| bad("not an IP address".into()))?
            }
            "metricsProvider.httpPort" => self.prometheus_port = parse_num(value).map_err(bad)?,
            "slowRequestThresholdMs" | "ringkeeper.slowRequestThresholdMs" => {
                self.slow_request_threshold_ms = parse_num(value).map_err(bad)?
            }
            "logLevel" | "ringkeeper.logLevel" => {
                log_filter(value).map_err(bad)?;
                self.log_level = value.to_string();
            }
            "logFormat" | "ringkeeper.logFormat" => {
                self.log_json = match value {
                    "json" => true,
                    "plain" => false,
                    _ => return Err(bad("must be plain or json".into())),
                }
            }
            "spinBeforeParkUs" | "ringkeeper.spinBeforeParkUs" => {
                let n: u64 = parse_num(value).map_err(bad)?;
                if n > 10_000 {
                    return Err(bad("must be at most 10000 (10 ms)".into()));
                }
                self.spin_before_park_us = n;
            }
            "coreOnShard" | "ringkeeper.coreOnShard" => {
                self.core_on_shard = parse_bool(value).map_err(bad)?;
                self.layout_given = true;
            }
            "shards" | "ringkeeper.shards" => {
                let n: usize = parse_num(value).map_err(bad)?;
                if n == 0 || n > 256 {
                    return Err(bad("must be between 1 and 256".into()));
                }
                self.shards = n;
                self.layout_given = true;
            }
            "sslQuorum" | "portUnification" | "client.portUnification" => {
                if parse_bool(value).map_err(bad)? {
                    return Err(bad(
                        "TLS between members and port unification are not implemented; TLS for clients is secureClientPort".into(),
                    ));
                }
            }
            _ if k.starts_with("ssl.quorum.") => {}
            _ if k.starts_with("server.") => {
                let id: ServerId = k["server.".len()..]
                    .parse()
                    .map_err(|_| bad("server id must be a number".into()))?;
                if id < 0 {
                    return Err(bad("server id must not be negative".into()));
                }
                let server = quorum::parse_server_line(id, value).map_err(bad)?;
                self.servers.retain(|s| s.id != id);
                self.servers.push(server);
                self.servers.sort_by_key(|s| s.id);
            }
            "peerType" => {
                self.peer_type = match value.to_ascii_lowercase().as_str() {
                    "observer" => quorum::LearnerType::Observer,
                    "participant" => quorum::LearnerType::Participant,
                    _ => return Err(bad("must be observer or participant".into())),
                }
            }
            "standaloneEnabled" => self.standalone_enabled = parse_bool(value).map_err(bad)?,
            // ZooKeeper reads it as the system property readonlymode.enabled; a
            // zoo.cfg line is where ringkeeper takes it (both spellings).
            "readonlymode.enabled" | "zookeeper.readonlymode.enabled" => {
                self.read_only_mode_enabled = parse_bool(value).map_err(bad)?
            }
            // Keys ZooKeeper accepts that have no effect on a standalone ringkeeper
            // (TLS needs Netty in ZooKeeper; here every port can do it; trust store
            // passwords protect JKS files, which are not read).
            "serverCnxnFactory"
            | "ssl.trustStore.password"
            | "ssl.hostnameVerification"
            | "ssl.authProvider"
            | "authProvider.x509"
            | "ssl.handshakeDetectionTimeoutMillis"
            | "admin.idleTimeout"
            | "reconfigEnabled"
            | "dynamicConfigFile"
            | "electionAlg"
            | "quorumListenOnAllIPs"
            | "cnxTimeout"
            | "skipACL"
            | "audit.enable"
            | "metricsProvider.exportJvmInfo"
            | "metricsProvider.prometheusMetricsSummaryRotateIntervalSeconds"
            | "syncEnabled"
            | "localSessionsEnabled"
            | "localSessionsUpgradingEnabled"
            | "leaderServes"
            | "maxCnxns"
            | "clientPortListenBacklog" => {}
            _ => self.unknown_keys.push(key.to_string()),
        }
        Ok(())
    }

    /// Cross-key checks once everything is read.
    pub fn check(&self) -> Result<(), ConfigError> {
        if self.tick_time_ms == 0 {
            return Err(ConfigError::Inconsistent(
                "tickTime must be positive".into(),
            ));
        }
        if self.min_session_timeout_ms() > self.max_session_timeout_ms() {
            return Err(ConfigError::Inconsistent(format!(
                "minSessionTimeout {} must not be larger than maxSessionTimeout {}",
                self.min_session_timeout_ms(),
                self.max_session_timeout_ms()
            )));
        }
        Ok(())
    }

    /// The lines `conf` prints, in ZooKeeper's shape.
    pub fn conf_lines(&self) -> Vec<String> {
        vec![
            format!("clientPort={}", self.client_port),
            format!("secureClientPort=-1"),
            // The directories the files are in, as ZooKeeper names its version-2.
            format!("dataDir={}", self.snapshot_dir().display()),
            format!("dataDirSize={}", dir_size(&self.snapshot_dir())),
            format!("dataLogDir={}", self.log_dir().display()),
            format!("dataLogSize={}", dir_size(&self.log_dir())),
            format!("tickTime={}", self.tick_time_ms),
            format!("maxClientCnxns={}", self.max_client_cnxns),
            format!("minSessionTimeout={}", self.min_session_timeout_ms()),
            format!("maxSessionTimeout={}", self.max_session_timeout_ms()),
            format!("clientPortListenBacklog={}", crate::listen::LISTEN_BACKLOG),
            format!("serverId=0"),
        ]
    }
}

/// The bytes of the files in `p` (not below it), 0 if it cannot be read.
pub fn dir_size(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

impl Config {
    /// For a member whose machine also runs `members - 1` other members of its
    /// ensemble (as on a test or benchmark machine): they share its `cores` CPUs, so
    /// this member lays out its executors for its share of them (unless `shards` or
    /// `coreOnShard` were given), and pins none of them. Measured on 2 cores with three
    /// members: one shard each, unpinned, wrote 100k setData/s against 90k with the
    /// 2-core default, and 69k with that one executor pinned to the first CPU in every
    /// member.
    pub fn share_cpus(&mut self, members: usize, cores: usize) {
        if members <= 1 {
            return;
        }
        if !self.layout_given {
            (self.shards, self.core_on_shard) = default_layout(cores / members);
        }
        self.pin_executors = false;
    }

    /// Whether the file describes an ensemble: server lines, unless there is one and
    /// standaloneEnabled (ZooKeeper then runs standalone).
    pub fn is_ensemble(&self) -> bool {
        !(self.servers.is_empty() || self.servers.len() == 1 && self.standalone_enabled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every input that once crashed the `decode_config` fuzz target: refused with the
    /// line named, no panic (tracing's filter parser panicked on a non-ASCII logLevel).
    #[test]
    fn fuzz_found_configs_are_refused_without_a_panic() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fuzz/regressions/decode_config");
        let mut n = 0;
        for f in std::fs::read_dir(&dir).unwrap() {
            let f = f.unwrap().path();
            let text = String::from_utf8(std::fs::read(&f).unwrap()).unwrap();
            let e = Config::default()
                .apply_text(&text, "fuzz.cfg")
                .expect_err("a damaged config");
            assert!(e.to_string().contains("fuzz.cfg"), "{}: {e}", f.display());
            n += 1;
        }
        assert!(n > 0);
        assert!(log_filter("info,ringkeeper::peering=debug").is_ok());
        assert!(log_filter("  L\u{24a}=\u{24a}?=").is_err());
    }

    #[test]
    fn members_sharing_a_machine_split_its_cpus_and_pin_nothing() {
        let layout = |c: &Config| (c.shards, c.core_on_shard, c.pin_executors);
        let mut alone = Config::default();
        let before = layout(&alone);
        alone.share_cpus(1, 2);
        assert_eq!(layout(&alone), before, "a member alone keeps the defaults");
        let mut c = Config::default();
        c.share_cpus(3, 2);
        assert_eq!(layout(&c), (1, true, false), "three members on 2 cores");
        let mut c = Config::default();
        c.share_cpus(3, 16);
        assert_eq!(
            layout(&c),
            (4, false, false),
            "five CPUs each: 4 shards + core"
        );
        let mut given = Config::default();
        given.apply_text("shards=2\n", "zoo.cfg").unwrap();
        given.share_cpus(3, 2);
        assert_eq!(layout(&given), (2, true, false), "a given layout stays");
        let mut given = Config::default();
        given
            .apply_text("ringkeeper.coreOnShard=false\n", "zoo.cfg")
            .unwrap();
        given.share_cpus(3, 2);
        assert!(!given.core_on_shard && !given.pin_executors);
    }

    #[test]
    fn server_lines_make_an_ensemble_and_bad_ones_name_the_line() {
        let mut c = Config::default();
        c.apply_text(
            "server.2=b:2888:3888\nserver.1=a:2888:3888\nserver.3=c:2888:3888:observer;2181\n",
            "zoo.cfg",
        )
        .unwrap();
        assert!(c.is_ensemble());
        assert_eq!(
            c.servers.iter().map(|s| s.id).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert_eq!(c.servers[2].learner_type, quorum::LearnerType::Observer);
        let mut one = Config::default();
        one.apply_text("server.1=a:2888:3888\nstandaloneEnabled=false\n", "zoo.cfg")
            .unwrap();
        assert!(one.is_ensemble());
        let err = Config::default()
            .apply_text("tickTime=2000\nserver.1=a:2888\n", "zoo.cfg")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("zoo.cfg:2: invalid value") && err.contains("server.1"),
            "{err}"
        );
    }

    #[test]
    fn reads_a_zookeeper_zoo_cfg() {
        let mut c = Config::default();
        c.apply_text(
            "# comment\ntickTime=1000\ndataDir=/tmp/zk\nclientPort=2191\n\
             4lw.commands.whitelist=ruok, srvr,mntr\nzookeeper.extendedTypesEnabled=true\n\
             znode.container.checkIntervalMs=100\njute.maxbuffer=0x200000\nserver.1=a:2888:3888\n",
            "zoo.cfg",
        )
        .unwrap();
        assert_eq!(c.tick_time_ms, 1000);
        assert_eq!(c.client_port, 2191);
        assert_eq!(c.min_session_timeout_ms(), 2000);
        assert_eq!(c.max_session_timeout_ms(), 20000);
        assert!(c.four_letter_word_enabled("mntr"));
        assert!(!c.four_letter_word_enabled("dump"));
        assert!(c.extended_types_enabled);
        assert_eq!(c.container_check_interval_ms, 100);
        assert_eq!(c.jute_maxbuffer, 0x200000);
        assert_eq!(c.servers.len(), 1);
        assert!(
            !c.is_ensemble(),
            "one server line with standaloneEnabled is standalone"
        );
        assert_eq!(c.negotiate_timeout_ms(100), 2000);
        assert_eq!(c.negotiate_timeout_ms(999_999), 20000);
    }

    #[test]
    fn bad_value_names_key_and_line() {
        let mut c = Config::default();
        let e = c
            .apply_text("tickTime=2000\nclientPort=abc\n", "zoo.cfg")
            .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("zoo.cfg:2") && msg.contains("clientPort"),
            "{msg}"
        );
    }

    #[test]
    fn unknown_keys_are_kept_for_a_warning() {
        let mut c = Config::default();
        c.apply_text("frobnicate=1\n", "zoo.cfg").unwrap();
        assert_eq!(c.unknown_keys, vec!["frobnicate".to_string()]);
    }

    #[test]
    fn inconsistent_timeouts_are_rejected() {
        let mut c = Config::default();
        c.apply_text(
            "minSessionTimeout=50000\nmaxSessionTimeout=1000\n",
            "zoo.cfg",
        )
        .unwrap();
        assert!(c.check().is_err());
    }
}
