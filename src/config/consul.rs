//! Settings from Consul KV: the layout, the client, and the watch.
//!
//! Under a prefix (default `rbdvol/`), `conf/<section>/<option>` mirrors
//! `RBD_CONF_<SECTION>_<OPTION>` (`conf/global/mon_host`,
//! `conf/keyring/user`, `conf/keyring/key`, ...) and `defaults/<name>` the
//! volume defaults (`defaults/pool` = `RBD_CONF_POOL`, `defaults/size` =
//! `VOLUME_SIZE`, ...). Consul ranks below the environment and flags.

use std::collections::BTreeMap;
use std::time::Duration;

use rs_consul::types::ReadKeyRequest;

pub const DEFAULT_PREFIX: &str = "rbdvol/";

/// The volume defaults under `defaults/`, with the variable each mirrors.
pub const DEFAULT_KEYS: [(&str, &str); 9] = [
    ("pool", "RBD_CONF_POOL"),
    ("namespace", "RBD_CONF_NAMESPACE"),
    ("size", "VOLUME_SIZE"),
    ("fstype", "VOLUME_FSTYPE"),
    ("mkfs_options", "VOLUME_MKFS_OPTIONS"),
    ("mount_options", "MOUNT_OPTIONS"),
    ("features", "VOLUME_FEATURES"),
    ("map_options", "RBDVOL_MAP_OPTIONS"),
    ("unmap_options", "RBDVOL_UNMAP_OPTIONS"),
];

/// The environment variable a KV key (relative to the prefix) mirrors.
pub fn env_name_of(key: &str) -> Option<String> {
    let parts: Vec<&str> = key.split('/').collect();
    let ok = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    match parts.as_slice() {
        ["conf", "keyring", field @ ("user" | "key")] => Some(format!("RBD_CONF_KEYRING_{}", field.to_ascii_uppercase())),
        ["conf", section @ ("global" | "client"), option] if ok(option) => {
            Some(format!("RBD_CONF_{}_{}", section.to_ascii_uppercase(), option.to_ascii_uppercase()))
        }
        ["defaults", name] => DEFAULT_KEYS.iter().find(|(k, _)| k == name).map(|(_, env)| env.to_string()),
        _ => None,
    }
}

/// The KV key that mirrors an environment variable (for `config show`).
pub fn kv_key_of(env: &str) -> Option<String> {
    if let Some((k, _)) = DEFAULT_KEYS.iter().find(|(_, e)| *e == env) {
        return Some(format!("defaults/{k}"));
    }
    let rest = env.strip_prefix("RBD_CONF_")?;
    let (section, option) = rest.split_once('_')?;
    Some(format!("conf/{}/{}", section.to_ascii_lowercase(), option.to_ascii_lowercase()))
}

/// Checks what can be checked of a value without the cluster; the reason
/// when it is malformed.
pub fn check_value(env: &str, value: &str) -> Result<(), String> {
    use base64::Engine as _;
    match env {
        "RBD_CONF_KEYRING_KEY" => {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(value.trim())
                .map_err(|_| "not valid base64 (a cephx key looks like AQB...==)".to_string())?;
            if raw.len() < 16 {
                return Err("too short for a cephx key".into());
            }
            Ok(())
        }
        "RBD_CONF_GLOBAL_MON_HOST" if value.trim().is_empty() => Err("the monitor list is empty".into()),
        _ => Ok(()),
    }
}

/// The KV entries under the prefix as environment-style settings, with the
/// malformed and unknown ones left out. Each is reported once through
/// `report(key, reason)`.
pub fn to_vars(kv: &BTreeMap<String, String>, mut report: impl FnMut(&str, &str)) -> BTreeMap<String, (String, String)> {
    let mut vars = BTreeMap::new();
    for (key, value) in kv {
        if key.is_empty() || key.ends_with('/') || key.starts_with("volumes/") || key.starts_with("hosts/") || key.starts_with("pools/") {
            continue;
        }
        let Some(env) = env_name_of(key) else {
            report(key, "not a known setting");
            continue;
        };
        if value.trim().is_empty() {
            continue;
        }
        match check_value(&env, value) {
            Ok(()) => {
                vars.insert(env, (value.trim().to_string(), key.clone()));
            }
            Err(reason) => report(key, &reason),
        }
    }
    vars
}

