//! Who answers on a port: the listening socket that takes a connection to `127.0.0.1:PORT`,
//! and the process holding it, read from `/proc`.
//!
//! A probe that passes proves only that *something* answered. Before an instance counts as
//! ready, [`check`] confirms that the socket answering on its port belongs to the instance's
//! process group (the instance's pid is its group id: every process it started is in it),
//! so another program, or another service's instance, answering there is a failed probe
//! with the holder named.
//!
//! How: the LISTEN sockets for the port (their inodes) come from the kernel's `sock_diag`
//! netlink interface, asked for listening TCP sockets only, so the cost does not grow with the
//! host's connections; `/proc/net/tcp` and `/proc/net/tcp6` (every socket, ~10 ms with a few
//! thousand in TIME_WAIT) are the fallback. The ones a connection to 127.0.0.1 reaches are
//! those bound to 127.0.0.1 exactly, or, when there is none, those bound to a wildcard address
//! (the kernel prefers the exact match). Then `/proc/<pid>/fd` of the group's leader, then of
//! the other processes in the group, is searched for `socket:[inode]`. Only when it is not
//! there are all processes searched, to name the holder.

use std::collections::BTreeSet;
use std::path::Path;

/// A listening socket from `/proc/net/tcp*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listen {
    /// The socket's inode (`socket:[inode]` in a holder's fd table).
    pub inode: u64,
    /// Bound to 127.0.0.1 exactly (or `::ffff:127.0.0.1`), rather than a wildcard.
    pub exact: bool,
}

/// The LISTEN sockets on `port` in one `/proc/net/tcp` (`v6: false`) or `/proc/net/tcp6`
/// (`v6: true`) text that a connection to 127.0.0.1 can reach.
pub fn parse_listeners(text: &str, port: u16, v6: bool) -> Vec<Listen> {
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
        let (Some(local), Some(state), Some(inode)) = (fields.get(1), fields.get(3), fields.get(9))
        else {
            continue;
        };
        if *state != "0A" {
            continue;
        }
        let Some((addr, p)) = local.split_once(':') else {
            continue;
        };
        if u16::from_str_radix(p, 16).ok() != Some(port) {
            continue;
        }
        let Ok(inode) = inode.parse::<u64>() else {
            continue;
        };
        let kind = if v6 { v6_kind(addr) } else { v4_kind(addr) };
        if let Some(exact) = kind {
            out.push(Listen { inode, exact });
        }
    }
    out
}

/// `Some(true)` for 127.0.0.1, `Some(false)` for 0.0.0.0, `None` for other addresses.
/// (`/proc/net/tcp` prints the address as a little-endian hex u32: 127.0.0.1 is `0100007F`.)
fn v4_kind(hex: &str) -> Option<bool> {
    match hex {
        "0100007F" => Some(true),
        "00000000" => Some(false),
        _ => None,
    }
}

/// `::ffff:127.0.0.1` is exact; `::` and `::ffff:0.0.0.0` are wildcards reaching IPv4.
fn v6_kind(hex: &str) -> Option<bool> {
    match hex {
        "0000000000000000FFFF00000100007F" => Some(true),
        "00000000000000000000000000000000" | "0000000000000000FFFF000000000000" => Some(false),
        _ => None,
    }
}

/// The inodes of the sockets answering a connection to `127.0.0.1:port` (exact binds win over
/// wildcards), from `sock_diag`, else from `/proc/net/tcp` and `/proc/net/tcp6`.
pub fn answering_inodes(port: u16) -> BTreeSet<u64> {
    let all = match diag::listeners(port) {
        Ok(all) => all,
        Err(_) => {
            let mut all = Vec::new();
            for (file, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
                if let Ok(text) = std::fs::read_to_string(file) {
                    all.extend(parse_listeners(&text, port, v6));
                }
            }
            all
        }
    };
    let exact = all.iter().any(|l| l.exact);
    all.into_iter()
        .filter(|l| l.exact == exact)
        .map(|l| l.inode)
        .collect()
}

