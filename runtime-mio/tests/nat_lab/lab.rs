//! A small internet in Linux network namespaces: an "internet" namespace holding one bridge, a
//! server namespace with two public addresses on it, and per NAT a router namespace (WAN on
//! the bridge, a LAN bridge with one or two host namespaces behind it) whose NAT behaviour is
//! a few lines of nftables.
//!
//! Every namespace of one lab is named `plab<pid>-<n>-<role>`, so labs of parallel tests and
//! of parallel test processes never meet; interfaces are created directly inside their
//! namespaces (`ip -n A link add X type veth peer name Y netns B`), so their short fixed names
//! never collide either. [`Lab`]'s `Drop` kills whatever still runs inside its namespaces and
//! deletes them, on success and on panic alike; a lab left behind by a test process that was
//! killed outright is removed by the next run ([`prerequisites`]).

use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

/// The server's main address (its `--listen`).
pub(crate) const SERVER: &str = "203.0.113.1:3478";
/// The server's second address (its `--alt-listen`, for RFC 5780 discovery).
pub(crate) const SERVER_ALT: &str = "203.0.113.2:3479";
/// The server's main IPv6 address, in a lab with IPv6 ([`Lab::with_ipv6`]): a second
/// `pierce server` listens there ([`super::proc::Server::start_v6`]).
#[allow(dead_code)] // not every test binary that includes this file uses it
pub(crate) const SERVER6: &str = "[2001:db8::1]:3478";
/// That server's second address (its `--alt-listen`).
#[allow(dead_code)] // not every test binary that includes this file uses it
pub(crate) const SERVER6_ALT: &str = "[2001:db8::2]:3479";
/// The NAT64 gateway's network-specific prefix ([`Lab::add_nat64`]).
pub(crate) const NAT64_PREFIX: &str = "2001:db8:64:64::";
/// WAN addresses of routers that run miniupnpd ([`Lab::add_nat_with_miniupnpd`]): miniupnpd
/// refuses to map ports on a "reserved" external address (its `addr_is_reserved` list has the
/// RFC 5737 documentation ranges, the lab's 203.0.113.0/24 among them), so these routers get
/// one outside that list, on the same internet bridge (every other namespace routes it on
/// link).
pub(crate) const UPNP_WAN_NET: &str = "192.0.3.0/24";
/// Every namespace of this file starts with this.
const PREFIX: &str = "plab";

/// A NAT's behaviour, as the router namespace's nftables ruleset makes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Nat {
    /// Masquerade (Linux keeps the source port when it can) plus a DNAT of every inbound UDP
    /// port on the WAN address to the one LAN host, and no firewall: endpoint-independent
    /// mapping and filtering.
    FullCone,
    /// Masquerade plus a home router's stateful firewall (inbound only for established or
    /// related flows): endpoint-independent mapping, address-and-port-dependent filtering.
    PortRestricted,
    /// `masquerade fully-random` (a random port per destination address and port) plus the
    /// same firewall: address-and-port-dependent mapping and filtering.
    Symmetric,
    /// An IPv6-only LAN behind a NAT64 gateway: Debian's `tayga` translates
    /// [`NAT64_PREFIX`]`/96` to a private IPv4 pool, which is masqueraded on the WAN behind
    /// the same firewall ([`Lab::add_nat64`]).
    Nat64,
    /// Masquerade plus a firewall that guards `forward` only, as many Linux routers are set
    /// up: endpoint-independent mapping, address-and-port-dependent filtering, and the
    /// conntrack race. A peer's probe that arrives before our own first probe to that peer
    /// has left is addressed to the router itself, accepted on `input` (nothing listens: an
    /// ICMP error goes back) and confirmed by conntrack; our later flow to that peer cannot
    /// have the port that entry holds, so it leaves from another one (the simulator's
    /// `NatConfig::linux`).
    Linux,
}

impl Nat {
    /// The name scenarios and LAB lines use.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::FullCone => "full-cone",
            Self::PortRestricted => "port-restricted",
            Self::Symmetric => "symmetric",
            Self::Nat64 => "nat64",
            Self::Linux => "linux",
        }
    }

    /// The router's ruleset: `lan_host` is the first host behind it.
    fn ruleset(self, lan_host: Ipv4Addr) -> String {
        // A home router's firewall. It must guard `input` as well as `forward`: a peer's probe
        // that arrives before our own outbound probe is addressed to the router itself (no
        // mapping matches it yet), so it takes the input path; accepted there, conntrack would
        // confirm an entry for it and a later outbound packet to that peer would need a new
        // port. Dropped before confirmation, it leaves no trace.
        const FIREWALL: &str = r#"
table ip lab_fw {
  chain input {
    type filter hook input priority filter; policy accept;
    iifname "wan" ct state established,related counter accept
    iifname "wan" counter drop
  }
  chain forward {
    type filter hook forward priority filter; policy accept;
    iifname "wan" ct state established,related counter accept
    iifname "wan" counter drop
  }
}
"#;
        match self {
            Self::FullCone => format!(
                r#"
table ip lab_nat {{
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    iifname "wan" meta l4proto udp counter dnat to {lan_host}
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    oifname "wan" counter masquerade
  }}
}}
"#
            ),
            Self::PortRestricted | Self::Nat64 => format!(
                r#"
table ip lab_nat {{
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    oifname "wan" counter masquerade
  }}
}}
{FIREWALL}"#
            ),
            Self::Symmetric => format!(
                r#"
table ip lab_nat {{
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    oifname "wan" counter masquerade fully-random
  }}
}}
{FIREWALL}"#
            ),
            // `input` counts the unsolicited packets it lets in (each one a conntrack entry).
            Self::Linux => r#"
