//! `--tls-resume`'s store of session tickets: every ticket the servers send, kept per server name
//! until a connection takes it. rustls's own store keeps 8 TLS 1.3 tickets per server, fewer than
//! the connections a run opens at once: with 64 connections most would find none and shake hands in
//! full (lab-epoll at `-c 64`: 905 full, 292 resumed). A TLS 1.3 ticket is for one use, so this store
//! keeps up to [`TICKETS_PER_SERVER`], enough for every connection in flight to find one.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use rustls::client::{ClientSessionStore, Tls12ClientSessionValue, Tls13ClientSessionValue};
use rustls::pki_types::ServerName;
use rustls::NamedGroup;

/// Tickets kept per server name; the oldest goes first when more arrive.
pub const TICKETS_PER_SERVER: usize = 4096;

#[derive(Debug, Default)]
struct Server {
    kx_hint: Option<NamedGroup>,
    tls12: Option<Tls12ClientSessionValue>,
    tls13: VecDeque<Tls13ClientSessionValue>,
}

/// The store every connection of a run shares (a load thread takes the lock once per handshake).
#[derive(Debug, Default)]
pub struct Tickets {
    servers: Mutex<HashMap<ServerName<'static>, Server>>,
}

impl Tickets {
    pub fn new() -> Arc<Tickets> {
        Arc::new(Tickets::default())
    }

    fn servers(&self) -> MutexGuard<'_, HashMap<ServerName<'static>, Server>> {
        self.servers.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl ClientSessionStore for Tickets {
    fn set_kx_hint(&self, name: ServerName<'static>, group: NamedGroup) {
        self.servers().entry(name).or_default().kx_hint = Some(group);
    }

    fn kx_hint(&self, name: &ServerName<'_>) -> Option<NamedGroup> {
        self.servers().get(&name.to_owned()).and_then(|server| server.kx_hint)
    }

    fn set_tls12_session(&self, name: ServerName<'static>, value: Tls12ClientSessionValue) {
        self.servers().entry(name).or_default().tls12 = Some(value);
    }

    fn tls12_session(&self, name: &ServerName<'_>) -> Option<Tls12ClientSessionValue> {
        self.servers().get(&name.to_owned()).and_then(|server| server.tls12.clone())
    }

    fn remove_tls12_session(&self, name: &ServerName<'static>) {
        if let Some(server) = self.servers().get_mut(name) {
            server.tls12 = None;
        }
    }

    fn insert_tls13_ticket(&self, name: ServerName<'static>, value: Tls13ClientSessionValue) {
        let mut servers = self.servers();
        let tickets = &mut servers.entry(name).or_default().tls13;
        if tickets.len() == TICKETS_PER_SERVER {
            tickets.pop_front();
        }
        tickets.push_back(value);
    }

    fn take_tls13_ticket(&self, name: &ServerName<'static>) -> Option<Tls13ClientSessionValue> {
        // The newest first: the least likely to have expired.
        self.servers().get_mut(name).and_then(|server| server.tls13.pop_back())
    }
}
