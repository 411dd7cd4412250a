//! An opt-in stage trace of the encrypted path, to see where a round trip's time goes.
//! `WEAVE_SLEEVE_TRACE=<prefix>` makes each router append, to `<prefix>.<pid>`, one line per
//! stage of every ICMP echo frame it carries: `stage thread cpu type id seq ns`, with `ns`
//! on CLOCK_MONOTONIC (one timeline for all namespaces of a machine, so two routers' lines
//! line up) and `cpu` where the thread ran. Stages: `woke` (the worker's `poll` returned before
//! the read that got the frame), `tap_read`, `sealed`, `sent` (sendmmsg returned), `kernel_rx`
//! (the kernel's receive stamp, SO_TIMESTAMPNS), `recv` (recvmsg returned), `opened`,
//! `tap_written`. Unset, each hook costs one load of a set-once flag.

use std::cell::Cell;
use std::fs::File;
use std::io::Write;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// One frame's stage.
#[derive(Clone, Copy)]
pub enum Stage {
    Woke,
    TapRead,
    Sealed,
    Sent,
    KernelRx,
    Recv,
    Opened,
    TapWritten,
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::Woke => "woke",
            Stage::TapRead => "tap_read",
            Stage::Sealed => "sealed",
            Stage::Sent => "sent",
            Stage::KernelRx => "kernel_rx",
            Stage::Recv => "recv",
            Stage::Opened => "opened",
            Stage::TapWritten => "tap_written",
        }
    }
}

struct Event {
    stage: Stage,
    thread: char,
    cpu: i32,
    key: u64,
    ns: u64,
}

struct Trace {
    events: Mutex<Vec<Event>>,
}

static TRACE: OnceLock<Option<Trace>> = OnceLock::new();

thread_local! {
    /// The frame this thread works on (its key), when it last woke from `poll`, and when it
    /// received datagrams not yet opened (with the kernel's stamp).
    static KEY: Cell<Option<u64>> = const { Cell::new(None) };
    static WOKE: Cell<Option<u64>> = const { Cell::new(None) };
    static RECV: Cell<Option<(u64, Option<u64>)>> = const { Cell::new(None) };
}

fn trace() -> Option<&'static Trace> {
    TRACE
        .get_or_init(|| {
            let prefix = std::env::var_os("WEAVE_SLEEVE_TRACE")?;
            let mut path = prefix;
            path.push(format!(".{}", std::process::id()));
            let file = File::create(&path)
                .map_err(|e| tracing::warn!("create sleeve trace {path:?}: {e}"))
                .ok()?;
            std::thread::Builder::new()
                .name("sleeve-trace".into())
                .spawn(move || flush(file))
                .map_err(|e| tracing::warn!("start thread sleeve-trace: {e}"))
                .ok()?;
            tracing::info!("encrypted path: stage trace to {path:?}");
            Some(Trace {
                events: Mutex::new(Vec::with_capacity(1 << 16)),
            })
        })
        .as_ref()
}

/// Writes what was recorded every 200 ms (off the workers' path).
fn flush(mut file: File) {
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let Some(t) = trace() else { return };
        let events = std::mem::take(&mut *t.events.lock().unwrap_or_else(|p| p.into_inner()));
        let mut text = String::new();
        for e in events {
            let (ty, id, seq) = (e.key >> 32, (e.key >> 16) & 0xffff, e.key & 0xffff);
            text.push_str(&format!(
                "{} {} {} {ty} {id} {seq} {}\n",
                e.stage.name(),
                e.thread,
                e.cpu,
                e.ns
            ));
        }
        if file.write_all(text.as_bytes()).is_err() {
            return;
        }
    }
}

/// Whether tracing is on.
pub fn on() -> bool {
    trace().is_some()
}