table ip lab_nat {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "wan" counter masquerade
  }
}
table ip lab_fw {
  chain input {
    type filter hook input priority filter; policy accept;
    iifname "wan" ct state new counter accept
  }
  chain forward {
    type filter hook forward priority filter; policy accept;
    iifname "wan" ct state established,related counter accept
    iifname "wan" counter drop
  }
}
"#
            .to_owned(),
        }
    }
}

/// A host namespace behind a NAT.
#[derive(Clone, Debug)]
pub(crate) struct Host {
    /// Its namespace.
    pub(crate) ns: String,
    /// Its LAN address.
    pub(crate) ip: Ipv4Addr,
    /// The NAT in front of it.
    pub(crate) nat: Nat,
    /// That NAT's public address.
    pub(crate) wan: Ipv4Addr,
    /// Its global IPv6 address, in a lab with IPv6 ([`Lab::with_ipv6`]).
    pub(crate) ip6: Option<Ipv6Addr>,
}

/// One lab: see the module docs. Dropping it tears everything down.
pub(crate) struct Lab {
    prefix: String,
    /// Every namespace created so far, in creation order.
    namespaces: Vec<String>,
    /// Bridge ports used on the internet namespace's bridge.
    ports: usize,
    /// Router namespaces with their NAT kind and the bridge port of their WAN.
    routers: Vec<(String, Nat, String)>,
    /// Routers also route IPv6 ([`Lab::with_ipv6`]).
    ipv6: bool,
    /// ... and translate it ([`Lab::with_nat66`]).
    nat66: bool,
    /// A router has a WAN address in [`UPNP_WAN_NET`]: routers added later route it on link.
    upnp_wan: bool,
    /// miniupnpd logs, printed with the diagnostics.
    logs: Vec<std::path::PathBuf>,
}

