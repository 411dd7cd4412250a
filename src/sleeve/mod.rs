//! The encrypted data path's pure core ("sleeve", after Weave's user-space overlay): what
//! goes on the wire between two peers when a password is set, with no I/O.
//!
//! - [`keys`]: the password KDF, per-direction data keys derived from the mesh's Noise
//!   handshake, and the ratchet that rekeys them.
//! - [`datagram`]: the datagram's header (session, epoch, counter), sizes and drop reasons.
//! - [`fragments`]: gathering a frame sealed once from the datagrams that carry it.
//! - [`replay`]: the per-key replay window.
//! - [`session`]: [`session::Sealer`] and [`session::Opener`]: one AEAD operation per
//!   frame, in place, with rekeying by count and age.

pub mod datagram;
pub mod fragments;
pub mod keys;
pub mod replay;
pub mod session;

pub use datagram::{Fragment, Header, Reject, OVERHEAD};
pub use keys::SessionKeys;
pub use session::{Limits, Opener, SealError, Sealer};
