//! [`Undo`]: the CNI plugins' `defer if !success { teardown }` in Rust's terms. Each step of
//! an ADD that changed something pushes how to take it back; [`Undo::commit`] at the end
//! keeps everything, and dropping the guard without committing (an early `?` return, a
//! panic) takes back, newest first, whatever was done. Undo steps are best effort: their
//! failures are logged, and the error the runtime sees stays the one that stopped the ADD.

use crate::Result;

/// How to take one step back.
type Step<'a> = Box<dyn FnOnce() -> Result<()> + 'a>;

/// Pending undo steps of one operation.
#[derive(Default)]
pub struct Undo<'a> {
    steps: Vec<(&'static str, Step<'a>)>,
}

impl<'a> Undo<'a> {
    pub fn new() -> Undo<'a> {
        Undo::default()
    }

    /// Registers how to take back a step that just succeeded.
    pub fn push(&mut self, what: &'static str, step: impl FnOnce() -> Result<()> + 'a) {
        self.steps.push((what, Box::new(step)));
    }

    /// What was done so far stays, whatever happens later.
    pub fn keep(&mut self) {
        self.steps.clear();
    }

    /// Everything succeeded: nothing is taken back.
    pub fn commit(mut self) {
        self.keep();
    }
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        while let Some((what, step)) = self.steps.pop() {
            if let Err(e) = step() {
                tracing::warn!("undo ADD ({what}): {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Error, ErrorKind};
    use std::cell::RefCell;

    #[test]
    fn uncommitted_steps_are_undone_newest_first_and_failures_do_not_stop_the_rest() {
        let log = RefCell::new(Vec::new());
        {
            let mut u = Undo::new();
            u.push("a", || {
                log.borrow_mut().push("a");
                Ok(())
            });
            u.push("b", || {
                log.borrow_mut().push("b");
                Err(Error::new(ErrorKind::Kernel, "b failed"))
            });
            u.push("c", || {
                log.borrow_mut().push("c");
                Ok(())
            });
        }
        assert_eq!(*log.borrow(), ["c", "b", "a"]);
    }

    #[test]
    fn committed_steps_are_kept() {
        let log = RefCell::new(Vec::new());
        let mut u = Undo::new();
        u.push("a", || {
            log.borrow_mut().push("a");
            Ok(())
        });
        u.commit();
        assert!(log.borrow().is_empty());
    }
}