impl Lab {
    /// The internet and the server's namespace (203.0.113.1 and .2 on one interface).
    pub(crate) fn new() -> Result<Self, String> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let mut lab = Self {
            prefix: format!("{PREFIX}{}-{n}-", std::process::id()),
            namespaces: Vec::new(),
            ports: 0,
            routers: Vec::new(),
            ipv6: false,
            nat66: false,
            upnp_wan: false,
            logs: Vec::new(),
        };
        // Building is a few dozen short `ip` runs; one lab at a time keeps a busy machine's
        // setup errors readable and costs well under a second per lab.
        let _one_at_a_time = setup_lock();
        let inet = lab.add_ns("inet")?;
        ip(&["-n", &inet, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &inet, "link", "set", "br0", "up"])?;
        // The core: on a real path at least one router sits between two home routers, and it
        // does not forward a datagram that reaches it with a TTL of 1. The bridge stands in
        // for it (without taking one off the others): a hole-punching opener sent with TTL 2
        // opens its own router and dies here, before the peer's router sees it.
        nft(
            &inet,
            r#"
table bridge lab_core {
  chain forward {
    type filter hook forward priority filter; policy accept;
    ip ttl 1 counter drop
    ip6 hoplimit 1 counter drop
  }
}
"#,
        )?;
        let srv = lab.add_ns("srv")?;
        lab.attach(&srv, "eth0", &["203.0.113.1/24", "203.0.113.2/24"])?;
        Ok(lab)
    }

    /// From now on, routers also route IPv6, as a dual-stack home router does: the WAN gets
    /// `2001:db8::(10 + i)/64` on the internet's bridge, the LAN the prefix
    /// `2001:db8:(i + 1)::/64` (hosts `::2`, `::3`, the router `::1`), no NAT66, and a
    /// stateful firewall (inbound only for established or related flows: punched like a
    /// port-restricted NAT). Every router routes to every other router's LAN prefix. The
    /// server's namespace gets `2001:db8::1` and `::2` on the same bridge ([`SERVER6`],
    /// [`SERVER6_ALT`]), routes to every router's LAN prefix, and no firewall.
    #[allow(dead_code)] // not every test binary that includes this file uses it
    pub(crate) fn with_ipv6(mut self) -> Result<Self, String> {
        self.ipv6 = true;
        let srv = self.server_ns();
        for a in ["2001:db8::1/64", "2001:db8::2/64"] {
            ip(&["-n", &srv, "addr", "add", a, "dev", "eth0", "nodad"])?;
        }
        Ok(self)
    }

    /// As [`Lab::with_ipv6`], but the routers translate IPv6 too (NAT66: Linux's IPv6
    /// masquerade, which keeps the port when it can, behind the same stateful firewall): a
    /// LAN gets the unique-local prefix `fd00:0:(i + 1)::/64`, unreachable from outside, and
    /// its hosts' IPv6 traffic leaves from the router's WAN address ([`wan6_of`]).
    #[allow(dead_code)] // not every test binary that includes this file uses it
    pub(crate) fn with_nat66(self) -> Result<Self, String> {
        let mut lab = self.with_ipv6()?;
        lab.nat66 = true;
        Ok(lab)
    }

    /// The server's namespace.
    pub(crate) fn server_ns(&self) -> String {
        format!("{}srv", self.prefix)
    }

    /// Makes the router in front of `host` drop the first `bytes` bytes of UDP that `host`
    /// sends to `to` (a late first probe: the peer's probes reach the router first).
    #[allow(dead_code)] // not every test binary that includes this file uses it
    pub(crate) fn drop_first_udp(
        &self,
        host: &Host,
        to: Ipv4Addr,
        bytes: u32,
    ) -> Result<(), String> {
        let i = usize::from(host.wan.octets()[3] - 10);
        let router = &self.routers[i].0;
        let src = host.ip;
        let rules = format!(
            r#"
table ip lab_late {{
  chain forward {{
    type filter hook forward priority filter - 1; policy accept;
    ip saddr {src} ip daddr {to} meta l4proto udp quota until {bytes} bytes counter drop
  }}
}}
"#
        );
        self.nft_in(router, &rules).map(drop)
    }

    /// Makes the router in front of `host` forward nothing larger than `mtu` either way: its
    /// WAN link (both ends of the veth: the router's `wan` and its port on the internet's
    /// bridge) and its LAN bridge get that MTU, so every path in or out of that NAT, direct or
    /// through the server, crosses a hop of `mtu`. The router answers a datagram too large
    /// for it with ICMP "fragmentation needed", as routers do. (The LAN side matters: a veth
    /// and a bridge pass a UDP GSO packet whatever its segments' size, since the kernel only
    /// checks those when it routes one, so inbound only the router's forwarding to its LAN
    /// enforces the MTU; a real link drops such frames.)
    #[allow(dead_code)] // not every test binary that includes this file uses it
    pub(crate) fn set_router_mtu(&self, host: &Host, mtu: u32) -> Result<(), String> {
        let (router, _, port) = &self.routers[usize::from(host.wan.octets()[3] - 10)];
        let mtu = mtu.to_string();
        ip(&["-n", router, "link", "set", "dev", "wan", "mtu", &mtu])?;
        ip(&[
            "-n",
            &self.inet_ns(),
            "link",
            "set",
            "dev",
            port,
            "mtu",
            &mtu,
        ])?;
        ip(&["-n", router, "link", "set", "dev", "lan", "mtu", &mtu])?;
        Ok(())
    }

    /// Sets the MTU of `host`'s own interface (both ends of its veth to the router's LAN) to
    /// `mtu`: a datagram larger than that fails its send on the host itself (`EMSGSIZE`, on a
    /// socket that does not fragment).
    #[allow(dead_code)] // not every test binary that includes this file uses it
    pub(crate) fn set_host_mtu(&self, host: &Host, mtu: u32) -> Result<(), String> {
        let router = &self.routers[usize::from(host.wan.octets()[3] - 10)].0;
        let j = host.ip.octets()[3] - 2; // the host's LAN port, l<j>
        let mtu = mtu.to_string();
        ip(&["-n", &host.ns, "link", "set", "dev", "eth0", "mtu", &mtu])?;
        let port = format!("l{j}");
        ip(&["-n", router, "link", "set", "dev", &port, "mtu", &mtu])?;
        Ok(())
    }

    /// Makes the router in front of `host` a path-MTU black hole: it forwards nothing larger
    /// than `mtu` ([`Lab::set_router_mtu`]) and it drops every ICMP "destination unreachable" (which
    /// "fragmentation needed" is) that it sends or forwards, so no sender ever hears why its
    /// large datagrams vanish. (The MTU rather than an nftables `ip length` rule makes the
    /// drop: a host's UDP GSO send crosses a veth as one packet of many datagrams, which only
    /// the router's MTU check counts per datagram.) The counters show in [`Lab::diagnostics`].
    #[allow(dead_code)] // not every test binary that includes this file uses it
    pub(crate) fn black_hole(&self, host: &Host, mtu: u32) -> Result<(), String> {
        self.set_router_mtu(host, mtu)?;
        let router = &self.routers[usize::from(host.wan.octets()[3] - 10)].0;
        let rules = r#"
table ip lab_black_hole {
  chain forward {
    type filter hook forward priority filter - 2; policy accept;
    icmp type destination-unreachable counter drop
  }
  chain output {
    type filter hook output priority filter; policy accept;
    icmp type destination-unreachable counter drop
  }
}
"#;
        self.nft_in(router, rules).map(drop)
    }

    /// Adds a router of kind `nat` with `hosts` hosts on its LAN; `loss_percent` of the
    /// packets crossing its WAN link are dropped, in each direction, on the wire (after NAT,
    /// in the internet's bridge: a mapping a lost packet created stays, as on a real link).
    pub(crate) fn add_nat(
        &mut self,
        nat: Nat,
        hosts: usize,
        loss_percent: u8,
    ) -> Result<Vec<Host>, String> {
        assert!((1..=2).contains(&hosts), "one or two hosts per NAT");
        assert!(
            nat != Nat::FullCone || hosts == 1,
            "a full cone forwards to one host"
        );
        let _one_at_a_time = setup_lock();
        let i = self.routers.len();
        let wan = Ipv4Addr::new(203, 0, 113, 10 + i as u8);
        let router = self.add_ns(&format!("r{i}"))?;
        let port = self.attach(&router, "wan", &[&format!("{wan}/24")])?;
        ip(&["-n", &router, "link", "add", "lan", "type", "bridge"])?;
        ip(&["-n", &router, "link", "set", "lan", "up"])?;
        let lan_net = |last: u8| Ipv4Addr::new(10, i as u8 + 1, 0, last);
        let gateway = lan_net(1);
        ip(&[
            "-n",
            &router,
            "addr",
            "add",
            &format!("{gateway}/24"),
            "dev",
            "lan",
        ])?;
        sysctl(&router, "net/ipv4/ip_forward", "1")?;
        let lan6 = lan6_prefix(self.nat66, i);
        if self.ipv6 {
            self.route_ipv6(&router, i)?;
        }
        let mut out = Vec::new();
        for j in 0..hosts {
            let host = self.add_ns(&format!("h{i}{j}"))?;
            let lan_port = format!("l{j}");
            ip(&[
                "-n", &router, "link", "add", &lan_port, "type", "veth", "peer", "name", "eth0",
                "netns", &host,
            ])?;
            ip(&[
                "-n", &router, "link", "set", &lan_port, "master", "lan", "up",
            ])?;
            let addr = lan_net(2 + j as u8);
            ip(&[
                "-n",
                &host,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &host, "link", "set", "eth0", "up"])?;
            ip(&[
                "-n",
                &host,
                "route",
                "add",
                "default",
                "via",
                &gateway.to_string(),
            ])?;
            let ip6 = self.ipv6.then(|| lan6(2 + j as u16));
            if let Some(ip6) = ip6 {
                let a = format!("{ip6}/64");
                ip(&["-n", &host, "addr", "add", &a, "dev", "eth0", "nodad"])?;
                let gw = lan6(1).to_string();
                ip(&["-n", &host, "-6", "route", "add", "default", "via", &gw])?;
            }
            out.push(Host {
                ns: host,
                ip: addr,
                nat,
                wan,
                ip6,
            });
        }
        nft(&router, &nat.ruleset(lan_net(2)))?;
        if self.upnp_wan {
            ip(&["-n", &router, "route", "add", UPNP_WAN_NET, "dev", "wan"])?;
        }
        if loss_percent > 0 {
            let rules = format!(
                r#"
table bridge lab_loss_{port} {{
  chain forward {{
    type filter hook forward priority filter; policy accept;
    iifname "{port}" counter
    oifname "{port}" counter
    iifname "{port}" numgen random mod 100 < {loss_percent} counter drop
    oifname "{port}" numgen random mod 100 < {loss_percent} counter drop
  }}
}}
"#
            );
            nft(&self.inet_ns(), &rules)?;
        }
        self.routers.push((router, nat, port));
        Ok(out)
    }

    /// A router of kind `nat` with one host, running Debian's miniupnpd (NAT-PMP and PCP on
    /// its LAN address, port 5351; UPnP IGD off), started here and killed with the lab. Its
    /// WAN address is `192.0.3.(10 + i)` ([`UPNP_WAN_NET`], which miniupnpd accepts as public)
    /// and it reaches the lab's 203.0.113.0/24 on link. Its firewall also lets in what a
    /// mapping forwards (`ct status dnat`), as a home router with UPnP does; miniupnpd's own
    /// tables (`pmp_fw`, `pmp_nat`, with the chains its nftables backend fills) are made here.
    /// Waits until miniupnpd listens.
    #[allow(dead_code)] // not every test binary that includes this file uses it
    pub(crate) fn add_nat_with_miniupnpd(&mut self, nat: Nat) -> Result<Host, String> {
        self.add_nat_running_miniupnpd(nat, false)
    }

    /// The same router, but its miniupnpd speaks UPnP IGD only (`enable_upnp=yes`,
    /// `enable_natpmp=no`, which in miniupnpd 2.3 turns PCP off too: nothing listens on port
    /// 5351): SSDP on the LAN address's port 1900 and the description and SOAP control over
    /// HTTP (port 5000). Waits until its HTTP server listens.
    #[allow(dead_code)] // not every test binary that includes this file uses it
    pub(crate) fn add_nat_with_miniupnpd_igd_only(&mut self, nat: Nat) -> Result<Host, String> {
        self.add_nat_running_miniupnpd(nat, true)
    }

    fn add_nat_running_miniupnpd(&mut self, nat: Nat, igd_only: bool) -> Result<Host, String> {
        let mut host = self.add_nat(nat, 1, 0)?.remove(0);
        let _one_at_a_time = setup_lock();
        let i = self.routers.len() - 1;
        let router = self.routers[i].0.clone();
        let wan = Ipv4Addr::new(192, 0, 3, 10 + i as u8);
        ip(&["-n", &router, "addr", "flush", "dev", "wan"])?;
        ip(&[
            "-n",
            &router,
            "addr",
            "add",
            &format!("{wan}/24"),
            "dev",
            "wan",
        ])?;
        ip(&[
            "-n",
            &router,
            "route",
            "add",
            "203.0.113.0/24",
            "dev",
            "wan",
        ])?;
        if !self.upnp_wan {
            self.upnp_wan = true;
            ip(&[
                "-n",
                &self.server_ns(),
                "route",
                "add",
                UPNP_WAN_NET,
                "dev",
                "eth0",
            ])?;
            for (other, _, _) in &self.routers[..i] {
                ip(&["-n", other, "route", "add", UPNP_WAN_NET, "dev", "wan"])?;
            }
        }
        nft(
            &router,
            r#"
insert rule ip lab_fw forward iifname "wan" ct status dnat counter accept
table inet pmp_fw {
  chain forward {
    type filter hook forward priority filter; policy accept;
    jump miniupnpd
  }
  chain miniupnpd {
  }
}
table inet pmp_nat {
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    jump prerouting_miniupnpd
  }
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    jump postrouting_miniupnpd
  }
  chain prerouting_miniupnpd {
  }
  chain postrouting_miniupnpd {
  }
}
"#,
        )?;
        let dir = std::env::temp_dir().join(format!("{}miniupnpd{i}", self.prefix));
        std::fs::create_dir_all(&dir).map_err(|e| format!("miniupnpd dir: {e}"))?;
        let lan = format!("10.{}.0.0/24", i + 1);
        let conf = dir.join("miniupnpd.conf");
        let protocols = if igd_only {
            "enable_natpmp=no\nenable_upnp=yes\nhttp_port=5000\n"
        } else {
            "enable_natpmp=yes\nenable_upnp=no\n"
        };
        let text = format!(
            "ext_ifname=wan\nlistening_ip=lan\n{protocols}\
             secure_mode=yes\nsystem_uptime=yes\nmin_lifetime=120\nmax_lifetime=86400\n\
             uuid=3d3cec3a-8cf0-11e0-98ee-001a6bd2d07b\nupnp_table_name=pmp_fw\n\
             upnp_nat_table_name=pmp_nat\nlease_file={}\n\
             allow 1024-65535 {lan} 1024-65535\ndeny 0-65535 0.0.0.0/0 0-65535\n",
            dir.join("leases").display()
        );
        std::fs::write(&conf, text).map_err(|e| format!("miniupnpd.conf: {e}"))?;
        let log = dir.join("miniupnpd.log");
        let out = std::fs::File::create(&log).map_err(|e| format!("miniupnpd.log: {e}"))?;
        let err = out.try_clone().map_err(|e| format!("miniupnpd.log: {e}"))?;
        let (conf, pid) = (conf.display().to_string(), dir.join("pid"));
        // -d: in the foreground, logging to stderr; -P: its own pid file (the default one in
        // /run would stop a second lab's miniupnpd).
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &router,
                "miniupnpd",
                "-f",
                &conf,
                "-d",
                "-P",
            ])
            .arg(&pid)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("cannot start miniupnpd: {e}"))?;
        self.logs.push(log.clone());
        let started = std::time::Instant::now();
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let ready = if igd_only {
                "HTTP listening on port"
            } else {
                "Listening for NAT-PMP/PCP traffic"
            };
            if text.contains(ready) {
                break;
            }
            if started.elapsed() > std::time::Duration::from_secs(10) {
                return Err(format!("miniupnpd did not start in 10 s:\n{text}"));
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        host.wan = wan;
        Ok(host)
    }

    /// A router doing NAT64 for one IPv6-only host: its LAN is `2001:db8:64::/64` (the
    /// router `::1`, the host `::2`, no IPv4 at all); `tayga` (started here, in the router's
    /// namespace, and killed with the lab) translates [`NAT64_PREFIX`]`/96` to the pool
    /// `192.168.255.0/24`, which is masqueraded on the WAN as [`Nat::PortRestricted`] does.
    /// The host reaches IPv4 addresses only through the prefix. (Not the well-known
    /// `64:ff9b::/96`: RFC 6052 §3.1 forbids it for non-global IPv4 addresses such as this
    /// lab's documentation ones, and tayga enforces that.)
    #[allow(dead_code)] // not every test binary that includes this file uses it
    pub(crate) fn add_nat64(&mut self) -> Result<Host, String> {
        let _one_at_a_time = setup_lock();
        let i = self.routers.len();
        let wan = Ipv4Addr::new(203, 0, 113, 10 + i as u8);
        let router = self.add_ns(&format!("r{i}"))?;
        let port = self.attach(&router, "wan", &[&format!("{wan}/24")])?;
        let host = self.add_ns(&format!("h{i}0"))?;
        ip(&[
            "-n", &router, "link", "add", "lan", "type", "veth", "peer", "name", "eth0", "netns",
            &host,
        ])?;
        let gw: Ipv6Addr = "2001:db8:64::1".parse().expect("literal");
        let ip6: Ipv6Addr = "2001:db8:64::2".parse().expect("literal");
        ip(&[
            "-n",
            &router,
            "addr",
            "add",
            &format!("{gw}/64"),
            "dev",
            "lan",
            "nodad",
        ])?;
        ip(&["-n", &router, "link", "set", "lan", "up"])?;
        ip(&[
            "-n",
            &host,
            "addr",
            "add",
            &format!("{ip6}/64"),
            "dev",
            "eth0",
            "nodad",
        ])?;
        ip(&["-n", &host, "link", "set", "eth0", "up"])?;
        ip(&[
            "-n",
            &host,
            "-6",
            "route",
            "add",
            "default",
            "via",
            &gw.to_string(),
        ])?;
        sysctl(&router, "net/ipv4/ip_forward", "1")?;
        sysctl(&router, "net/ipv6/conf/all/forwarding", "1")?;
        // tayga: its configuration and state in a directory of its own.
        let dir = std::env::temp_dir().join(format!("{}tayga{i}", self.prefix));
        std::fs::create_dir_all(&dir).map_err(|e| format!("tayga dir: {e}"))?;
        let conf = dir.join("tayga.conf");
        let text = format!(
            "tun-device nat64\nipv4-addr 192.168.255.1\nprefix {NAT64_PREFIX}/96\n\
             dynamic-pool 192.168.255.0/24\ndata-dir {}\n",
            dir.display()
        );
        std::fs::write(&conf, text).map_err(|e| format!("tayga.conf: {e}"))?;
        let conf = conf.display().to_string();
        run(&[
            "ip", "netns", "exec", &router, "tayga", "-c", &conf, "--mktun",
        ])?;
        ip(&["-n", &router, "link", "set", "nat64", "up"])?;
        ip(&[
            "-n",
            &router,
            "route",
            "add",
            "192.168.255.0/24",
            "dev",
            "nat64",
        ])?;
        let prefix = format!("{NAT64_PREFIX}/96");
        ip(&["-n", &router, "-6", "route", "add", &prefix, "dev", "nat64"])?;
        Command::new("ip")
            .args(["netns", "exec", &router, "tayga", "-c", &conf, "--nodetach"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start tayga: {e}"))?;
        nft(&router, &Nat::Nat64.ruleset(Ipv4Addr::UNSPECIFIED))?;
        self.routers.push((router, Nat::Nat64, port));
        Ok(Host {
            ns: host,
            ip: Ipv4Addr::UNSPECIFIED,
            nat: Nat::Nat64,
            wan,
            ip6: Some(ip6),
        })
    }

    /// A DNS64 resolver for `host` (behind [`Lab::add_nat64`]), as an IPv6-only network has:
    /// BIND's `named` in the gateway's namespace on its LAN address, with `dns64` for the
    /// gateway's prefix and BIND's built-in `ipv4only.arpa` zone (RFC 7050 §2.2: A records
    /// 192.0.0.170 and .171, synthesised into AAAA). The host's resolver points at it
    /// (`/etc/netns/NS/resolv.conf`, which `ip netns exec` mounts over `/etc/resolv.conf`).
    /// Returns once the host's own resolver (`getent ahostsv6`) sees a synthesised address.
    #[allow(dead_code)] // not every test binary that includes this file uses it
    pub(crate) fn add_dns64(&self, host: &Host) -> Result<(), String> {
        let i = usize::from(host.wan.octets()[3] - 10);
        let router = &self.routers[i].0;
        let dir = std::env::temp_dir().join(format!("{}named{i}", self.prefix));
        std::fs::create_dir_all(&dir).map_err(|e| format!("named dir: {e}"))?;
        let conf = dir.join("named.conf");
        let text = format!(
            "options {{\n  directory \"{dir}\";\n  pid-file none;\n  listen-on {{ none; }};\n  \
             listen-on-v6 {{ 2001:db8:64::1; }};\n  recursion no;\n  dnssec-validation no;\n  \
             dns64 {NAT64_PREFIX}/96 {{ clients {{ any; }}; recursive-only no; }};\n}};\n\
             controls {{ }};\n",
            dir = dir.display()
        );
        std::fs::write(&conf, text).map_err(|e| format!("named.conf: {e}"))?;
        let log =
            std::fs::File::create(dir.join("named.log")).map_err(|e| format!("named.log: {e}"))?;
        let conf = conf.display().to_string();
        Command::new("ip")
            .args(["netns", "exec", router, "named", "-g", "-c", &conf])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start named: {e}"))?;
        let etc = format!("/etc/netns/{}", host.ns);
        std::fs::create_dir_all(&etc).map_err(|e| format!("{etc}: {e}"))?;
        std::fs::write(format!("{etc}/resolv.conf"), "nameserver 2001:db8:64::1\n")
            .map_err(|e| format!("{etc}/resolv.conf: {e}"))?;
        let want = format!("{}c000:aa", NAT64_PREFIX);
        let mut seen = String::new();
        for _ in 0..100 {
            seen = run_text(&[
                "ip",
                "netns",
                "exec",
                &host.ns,
                "getent",
                "ahostsv6",
                "ipv4only.arpa",
            ]);
            if seen.contains(&want) {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let log = std::fs::read_to_string(dir.join("named.log")).unwrap_or_default();
        Err(format!(
            "named gave no {want} for ipv4only.arpa within 10 s (getent: {seen:?})\n{log}"
        ))
    }

    /// Everything that explains a failure: per router its ruleset with counters and its
    /// conntrack table, and the loss counters on the internet's bridge.
    pub(crate) fn diagnostics(&self) -> String {
        let mut s = String::new();
        for (router, nat, port) in &self.routers {
            s.push_str(&format!(
                "--- router {router} ({}, bridge port {port})\n",
                nat.name()
            ));
            s.push_str(&run_text(&[
                "ip", "netns", "exec", router, "nft", "list", "ruleset",
            ]));
            s.push_str(&run_text(&[
                "ip",
                "netns",
                "exec",
                router,
                "conntrack",
                "-L",
            ]));
        }
        for log in &self.logs {
            s.push_str(&format!("--- {}\n", log.display()));
            s.push_str(&std::fs::read_to_string(log).unwrap_or_default());
        }
        s.push_str("--- internet\n");
        s.push_str(&run_text(&[
            "ip",
            "netns",
            "exec",
            &self.inet_ns(),
            "nft",
            "list",
            "ruleset",
        ]));
        s
    }

    /// Loads nftables `rules` (a ruleset, or commands such as `delete table ...`) inside
    /// `ns`, one of this lab's namespaces (`tcp_fallback.rs` blocks and unblocks UDP with it).
    #[allow(dead_code)] // not every test binary that includes this file uses it
    pub(crate) fn nft_in(&self, ns: &str, rules: &str) -> Result<String, String> {
        assert!(
            self.namespaces.iter().any(|n| n == ns),
            "{ns} is not a namespace of this lab"
        );
        nft(ns, rules)
    }

    fn inet_ns(&self) -> String {
        format!("{}inet", self.prefix)
    }

    /// Router `i` (namespace `router`) routes IPv6 (see [`Lab::with_ipv6`]): its addresses,
    /// forwarding, its firewall, and routes both ways between its LAN prefix and every other
    /// router's.
    fn route_ipv6(&self, router: &str, i: usize) -> Result<(), String> {
        let prefix = |k: usize| format!("2001:db8:{}::/64", k + 1);
        ip(&[
            "-n",
            router,
            "addr",
            "add",
            &format!("{}/64", wan6(i)),
            "dev",
            "wan",
            "nodad",
        ])?;
        let gw = format!("{}/64", lan6_prefix(self.nat66, i)(1));
        ip(&["-n", router, "addr", "add", &gw, "dev", "lan", "nodad"])?;
        if self.nat66 {
            nft(
                router,
                r#"
table ip6 lab_nat66 {
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "wan" counter masquerade
  }
}
"#,
            )?;
        }
        sysctl(router, "net/ipv6/conf/all/forwarding", "1")?;
        for (k, (other, _, _)) in self.routers.iter().enumerate() {
            let (to_other, to_me) = (wan6(k).to_string(), wan6(i).to_string());
            ip(&[
                "-n",
                router,
                "-6",
                "route",
                "add",
                &prefix(k),
                "via",
                &to_other,
            ])?;
            ip(&["-n", other, "-6", "route", "add", &prefix(i), "via", &to_me])?;
        }
        let (srv, to_me) = (self.server_ns(), wan6(i).to_string());
        ip(&["-n", &srv, "-6", "route", "add", &prefix(i), "via", &to_me])?;
        nft(
            router,
            r#"
table ip6 lab_fw6 {
  chain input {
    type filter hook input priority filter; policy accept;
    iifname "wan" meta l4proto ipv6-icmp accept
    iifname "wan" ct state established,related counter accept
    iifname "wan" counter drop
  }
  chain forward {
    type filter hook forward priority filter; policy accept;
    iifname "wan" meta l4proto ipv6-icmp accept
    iifname "wan" ct state established,related counter accept
    iifname "wan" counter drop
  }
}
"#,
        )
        .map(drop)
    }

    fn add_ns(&mut self, role: &str) -> Result<String, String> {
        let ns = format!("{}{role}", self.prefix);
        ip(&["netns", "add", &ns])?;
        self.namespaces.push(ns.clone());
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        // With br_netfilter loaded, bridged IPv4 would pass the namespace's IP hooks (and its
        // conntrack); these bridges are plain wires.
        let _ = sysctl(&ns, "net/bridge/bridge-nf-call-iptables", "0");
        Ok(ns)
    }

    /// A veth from `ns` (named `ifname`, with `addrs`) to a new port of the internet's bridge;
    /// returns the port's name.
    fn attach(&mut self, ns: &str, ifname: &str, addrs: &[&str]) -> Result<String, String> {
        let inet = self.inet_ns();
        let port = format!("p{}", self.ports);
        self.ports += 1;
        ip(&[
            "-n", &inet, "link", "add", &port, "type", "veth", "peer", "name", ifname, "netns", ns,
        ])?;
        ip(&["-n", &inet, "link", "set", &port, "master", "br0", "up"])?;
        for a in addrs {
            ip(&["-n", ns, "addr", "add", a, "dev", ifname])?;
        }
        ip(&["-n", ns, "link", "set", ifname, "up"])?;
        Ok(port)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            remove_ns(ns);
        }
    }
}

/// The IPv6 address of router `i`'s LAN host `last` (the router is 1): global
/// `2001:db8:(i + 1)::last`, or with NAT66 the unique-local `fd00:0:(i + 1)::last`.
fn lan6_prefix(nat66: bool, i: usize) -> impl Fn(u16) -> Ipv6Addr {
    let first = if nat66 { 0xfd00 } else { 0x2001 };
    let second = if nat66 { 0 } else { 0xdb8 };
    move |last| Ipv6Addr::new(first, second, i as u16 + 1, 0, 0, 0, 0, last)
}

/// The IPv6 WAN address of the router whose IPv4 WAN address is `wan` (in a lab with IPv6):
/// `2001:db8::(10 + i)`.
#[allow(dead_code)] // not every test binary that includes this file uses it
pub(crate) fn wan6_of(wan: Ipv4Addr) -> Ipv6Addr {
    wan6(usize::from(wan.octets()[3] - 10))
}

/// Router `i`'s IPv6 WAN address, `2001:db8::(10 + i)`.
fn wan6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 10 + i as u16)
}

