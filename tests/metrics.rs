//! The metrics endpoint end to end: a real `rbdvol serve` against a real
//! throwaway cluster, a volume mounted through the user-space mapper and
//! written to, its `/metrics` checked by Debian's `promtool` and scraped by
//! a real Prometheus (Debian's `prometheus`, started here on loopback),
//! whose query API must return the series. Without `prometheus` or
//! `promtool` (scripts/deps.sh installs them) these tests fail: they never
//! skip.

mod common;

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::cluster::{unique, TestCluster};
use common::consul::ConsulAgent;
use common::plugin::Plugin;

const PROMETHEUS: &str = "/usr/bin/prometheus";
const PROMTOOL: &str = "/usr/bin/promtool";

fn cluster() -> &'static TestCluster {
    TestCluster::shared()
}

fn id(n: u32) -> String {
    format!("{n:064x}")
}

fn ok(a: &common::plugin::Answer) {
    assert_eq!(a.err(), "", "unexpected Err: {:?}", a.json);
}

/// A loopback port nobody listens on (the next bind may take it: good
/// enough for a test that binds it at once).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn require(tool: &str) {
    assert!(Path::new(tool).exists(), "{tool} is missing: install Debian's prometheus package (scripts/deps.sh)");
}

/// `curl` with `args`: its output, or None when it failed (not listening yet).
fn curl(args: &[&str]) -> Option<String> {
    let out = Command::new("curl").args(["-sS", "--fail", "--max-time", "10"]).args(args).output().expect("run curl");
    out.status.success().then(|| String::from_utf8(out.stdout).expect("utf-8"))
}