/// Per-pool overrides: `pools/<pool>/<name>` for the volume defaults but
/// the pool itself; pool → setting name → (value, key).
pub fn pool_overrides(kv: &BTreeMap<String, String>, mut report: impl FnMut(&str, &str)) -> BTreeMap<String, BTreeMap<String, (String, String)>> {
    let mut out: BTreeMap<String, BTreeMap<String, (String, String)>> = BTreeMap::new();
    for (key, value) in kv {
        let Some(rest) = key.strip_prefix("pools/") else { continue };
        let Some((pool, name)) = rest.split_once('/') else {
            report(key, "expected pools/<pool>/<setting>");
            continue;
        };
        match DEFAULT_KEYS.iter().find(|(k, _)| *k == name && !matches!(*k, "pool" | "namespace" | "map_options" | "unmap_options")) {
            Some((_, env)) if !pool.is_empty() && !value.trim().is_empty() => {
                out.entry(pool.to_string()).or_default().insert(env.to_string(), (value.trim().to_string(), key.clone()));
            }
            Some(_) => {}
            None => report(key, "not a per-pool setting (size, fstype, mkfs_options, mount_options, features)"),
        }
    }
    out
}

/// Errors of the Consul source, worded for operators.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ConsulError {
    #[error("consul rejected the ACL token (CONSUL_HTTP_TOKEN) for {addr}: {detail}")]
    Denied { addr: String, detail: String },
    #[error("consul at {addr} is unreachable: {detail}")]
    Unreachable { addr: String, detail: String },
    #[error("consul at {addr} answered badly: {detail}")]
    Bad { addr: String, detail: String },
    #[error("cannot set up TLS for consul at {addr}: {detail}")]
    Tls { addr: String, detail: String },
}

mod tls {
    use std::sync::Arc;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, SignatureScheme};

    use super::Tls;

    fn certs(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, String> {
        CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| format!("reading certificates from {}: {e}", path.display()))
    }

    /// CONSUL_HTTP_SSL_VERIFY=false: any server certificate is accepted
    /// (signatures are still checked), as the consul CLI does.
    #[derive(Debug)]
    struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

    impl ServerCertVerifier for NoVerify {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    pub fn client(tls: &Tls) -> Result<rs_consul::HttpsClient, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let mut files: Vec<std::path::PathBuf> = tls.ca_file.iter().cloned().collect();
        if let Some(dir) = &tls.ca_path {
            let rd = std::fs::read_dir(dir).map_err(|e| format!("reading {}: {e}", dir.display()))?;
            files.extend(rd.flatten().map(|e| e.path()).filter(|p| p.is_file()));
        }
        for f in &files {
            for cert in certs(f)? {
                roots.add(cert).map_err(|e| format!("{}: {e}", f.display()))?;
            }
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots);
        let mut config = match (&tls.client_cert, &tls.client_key) {
            (Some(cert), Some(key)) => {
                let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("reading the key {}: {e}", key.display()))?;
                builder.with_client_auth_cert(certs(cert)?, key).map_err(|e| format!("{}: {e}", cert.display()))?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => return Err("set both CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY, or neither".into()),
        };
        if tls.no_verify {
            config.dangerous().set_certificate_verifier(Arc::new(NoVerify(provider)));
        }
        let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config).https_or_http();
        let builder = match &tls.server_name {
            Some(name) => {
                let name = ServerName::try_from(name.clone()).map_err(|e| format!("CONSUL_TLS_SERVER_NAME '{name}': {e}"))?;
                builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name))
            }
            None => builder,
        };
        let connector = builder.enable_http1().build();
        Ok(hyper_util::client::legacy::Builder::new(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(std::time::Duration::from_millis(0))
            .pool_max_idle_per_host(0)
            .build::<_, http_body_util::combinators::BoxBody<bytes::Bytes, std::convert::Infallible>>(connector))
    }
}

