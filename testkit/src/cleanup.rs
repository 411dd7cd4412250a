//! Cleanup when guards never drop: a signal (Ctrl-C is SIGINT, `kill` is SIGTERM, a closed
//! terminal is SIGHUP) ends a process without unwinding, and a panic hook runs before a
//! panic that aborts. For single-scenario programs only (the demo, benches): a test
//! binary runs many tests at once, and one failing must not delete the others' hosts.

use crate::{ns, process};
use nix::sys::signal::{SigSet, Signal};

/// Kills every guarded child and deletes every namespace this process created.
pub fn cleanup_now() {
    ns::STOPPING.store(true, std::sync::atomic::Ordering::SeqCst);
    for pid in process::guarded() {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
    for name in ns::registered() {
        ns::delete_netns(&name);
    }
}

/// On panic: reports as usual, then [`cleanup_now`].
pub fn on_panic() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        previous(info);
        cleanup_now();
    }));
}

/// On SIGINT, SIGTERM or SIGHUP: [`cleanup_now`], then `extra`, then exit with 128 + the
/// signal number. Call it first in `main`, before any thread starts: the signals are
/// blocked in this thread (threads started later inherit that) and one thread waits for
/// them, so no work is interrupted halfway by a handler. Children start with no signals
/// blocked (Rust's `Command` resets the mask).
pub fn on_signals(extra: impl Fn() + Send + 'static) {
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    set.thread_block().expect("block signals");
    std::thread::spawn(move || {
        let sig = set.wait().unwrap_or(Signal::SIGTERM);
        eprintln!("\n{sig} received: cleaning up");
        cleanup_now();
        extra();
        std::process::exit(128 + sig as i32);
    });
}

/// True once a signal started the cleanup.
pub fn stopping() -> bool {
    ns::STOPPING.load(std::sync::atomic::Ordering::SeqCst)
}

/// When the cleanup of [`on_signals`] runs, waits for it to finish and exit the process
/// (the work it interrupted may fail on the way; that failure is not the outcome).
pub fn wait_if_stopping() {
    if stopping() {
        loop {
            std::thread::park();
        }
    }
}
