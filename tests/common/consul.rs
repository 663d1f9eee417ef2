//! A real Consul agent (dev mode, ACLs on, loopback, free ports) for one
//! test, from `scripts/consul.sh` (Debian 11's consul 1.8.7). Dropping it
//! kills the agent. KV is written with curl: a path independent of rbdvol.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct ConsulAgent {
    child: Option<Child>,
    pub http_port: u16,
    /// With TLS: the https port (client certificates required there).
    pub https_port: Option<u16>,
    ports: [u16; 3],
    pub token: String,
    dir: tempfile::TempDir,
    /// An address the HTTP API also listens on, besides 127.0.0.1.
    also_on: Option<String>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn binary() -> PathBuf {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/consul.sh");
    let out = Command::new(script).output().expect("run scripts/consul.sh");
    assert!(out.status.success(), "scripts/consul.sh found no consul: {}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

impl ConsulAgent {
    /// Starts an agent whose ACLs deny by default; `token` is the master token.
    pub fn start() -> ConsulAgent {
        Self::start_with(false)
    }

    /// An agent that also serves https, requiring client certificates, with
    /// a CA and certificates made by `consul tls`: see [`ConsulAgent::tls_file`].
    pub fn start_tls() -> ConsulAgent {
        Self::start_with(true)
    }

    /// A file `consul tls` made: `consul-agent-ca.pem`,
    /// `dc1-client-consul-0.pem`, `dc1-client-consul-0-key.pem`, ...
    pub fn tls_file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// An agent whose HTTP API also listens on `ip` (for plugins in other
    /// network namespaces): [`ConsulAgent::addr_on`].
    pub fn start_on(ip: &str) -> ConsulAgent {
        Self::start_full(false, Some(ip.to_string()))
    }

    pub fn addr_on(&self) -> String {
        format!("{}:{}", self.also_on.as_deref().expect("started with start_on"), self.http_port)
    }

    fn start_with(tls: bool) -> ConsulAgent {
        Self::start_full(tls, None)
    }

    fn start_full(tls: bool, also_on: Option<String>) -> ConsulAgent {
        let mut a = ConsulAgent {
            child: None,
            https_port: tls.then(free_port),
            http_port: free_port(),
            ports: [free_port(), free_port(), free_port()],
            token: format!("{:032x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()),
            dir: tempfile::tempdir().unwrap(),
            also_on,
        };
        a.spawn();
        a
    }

    /// (Re)starts the agent on the same ports (a dev agent starts empty).
    pub fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("consul.log")).unwrap();
        let mut hcl = format!(r#"acl {{ enabled = true default_policy = "deny" tokens {{ master = "{}" }} }}"#, self.token);
        if let Some(port) = self.https_port {
            if !self.tls_file("consul-agent-ca.pem").exists() {
                for args in [&["tls", "ca", "create"][..], &["tls", "cert", "create", "-server"], &["tls", "cert", "create", "-client"]] {
                    let out = Command::new(binary()).args(args).current_dir(self.dir.path()).output().unwrap();
                    assert!(out.status.success(), "consul {args:?}: {}", String::from_utf8_lossy(&out.stderr));
                }
            }
            let f = |n: &str| self.tls_file(n).display().to_string();
            hcl.push_str(&format!(
                r#" ca_file = "{}" cert_file = "{}" key_file = "{}" verify_incoming_https = true ports {{ https = {port} }}"#,
                f("consul-agent-ca.pem"),
                f("dc1-server-consul-0.pem"),
                f("dc1-server-consul-0-key.pem")
            ));
        }
        let child = Command::new(binary())
            .args(["agent", "-dev", "-bind", "127.0.0.1", "-dns-port", "-1", "-grpc-port", "-1"])
            .args(["-client", format!("127.0.0.1 {}", self.also_on.as_deref().unwrap_or_default()).trim()])
            .args(["-http-port", &self.http_port.to_string()])
            .args(["-serf-lan-port", &self.ports[0].to_string(), "-serf-wan-port", &self.ports[1].to_string()])
            .args(["-server-port", &self.ports[2].to_string(), "-hcl", &hcl])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start consul");
        self.child = Some(child);
        let start = Instant::now();
        loop {
            let out = self.curl(&["-s", &format!("{}/v1/status/leader", self.url())]);
            if out.len() > 2 {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "consul did not elect a leader in 30 s: {}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        // KV writes need the ACL system up, which follows the leader.
        let start = Instant::now();
        while self.try_put("rbdvol-probe", "1").is_err() {
            assert!(start.elapsed() < Duration::from_secs(30), "consul does not take writes: {}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.http_port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("consul.log")).unwrap_or_default()
    }

    fn curl(&self, args: &[&str]) -> String {
        let out = Command::new("curl").args(args).output().expect("run curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn try_put(&self, key: &str, value: &str) -> Result<(), String> {
        let header = format!("X-Consul-Token: {}", self.token);
        let url = format!("{}/v1/kv/{key}", self.url());
        let out = self.curl(&["-s", "-X", "PUT", "-H", &header, "--data-binary", value, &url]);
        if out.trim() == "true" {
            Ok(())
        } else {
            Err(out)
        }
    }

    /// The value at `key`, if any (read with the master token).
    pub fn get(&self, key: &str) -> Option<String> {
        let header = format!("X-Consul-Token: {}", self.token);
        let url = format!("{}/v1/kv/{key}?raw", self.url());
        let out = Command::new("curl").args(["-s", "-f", "-H", &header, &url]).output().expect("run curl");
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn delete(&self, key: &str) {
        let header = format!("X-Consul-Token: {}", self.token);
        let url = format!("{}/v1/kv/{key}", self.url());
        assert_eq!(self.curl(&["-s", "-X", "DELETE", "-H", &header, &url]).trim(), "true", "consul DELETE {key}");
    }

    /// Waits until `check` holds for the value at `key`; panics after 20 s.
    pub fn wait_for(&self, key: &str, what: &str, check: impl Fn(Option<&str>) -> bool) {
        let start = Instant::now();
        loop {
            let v = self.get(key);
            if check(v.as_deref()) {
                return;
            }
            assert!(start.elapsed() < Duration::from_secs(20), "{key}: {what}; it is {v:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Writes `value` at `key` with the master token.
    pub fn put(&self, key: &str, value: &str) {
        self.try_put(key, value).unwrap_or_else(|e| panic!("consul PUT {key}: {e}"));
    }
}

impl Drop for ConsulAgent {
    fn drop(&mut self) {
        self.stop();
    }
}