/// Kills what still runs in `ns` (only this file's processes run there) and deletes it.
fn remove_ns(ns: &str) {
    // A resolver configuration of its own ([`Lab::add_dns64`]), if it had one.
    let _ = std::fs::remove_dir_all(format!("/etc/netns/{ns}"));
    let pids = run_text(&["ip", "netns", "pids", ns]);
    for pid in pids.split_whitespace().filter(|p| p.parse::<u32>().is_ok()) {
        let _ = Command::new("kill")
            .args(["-KILL", pid])
            .stderr(Stdio::null())
            .status();
    }
    let _ = Command::new("ip")
        .args(["netns", "del", ns])
        .stderr(Stdio::null())
        .status();
}

fn setup_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Why the lab cannot run here, if it cannot: not root, no `ip` or `nft`, or no namespaces.
/// Checked once per process; also removes labs left behind by test processes that are gone.
pub(crate) fn prerequisites() -> Result<(), String> {
    static CHECKED: OnceLock<Result<(), String>> = OnceLock::new();
    CHECKED
        .get_or_init(|| {
            let _one_at_a_time = setup_lock();
            let status = std::fs::read_to_string("/proc/self/status")
                .map_err(|e| format!("cannot read /proc/self/status ({e}); not Linux?"))?;
            let euid = status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .unwrap_or("?");
            if euid != "0" {
                return Err(format!(
                    "needs root for network namespaces (effective uid {euid})"
                ));
            }
            for tool in [["ip", "-V"], ["nft", "--version"]] {
                run(&tool).map_err(|e| format!("`{}` is not usable: {e}", tool[0]))?;
            }
            remove_stale_labs();
            let probe = format!("{PREFIX}{}-probe", std::process::id());
            ip(&["netns", "add", &probe]).map_err(|e| format!("cannot add a namespace: {e}"))?;
            let nft_works = nft(&probe, "table ip probe {\n}\n");
            remove_ns(&probe);
            nft_works
                .map(drop)
                .map_err(|e| format!("nftables does not work in a namespace: {e}"))
        })
        .clone()
}