fn clock(id: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec.
    unsafe { libc::clock_gettime(id, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn record(t: &Trace, stage: Stage, key: u64, ns: u64) {
    // SAFETY: sched_getcpu has no preconditions.
    let cpu = unsafe { libc::sched_getcpu() };
    let thread = std::thread::current()
        .name()
        .and_then(|n| n.strip_prefix("sleeve-"))
        .and_then(|n| n.chars().next())
        .unwrap_or('?');
    let e = Event {
        stage,
        thread,
        cpu,
        key,
        ns,
    };
    t.events.lock().unwrap_or_else(|p| p.into_inner()).push(e);
}

/// The frame's key if it is an IPv4 ICMP echo (request or reply): type, id, sequence.
fn key(frame: &[u8]) -> Option<u64> {
    if frame.get(12..14)? != [8, 0] {
        return None;
    }
    let ip = frame.get(14..)?;
    let ihl = usize::from(*ip.first()? & 0xf) * 4;
    if *ip.get(9)? != 1 {
        return None;
    }
    let icmp = ip.get(ihl..ihl + 8)?;
    if icmp[0] != 0 && icmp[0] != 8 {
        return None;
    }
    let id = u64::from(u16::from_be_bytes([icmp[4], icmp[5]]));
    let seq = u64::from(u16::from_be_bytes([icmp[6], icmp[7]]));
    Some(u64::from(icmp[0]) << 32 | id << 16 | seq)
}

/// The worker's `poll` returned.
pub fn woke() {
    if on() {
        WOKE.set(Some(clock(libc::CLOCK_MONOTONIC)));
    }
}

/// A frame (from its Ethernet header on) was read from the TAP.
pub fn tap_read(frame: &[u8]) {
    let Some(t) = trace() else { return };
    let now = clock(libc::CLOCK_MONOTONIC);
    let woke = WOKE.take();
    let k = key(frame);
    KEY.set(k);
    if let Some(k) = k {
        if let Some(w) = woke {
            record(t, Stage::Woke, k, w);
        }
        record(t, Stage::TapRead, k, now);
    }
}

/// Datagrams came in, with the kernel's receive stamp (CLOCK_REALTIME) if it gave one.
pub fn received(stamp: Option<u64>) {
    if on() {
        let now = clock(libc::CLOCK_MONOTONIC);
        // The same instant on the monotonic clock: both clocks advance alike (no jump here).
        let mono = stamp.map(|s| s.wrapping_sub(clock(libc::CLOCK_REALTIME).wrapping_sub(now)));
        RECV.set(Some((now, mono)));
    }
}

/// A frame (from its Ethernet header on) was opened: records its receive stages too.
pub fn opened(frame: &[u8]) {
    let Some(t) = trace() else { return };
    let now = clock(libc::CLOCK_MONOTONIC);
    let k = key(frame);
    KEY.set(k);
    let woke = WOKE.take();
    let Some(k) = k else { return };
    if let Some((recv, kernel)) = RECV.get() {
        if let Some(kernel) = kernel {
            record(t, Stage::KernelRx, k, kernel);
        }
        if let Some(w) = woke.filter(|&w| w <= recv) {
            record(t, Stage::Woke, k, w);
        }
        record(t, Stage::Recv, k, recv);
    }
    record(t, Stage::Opened, k, now);
}

/// The thread's current frame reached `stage`.
pub fn mark(stage: Stage) {
    let Some(t) = trace() else { return };
    if let Some(k) = KEY.get() {
        record(t, stage, k, clock(libc::CLOCK_MONOTONIC));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_echo_request_is_keyed_by_type_id_and_sequence() {
        let mut f = vec![0u8; 14 + 20 + 8];
        f[12] = 8;
        f[14] = 0x45;
        f[14 + 9] = 1;
        f[34] = 8;
        f[38..42].copy_from_slice(&[0x12, 0x34, 0, 7]);
        assert_eq!(key(&f), Some(8 << 32 | 0x1234 << 16 | 7));
        f[14 + 9] = 6;
        assert_eq!(key(&f), None, "TCP is not traced");
    }
}
