//! One error type for the crate: a kind (which decides the CNI code and HTTP status at the
//! edges) and a message built as `verb object: cause`, one layer of context per call.

use std::fmt;

/// What went wrong, coarsely: enough for an edge (CNI, HTTP) to pick its code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// A required environment variable is missing or invalid (CNI code 4).
    Env,
    /// Input could not be decoded (CNI code 6).
    Decode,
    /// Input decoded but is not a valid configuration (CNI code 7).
    InvalidConfig,
    /// The config's `cniVersion` is not one we speak (CNI code 1).
    IncompatibleVersion,
    /// The network namespace is missing or unusable (CNI code 8).
    NetNs,
    /// A transient failure, e.g. the router is unreachable or not ready (CNI code 11).
    TryAgainLater,
    /// The router answered with an error (CNI code 100+).
    Router,
    /// A kernel (netlink, sysctl) operation failed.
    Kernel,
    /// A file or socket operation failed.
    Io,
    /// Something that should exist does not.
    NotFound,
    /// Something that should not exist does.
    AlreadyExists,
    /// A bug or an unclassified failure.
    Internal,
}

/// Facts about a failure that callers branch on, kept out of the message so nobody has to
/// parse it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// The router answered with this non-2xx HTTP status (the message holds its text).
    HttpStatus(u16),
    /// The router was not reached: resolving, connecting, sending or receiving failed or
    /// timed out (the errno, when there is one, says which).
    Unreachable,
}

/// The crate's error: a kind, a human message and, when known, the errno and a [`Detail`].
#[derive(Debug, Clone)]
pub struct Error {
    kind: ErrorKind,
    message: String,
    errno: Option<i32>,
    detail: Option<Detail>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            errno: None,
            detail: None,
        }
    }

    /// A kernel error carrying the errno, so callers can tell EEXIST or ENOENT apart.
    pub fn kernel(errno: i32, message: impl Into<String>) -> Self {
        Error {
            kind: ErrorKind::Kernel,
            message: message.into(),
            errno: Some(errno),
            detail: None,
        }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn errno(&self) -> Option<i32> {
        self.errno
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn detail(&self) -> Option<Detail> {
        self.detail
    }

    /// The same error with `detail` attached.
    pub fn with_detail(mut self, detail: Detail) -> Self {
        self.detail = Some(detail);
        self
    }

    /// Prefix the message with what the caller was doing: `create veth "x": <cause>`.
    pub fn context(mut self, what: impl fmt::Display) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }

    /// Same message and errno, another kind (e.g. a missing netns path becomes `NetNs`).
    pub fn with_kind(mut self, kind: ErrorKind) -> Self {
        self.kind = kind;
        self
    }

    /// True for "no such file/device/process" style failures.
    pub fn is_not_found(&self) -> bool {
        self.kind == ErrorKind::NotFound
            || matches!(
                self.errno,
                Some(libc::ENOENT) | Some(libc::ENODEV) | Some(libc::ESRCH)
            )
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        let kind = match e.kind() {
            std::io::ErrorKind::NotFound => ErrorKind::NotFound,
            std::io::ErrorKind::AlreadyExists => ErrorKind::AlreadyExists,
            _ => ErrorKind::Io,
        };
        Error {
            kind,
            message: e.to_string(),
            errno: e.raw_os_error(),
            detail: None,
        }
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::new(ErrorKind::Decode, e.to_string())
    }
}

/// Adds one layer of context to any result whose error converts into [`Error`].
pub trait Context<T> {
    fn context(self, what: impl fmt::Display) -> Result<T>;
    fn with_context<D: fmt::Display>(self, what: impl FnOnce() -> D) -> Result<T>;
}

impl<T, E: Into<Error>> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl fmt::Display) -> Result<T> {
        self.map_err(|e| e.into().context(what))
    }

    fn with_context<D: fmt::Display>(self, what: impl FnOnce() -> D) -> Result<T> {
        self.map_err(|e| e.into().context(what()))
    }
}

/// Collects errors during teardown so every step runs; displays them all.
#[derive(Debug, Default)]
pub struct ErrorList(pub Vec<Error>);

impl ErrorList {
    pub fn push_err<T>(&mut self, r: Result<T>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.0.push(e);
                None
            }
        }
    }

    /// Ok if nothing failed; the single error; or one error listing all.
    pub fn into_result(mut self) -> Result<()> {
        match self.0.len() {
            0 => Ok(()),
            1 => Err(self.0.remove(0)),
            _ => {
                let kind = self.0[0].kind;
                let lines: Vec<String> = self.0.iter().map(|e| format!("\t- {e}")).collect();
                Err(Error::new(
                    kind,
                    format!("multiple errors:\n{}", lines.join("\n")),
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_reads_verb_object_cause() {
        let r: std::result::Result<(), std::io::Error> =
            Err(std::io::Error::from_raw_os_error(libc::ENOENT));
        let e = r.context("open netns \"/x\"").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert!(
            e.message().starts_with("open netns \"/x\": No such file"),
            "{e}"
        );
        assert_eq!(e.errno(), Some(libc::ENOENT));
    }

    #[test]
    fn error_list_reports_all() {
        let mut l = ErrorList::default();
        l.push_err::<()>(Err(Error::new(ErrorKind::Io, "a")));
        l.push_err::<()>(Err(Error::new(ErrorKind::Io, "b")));
        let e = l.into_result().unwrap_err();
        assert_eq!(e.to_string(), "multiple errors:\n\t- a\n\t- b");
        assert!(ErrorList::default().into_result().is_ok());
    }
}