/// Retries `get` for up to `limit`: the endpoint is bound just after the
/// plugin socket.
fn fetch(what: &str, limit: Duration, get: impl Fn() -> Option<String>) -> String {
    let start = Instant::now();
    loop {
        if let Some(s) = get() {
            return s;
        }
        assert!(start.elapsed() < limit, "{what} did not answer within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `promtool check metrics` on `text`: must pass with nothing to say.
fn promtool_check(text: &str) {
    require(PROMTOOL);
    let mut child = Command::new(PROMTOOL)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics ({}):\n{said}\non:\n{text}", out.status);
}

/// The value of the sample `series` (its name and labels, as written).
fn sample(text: &str, series: &str) -> f64 {
    let line = text.lines().find(|l| l.starts_with(series) && l[series.len()..].starts_with(' ')).unwrap_or_else(|| panic!("no {series} in:\n{text}"));
    line[series.len()..].trim().parse().unwrap_or_else(|e| panic!("{line}: {e}"))
}

/// A real Prometheus scraping `target` every second, killed when dropped.
struct Prometheus {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: &str) -> Prometheus {
        require(PROMETHEUS);
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: rbdvol\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        Prometheus { child, port, dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// The instant query's result vector, once the API answers.
    fn query(&self, promql: &str) -> Vec<serde_json::Value> {
        let url = format!("http://127.0.0.1:{}/api/v1/query", self.port);
        let Some(body) = curl(&["-G", "--data-urlencode", &format!("query={promql}"), &url]) else { return vec![] };
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "success", "{v}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until `promql` returns one series whose value satisfies `want`.
    fn wait_for(&mut self, promql: &str, want: impl Fn(f64) -> bool, limit: Duration) -> f64 {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("prometheus exited ({status}):\n{}", self.log());
            }
            let last = self.query(promql);
            if let [one] = last.as_slice() {
                let value: f64 = one["value"][1].as_str().unwrap().parse().unwrap();
                if want(value) {
                    return value;
                }
            }
            assert!(start.elapsed() < limit, "prometheus: {promql} gave {last:?} after {limit:?}; its log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_real_prometheus_scrapes_the_plugin_and_promtool_accepts_its_metrics() {
    require(PROMETHEUS);
    require(PROMTOOL);
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let p = Plugin::start_with(cluster(), &unique("host"), None, &["--mapper", "userspace", "--metrics-addr", &addr]);
    let url = format!("http://{addr}/metrics");
    let name = unique("metrics");
    ok(&p.create(&name, &[("size", "64")]));
    let m = p.mount(&name, &id(1));
    ok(&m);
    let mp = PathBuf::from(m.json["Mountpoint"].as_str().unwrap());
    const WRITTEN: usize = 4 << 20;
    {
        let mut f = std::fs::File::create(mp.join("data")).unwrap();
        f.write_all(&vec![0x5a; WRITTEN]).unwrap();
        f.sync_all().unwrap();
    }
    // An error outcome too: a volume that does not exist.
    assert!(p.mount("no-such-volume", &id(2)).err().contains("does not exist"));

    // The health prober reports the cluster up within a round or two.
    let text = fetch("the metrics endpoint", Duration::from_secs(20), || curl(&[&url]).filter(|t| t.lines().any(|l| l == "rbdvol_cluster_up 1")));
    promtool_check(&text);
    let volume = format!("{{volume=\"{name}\"}}");
    assert!(sample(&text, &format!("rbdvol_userspace_written_bytes_total{volume}")) >= WRITTEN as f64, "{text}");
    assert!(sample(&text, &format!("rbdvol_userspace_writes_total{volume}")) >= 1.0);
    assert!(sample(&text, &format!("rbdvol_userspace_flushes_total{volume}")) >= 1.0);
    assert!(sample(&text, &format!("rbdvol_userspace_io_duration_seconds_count{volume}")) >= 2.0);
    assert!(sample(&text, &format!("rbdvol_userspace_server_resident_bytes{volume}")) > (1 << 20) as f64);
    assert!(sample(&text, "rbdvol_docker_requests_total{endpoint=\"/VolumeDriver.Mount\",outcome=\"ok\"}") >= 1.0);
    assert!(sample(&text, "rbdvol_docker_requests_total{endpoint=\"/VolumeDriver.Mount\",outcome=\"error\"}") >= 1.0);
    assert!(sample(&text, "rbdvol_docker_request_duration_seconds_count{endpoint=\"/VolumeDriver.Create\"}") >= 1.0);
    assert_eq!(sample(&text, "rbdvol_volumes_mounted{mapper=\"userspace\"}"), 1.0);
    assert_eq!(sample(&text, "rbdvol_volumes_mounted{mapper=\"krbd\"}"), 0.0);
    assert!(sample(&text, "rbdvol_volumes{state=\"known\"}") >= 1.0);
    assert!(sample(&text, "rbdvol_cluster_seconds_since_last_success") < 30.0);
    assert_eq!(sample(&text, "rbdvol_settings_generation"), 1.0);
    assert_eq!(sample(&text, "rbdvol_takeovers_total"), 0.0);
    assert!(!text.contains("rbdvol_consul_up"), "consul_up without consul:\n{text}");

    let mut prom = Prometheus::start(&addr);
    prom.wait_for("rbdvol_cluster_up", |v| v == 1.0, Duration::from_secs(60));
    let written = prom.wait_for(&format!("rbdvol_userspace_written_bytes_total{volume}"), |v| v > 0.0, Duration::from_secs(30));
    assert!(written >= WRITTEN as f64, "{written}");
    prom.wait_for("sum(rbdvol_docker_requests_total{endpoint=\"/VolumeDriver.Mount\",outcome=\"ok\"})", |v| v >= 1.0, Duration::from_secs(30));
    prom.wait_for(
        &format!("histogram_quantile(0.5, rate(rbdvol_userspace_io_duration_seconds_bucket{volume}[1m])) >= 0"),
        |v| v >= 0.0,
        Duration::from_secs(30),
    );
    drop(prom);

    ok(&p.unmount(&name, &id(1)));
    let text = curl(&[&url]).expect("metrics after the unmount");
    assert_eq!(sample(&text, "rbdvol_volumes_mounted{mapper=\"userspace\"}"), 0.0);
    assert!(!text.contains(&format!("rbdvol_userspace_written_bytes_total{volume}")), "an unmounted volume's series stay:\n{text}");
    promtool_check(&text);
    ok(&p.remove(&name));
}

#[test]
fn the_metrics_endpoint_listens_on_the_unix_socket_rbdvol_metrics_addr_names() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("metrics.sock");
    let mut env = cluster().env();
    env.push(("RBDVOL_METRICS_ADDR".into(), format!("unix:{}", socket.display())));
    env.push(("RBDVOL_MAPPER".into(), "userspace".into()));
    let p = Plugin::start_env(&unique("host"), env, None, &[]);
    let sock = socket.to_str().unwrap().to_string();
    let text = fetch("the metrics socket", Duration::from_secs(10), || curl(&["--unix-socket", &sock, "http://localhost/metrics"]));
    promtool_check(&text);
    assert!(text.contains("# TYPE rbdvol_docker_requests_total counter"), "{text}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777, 0o660);
    // Only /metrics is served.
    assert!(curl(&["--unix-socket", &sock, "http://localhost/other"]).is_none());
    drop(p);
}

/// Scrapes `url` until `check` holds for the text; the text.
fn scrape_until(url: &str, what: &str, check: impl Fn(&str) -> bool) -> String {
    fetch(what, Duration::from_secs(30), || curl(&[url]).filter(|t| check(t)))
}

#[test]
fn with_consul_the_metrics_say_whether_it_answers_and_count_each_settings_change() {
    let mut agent = ConsulAgent::start();
    let prefix = format!("{}/", unique("metrics"));
    agent.put(&format!("{prefix}conf/global/mon_host"), &cluster().admin_settings().mon_host);
    agent.put(&format!("{prefix}conf/keyring/user"), "client.admin");
    agent.put(&format!("{prefix}conf/keyring/key"), cluster().admin_settings().key.expose());
    let addr = format!("127.0.0.1:{}", free_port());
    let env = vec![
        ("CONSUL_HTTP_ADDR".to_string(), agent.addr()),
        ("CONSUL_HTTP_TOKEN".to_string(), agent.token.clone()),
        ("RBDVOL_CONSUL_PREFIX".to_string(), prefix.clone()),
        ("RBDVOL_MAPPER".to_string(), "userspace".to_string()),
        ("RBDVOL_METRICS_ADDR".to_string(), addr.clone()),
    ];
    let p = Plugin::start_env(&unique("host"), env, None, &[]);
    let url = format!("http://{addr}/metrics");
    // Generation 1: none (nothing in the environment); then Consul's.
    let text = scrape_until(&url, "the cluster up with consul's settings", |t| {
        t.lines().any(|l| l == "rbdvol_consul_up 1") && t.lines().any(|l| l == "rbdvol_cluster_up 1")
    });
    promtool_check(&text);
    let generation = sample(&text, "rbdvol_settings_generation");
    assert!(generation >= 2.0, "consul's settings put in force without a new generation:\n{text}");
    agent.put(&format!("{prefix}defaults/size"), "48");
    let next = format!("rbdvol_settings_generation {}", generation + 1.0);
    scrape_until(&url, "one more generation of settings", |t| t.lines().any(|l| l == next));
    agent.stop();
    let text = scrape_until(&url, "consul down", |t| t.lines().any(|l| l == "rbdvol_consul_up 0"));
    assert_eq!(sample(&text, "rbdvol_settings_generation"), generation + 1.0, "settings changed with consul gone:\n{text}");
    drop(p);
}

#[test]
fn a_bad_metrics_address_stops_serve_with_an_error_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(common::plugin::bin())
        .args(["serve", "--mapper", "userspace", "--host-id", "bad-metrics"])
        .arg("--socket")
        .arg(dir.path().join("rbd.sock"))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--mount-root")
        .arg(dir.path().join("mnt"))
        .arg("--run-dir")
        .arg(dir.path().join("run"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RBDVOL_METRICS_ADDR", "localhost:9650")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "serve started with a bad metrics address:\n{stderr}");
    assert!(stderr.contains("invalid RBDVOL_METRICS_ADDR 'localhost:9650'"), "{stderr}");
    assert!(!dir.path().join("rbd.sock").exists(), "it listened before refusing");
}