/// Listening TCP sockets through the `NETLINK_SOCK_DIAG` interface (`inet_diag`, see
/// linux/inet_diag.h): one dump request per address family, filtered by the kernel to the
/// LISTEN state; the messages are plain bytes, built and read here field by field.
mod diag {
    use std::os::fd::AsRawFd;

    use nix::sys::socket::{
        AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, recv, sendto,
        socket,
    };

    use super::Listen;

    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const NLM_F_REQUEST: u16 = 1;
    const NLM_F_DUMP: u16 = 0x300;
    const NLMSG_ERROR: u16 = 2;
    const NLMSG_DONE: u16 = 3;
    const AF_INET: u8 = 2;
    const AF_INET6: u8 = 10;
    const IPPROTO_TCP: u8 = 6;
    const TCP_LISTEN: u32 = 10;
    /// `nlmsghdr` (16 bytes) + `inet_diag_req_v2` (56 bytes).
    const REQUEST_LEN: usize = 72;
    /// `inet_diag_msg` up to and including `idiag_inode`.
    const MSG_LEN: usize = 72;

    /// The LISTEN sockets on `port` that a connection to 127.0.0.1 can reach.
    pub(super) fn listeners(port: u16) -> std::io::Result<Vec<Listen>> {
        let mut out = Vec::new();
        for family in [AF_INET, AF_INET6] {
            dump(family, port, &mut out)?;
        }
        Ok(out)
    }

    fn request(family: u8) -> [u8; REQUEST_LEN] {
        let mut r = [0u8; REQUEST_LEN];
        r[0..4].copy_from_slice(&u32::try_from(REQUEST_LEN).unwrap_or(0).to_ne_bytes());
        r[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        r[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
        r[8..12].copy_from_slice(&1u32.to_ne_bytes());
        // inet_diag_req_v2: family, protocol, ext, pad, states; the socket id stays zero.
        r[16] = family;
        r[17] = IPPROTO_TCP;
        r[20..24].copy_from_slice(&(1u32 << TCP_LISTEN).to_ne_bytes());
        r
    }

    fn dump(family: u8, port: u16, out: &mut Vec<Listen>) -> std::io::Result<()> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkSockDiag,
        )?;
        let kernel = NetlinkAddr::new(0, 0);
        sendto(fd.as_raw_fd(), &request(family), &kernel, MsgFlags::empty())?;
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty())?;
            if n == 0 {
                return Err(std::io::Error::other("sock_diag: empty answer"));
            }
            if parse(&buf[..n], family, port, out)? {
                return Ok(());
            }
        }
    }

    fn u16_at(b: &[u8], at: usize) -> Option<u16> {
        Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
    }

    fn u32_at(b: &[u8], at: usize) -> Option<u32> {
        Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
    }

    /// Reads one datagram of netlink messages into `out`; `Ok(true)` once the dump is done.
    pub(super) fn parse(
        mut b: &[u8],
        family: u8,
        port: u16,
        out: &mut Vec<Listen>,
    ) -> std::io::Result<bool> {
        let bad = || std::io::Error::other("sock_diag: malformed answer");
        while b.len() >= 16 {
            let len = usize::try_from(u32_at(b, 0).ok_or_else(bad)?).map_err(|_| bad())?;
            let kind = u16_at(b, 4).ok_or_else(bad)?;
            if len < 16 || len > b.len() {
                return Err(bad());
            }
            match kind {
                NLMSG_DONE => return Ok(true),
                NLMSG_ERROR => return Err(std::io::Error::other("sock_diag: request refused")),
                _ => {}
            }
            let msg = b.get(16..len).ok_or_else(bad)?;
            if msg.len() >= MSG_LEN {
                // inet_diag_msg: family, state, timer, retrans, then the socket id:
                // sport (be16) at 4, dport at 6, src (16 bytes) at 8, ...; inode at 68.
                let sport = u16::from_be_bytes([msg[4], msg[5]]);
                let inode = u32_at(msg, 68).ok_or_else(bad)?;
                if sport == port && msg[0] == family {
                    let src = &msg[8..24];
                    let kind = if family == AF_INET {
                        match src[..4] {
                            [127, 0, 0, 1] => Some(true),
                            [0, 0, 0, 0] => Some(false),
                            _ => None,
                        }
                    } else if src[..10].iter().all(|x| *x == 0) && src[10..12] == [0xff, 0xff] {
                        match src[12..16] {
                            [127, 0, 0, 1] => Some(true),
                            [0, 0, 0, 0] => Some(false),
                            _ => None,
                        }
                    } else if src.iter().all(|x| *x == 0) {
                        Some(false)
                    } else {
                        None
                    };
                    if let Some(exact) = kind {
                        out.push(Listen {
                            inode: u64::from(inode),
                            exact,
                        });
                    }
                }
            }
            // Messages are 4-byte aligned.
            let next = len.checked_add(3).ok_or_else(bad)? & !3;
            b = b.get(next.min(b.len())..).unwrap_or_default();
        }
        Ok(false)
    }
}

