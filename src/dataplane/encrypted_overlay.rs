//! The encrypted path as an [`Overlay`]: the peers it carries and their keys.

use super::{lock, EncryptedOverlay, PeerLink, Receiver};
use crate::dataplane::path::ENCRYPTED;
use crate::dataplane::{Overlay, Peer, PlaneFuture};
use crate::sleeve::fragments::Reassembly;
use crate::sleeve::{Opener, Sealer};
use futures::FutureExt;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

impl Overlay for EncryptedOverlay {
    fn name(&self) -> &'static str {
        ENCRYPTED
    }

    fn accepts(&self, peer: &Peer) -> bool {
        peer.underlay.is_some() && peer.keys.is_some()
    }

    fn set_peers<'a>(&'a self, peers: &'a [Peer]) -> PlaneFuture<'a, ()> {
        async move {
            let s = &self.shared;
            let now = Instant::now();
            let mut next = HashMap::new();
            let old = s.peers.read().unwrap_or_else(|p| p.into_inner()).clone();
            for p in peers {
                let (Some(ip), Some(keys)) = (p.underlay, p.keys.as_ref()) else {
                    continue;
                };
                let addr = SocketAddr::new(ip, s.port);
                let link = match old.get(&ip) {
                    Some(l) if l.name == p.name && l.session == keys.session && l.addr == addr => {
                        l.clone()
                    }
                    _ => {
                        let counters = lock(&s.counters).entry(p.name).or_default().clone();
                        tracing::info!(
                            "encrypted path: keys for {}({}) at {addr}, session {:06x}",
                            p.name,
                            p.nickname,
                            keys.session
                        );
                        Arc::new(PeerLink {
                            name: p.name,
                            nickname: p.nickname.clone(),
                            addr,
                            session: keys.session,
                            sealer: Mutex::new(Sealer::new(
                                &keys.send,
                                keys.session,
                                s.limits,
                                now,
                            )),
                            receiver: Mutex::new(Receiver {
                                opener: Opener::new(&keys.recv, keys.session),
                                frames: Reassembly::default(),
                            }),
                            counters,
                        })
                    }
                };
                next.insert(ip, link);
            }
            *s.peers.write().unwrap_or_else(|p| p.into_inner()) = next;
            Ok(())
        }
        .boxed()
    }
}
