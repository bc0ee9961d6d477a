#![forbid(unsafe_code)]
//! The suites' harness is `labkit`, the one way in this workspace to start a server, wait for its
//! `listening on` line and talk to it; lab-bench and lab-exp use the same crate.

pub use labkit::*;