/// Where Consul is and how to talk to it, from the standard `CONSUL_*`
/// variables.
#[derive(Clone, PartialEq, Eq)]
pub struct ConsulSettings {
    pub addr: String,
    pub token: Option<crate::config::Secret>,
    pub prefix: String,
    pub tls: Tls,
}

/// TLS towards Consul beyond the public web roots.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tls {
    /// CONSUL_CACERT: a PEM file of CA certificates to trust.
    pub ca_file: Option<std::path::PathBuf>,
    /// CONSUL_CAPATH: a directory of PEM files of CA certificates.
    pub ca_path: Option<std::path::PathBuf>,
    /// CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY: this client's certificate.
    pub client_cert: Option<std::path::PathBuf>,
    pub client_key: Option<std::path::PathBuf>,
    /// CONSUL_TLS_SERVER_NAME: the name to expect in the server's certificate.
    pub server_name: Option<String>,
    /// CONSUL_HTTP_SSL_VERIFY=false: do not check the server's certificate.
    pub no_verify: bool,
}

impl Tls {
    fn is_default(&self) -> bool {
        *self == Tls::default()
    }
}

impl std::fmt::Debug for ConsulSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsulSettings").field("addr", &self.addr).field("prefix", &self.prefix).finish()
    }
}

impl ConsulSettings {
    /// `None` when `CONSUL_HTTP_ADDR` is unset or empty: no Consul.
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Option<ConsulSettings> {
        let vars: BTreeMap<String, String> = vars.into_iter().filter(|(_, v)| !v.trim().is_empty()).collect();
        let addr = vars.get("CONSUL_HTTP_ADDR")?.trim().to_string();
        let ssl = vars.get("CONSUL_HTTP_SSL").is_some_and(|v| matches!(v.trim(), "1" | "true" | "yes"));
        let addr = if addr.contains("://") { addr } else { format!("{}://{addr}", if ssl { "https" } else { "http" }) };
        let mut prefix = vars.get("RBDVOL_CONSUL_PREFIX").cloned().unwrap_or_else(|| DEFAULT_PREFIX.to_string());
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        let path = |n: &str| vars.get(n).map(|v| std::path::PathBuf::from(v.trim()));
        let tls = Tls {
            ca_file: path("CONSUL_CACERT"),
            ca_path: path("CONSUL_CAPATH"),
            client_cert: path("CONSUL_CLIENT_CERT"),
            client_key: path("CONSUL_CLIENT_KEY"),
            server_name: vars.get("CONSUL_TLS_SERVER_NAME").map(|v| v.trim().to_string()),
            no_verify: vars.get("CONSUL_HTTP_SSL_VERIFY").is_some_and(|v| matches!(v.trim(), "0" | "false" | "no")),
        };
        Some(ConsulSettings { addr, token: vars.get("CONSUL_HTTP_TOKEN").map(|t| crate::config::Secret::new(t.trim())), prefix, tls })
    }
}

/// A Consul client bound to rbdvol's prefix.
pub struct Consul {
    client: rs_consul::Consul,
    /// For the session API, which rs-consul does not expose.
    http: rs_consul::HttpsClient,
    pub settings: ConsulSettings,
}

/// What Consul knows of a key used as a lock: absent, or its value and
/// the session holding it (`None` once that session lapsed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockKey {
    Absent,
    Present { value: String, session: Option<String> },
}

/// One read of the prefix: the entries (keys relative to the prefix) and
/// the index to wait on for the next change.
pub struct Snapshot {
    pub kv: BTreeMap<String, String>,
    pub index: u64,
}

impl Consul {
    /// A client; fails only when the TLS files cannot be read.
    pub fn new(settings: ConsulSettings) -> Result<Consul, ConsulError> {
        let config = rs_consul::Config {
            address: settings.addr.clone(),
            token: settings.token.as_ref().map(|t| t.expose().to_string()),
            ..Default::default()
        };
        let http = tls::client(&settings.tls).map_err(|detail| ConsulError::Tls { addr: settings.addr.clone(), detail })?;
        let client = if settings.tls.is_default() {
            rs_consul::Consul::new(config)
        } else {
            rs_consul::ConsulBuilder::new(config).with_https_client(http.clone()).build()
        };
        Ok(Consul { client, http, settings })
    }

