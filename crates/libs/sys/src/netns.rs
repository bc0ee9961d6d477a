//! A network namespace of one's own (`unshare(CLONE_NEWNET)`), for experiments that change sysctls,
//! flood or drop packets: the namespace has its own loopback, its own `net.*` sysctls and its own
//! `/proc/net` counters, and it disappears with the last process in it.

use std::io;
use std::mem;
use std::os::fd::AsRawFd;

use nix::sched::{unshare, CloneFlags};
use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};

use crate::{last_os_error, os_error};

/// `unshare(CLONE_NEWNET)`, then brings the new namespace's loopback up (it starts down). Affects the
/// calling thread, and every process and thread it starts from then on. Needs CAP_SYS_ADMIN.
pub fn enter_new() -> io::Result<()> {
    unshare(CloneFlags::CLONE_NEWNET).map_err(|e| os_error("unshare", "CLONE_NEWNET", e))?;
    interface_up("lo")
}

/// `ioctl(SIOCGIFFLAGS)` then `ioctl(SIOCSIFFLAGS)` with `IFF_UP`: `ip link set NAME up`. nix has no
/// interface ioctls, hence libc.
pub fn interface_up(name: &str) -> io::Result<()> {
    let fd = socket(AddressFamily::Inet, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)
        .map_err(|e| os_error("socket", "AF_INET SOCK_DGRAM", e))?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut request: libc::ifreq = unsafe { mem::zeroed() };
    if name.len() >= request.ifr_name.len() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("interface name too long: {name}")));
    }
    for (slot, byte) in request.ifr_name.iter_mut().zip(name.bytes()) {
        *slot = byte as libc::c_char;
    }
    // SAFETY: `request` is a valid ifreq with a NUL-terminated name, alive for the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) } != 0 {
        return Err(last_os_error("ioctl SIOCGIFFLAGS", name));
    }
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union, so reading it is reading what was set.
    let flags = unsafe { request.ifr_ifru.ifru_flags };
    request.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    // SAFETY: as above; SIOCSIFFLAGS reads the name and the flags.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCSIFFLAGS, &request) } != 0 {
        return Err(last_os_error("ioctl SIOCSIFFLAGS", name));
    }
    Ok(())
}