/// The process group of `pid` (field 5 of `/proc/<pid>/stat`, after the parenthesised name).
fn pgid_of(proc: &Path) -> Option<u32> {
    let stat = std::fs::read_to_string(proc.join("stat")).ok()?;
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    // state ppid pgrp
    rest.split_whitespace().nth(2)?.parse().ok()
}

/// Whether process `proc` (a `/proc/<pid>` dir) has an fd on one of `inodes`; the one found.
fn holds(proc: &Path, inodes: &BTreeSet<u64>) -> Option<u64> {
    let fds = std::fs::read_dir(proc.join("fd")).ok()?;
    for fd in fds.flatten() {
        let Ok(target) = std::fs::read_link(fd.path()) else {
            continue;
        };
        let target = target.to_string_lossy();
        if let Some(inode) = target
            .strip_prefix("socket:[")
            .and_then(|t| t.strip_suffix(']'))
            .and_then(|t| t.parse::<u64>().ok())
            && inodes.contains(&inode)
        {
            return Some(inode);
        }
    }
    None
}

/// The command line of a process, for messages (`python3 app.py`).
fn command_of(proc: &Path) -> String {
    let cmd = crate::procfs::command_line(proc);
    let cmd = if cmd.is_empty() {
        std::fs::read_to_string(proc.join("comm"))
            .unwrap_or_default()
            .trim()
            .to_string()
    } else {
        cmd
    };
    if cmd.chars().count() > 80 {
        format!("{}…", cmd.chars().take(80).collect::<String>())
    } else {
        cmd
    }
}

/// Who holds a socket: its pid and command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The process id.
    pub pid: u32,
    /// Its command line.
    pub command: String,
}

/// The process holding one of `inodes`, if any process this user can see holds it.
pub fn holder(inodes: &BTreeSet<u64>) -> Option<Holder> {
    crate::procfs::processes()
        .into_iter()
        .find_map(|(pid, dir)| {
            holds(&dir, inodes).map(|_| Holder {
                pid,
                command: command_of(&dir),
            })
        })
}