    /// One call of Consul's HTTP API with the ACL token; the body of a 200
    /// answer, `None` for a 404.
    async fn call(&self, method: &str, path: &str, body: &str) -> Result<Option<Vec<u8>>, ConsulError> {
        use http_body_util::BodyExt;
        let addr = self.settings.addr.clone();
        let mut request = http::Request::builder().method(method).uri(format!("{}{path}", addr.trim_end_matches('/')));
        if let Some(token) = &self.settings.token {
            request = request.header("X-Consul-Token", token.expose());
        }
        let body = http_body_util::Full::new(bytes::Bytes::from(body.to_string()));
        let request = request
            .body(http_body_util::combinators::BoxBody::new(body))
            .map_err(|e| ConsulError::Bad { addr: addr.clone(), detail: e.to_string() })?;
        let response = tokio::time::timeout(Duration::from_secs(10), self.http.request(request))
            .await
            .map_err(|_| ConsulError::Unreachable { addr: addr.clone(), detail: "no answer".into() })?
            .map_err(|e| ConsulError::Unreachable { addr: addr.clone(), detail: e.to_string() })?;
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| ConsulError::Unreachable { addr: addr.clone(), detail: e.to_string() })?
            .to_bytes()
            .to_vec();
        match status {
            200 => Ok(Some(bytes)),
            404 => Ok(None),
            403 => Err(ConsulError::Denied { addr, detail: String::from_utf8_lossy(&bytes).trim().to_string() }),
            _ => Err(ConsulError::Bad { addr, detail: format!("{method} {path}: {status} {}", String::from_utf8_lossy(&bytes).trim()) }),
        }
    }

    /// A session that lapses `ttl` after its last renewal; locks it holds
    /// are then released (the keys stay, without a session).
    pub async fn session_create(&self, name: &str, ttl: Duration) -> Result<String, ConsulError> {
        let body = serde_json::json!({ "Name": name, "TTL": format!("{}s", ttl.as_secs()), "Behavior": "release", "LockDelay": "0s" });
        let out = self.call("PUT", "/v1/session/create", &body.to_string()).await?.unwrap_or_default();
        serde_json::from_slice::<serde_json::Value>(&out)
            .ok()
            .and_then(|v| v.get("ID")?.as_str().map(str::to_string))
            .ok_or_else(|| ConsulError::Bad { addr: self.settings.addr.clone(), detail: "session create answered without an ID".into() })
    }

    /// Renews a session; false when it has already lapsed.
    pub async fn session_renew(&self, id: &str) -> Result<bool, ConsulError> {
        Ok(self.call("PUT", &format!("/v1/session/renew/{id}"), "").await?.is_some())
    }

    /// Holds key (relative to the prefix) with `session`, writing `value`;
    /// false when another session holds it.
    pub async fn acquire(&self, key: &str, value: &str, session: &str) -> Result<bool, ConsulError> {
        let path = format!("/v1/kv/{}{key}?acquire={session}", self.settings.prefix);
        let out = self.call("PUT", &path, value).await?.unwrap_or_default();
        Ok(String::from_utf8_lossy(&out).trim() == "true")
    }

    /// A key used as a lock (relative to the prefix).
    pub async fn lock_key(&self, key: &str) -> Result<LockKey, ConsulError> {
        let full = format!("{}{key}", self.settings.prefix);
        let request = ReadKeyRequest { key: &full, ..Default::default() };
        match self.client.read_key(request).await {
            Ok(r) => Ok(match r.response.into_iter().next() {
                None => LockKey::Absent,
                Some(e) => LockKey::Present { value: e.value.unwrap_or_default(), session: e.session.filter(|s| !s.is_empty()) },
            }),
            Err(rs_consul::ConsulError::UnexpectedResponseCode(code, _)) if code.as_u16() == 404 => Ok(LockKey::Absent),
            Err(e) => Err(self.error(e)),
        }
    }

    fn error(&self, e: rs_consul::ConsulError) -> ConsulError {
        let addr = self.settings.addr.clone();
        match e {
            rs_consul::ConsulError::UnexpectedResponseCode(code, body) if code.as_u16() == 403 => {
                ConsulError::Denied { addr, detail: body.unwrap_or_default().trim().to_string() }
            }
            rs_consul::ConsulError::ResponseError(e) => ConsulError::Unreachable { addr, detail: e.to_string() },
            rs_consul::ConsulError::TimeoutExceeded(_) => ConsulError::Unreachable { addr, detail: "timed out".into() },
            other => ConsulError::Bad { addr, detail: other.to_string() },
        }
    }

    /// Reads every key under the prefix. With `after`, a blocking query:
    /// returns when something under the prefix changed past that index, or
    /// after `wait` with the same index.
    pub async fn read(&self, after: Option<u64>, wait: Duration) -> Result<Snapshot, ConsulError> {
        let request = ReadKeyRequest { key: &self.settings.prefix, recurse: true, index: after, wait, ..Default::default() };
        // The client's own timeout would cut a blocking query short.
        let limit = wait + Duration::from_secs(10);
        let response = match tokio::time::timeout(limit, self.client.read_key(request)).await {
            Err(_) => return Err(ConsulError::Unreachable { addr: self.settings.addr.clone(), detail: "no answer".into() }),
            Ok(Err(rs_consul::ConsulError::UnexpectedResponseCode(code, _))) if code.as_u16() == 404 => {
                // Nothing under the prefix (yet).
                return Ok(Snapshot { kv: BTreeMap::new(), index: after.unwrap_or(0) });
            }
            Ok(r) => r.map_err(|e| self.error(e))?,
        };
        let kv = response
            .response
            .into_iter()
            .filter_map(|e| Some((e.key.strip_prefix(&self.settings.prefix)?.to_string(), e.value.unwrap_or_default())))
            .collect();
        Ok(Snapshot { kv, index: response.index })
    }

    /// One key (relative to the prefix) and its modify index; `None` when
    /// it does not exist.
    pub async fn get(&self, key: &str) -> Result<Option<(String, u64)>, ConsulError> {
        let full = format!("{}{key}", self.settings.prefix);
        let request = ReadKeyRequest { key: &full, ..Default::default() };
        match self.client.read_key(request).await {
            Ok(r) => Ok(r.response.into_iter().next().map(|e| (e.value.unwrap_or_default(), e.modify_index.max(0) as u64))),
            Err(rs_consul::ConsulError::UnexpectedResponseCode(code, _)) if code.as_u16() == 404 => Ok(None),
            Err(e) => Err(self.error(e)),
        }
    }

    /// Writes one key only if its modify index is still `index` (0: only
    /// if it does not exist); false when someone else wrote it first.
    pub async fn put_cas(&self, key: &str, value: &str, index: u64) -> Result<bool, ConsulError> {
        let full = format!("{}{key}", self.settings.prefix);
        let request = rs_consul::types::CreateOrUpdateKeyRequest { key: &full, check_and_set: Some(index as i64), ..Default::default() };
        let (ok, _) = self.client.create_or_update_key(request, value.as_bytes().to_vec()).await.map_err(|e| self.error(e))?;
        Ok(ok)
    }

    pub async fn delete(&self, key: &str) -> Result<(), ConsulError> {
        let full = format!("{}{key}", self.settings.prefix);
        let request = rs_consul::types::DeleteKeyRequest { key: &full, ..Default::default() };
        self.client.delete_key(request).await.map_err(|e| self.error(e))?;
        Ok(())
    }

    /// Writes one key (relative to the prefix).
    pub async fn put(&self, key: &str, value: &str) -> Result<(), ConsulError> {
        let full = format!("{}{key}", self.settings.prefix);
        let request = rs_consul::types::CreateOrUpdateKeyRequest { key: &full, ..Default::default() };
        let (ok, _) = self.client.create_or_update_key(request, value.as_bytes().to_vec()).await.map_err(|e| self.error(e))?;
        if !ok {
            return Err(ConsulError::Bad { addr: self.settings.addr.clone(), detail: format!("the write of {full} was refused") });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kv_keys_mirror_the_wetopi_variables() {
        assert_eq!(env_name_of("conf/global/mon_host").as_deref(), Some("RBD_CONF_GLOBAL_MON_HOST"));
        assert_eq!(env_name_of("conf/global/fsid").as_deref(), Some("RBD_CONF_GLOBAL_FSID"));
        assert_eq!(env_name_of("conf/client/rbd_default_features").as_deref(), Some("RBD_CONF_CLIENT_RBD_DEFAULT_FEATURES"));
        assert_eq!(env_name_of("conf/keyring/user").as_deref(), Some("RBD_CONF_KEYRING_USER"));
        assert_eq!(env_name_of("conf/keyring/key").as_deref(), Some("RBD_CONF_KEYRING_KEY"));
        assert_eq!(env_name_of("defaults/size").as_deref(), Some("VOLUME_SIZE"));
        assert_eq!(env_name_of("defaults/pool").as_deref(), Some("RBD_CONF_POOL"));
        assert_eq!(env_name_of("defaults/map_options").as_deref(), Some("RBDVOL_MAP_OPTIONS"));
        assert_eq!(env_name_of("defaults/unmap_options").as_deref(), Some("RBDVOL_UNMAP_OPTIONS"));
        assert_eq!(env_name_of("conf/osd/x"), None);
        assert_eq!(env_name_of("conf/global/a b"), None);
        assert_eq!(env_name_of("defaults/colour"), None);
        for key in ["conf/global/mon_host", "conf/keyring/key", "defaults/mount_options", "conf/client/rbd_cache"] {
            assert_eq!(kv_key_of(&env_name_of(key).unwrap()).as_deref(), Some(key));
        }
    }

    #[test]
    fn malformed_values_are_left_out_and_named() {
        let kv: BTreeMap<String, String> = [
            ("conf/global/mon_host", "10.0.0.1"),
            ("conf/keyring/key", "not base64!"),
            ("conf/keyring/user", "client.docker"),
            ("defaults/colour", "blue"),
            ("volumes/v1", "{}"),
            ("hosts/node-1", "{}"),
            ("conf/global/fsid", ""),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let mut reported = Vec::new();
        let vars = to_vars(&kv, |k, reason| reported.push(format!("{k}: {reason}")));
        assert_eq!(vars.keys().cloned().collect::<Vec<_>>(), ["RBD_CONF_GLOBAL_MON_HOST", "RBD_CONF_KEYRING_USER"]);
        assert_eq!(vars["RBD_CONF_GLOBAL_MON_HOST"].1, "conf/global/mon_host");
        assert_eq!(reported.len(), 2, "{reported:?}");
        assert!(reported[0].starts_with("conf/keyring/key: not valid base64"), "{reported:?}");
        assert!(reported[1].starts_with("defaults/colour"), "{reported:?}");
        assert!(check_value("RBD_CONF_GLOBAL_MON_HOST", " ").is_err());
        assert!(check_value("RBD_CONF_KEYRING_KEY", "AQBXhS1kAAAAABAAr0bjXwBQ0p7BzUgFP5D7Yg==").is_ok());
    }

    #[test]
    fn consul_settings_from_the_standard_variables() {
        let v = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<Vec<_>>();
        assert_eq!(ConsulSettings::from_vars(v(&[("CONSUL_HTTP_ADDR", "")])), None);
        let s = ConsulSettings::from_vars(v(&[("CONSUL_HTTP_ADDR", "127.0.0.1:8500"), ("CONSUL_HTTP_TOKEN", "t")])).unwrap();
        assert_eq!(s.addr, "http://127.0.0.1:8500");
        assert_eq!(s.prefix, "rbdvol/");
        assert_eq!(s.token.unwrap().expose(), "t");
        let s = ConsulSettings::from_vars(v(&[("CONSUL_HTTP_ADDR", "c:8501"), ("CONSUL_HTTP_SSL", "true"), ("RBDVOL_CONSUL_PREFIX", "x")])).unwrap();
        assert_eq!((s.addr.as_str(), s.prefix.as_str()), ("https://c:8501", "x/"));
        assert!(!format!("{s:?}").contains("token"));
    }
}
