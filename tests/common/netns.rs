//! A small LAN for "hosts" in network namespaces: a bridge on this host with
//! the services' address (`host_ip`: a cluster and a Consul agent bind it),
//! and one namespace per host, each with its own address on a veth pair.
//! `cut` and `heal` take a host off the network and back, as a partition
//! would. Dropping the LAN deletes the namespaces and the bridge.
//!
//! Only the network is separate: plugins in a namespace (started through
//! `nsenter --net`, which keeps the mount namespace) mount where the test
//! can see.

use std::process::Command;

pub struct Lan {
    pub bridge: String,
    pub host_ip: String,
    subnet: u8,
    tag: String,
    hosts: Vec<String>,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

impl Lan {
    pub fn new() -> Lan {
        let tag = format!("{}", std::process::id() % 100_000);
        let addrs = String::from_utf8_lossy(&Command::new("ip").args(["-o", "addr"]).output().unwrap().stdout).into_owned();
        let subnet = (100..=250u8).find(|n| !addrs.contains(&format!(" 10.78.{n}."))).expect("no free 10.78.x.0/24 subnet");
        let bridge = format!("rbdvb{tag}");
        let host_ip = format!("10.78.{subnet}.1");
        ip(&["link", "add", &bridge, "type", "bridge"]);
        let lan = Lan { bridge, host_ip, subnet, tag, hosts: Vec::new() };
        ip(&["addr", "add", &format!("{}/24", lan.host_ip), "dev", &lan.bridge]);
        ip(&["link", "set", &lan.bridge, "up"]);
        lan
    }

    /// A namespace `name` on the LAN; returns its address. Its plugin runs
    /// with [`Lan::netns_path`].
    pub fn add_host(&mut self, name: &str) -> String {
        let n = self.hosts.len() + 2;
        let ns = format!("rbdvol-{name}-{}", self.tag);
        let (outer, inner) = (self.veth(name), format!("eth-{name}"));
        let addr = format!("10.78.{}.{n}", self.subnet);
        ip(&["netns", "add", &ns]);
        self.hosts.push(ns.clone());
        ip(&["link", "add", &outer, "type", "veth", "peer", "name", &inner]);
        ip(&["link", "set", &inner, "netns", &ns]);
        ip(&["link", "set", &outer, "master", &self.bridge]);
        ip(&["link", "set", &outer, "up"]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        ip(&["-n", &ns, "addr", "add", &format!("{addr}/24"), "dev", &inner]);
        ip(&["-n", &ns, "link", "set", &inner, "up"]);
        addr
    }

    pub fn netns_path(&self, name: &str) -> String {
        format!("/run/netns/rbdvol-{name}-{}", self.tag)
    }

    fn veth(&self, name: &str) -> String {
        format!("rv{}{name}", self.tag)
    }

    /// Takes host `name` off the network (its link goes down).
    pub fn cut(&self, name: &str) {
        ip(&["link", "set", &self.veth(name), "down"]);
    }

    pub fn heal(&self, name: &str) {
        ip(&["link", "set", &self.veth(name), "up"]);
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        for ns in &self.hosts {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = Command::new("ip").args(["link", "del", &self.bridge]).status();
    }
}