/// miniupnpd is installed (Debian's `miniupnpd-nftables`), or why not.
#[allow(dead_code)] // not every test binary that includes this file uses it
pub(crate) fn miniupnpd_available() -> Result<(), String> {
    run(&["miniupnpd", "--version"]).map(drop)
}

/// Deletes `plab<pid>-...` namespaces whose test process no longer exists.
fn remove_stale_labs() {
    let list = run_text(&["ip", "netns", "list"]);
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            remove_ns(name);
        }
    }
}

fn ip(args: &[&str]) -> Result<String, String> {
    let mut all = vec!["ip"];
    all.extend_from_slice(args);
    run(&all)
}

/// Writes a sysctl inside `ns` (`key` as a path under /proc/sys).
fn sysctl(ns: &str, key: &str, value: &str) -> Result<String, String> {
    let script = format!("echo {value} > /proc/sys/{key}");
    run(&["ip", "netns", "exec", ns, "sh", "-c", &script])
}

/// Loads an nftables ruleset inside `ns`.
fn nft(ns: &str, rules: &str) -> Result<String, String> {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run nft: {e}"))?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(rules.as_bytes())
        .map_err(|e| format!("cannot feed nft: {e}"))?;
    let out = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "nft -f in {ns} failed: {}\n{rules}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs a command to completion; its stdout, or an error naming it with its stderr.
fn run(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `{}`: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs a command for its output, whatever happens (diagnostics, teardown).
fn run_text(args: &[&str]) -> String {
    match Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) => format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => format!("cannot run `{}`: {e}\n", args.join(" ")),
    }
}