/// Checks that the socket answering on `127.0.0.1:port` belongs to process group `pgid`
/// (an instance's pid); `instance` names it in the reason ("instance 0").
///
/// # Errors
/// Nothing listens there ("nothing listens on port P"), or another process holds the socket
/// ("port P is held by pid X (cmd), not by instance 0").
pub fn check(port: u16, pgid: u32, instance: &str) -> Result<(), String> {
    let inodes = answering_inodes(port);
    if inodes.is_empty() {
        return Err(format!("nothing listens on port {port}"));
    }
    // The group's leader first (it usually is the server: `exec` in the run command), then
    // the rest of the group.
    let leader = Path::new("/proc").join(pgid.to_string());
    if holds(&leader, &inodes).is_some() {
        return Ok(());
    }
    for (_, dir) in crate::procfs::processes() {
        if pgid_of(&dir) == Some(pgid) && holds(&dir, &inodes).is_some() {
            return Ok(());
        }
    }
    Err(match holder(&inodes) {
        Some(h) => format!(
            "port {port} is held by pid {} ({}), not by {instance}",
            h.pid, h.command
        ),
        None => format!(
            "port {port} is held by a process cutover cannot see (another user's?), not by {instance}"
        ),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 111 1 0000000000000000 100 0 0 10 0
   1: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 222 1 0000000000000000 100 0 0 10 0
   2: 0100007F:1F90 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000  1000        0 333 1 0000000000000000 100 0 0 10 0
   3: 0200007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 444 1 0000000000000000 100 0 0 10 0
   4: 0100007F:1F91 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 555 1 0000000000000000 100 0 0 10 0
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 666 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 777 1 0000000000000000 100 0 0 10 0
";

    #[test]
    fn parses_listen_sockets_that_reach_loopback() {
        // Port 8080 = 0x1F90: the exact loopback bind and the wildcard; not the established
        // connection, not 127.0.0.2, not another port.
        assert_eq!(
            parse_listeners(TCP, 8080, false),
            vec![
                Listen {
                    inode: 111,
                    exact: true
                },
                Listen {
                    inode: 222,
                    exact: false
                }
            ]
        );
        // `::` reaches IPv4 (dual stack); `::1` does not.
        assert_eq!(
            parse_listeners(TCP6, 8080, true),
            vec![Listen {
                inode: 666,
                exact: false
            }]
        );
        assert!(parse_listeners("garbage\nnot a table", 8080, false).is_empty());
    }

    fn listener() -> (std::net::TcpListener, u16) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        (l, port)
    }

    #[test]
    fn a_socket_of_the_group_passes() {
        let (_l, port) = listener();
        let me = nix::unistd::getpgrp().as_raw().unsigned_abs();
        assert_eq!(check(port, me, "instance 0"), Ok(()));
    }

    #[test]
    fn a_socket_of_another_process_names_the_holder() {
        let (_l, port) = listener();
        // A group that exists but does not hold the socket: a sleeping child of its own.
        let mut child = Command::new("sleep")
            .arg("30")
            .process_group(0)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let why = check(port, child.id(), "instance 3").unwrap_err();
        let _ = child.kill();
        let _ = child.wait();
        let me = std::process::id();
        assert!(
            why.starts_with(&format!("port {port} is held by pid {me} (")),
            "{why}"
        );
        assert!(why.ends_with("not by instance 3"), "{why}");
    }

    #[test]
    fn sock_diag_and_proc_agree() {
        let (_l, port) = listener();
        let from_diag = diag::listeners(port).unwrap();
        let text = std::fs::read_to_string("/proc/net/tcp").unwrap();
        let from_proc = parse_listeners(&text, port, false);
        assert_eq!(from_diag, from_proc);
        assert_eq!(from_diag.len(), 1);
        assert!(from_diag[0].exact);
        // A dual-stack wildcard on IPv6 reaches 127.0.0.1 too.
        if let Ok(v6) = std::net::TcpListener::bind("[::]:0") {
            let port = v6.local_addr().unwrap().port();
            let from_diag = diag::listeners(port).unwrap();
            let text = std::fs::read_to_string("/proc/net/tcp6").unwrap();
            assert_eq!(from_diag, parse_listeners(&text, port, true));
            assert_eq!(from_diag.len(), 1);
            assert!(!from_diag[0].exact);
        }
        // Truncated or garbage answers are errors, never panics.
        let mut out = Vec::new();
        assert!(diag::parse(&[0xff; 20], 2, port, &mut out).is_err());
        assert_eq!(diag::parse(&[1, 2, 3], 2, port, &mut out).ok(), Some(false));
    }

    #[test]
    fn nothing_listening_is_said_so() {
        let (l, port) = listener();
        drop(l);
        assert_eq!(
            check(port, 1, "instance 0"),
            Err(format!("nothing listens on port {port}"))
        );
    }
}
