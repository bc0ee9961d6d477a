//! Resource limits.

use std::io;

use nix::sys::resource::{getrlimit, setrlimit, Resource};

use crate::os_error;

/// `setrlimit(RLIMIT_NOFILE)`: raises the soft limit on open files to the hard limit, since every
/// connection is a file descriptor; returns the new soft limit.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let (soft, hard) =
        getrlimit(Resource::RLIMIT_NOFILE).map_err(|e| os_error("getrlimit", "RLIMIT_NOFILE", e))?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
            .map_err(|e| os_error("setrlimit RLIMIT_NOFILE", hard, e))?;
    }
    Ok(hard.max(soft))
}
